"""Shared post-processing: upsample a patch-score map, smooth it, score the image, threshold."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flawmap.errors import ConfigError


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of length 2 * round(4 sigma) + 1 (the anomalib/PatchCore size)."""
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


class AnomalyMapPostprocessor(nn.Module):
    """Raw patch scores (B, 1, h, w) -> smoothed maps (B, H, W) and image scores (B,).

    The map is upsampled bilinearly to the input size (H, W) and smoothed with a separable
    Gaussian of standard deviation ``sigma`` pixels (reflect padding; ``sigma = 0`` disables
    smoothing). The image score is the maximum of the smoothed map, so an image is flagged
    exactly when some pixel of its map reaches the threshold.
    """

    def __init__(self, sigma: float = 4.0) -> None:
        super().__init__()
        if sigma < 0 or not math.isfinite(sigma):
            raise ConfigError(f"smoothing sigma must be a finite number >= 0, got {sigma}")
        self.sigma = float(sigma)
        kernel = gaussian_kernel1d(sigma) if sigma > 0 else torch.ones(1)
        self.register_buffer("kernel", kernel, persistent=False)

    def smooth(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, 1, H, W) Gaussian-smoothed."""
        if self.sigma == 0:
            return maps
        k = self.kernel
        pad = k.numel() // 2
        out = F.pad(maps, (pad, pad, 0, 0), mode="reflect" if maps.shape[-1] > pad else "replicate")
        out = F.conv2d(out, k.view(1, 1, 1, -1))
        out = F.pad(out, (0, 0, pad, pad), mode="reflect" if maps.shape[-2] > pad else "replicate")
        return F.conv2d(out, k.view(1, 1, -1, 1))

    def forward(
        self, patch_scores: torch.Tensor, output_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """patch_scores (B, 1, h, w) -> (image scores (B,), maps (B, H, W))."""
        maps = F.interpolate(patch_scores, size=output_size, mode="bilinear", align_corners=False)
        maps = self.smooth(maps)[:, 0]
        return maps.amax(dim=(1, 2)), maps


def learn_threshold(holdout_scores: np.ndarray, quantile: float) -> float:
    """Image-score threshold from good images never used for fitting: their ``quantile``.

    With ``quantile = 1`` the threshold is the largest held-out good score (no held-out good
    image is flagged). Linear interpolation between order statistics (numpy's default).
    """
    if holdout_scores.size == 0:
        raise ConfigError("no held-out good images to learn a threshold from")
    if not 0.0 < quantile <= 1.0:
        raise ConfigError(f"threshold_quantile must be in (0, 1], got {quantile}")
    return float(np.quantile(holdout_scores.astype(np.float64), quantile))
