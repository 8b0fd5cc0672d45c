"""Deterministic resize (+ optional centre crop) applied identically to images and masks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from flawmap.data.io import to_rgb
from flawmap.errors import ConfigError

__all__ = [
    "ASPECT_MODES",
    "MAX_IMAGE_SIZE",
    "ImageTransform",
    "InputGeometry",
    "parse_tiling",
    "plan_geometry",
    "typical_aspect",
    "typical_size",
]

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


ASPECT_MODES = ("keep", "squeeze")
"""``aspect`` values: ``"keep"`` shapes an int ``image_size`` like the training images (a pixel
budget), ``"squeeze"`` resizes every image to a square."""

MAX_TILES_PER_SIDE = 4
"""The most tiles ``tiling="auto"`` puts along one side of an image."""

SQUARE_TOLERANCE = 0.01
"""A typical aspect ratio within this relative distance of 1 counts as square under ``"keep"``
(the image size is then exactly ``image_size`` x ``image_size``)."""


@dataclass(frozen=True)
class InputGeometry:
    """How a model sees its images: the resize target ``size`` = ``(H, W)`` and the grid of
    ``tiles`` = ``(rows, cols)`` its backbone runs on (``(1, 1)`` = the whole image at once).

    ``size`` is a multiple of ``tiles``; each tile is ``tile_size`` = ``(H / rows, W / cols)``.
    """

    size: tuple[int, int]
    tiles: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        (h, w), (rows, cols) = self.size, self.tiles
        if min(h, w, rows, cols) < 1 or h % rows or w % cols:
            raise ConfigError(f"image size {h}x{w} cannot be split into {rows}x{cols} tiles")
        if max(h, w) > MAX_IMAGE_SIZE:
            raise ConfigError(
                f"image size {h}x{w} ({rows}x{cols} tiles) is above the largest supported size "
                f"of {MAX_IMAGE_SIZE} pixels per side; choose a smaller image_size or tiling"
            )

    @property
    def tile_size(self) -> tuple[int, int]:
        (h, w), (rows, cols) = self.size, self.tiles
        return h // rows, w // cols

    def to_json(self) -> dict[str, list[int]]:
        return {"size": list(self.size), "tiles": list(self.tiles)}

    @classmethod
    def from_json(cls, value: Any) -> InputGeometry:
        """The inverse of :meth:`to_json` (ConfigError naming what is wrong)."""
        try:
            size, tiles = value["size"], value["tiles"]
            pairs = [(int(size[0]), int(size[1])), (int(tiles[0]), int(tiles[1]))]
            if len(size) != 2 or len(tiles) != 2:
                raise ValueError
        except (TypeError, KeyError, IndexError, ValueError):
            raise ConfigError(
                f"an input geometry must be {{'size': [H, W], 'tiles': [rows, cols]}}, "
                f"got {value!r}"
            ) from None
        return cls(pairs[0], pairs[1])


def parse_tiling(value: Any) -> str | tuple[int, int]:
    """``tiling`` option -> ``"off"``, ``"auto"`` or ``(rows, cols)`` (from ``"RxC"``).

    Raises:
        ConfigError: anything else, naming the accepted forms.
    """
    if value in ("off", "auto"):
        return str(value)
    if isinstance(value, str):
        parts = value.lower().split("x")
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            rows, cols = int(parts[0]), int(parts[1])
            if rows >= 1 and cols >= 1:
                return rows, cols
    raise ConfigError(
        f"tiling must be 'off', 'auto' or 'RxC' (tile rows x columns, e.g. '2x2'), got {value!r}"
    )


def typical_size(sizes: np.ndarray | list[tuple[int, int]]) -> tuple[float, float]:
    """Median ``(H, W)`` of original image sizes ``(N, 2)``."""
    arr = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    if len(arr) == 0:
        raise ConfigError("no image sizes to take a typical shape from")
    return float(np.median(arr[:, 0])), float(np.median(arr[:, 1]))


def typical_aspect(sizes: np.ndarray | list[tuple[int, int]]) -> float:
    """Median width / height of original image sizes ``(N, 2)`` (a median of log ratios, so
    tall and wide images count alike)."""
    arr = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    if len(arr) == 0:
        raise ConfigError("no image sizes to take a typical aspect ratio from")
    return float(np.exp(np.median(np.log(arr[:, 1] / arr[:, 0]))))


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def plan_geometry(
    image_size: Size,
    aspect: str,
    tiling: str | tuple[int, int],
    sizes: np.ndarray | list[tuple[int, int]] | None,
    multiple: int,
) -> InputGeometry:
    """The :class:`InputGeometry` of a model from its options and its training images' sizes.

    - tile size: an ``(H, W)`` ``image_size`` is used as given; an int ``S`` is a square under
      ``aspect="squeeze"`` (or without ``sizes``), and under ``"keep"`` a budget of ``S * S``
      pixels shaped like the typical (median) aspect ratio of ``sizes``, each side rounded to a
      ``multiple`` (the backbone's deepest stride); a typical ratio within ``SQUARE_TOLERANCE``
      of 1 gives exactly ``(S, S)``.
    - tiles: ``"off"`` = one; ``(rows, cols)`` as given; ``"auto"`` = as many tiles per side as
      the typical image size holds tile sides (rounded, 1 to ``MAX_TILES_PER_SIDE``), so images
      much larger than the budget are seen near their own resolution.

    Args:
        sizes: original ``(H0, W0)`` of the training images, ``(N, 2)``; None when unknown.
    """
    if aspect not in ASPECT_MODES:
        raise ConfigError(f"aspect must be one of {ASPECT_MODES}, got {aspect!r}")
    size = _normalise_size(image_size, "image_size", allow_none=False)
    if isinstance(size, tuple):
        tile = size
    elif aspect == "squeeze" or sizes is None:
        tile = (size, size)
    else:
        ratio = typical_aspect(sizes)  # W / H
        if abs(ratio - 1.0) <= SQUARE_TOLERANCE:
            tile = (size, size)
        else:
            root = math.sqrt(ratio)
            tile = (_round_to(size / root, multiple), _round_to(size * root, multiple))
    if tiling == "off":
        grid = (1, 1)
    elif tiling == "auto":
        if sizes is None:
            grid = (1, 1)
        else:
            h0, w0 = typical_size(sizes)
            grid = (
                min(MAX_TILES_PER_SIDE, max(1, round(h0 / tile[0]))),
                min(MAX_TILES_PER_SIDE, max(1, round(w0 / tile[1]))),
            )
    else:
        grid = tiling
    return InputGeometry((tile[0] * grid[0], tile[1] * grid[1]), grid)
