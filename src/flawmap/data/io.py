"""Listing and reading image and mask files.

Images always come back as 8-bit RGB :class:`PIL.Image.Image`; masks as ``bool`` arrays of shape
``(H, W)``. Every failure raises :class:`flawmap.errors.DataError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from flawmap.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "is_image_file",
    "list_images",
    "load_image",
    "load_mask",
    "to_rgb",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)
"""Lower-case file suffixes treated as images (matched case-insensitively)."""

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a visible file with an image extension (case-insensitive)."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in ``folder`` (not recursive), sorted by name; hidden files skipped.

    Raises:
        DataError: ``folder`` does not exist or is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise DataError(f"image folder {folder} {what}")
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def _open(path: Path, kind: str) -> Image.Image:
    """Open and fully decode ``path``; any failure becomes a DataError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()  # ``close`` on leaving the block invalidates ``im`` itself
    except FileNotFoundError:
        raise DataError(f"{kind} file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{kind} path {path} is a directory, not a file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read {kind} file {path}: {exc}") from exc


def _sixteen_bit_to_l(im: Image.Image) -> Image.Image:
    """Scale a 16-bit (or 32-bit integer) grayscale image to 8-bit ``L`` (full 16-bit range)."""
    arr = np.asarray(im, dtype=np.float64)
    arr = np.clip(arr / 257.0, 0.0, 255.0)
    return Image.fromarray(np.rint(arr).astype(np.uint8), mode="L")


def _float_to_l(im: Image.Image) -> Image.Image:
    """Scale a float image to 8-bit: [0, 1] data x 255, otherwise 8- or 16-bit ranges."""
    arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(arr.max()) if arr.size else 0.0
    scale = 255.0 if peak <= 1.0 else (1.0 if peak <= 255.0 else 1.0 / 257.0)
    return Image.fromarray(np.rint(np.clip(arr * scale, 0.0, 255.0)).astype(np.uint8), mode="L")


def to_rgb(im: Image.Image, path: str | os.PathLike[str] | None = None) -> Image.Image:
    """Convert a PIL image of any mode to 3-channel 8-bit RGB (alpha is dropped).

    16-bit data is scaled from its full range, float data from [0, 1]; ``path`` is only used in
    error messages.
    """
    if im.mode == "RGB":
        return im
    if im.mode in _SIXTEEN_BIT_MODES:
        im = _sixteen_bit_to_l(im)
    elif im.mode == "F":
        im = _float_to_l(im)
    elif im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        where = f"image {path}" if path is not None else "image"
        raise DataError(f"cannot convert {where} (mode {im.mode}) to RGB: {exc}") from exc


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Read an image file as 8-bit RGB.

    Grayscale, palette, RGBA (alpha dropped), 16-bit and float images are converted to 3 channels.

    Raises:
        DataError: the file is missing or cannot be decoded; the message names it.
    """
    path = Path(path)
    return to_rgb(_open(path, "image"), path)


def load_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a mask file as a ``bool`` array of shape ``(H, W)``.

    A pixel is foreground when ``value / max_value >= 0.5``, where ``max_value`` is the maximum of
    the file's sample type (255 for 8-bit, 65535 for 16-bit), so 0/255 masks are true at >= 128.
    Colour and palette masks use the largest channel; an alpha channel is ignored.

    Raises:
        DataError: the file is missing or cannot be decoded; the message names it.
    """
    path = Path(path)
    im = _open(path, "mask")
    if im.mode == "1":
        return np.array(im, dtype=bool)
    if im.mode == "L":
        arr, max_value = np.asarray(im), 255.0
    elif im.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(im)
        max_value = 65535.0 if (arr.size == 0 or arr.max() <= 65535) else float(2**31 - 1)
    elif im.mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0)
        peak = float(arr.max()) if arr.size else 0.0
        max_value = 1.0 if peak <= 1.0 else (255.0 if peak <= 255.0 else 65535.0)
    elif im.mode == "LA":
        arr, max_value = np.asarray(im)[..., 0], 255.0
    else:
        try:
            rgb = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA") else im.convert("RGB")
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot convert mask {path} (mode {im.mode}): {exc}") from exc
        arr, max_value = np.asarray(rgb).max(axis=2), 255.0
    return np.ascontiguousarray(arr.astype(np.float64) / max_value >= 0.5)
