"""CSE: surface anomaly detection with a contrastively selected embedding (seed paper 001,
"CSE: Surface Anomaly Detection with Contrastively Selected Embedding").

Data path (§3; the paper's equations are lost in the stored text, the definitions below are the
reference):

- features: a frozen backbone's two deepest stages (default strides 16 and 32), upsampled
  bilinearly to the finest grid and concatenated (§3.2);
- embedder: 1x1 convolutions C -> C/2 -> C/4 -> ``embed_dim``, each with ReLU and BatchNorm,
  then 2x2 average pooling: the *pooled embedding* used by the loss, the bank and the scores;
- training pairs (§3.1-3.2): a good image x1 and, with probability ``damage_probability``, a
  synthetically damaged copy of it (:class:`~flawmap.synth.DefectSynthesizer`: Perlin masks with
  texture, structural or blur defects), otherwise another good image;
- loss (eq. 1-6): ``contrastive_weight`` * :func:`contrastive_cosine_loss` + :func:`decoder_loss`
  (a seeded, never-trained decoder of 1x1 convolutions maps the unpooled embedding back to
  every stage; it is used for training only and not saved);
- training (§4.1): Adam with a one-cycle schedule (max lr = ``lr``, beta1 not cycled); the
  embedder of the epoch with the lowest loss on a seeded ``validation_fraction`` of the
  training images is kept (no test data is looked at);
- bank and scoring (§3.5): seeded spherical k-means++ (:func:`spherical_kmeans`) on the pooled
  embeddings of the training images; a position's score is 1 - cos to the nearest centre; the
  map is that distance, upsampled and smoothed; the image score is its mean (paper) or, with
  ``image_score="max"``, the smoothed map's maximum.

Choices where the paper is silent: ``damaged_positions="all"`` (default) applies the
damaged-pair term at every position of a damaged pair, ``"mask"`` only where the pooled cell
overlaps the defect mask; the map uses the pooled embedding (the one the loss shapes), so the
mean image score is exactly the mean of the raw map; the frozen decoder stays in eval mode
(its BatchNorm is an identity up to 1/sqrt(1 + eps)), its last convolution is linear, coarser
stages average-pool its output, and each stage's loss is 1 - cos averaged over positions. With
the ``"mean"`` score the threshold is on the mean distance, so ``Prediction.masks()``
over-segments.

Deviations: EfficientNet-Lite0 instead of EfficientNet-B3; a CPU schedule by default (the
paper's is ``CSE.PAPER_SCHEDULE``); the features of the good training images are computed
once and cached (frozen backbone, no augmentation), only damaged copies run the backbone
during training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from flawmap.backbones import FeatureExtractor
from flawmap.data import split_holdout
from flawmap.errors import ConfigError, DataError
from flawmap.models.base import AnomalyModule, TrainedDetector, register_model
from flawmap.models.features import collect_features, concat_on_finest_grid
from flawmap.models.params import Int, NoneOr, OneOf, Real, Seq, Text, param
from flawmap.synth import DefectSynthesizer
from flawmap.training import BestOnValidation, Schedule

__all__ = [
    "CSE",
    "CSEDecoder",
    "CSEModule",
    "contrastive_cosine_loss",
    "decoder_loss",
    "spherical_kmeans",
]

DAMAGED_POSITIONS = ("all", "mask")
IMAGE_SCORES = ("mean", "max")
_VALIDATION_SEED_OFFSET = 104_729  # validation pairs: their own fixed RNG stream
_DECODER_SEED_OFFSET = 7_919  # the frozen decoder's initialisation: its own RNG stream
_KMEANS_ITERS = 100


# --------------------------------------------------------------------------- losses
def contrastive_cosine_loss(
    e1: torch.Tensor, e2: torch.Tensor, damaged: torch.Tensor
) -> torch.Tensor:
    """Contrastive cosine loss (§3.3, eq. 1-2) of embeddings e1, e2 (B, D, h, w).

    ``damaged`` (B, h, w), or anything broadcastable to it such as (B, 1, 1), holds the label
    y in [0, 1] of every position (1 = damaged pair). Per position, with c = cos(e1, e2) over
    the D channels::

        l = (1 - y) * (1 - c) + y * (1 + c) / 2

    so a defect-free pair costs 0 when the embeddings point the same way (2 when opposite) and
    a damaged pair costs 0 when they are opposite (1/2 when orthogonal, 1 when identical).
    Returns the mean over positions and batch.
    """
    if e1.shape != e2.shape or e1.ndim != 4:
        raise DataError(
            f"embeddings must both be (B, D, h, w), got {tuple(e1.shape)} and {tuple(e2.shape)}"
        )
    cos = F.cosine_similarity(e1, e2, dim=1, eps=1e-8)  # (B, h, w), eq. 1
    y = damaged.to(cos.dtype).expand_as(cos)
    return ((1.0 - y) * (1.0 - cos) + y * (1.0 + cos) / 2.0).mean()  # eq. 2


def decoder_loss(decoded: list[torch.Tensor], features: list[torch.Tensor]) -> torch.Tensor:
    """Decoder loss (§3.4, eq. 3-5) of decoded maps and backbone features, one pair per stage.

    ``decoded[l]`` and ``features[l]`` are (B, C_l, h_l, w_l). Per position (eq. 3), with n the
    L2 normalisation over channels: 0.5 * ||n(decoded) - n(features)||^2 summed over channels
    (= 1 - cos); averaged over positions and batch per stage (eq. 4); averaged over stages
    (eq. 5).
    """
    if len(decoded) != len(features) or not decoded:
        raise DataError(f"need one decoded map per stage, got {len(decoded)} for {len(features)}")
    losses = []
    for d, f in zip(decoded, features, strict=True):
        if d.shape != f.shape:
            raise DataError(f"decoded {tuple(d.shape)} and features {tuple(f.shape)} differ")
        diff = F.normalize(d, dim=1, eps=1e-8) - F.normalize(f, dim=1, eps=1e-8)
        losses.append(0.5 * diff.pow(2).sum(dim=1).mean())
    return torch.stack(losses).mean()


# --------------------------------------------------------------------------- k-means
def spherical_kmeans(
    x: torch.Tensor, k: int, seed: int, n_iter: int = _KMEANS_ITERS
) -> torch.Tensor:
    """Seeded spherical k-means++ of embeddings x (P, D) -> unit centres (k, D).

    Embeddings are L2-normalised; k-means++ seeding draws each next centre with probability
    proportional to its cosine distance 1 - cos to the nearest chosen centre; Lloyd iterations
    assign by the largest cosine and set each centre to the normalised mean of its members (an
    empty cluster takes the point farthest from its centre). With ``k = 1`` the centre is the
    direction of the mean unit embedding. Stops when assignments no longer change.
    """
    if k < 1:
        raise ConfigError(f"n_clusters must be >= 1, got {k}")
    if len(x) < k:
        raise DataError(f"cannot make {k} clusters from {len(x)} embeddings; lower n_clusters")
    unit = F.normalize(x.double(), dim=1, eps=1e-12)
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(len(unit), (1,), generator=generator))
    centres = unit[first : first + 1]
    dist = (1.0 - unit @ centres[0]).clamp_min(0.0)
    for _ in range(1, k):
        total = float(dist.sum())
        probs = dist / total if total > 0 else torch.full_like(dist, 1.0 / len(dist))
        pick = int(torch.multinomial(probs, 1, generator=generator))
        centres = torch.cat([centres, unit[pick : pick + 1]])
        dist = torch.minimum(dist, (1.0 - unit @ unit[pick]).clamp_min(0.0))
    assign: torch.Tensor | None = None
    for _ in range(n_iter):
        sim = unit @ centres.T  # (P, k)
        best, new_assign = sim.max(dim=1)
        if assign is not None and bool((new_assign == assign).all()):
            break
        assign = new_assign
        sums = torch.zeros_like(centres).index_add_(0, assign, unit)
        counts = torch.bincount(assign, minlength=k)
        for j in (counts == 0).nonzero().flatten().tolist():
            far = int(best.argmin())
            sums[j] = unit[far]
            best[far] = math.inf  # each empty cluster takes a different point
        centres = F.normalize(sums, dim=1, eps=1e-12)
    return centres.float()


# --------------------------------------------------------------------------- networks
def _pointwise_block(c_in: int, c_out: int) -> list[nn.Module]:
    """1x1 convolution, ReLU, BatchNorm (the paper's order, §3.2)."""
    return [nn.Conv2d(c_in, c_out, kernel_size=1), nn.ReLU(inplace=True), nn.BatchNorm2d(c_out)]


class CSEDecoder(nn.Module):
    """The frozen random decoder (§3.4): one branch per backbone stage.

    Branch l: 1x1 conv ``embed_dim -> C_l / 2`` + ReLU + BatchNorm, then a linear 1x1 conv to
    C_l; applied to the unpooled embedding (B, D, h, w) on the finest grid, its output is
    average-pooled to stage l's grid (h_l, w_l). Never trained: no gradients, and it stays in
    eval mode whatever ``train()`` asks (BatchNorm keeps its initial statistics).
    """

    def __init__(self, embed_dim: int, channels: tuple[int, ...], seed: int) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.branches = nn.ModuleList(
                nn.Sequential(
                    *_pointwise_block(embed_dim, max(1, c // 2)),
                    nn.Conv2d(max(1, c // 2), c, kernel_size=1),
                )
                for c in channels
            )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> CSEDecoder:
        return super().train(False)

    def forward(self, embedding: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """embedding (B, D, h, w) -> one (B, C_l, h_l, w_l) map per stage, (h_l, w_l) = sizes[l]."""
        out = []
        for branch, size in zip(self.branches, sizes, strict=True):
            decoded = branch(embedding)
            if tuple(decoded.shape[-2:]) != tuple(size):
                decoded = F.adaptive_avg_pool2d(decoded, size)
            out.append(decoded)
        return out


class CSEModule(AnomalyModule):
    """Frozen backbone + 1x1-conv embedder + 2x2 average pooling + cluster bank.

    ``forward(images (B, 3, H, W) in [0, 1]) -> (scores (B,), maps (B, H, W))``; the bank
    ``centres`` (k, embed_dim) holds unit vectors (a buffer, saved with the model).
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        smoothing_sigma: float,
        embed_dim: int,
        n_clusters: int,
        image_score: str,
    ) -> None:
        super().__init__(extractor, smoothing_sigma, image_score=image_score)
        c = sum(extractor.channels)
        self.embed_dim = embed_dim
        self.embedder = nn.Sequential(  # C -> C/2 -> C/4 -> D, §3.2
            *_pointwise_block(c, max(1, c // 2)),
            *_pointwise_block(max(1, c // 2), max(1, c // 4)),
            *_pointwise_block(max(1, c // 4), embed_dim),
        )
        self.register_buffer("centres", torch.zeros(n_clusters, embed_dim))

    @staticmethod
    def pool(embedding: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (B, D, h // 2, w // 2): the 2x2 average pooling (smoothing, §3.2)."""
        return F.avg_pool2d(embedding, kernel_size=2, stride=2)

    def embed(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage maps -> (unpooled (B, D, h, w), pooled (B, D, h // 2, w // 2)) embeddings."""
        unpooled = self.embedder(concat_on_finest_grid(features))  # §3.2
        return unpooled, self.pool(unpooled)

    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> pooled embeddings (B, D, h', w')."""
        return self.embed(self.extractor(images))[1]

    def distances(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D, h', w') -> (B, 1, h', w'): 1 - cos to the nearest centre (§3.5)."""
        unit = F.normalize(pooled, dim=1, eps=1e-8)
        sim = torch.einsum("bdhw,kd->bkhw", unit, self.centres)
        return 1.0 - sim.amax(dim=1, keepdim=True)

    def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.distances(self.embeddings(images))


# --------------------------------------------------------------------------- detector
@dataclass
class _Pairs:
    """Cached backbone features of the first and second images of fixed pairs."""

    first: list[torch.Tensor]
    second: list[torch.Tensor]
    damaged: torch.Tensor  # (N,) bool
    masks: torch.Tensor  # (N, 1, H, W) float


@register_model
class CSE(TrainedDetector):
    """CSE: contrastively trained 1x1-conv embedder on deep features, cosine distance to
    k-means centres of the training embeddings; see the module docstring.

    Args:
        embed_dim: embedding channels (paper 64).
        n_clusters: k-means centres in the bank (paper 1 = the mean embedding direction).
        texture_dir: folder of texture images for the synthetic texture defects (e.g. DTD,
            ``../shared/datasets/dtd``); ``None`` = built-in procedural textures (no download).
        damage_probability: chance that a training pair's second image is a damaged copy
            (paper 0.5).
        damaged_positions: ``"all"`` (default) or ``"mask"``: where the damaged-pair term of
            the contrastive loss applies (see the module docstring).
        contrastive_weight: lambda of eq. 6, total = lambda * contrastive + decoder (paper 10).
        epochs: training epochs (CPU default; the paper's schedule is ``PAPER_SCHEDULE``). An
            epoch costs about one backbone forward and one defect synthesis per damaged
            training image; the defect-free features are computed once at the start.
        train_batch_size: pairs per Adam step (paper 8).
        lr, betas, weight_decay: Adam (paper 4e-4, (0.5, 0.999), 1e-5); ``lr`` is the one-cycle
            schedule's maximum.
        validation_fraction: share of the training images held out to select the epoch with
            the lowest validation loss (paper 0.3); 0 keeps the last epoch.
        image_score: ``"mean"`` of the per-position distances (paper) or ``"max"`` of the
            smoothed map (flawmap convention).
        **common: see :class:`~flawmap.models.base.Detector` (default stages: strides 16, 32).
    """

    name = "cse"
    default_strides = (16, 32)
    embed_dim: int = param(64, Int(1))
    n_clusters: int = param(1, Int(1))
    texture_dir: str | None = param(None, NoneOr(Text("a folder path (str)")))
    damage_probability: float = param(0.5, Real(0.0, 1.0))
    damaged_positions: str = param("all", OneOf(*DAMAGED_POSITIONS))
    contrastive_weight: float = param(10.0, Real(0.0))
    epochs: int = param(20)
    train_batch_size: int = param(8)
    lr: float = param(4e-4, Real(0.0, low_open=True))
    betas: tuple[float, float] = param((0.5, 0.999), Seq(Real(0.0, 1.0, high_open=True), length=2))
    weight_decay: float = param(1e-5, Real(0.0))
    validation_fraction: float = param(0.3, Real(0.0, 1.0, high_open=True))
    image_score: str = param("mean", OneOf(*IMAGE_SCORES))
    decoder_: CSEDecoder | None = None
    #: The seed paper's schedule (§4.1), for ``--param epochs=100`` style reproduction.
    PAPER_SCHEDULE: ClassVar[dict[str, object]] = {
        "epochs": 100,
        "train_batch_size": 8,
        "lr": 4e-4,
        "betas": (0.5, 0.999),
        "weight_decay": 1e-5,
        "validation_fraction": 0.3,
        "contrastive_weight": 10.0,
        "embed_dim": 64,
        "n_clusters": 1,
        "image_size": 224,
    }

    def _build_module(self, weights: str) -> CSEModule:
        extractor = self.make_extractor(weights, truncate=True)
        h, w = self.transform.output_size
        stride = extractor.strides[0]
        if h // stride < 2 or w // stride < 2:
            raise ConfigError(
                f"image size {h}x{w} gives a {h // stride}x{w // stride} grid at stride {stride}; "
                f"cse needs at least 2x2 cells (2x2 pooling): use image_size >= {2 * stride}"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return CSEModule(
                extractor, self.smoothing_sigma, self.embed_dim, self.n_clusters, self.image_score
            )

    # ------------------------------------------------------------------ training
    def pair_loss(
        self,
        module: CSEModule,
        decoder: CSEDecoder,
        first: list[torch.Tensor],
        second: list[torch.Tensor],
        damaged: torch.Tensor,
        masks: torch.Tensor,
    ) -> torch.Tensor:
        """Total loss (eq. 6) of a batch of pairs given their backbone features.

        ``first``/``second``: per stage (B, C_l, h_l, w_l); ``damaged`` (B,) bool; ``masks``
        (B, 1, H, W) the synthetic defect masks (zeros for defect-free pairs).
        """
        b = len(damaged)
        # One embedder pass over both images so BatchNorm sees them together.
        both = [torch.cat([f1, f2]) for f1, f2 in zip(first, second, strict=True)]
        unpooled, pooled = module.embed(both)
        e1, e2 = pooled[:b], pooled[b:]
        if self.damaged_positions == "all":
            labels = damaged.float().view(b, 1, 1)
        else:  # damaged term only where the pooled cell overlaps the defect mask
            cells = F.adaptive_max_pool2d(masks, tuple(e1.shape[-2:]))[:, 0]
            labels = cells * damaged.float().view(b, 1, 1)
        contrastive = contrastive_cosine_loss(e1, e2, labels)
        sizes = [tuple(f.shape[-2:]) for f in first]
        reconstruction = decoder_loss(decoder(unpooled[:b], sizes), first)
        return self.contrastive_weight * contrastive + reconstruction

    def _damage(
        self,
        images: torch.Tensor,
        damaged: torch.Tensor,
        synthesizer: DefectSynthesizer,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Damaged copies of ``images[damaged]`` (K, 3, H, W) and their masks (B, 1, H, W)."""
        masks = torch.zeros(len(images), 1, *images.shape[-2:])
        copies, masks[damaged] = synthesizer.apply(images[damaged].float(), generator)
        return copies, masks

    def _validation_pairs(
        self,
        extract: Callable[[torch.Tensor], list[torch.Tensor]],
        first: list[torch.Tensor],
        images: torch.Tensor,
        synthesizer: DefectSynthesizer,
    ) -> _Pairs:
        """Fixed validation pairs of the validation images (N, 3, H, W) with features ``first``,
        drawn from their own seeded stream; the damaged copies' features (``extract``, the
        frozen backbone) are computed once."""
        generator = torch.Generator().manual_seed(self.seed + _VALIDATION_SEED_OFFSET)
        n = len(images)
        damaged = torch.rand(n, generator=generator) < self.damage_probability
        partner = _partners(torch.arange(n), n, generator)
        second = [f[partner].clone() for f in first]
        copies, masks = self._damage(images, damaged, synthesizer, generator)
        if len(copies):
            for s, f in enumerate(extract(copies)):
                second[s][damaged] = f
        return _Pairs(first, second, damaged, masks)

    @torch.no_grad()
    def _validation_loss(self, module: CSEModule, decoder: CSEDecoder, pairs: _Pairs) -> float:
        """Mean total loss of the fixed validation pairs (call with the embedder in eval mode)."""
        total, n = 0.0, len(pairs.damaged)
        for start in range(0, n, self.train_batch_size):
            sl = slice(start, start + self.train_batch_size)
            loss = self.pair_loss(
                module,
                decoder,
                [f[sl] for f in pairs.first],
                [f[sl] for f in pairs.second],
                pairs.damaged[sl],
                pairs.masks[sl],
            )
            total += float(loss) * len(pairs.damaged[sl])
        return total / n

    def _fit_module(self, module: AnomalyModule, data: Dataset, progress: bool) -> None:
        if not isinstance(module, CSEModule):
            raise TypeError(f"{self.name} fits a CSEModule")
        n = len(data)
        if n < 1:
            raise DataError("no training images")
        if self.validation_fraction > 0 and n < 2:
            raise DataError(
                f"cse holds out {self.validation_fraction:.0%} of the training images for "
                f"checkpoint selection and needs at least 2 images, got {n} "
                "(add images or set validation_fraction=0)"
            )
        synthesizer = DefectSynthesizer(self.texture_dir)
        # The frozen backbone runs once per defect-free image (features cached); only the
        # damaged copies go through it later. Images stay in memory as float16 (exact to
        # ~2e-4) for the synthetic defects.
        cache = collect_features(
            self, data, module.extractor, progress=progress, desc="cse: features", keep_images=True
        )
        images, features = cache.images, cache.features
        if images is None:
            raise DataError("no training images")
        train_idx, val_idx = split_holdout(n, self.validation_fraction, self.seed)
        train_sel, val_sel = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
        train_images = images[train_sel]
        train_feats = [f[train_sel] for f in features]
        val_pairs = (
            self._validation_pairs(
                cache.extract, [f[val_sel] for f in features], images[val_sel], synthesizer
            )
            if len(val_idx)
            else None
        )
        decoder = CSEDecoder(
            self.embed_dim, module.extractor.channels, self.seed + _DECODER_SEED_OFFSET
        )
        self.decoder_ = decoder
        n_train = len(train_images)
        steps_per_epoch = math.ceil(n_train / self.train_batch_size)
        optimizer = torch.optim.Adam(
            module.embedder.parameters(),  # the decoder is never optimised
            lr=self.lr,
            betas=(float(self.betas[0]), float(self.betas[1])),
            weight_decay=self.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.lr,
            total_steps=self.epochs * steps_per_epoch,
            cycle_momentum=False,  # keep Adam's betas (0.5, 0.999)
        )

        def step(indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            damaged = torch.rand(len(indices), generator=generator) < self.damage_probability
            partner = _partners(indices, n_train, generator)
            first = [f[indices] for f in train_feats]
            second = [f[partner].clone() for f in train_feats]
            copies, masks = self._damage(train_images[indices], damaged, synthesizer, generator)
            if len(copies):
                for s, f in enumerate(cache.extract(copies)):
                    second[s][damaged] = f
            return self.pair_loss(module, decoder, first, second, damaged, masks)

        # Checkpoint: the embedder of the first epoch with the lowest validation loss.
        checkpoint = (
            BestOnValidation(
                module.embedder, lambda: self._validation_loss(module, decoder, val_pairs)
            )
            if val_pairs is not None
            else None
        )
        self.history_ = self._train(
            module,
            step,
            [optimizer],
            n_train,
            progress,
            schedules=[Schedule(scheduler, every="step")],
            checkpoint=checkpoint,
        )
        self._fit_bank(module, train_feats, val_pairs)

    @torch.no_grad()
    def _fit_bank(
        self, module: CSEModule, train_feats: list[torch.Tensor], val_pairs: _Pairs | None
    ) -> None:
        """k-means centres of the pooled embeddings of every training image (train + val)."""
        module.eval()
        feats = train_feats
        if val_pairs is not None:
            feats = [torch.cat([a, b]) for a, b in zip(train_feats, val_pairs.first, strict=True)]
        pooled = torch.cat(
            [
                module.embed([f[i : i + self.batch_size] for f in feats])[1]
                for i in range(0, len(feats[0]), self.batch_size)
            ]
        )
        flat = pooled.permute(0, 2, 3, 1).reshape(-1, pooled.shape[1])
        centres = spherical_kmeans(flat, self.n_clusters, self.seed)
        module.centres.copy_(centres)


def _partners(indices: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """For each index, another random index in [0, n) (itself only when n == 1)."""
    if n < 2:
        return indices.clone()
    shift = torch.randint(1, n, (len(indices),), generator=generator)
    return (indices + shift) % n
