"""Deterministic resize (+ optional centre crop) applied identically to images and masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from flawmap.data.io import to_rgb
from flawmap.errors import ConfigError

__all__ = ["MAX_IMAGE_SIZE", "ImageTransform"]

Size = int | tuple[int, int]

MAX_IMAGE_SIZE = 4096
"""Largest accepted ``image_size`` / ``center_crop`` side in pixels; beyond it the feature maps
of one batch no longer fit in a workstation's memory."""


def _normalise_size(value: Any, name: str, allow_none: bool) -> Size | None:
    """Validate a size option: an int in [1, MAX_IMAGE_SIZE] or an ``(H, W)`` pair of them
    (lists become tuples)."""
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{name} must be a positive int or an (H, W) pair, got None")
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a positive int or an (H, W) pair, got {value!r}")
    if isinstance(value, int | np.integer):
        sides: tuple[int, ...] = (int(value),)
    elif (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)
    ):
        sides = (int(value[0]), int(value[1]))
    else:
        raise ConfigError(f"{name} must be a positive int or an (H, W) pair, got {value!r}")
    if min(sides) <= 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    if max(sides) > MAX_IMAGE_SIZE:
        raise ConfigError(
            f"{name} {value!r} is above the largest supported size of {MAX_IMAGE_SIZE} pixels "
            "per side; choose a smaller size"
        )
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def _as_pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


@dataclass(frozen=True)
class ImageTransform:
    """Resize images and masks to a fixed size, then optionally centre-crop them.

    Args:
        image_size: resize target; an int gives a square ``(S, S)``, a tuple is ``(H, W)``.
        center_crop: optional crop size (int or ``(H, W)``) taken from the centre after resizing;
            must not exceed ``image_size``.

    Images become float32 tensors in [0, 1] without mean/std normalisation (the backbone does it).
    """

    image_size: Size = 256
    center_crop: Size | None = None

    def __post_init__(self) -> None:
        size = _normalise_size(self.image_size, "image_size", allow_none=False)
        crop = _normalise_size(self.center_crop, "center_crop", allow_none=True)
        object.__setattr__(self, "image_size", size)
        object.__setattr__(self, "center_crop", crop)
        if crop is not None:
            (h, w), (ch, cw) = _as_pair(size), _as_pair(crop)
            if ch > h or cw > w:
                raise ConfigError(
                    f"center_crop {(ch, cw)} is larger than image_size {(h, w)} (H, W)"
                )

    @property
    def resize_size(self) -> tuple[int, int]:
        """``(H, W)`` after resizing, before the optional crop."""
        return _as_pair(self.image_size)  # type: ignore[arg-type]

    @property
    def output_size(self) -> tuple[int, int]:
        """``(H, W)`` of the tensors this transform returns."""
        if self.center_crop is None:
            return self.resize_size
        return _as_pair(self.center_crop)

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        """Centre crop of a ``(C, H, W)`` tensor to :attr:`output_size` (no-op without a crop)."""
        if self.center_crop is None:
            return x
        (h, w), (ch, cw) = x.shape[-2:], self.output_size
        top, left = (h - ch) // 2, (w - cw) // 2
        return x[..., top : top + ch, left : left + cw].contiguous()

    def image(self, pil: Image.Image) -> torch.Tensor:
        """PIL image (any mode) -> float32 tensor ``(3, H, W)`` in [0, 1].

        Bilinear resize with antialiasing, then the optional centre crop.
        """
        if not isinstance(pil, Image.Image):
            raise TypeError(f"ImageTransform.image expects a PIL image, got {type(pil).__name__}")
        if pil.mode != "RGB":
            pil = to_rgb(pil)
        # One float32 copy of the pixels (no intermediate uint8 copy), (H, W, 3) -> (3, H, W).
        x = torch.from_numpy(np.asarray(pil, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
        if tuple(x.shape[-2:]) != self.resize_size:
            x = F.interpolate(
                x.unsqueeze(0),
                size=self.resize_size,
                mode="bilinear",
                align_corners=False,
                antialias=True,
            ).squeeze(0)
            x = x.clamp_(0.0, 1.0)
        return self._crop(x)

    def mask(self, mask: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Mask ``(H, W)`` (bool or numeric) -> float32 tensor ``(1, H, W)`` of {0., 1.}.

        Nearest-neighbour resize, binarised at 0.5, then the same centre crop as :meth:`image`.
        """
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.ndim != 2:
            raise ValueError(f"mask must have shape (H, W), got {tuple(m.shape)}")
        m = m.to(torch.float32)[None, None]
        if tuple(m.shape[-2:]) != self.resize_size:
            m = F.interpolate(m, size=self.resize_size, mode="nearest-exact")
        return self._crop((m[0] >= 0.5).to(torch.float32))
