"""PaDiM (Defard et al., ICPR 2021): per-position Gaussian of patch embeddings.

Each patch position (i, j) of the embedding grid gets a multivariate Gaussian N(mu_ij, Sigma_ij)
fitted on the good images (paper eq. 1: Sigma_ij = sample covariance + eps * I, eps = 0.01); a
test patch's score is its Mahalanobis distance M(x_ij) = sqrt((x - mu)^T Sigma^-1 (x - mu))
(eq. 2). The embedding concatenates backbone stages of strides 4, 8 and 16 (the paper's
ResNet layer1-3), upsampled (nearest) to the stride-4 grid, of which ``n_features`` channels are
kept, drawn at random with ``seed`` (the paper's random dimensionality reduction).
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
import torch
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits
from torch.utils.data import Dataset

from flawmap.backbones import FeatureExtractor
from flawmap.errors import ConfigError, DataError
from flawmap.interrupts import interrupt_safe
from flawmap.models.base import AnomalyModule, Detector, is_tracing, register_model
from flawmap.models.features import collect_features, concat_on_finest_grid
from flawmap.models.params import Int, Real, param


@interrupt_safe
@numba.njit(parallel=True, fastmath=True, cache=True)
def _mahalanobis_squared(delta: np.ndarray, inv_covariance: np.ndarray) -> np.ndarray:
    """delta (P, B, d), inv_covariance (P, d, d) -> (P, B) of delta^T Sigma^-1 delta (eq. 2).

    A compiled loop: P small (d x d) quadratic forms are far faster here than P tiny GEMMs.
    """
    n_pos, n_img, dim = delta.shape
    out = np.empty((n_pos, n_img), dtype=np.float32)
    for p in numba.prange(n_pos):
        for b in range(n_img):
            total = 0.0
            for i in range(dim):
                row = 0.0
                for j in range(dim):
                    row += inv_covariance[p, i, j] * delta[p, b, j]
                total += row * delta[p, b, i]
            out[p, b] = total
    return out


def invert_covariances(covariance: np.ndarray) -> np.ndarray:
    """(P, d, d) symmetric positive definite float64 -> (P, d, d) inverses, by Cholesky.

    One LAPACK call pair per position with BLAS limited to one thread (multi-threaded BLAS on
    many small matrices is an order of magnitude slower).
    """
    out = np.empty_like(covariance)
    with threadpool_limits(limits=1, user_api="blas"):
        for p, matrix in enumerate(covariance):
            factor, info = lapack.dpotrf(matrix, lower=1)
            if info != 0:
                raise ConfigError(
                    f"covariance at position {p} is not positive definite; raise covariance_eps"
                )
            inverse, _ = lapack.dpotri(factor, lower=1)
            out[p] = np.tril(inverse) + np.tril(inverse, -1).T
    return out


class PadimModule(AnomalyModule):
    """Backbone + channel subset + per-position Gaussians (buffers ``mean``, ``inv_covariance``)."""

    def __init__(
        self, extractor: FeatureExtractor, smoothing_sigma: float, n_features: int, seed: int
    ) -> None:
        super().__init__(extractor, smoothing_sigma)
        total = sum(extractor.channels)
        if not 1 <= n_features <= total:
            raise ConfigError(
                f"n_features must be in 1..{total} (the chosen stages have {total} channels), "
                f"got {n_features}"
            )
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(total, generator=generator)[:n_features].sort().values
        self.register_buffer("channel_index", index)
        self.register_buffer("mean", torch.zeros(0, n_features))  # (P, d)
        self.register_buffer("inv_covariance", torch.zeros(0, n_features, n_features))  # (P, d, d)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> embeddings (B, d, h, w) on the finest chosen grid."""
        maps = concat_on_finest_grid(self.extractor(images), mode="nearest")
        return maps.index_select(1, self.channel_index)

    def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.embed(images)
        b, _, h, w = emb.shape
        if self.mean.shape[0] != h * w:
            raise DataError(
                f"the model was fitted on a {self.mean.shape[0]}-position grid, these images give "
                f"{h}x{w}; use the image size the model was fitted with"
            )
        delta = emb.flatten(2).permute(2, 0, 1) - self.mean[:, None, :]  # (P, B, d)
        if is_tracing():  # the same quadratic form in graph ops, for export
            squared_t = ((delta @ self.inv_covariance) * delta).sum(-1)  # (P, B)
            return squared_t.clamp_min(0).sqrt().T.reshape(b, 1, h, w)
        squared = _within_torch_threads(
            _mahalanobis_squared,
            np.ascontiguousarray(delta.float().numpy()),
            self.inv_covariance.numpy(),
        )
        return torch.from_numpy(squared).clamp_min(0).sqrt().T.reshape(b, 1, h, w)


def _within_torch_threads(kernel: Callable[..., np.ndarray], *args: np.ndarray) -> np.ndarray:
    """Run a parallel numba ``kernel`` on as many threads as torch uses, and leave torch's
    thread count as it was.

    numba's OpenMP threading layer shares the OpenMP runtime with torch and sets its thread
    count to numba's own (all cores) on the first parallel call: without this, a process
    limited by ``OMP_NUM_THREADS=1`` ran torch on 2 threads after the first PaDiM prediction,
    and torch's results changed in the last bits with the thread count (same seed, different
    scores).
    """
    threads = torch.get_num_threads()
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(previous)
        torch.set_num_threads(threads)


@register_model
class Padim(Detector):
    """PaDiM detector. Image score = maximum of the smoothed Mahalanobis map.

    Args:
        n_features: channels kept from the concatenated stages (random subset, ``seed``).
        covariance_eps: the ``eps * I`` regulariser of each covariance (paper: 0.01).
        **common: see :class:`~flawmap.models.base.Detector`.
    """

    name = "padim"
    default_strides = (4, 8, 16)
    # n_features: the upper bound, the stages' channel count, is checked at build.
    n_features: int = param(100, Int(1))
    covariance_eps: float = param(0.01, Real(0.0))

    def _build_module(self, weights: str) -> PadimModule:
        return PadimModule(
            self.make_extractor(weights), self.smoothing_sigma, self.n_features, self.seed
        )

    @torch.inference_mode()
    def _fit_module(self, module: AnomalyModule, data: Dataset, progress: bool) -> None:
        if not isinstance(module, PadimModule):
            raise TypeError("PaDiM fits a PadimModule")
        if len(data) < 2:
            raise DataError("PaDiM needs at least 2 training images to estimate covariances")
        cache = collect_features(
            self,
            data,
            lambda x: module.embed(x).flatten(2).permute(0, 2, 1).contiguous(),  # (B, P, d)
            progress=progress,
            desc="padim: features",
        )
        embeddings = cache.features[0]  # (N, P, d) float32
        n, n_pos, dim = embeddings.shape
        mean = embeddings.double().mean(0)  # (P, d)
        covariance = torch.empty(n_pos, dim, dim, dtype=torch.float64)
        step = 256  # positions per chunk: bounded float64 copies
        for start in range(0, n_pos, step):
            centred = embeddings[:, start : start + step].double() - mean[start : start + step]
            centred = centred.permute(1, 0, 2)  # (Pc, N, d)
            covariance[start : start + step] = centred.transpose(1, 2) @ centred / (n - 1)
        covariance += self.covariance_eps * torch.eye(dim, dtype=torch.float64)  # eq. 1
        module.mean = mean.float()
        module.inv_covariance = torch.from_numpy(invert_covariances(covariance.numpy())).float()
