"""Shared post-processing: upsample a patch-score map, smooth it, score the image, threshold."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flawmap import kernels
from flawmap.errors import ConfigError


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of length 2 * round(4 sigma) + 1 (the anomalib/PatchCore size)."""
    radius = int(4.0 * sigma + 0.5)
    return kernels.gaussian_kernel1d(2 * radius + 1, sigma)


#: A model's own image score: (raw patch scores (B, 1, h, w), final maps (B, H, W)) -> (B,).
ImageScore = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
IMAGE_SCORES = ("max", "mean")


class AnomalyMapPostprocessor(nn.Module):
    """Raw patch scores (B, 1, h, w) -> smoothed maps (B, H, W) and image scores (B,).

    The map is upsampled to the input size (H, W), bilinearly or by the model's ``upsample``
    module given to :meth:`forward`, and smoothed with a separable Gaussian of standard
    deviation ``sigma`` pixels (reflect padding; ``sigma = 0`` disables smoothing).

    ``image_score``:

    - ``"max"`` (default): the maximum of the smoothed map, so an image is flagged exactly when
      some pixel of its map reaches the threshold and ``Prediction.masks()`` (map >= threshold)
      marks a region in every flagged image and in no other;
    - ``"mean"``: the mean of the raw patch scores (B, 1, h, w) over positions (e.g. CSE's paper
      score). The threshold is then learned on mean scores, which lie below a good image's
      largest map values, so ``Prediction.masks()`` marks every pixel above a good image's
      typical *mean* score: it over-segments and may mark pixels of unflagged images;
    - a callable ``(raw (B, 1, h, w), maps (B, H, W)) -> (B,)``: the model's own score (same
      caveat for ``masks()``).
    """

    def __init__(self, sigma: float = 4.0, image_score: str | ImageScore = "max") -> None:
        super().__init__()
        if sigma < 0 or not math.isfinite(sigma):
            raise ConfigError(f"smoothing sigma must be a finite number >= 0, got {sigma}")
        if not callable(image_score) and image_score not in IMAGE_SCORES:
            raise ConfigError(
                f"image_score must be one of {', '.join(IMAGE_SCORES)} or a callable, "
                f"got {image_score!r}"
            )
        self.sigma = float(sigma)
        self.image_score = image_score
        kernel = gaussian_kernel1d(sigma) if sigma > 0 else torch.ones(1)
        self.register_buffer("kernel", kernel, persistent=False)
        self._operators: dict[tuple[int, int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def operators(
        self, low: tuple[int, int], size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A_h (H, h), A_w (w, W))`` with ``A_h @ M @ A_w`` = :meth:`smooth` of the bilinear
        resize of a map ``M`` (h, w) to ``size`` (H, W).

        Both steps are linear and separable, so each axis is one matrix: the response of the
        reference ops to every basis vector, computed once per shape (in float64).
        """
        key = (*low, *size)
        if key not in self._operators:
            (h, w), (height, width) = low, size
            eye_h = torch.eye(h, dtype=torch.float64).view(h, 1, h, 1)
            eye_w = torch.eye(w, dtype=torch.float64).view(w, 1, 1, w)
            rows = self.smooth(F.interpolate(eye_h, size=(height, 1), mode="bilinear"))
            cols = self.smooth(F.interpolate(eye_w, size=(1, width), mode="bilinear"))
            self._operators[key] = (
                rows.view(h, height).T.contiguous().float(),
                cols.view(w, width).contiguous().float(),
            )
        return self._operators[key]

    def smooth(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, 1, H, W) Gaussian-smoothed."""
        if self.sigma == 0:
            return maps
        k = self.kernel.to(maps.dtype)
        pad = k.numel() // 2
        out = F.pad(maps, (pad, pad, 0, 0), mode="reflect" if maps.shape[-1] > pad else "replicate")
        out = F.conv2d(out, k.view(1, 1, 1, -1))
        out = F.pad(out, (0, 0, pad, pad), mode="reflect" if maps.shape[-2] > pad else "replicate")
        return F.conv2d(out, k.view(1, 1, -1, 1))

    def forward(
        self,
        patch_scores: torch.Tensor,
        output_size: tuple[int, int],
        upsample: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """patch_scores (B, 1, h, w) -> (image scores (B,), maps (B, H, W)).

        ``upsample(patch_scores, output_size) -> (B, 1, H, W)`` replaces the bilinear
        upsampling; a bilinear resize to the same size follows it and leaves it unchanged.
        Resize and smoothing run as two matrix products (:meth:`operators`).
        """
        maps = patch_scores if upsample is None else upsample(patch_scores, output_size)
        low = (int(maps.shape[-2]), int(maps.shape[-1]))
        rows, cols = self.operators(low, (int(output_size[0]), int(output_size[1])))
        maps = torch.matmul(torch.matmul(rows, maps[:, 0].float()), cols)
        if self.image_score == "max":
            scores = maps.amax(dim=(1, 2))
        elif self.image_score == "mean":
            scores = patch_scores.mean(dim=(1, 2, 3))
        else:
            scores = self.image_score(patch_scores, maps)
        return scores, maps


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
