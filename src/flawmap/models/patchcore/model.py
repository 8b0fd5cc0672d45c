"""PatchCore (Roth et al., CVPR 2022): a coreset memory bank of locally aware patch features.

- Locally aware patch features (paper §3.1, eq. 2-3): each chosen backbone stage is averaged
  over a 3x3 neighbourhood (``patch_size``), the deeper map is upsampled bilinearly to the
  finest grid and the maps are concatenated.
- Memory bank (§3.2, Algorithm 1): greedy k-center coreset of all training patch features,
  ``coreset_ratio`` of them, selected on a seeded random projection (``projection_dim``);
  the selection is identical to the naive greedy loop, made fast by lazy max-distance updates
  and principal-direction lower bounds in a compiled loop
  (:mod:`flawmap.models.patchcore.sampler`).
- Scoring (eq. 6): a test patch's score is its Euclidean distance to the nearest bank entry,
  found exactly by :mod:`flawmap.models.patchcore.search` in bounded memory (k-means cluster
  pruning where the bank has structure, a chunked GEMM where it has not). The map is
  upsampled and smoothed; the image score is the map's maximum (the paper's eq. 7 re-weighting
  is not applied: the max keeps image labels and map regions consistent).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import Dataset

from flawmap.backbones import FeatureExtractor
from flawmap.errors import DataError
from flawmap.models.base import (
    AnomalyModule,
    Detector,
    ExportPlan,
    GraphPart,
    PostprocessGraph,
    backbone_graph,
    register_model,
)
from flawmap.models.features import check_patch_size, collect_features, local_patch_features
from flawmap.models.params import Int, NoneOr, OneOf, Real, param
from flawmap.models.patchcore.sampler import GreedyCoresetSampler, RandomSampler
from flawmap.models.patchcore.search import BruteForceSearch, ClusterPrunedSearch

SearchName = Literal["pruned", "brute_force"]
#: Brute force searches banks up to this many entries with one BLAS thread (``patch_scores``).
SMALL_BANK = 50_000


class PatchCoreModule(AnomalyModule):
    """Backbone + local patch aggregation + memory bank buffer ``memory_bank`` (M, D)."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        smoothing_sigma: float,
        patch_size: int,
        search: SearchName,
        seed: int,
    ) -> None:
        super().__init__(extractor, smoothing_sigma)
        self.patch_size = check_patch_size(patch_size)
        self.search_name = search
        self.seed = seed
        self.register_buffer("memory_bank", torch.zeros(0, sum(extractor.channels)))
        self._index: BruteForceSearch | ClusterPrunedSearch | None = None
        self._index_key: tuple[int, tuple[int, ...]] | None = None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> locally aware patch features (B, D, h, w)."""
        return local_patch_features(self.extractor(images), self.patch_size)

    def index(self) -> BruteForceSearch | ClusterPrunedSearch:
        """The nearest-neighbour index over ``memory_bank``, rebuilt when the bank changes."""
        bank = self.memory_bank
        key = (bank.data_ptr(), tuple(bank.shape))
        if self._index is None or self._index_key != key:
            if bank.shape[0] == 0:
                raise DataError("the memory bank is empty: fit the model first")
            search = (
                ClusterPrunedSearch(seed=self.seed)
                if self.search_name == "pruned"
                else BruteForceSearch()
            )
            self._index = search.fit(bank.numpy())
            self._index_key = key
        return self._index

    def export_plan(self, image_size: tuple[int, int]) -> ExportPlan:
        """The backbone, the local patch features (``patches`` (B, h, w, D)), the memory bank,
        and the post-processing; the nearest-neighbour search runs in the runtime."""
        if self.memory_bank.shape[0] == 0:
            raise DataError("the memory bank is empty: fit the model first")
        backbone = backbone_graph(self, image_size)
        stages = backbone.output_examples()
        patches = GraphPart(_PatchFeatures(self), stages, ("patches",), backbone.outputs)
        grid = tuple(patches.output_examples()[0].shape[1:3])
        post = GraphPart(
            PostprocessGraph(self, image_size),
            (torch.zeros(1, 1, *grid),),
            ("scores", "maps"),
            ("patch_scores",),
        )
        return ExportPlan(
            "nearest_neighbour",
            {"backbone": backbone, "patches": patches, "postprocess": post},
            {"memory_bank": self.memory_bank.numpy().copy()},
        )

    def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.embed(images)
        b, d, h, w = emb.shape
        queries = np.ascontiguousarray(emb.permute(0, 2, 3, 1).reshape(-1, d).float().numpy())
        # The pruned search splits its queries over torch's thread count, each part with one
        # BLAS thread. Brute force: small banks get one BLAS thread (OpenBLAS's spinning workers
        # and torch's OpenMP workers otherwise fight over the cores at every hand-over), large
        # banks big GEMMs on every thread (measurements: BENCHMARKS.md).
        index = self.index()
        if isinstance(index, ClusterPrunedSearch):
            index.threads = torch.get_num_threads()
            blas_threads: int | None = 1
        else:
            blas_threads = 1 if len(self.memory_bank) <= SMALL_BANK else None
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            distances, _ = index.query(queries)
        return torch.from_numpy(distances).view(b, 1, h, w)


class _PatchFeatures(torch.nn.Module):
    """The backbone's stage maps -> patch features (B, h, w, D), the search's queries."""

    def __init__(self, module: PatchCoreModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, *stages: torch.Tensor) -> torch.Tensor:
        return local_patch_features(list(stages), self.module.patch_size).permute(0, 2, 3, 1)


@register_model
class PatchCore(Detector):
    """PatchCore detector. Image score = maximum of the smoothed nearest-neighbour map.

    Args:
        coreset_ratio: fraction of training patch features kept in the memory bank (0, 1].
        coreset_sampler: ``"greedy"`` (k-center, the paper) or ``"random"`` (ablation).
        projection_dim: random-projection size used only for coreset selection (paper: 128);
            ``None`` selects on the raw features.
        patch_size: neighbourhood of the local average (paper: 3).
        search: ``"pruned"`` (exact, cluster-pruned) or ``"brute_force"`` (exact, chunked).
        **common: see :class:`~flawmap.models.base.Detector`.
    """

    name = "patchcore"
    default_strides = (8, 16)
    coreset_ratio: float = param(0.1, Real(0.0, 1.0, low_open=True))
    coreset_sampler: Literal["greedy", "random"] = param("greedy", OneOf("greedy", "random"))
    projection_dim: int | None = param(128, NoneOr(Int(1)))
    patch_size: int = param(3, Int(1, odd=True))
    search: SearchName = param("pruned", OneOf("pruned", "brute_force"))

    def _build_module(self, weights: str) -> PatchCoreModule:
        return PatchCoreModule(
            self.make_extractor(weights),
            self.smoothing_sigma,
            self.patch_size,
            self.search,
            self.seed,
        )

    @torch.inference_mode()
    def _fit_module(self, module: AnomalyModule, data: Dataset, progress: bool) -> None:
        if not isinstance(module, PatchCoreModule):
            raise TypeError("PatchCore fits a PatchCoreModule")

        def patches(images: torch.Tensor) -> torch.Tensor:  # (B * h * w, C)
            emb = module.embed(images)
            return emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).float()

        cache = collect_features(self, data, patches, progress=progress, desc="patchcore: features")
        features = np.ascontiguousarray(cache.features[0].numpy())
        n_select = max(1, round(self.coreset_ratio * len(features)))
        sampler = (
            GreedyCoresetSampler(projection_dim=self.projection_dim)
            if self.coreset_sampler == "greedy"
            else RandomSampler()
        )
        selected = sampler.select(features, n_select, self.seed)
        module.memory_bank = torch.from_numpy(features[selected].copy())
