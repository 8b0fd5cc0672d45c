"""Listing and reading image and mask files: the one place flawmap opens them.

Images always come back as 8-bit RGB :class:`PIL.Image.Image`; masks as ``bool`` arrays of shape
``(H, W)``. Both are returned in their *displayed* orientation: an EXIF orientation tag (cameras,
phones) is applied, as every image viewer does. Before any pixel is decoded, the header's size is
checked against a pixel limit (:func:`max_pixels`, environment variable ``FLAWMAP_MAX_PIXELS``)
and images must be at least :data:`MIN_IMAGE_SIDE` pixels on each side. Every failure raises
:class:`flawmap.errors.DataError` naming the file.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from flawmap.errors import ConfigError, DataError, FlawmapWarning

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS_ENV",
    "MIN_IMAGE_SIDE",
    "image_shape",
    "is_image_file",
    "list_images",
    "load_image",
    "load_mask",
    "max_pixels",
    "set_max_pixels",
    "to_rgb",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)
"""Lower-case file suffixes treated as images (matched case-insensitively)."""

MIN_IMAGE_SIDE = 16
"""Smallest accepted image height and width in pixels; smaller images carry no usable texture."""

DEFAULT_MAX_PIXELS = 50_000_000
"""Default pixel limit (width x height) of one image or mask file: 50 megapixels."""

MAX_PIXELS_ENV = "FLAWMAP_MAX_PIXELS"
"""Environment variable that overrides :data:`DEFAULT_MAX_PIXELS` (a positive integer)."""

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

# EXIF orientation -> the transpose that shows the stored pixels as displayed.
_ORIENTATION_FIX: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_max_pixels_override: int | None = None


def _check_limit(value: object, source: str) -> int:
    """A pixel limit as a positive int; ConfigError naming ``source`` otherwise."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(
                f"{source} must be a positive whole number of pixels (e.g. 100000000), got {text!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{source} must be a positive whole number of pixels, got {value!r}")
    return int(value)


def max_pixels() -> int:
    """The largest image (width x height, in pixels) flawmap reads.

    :func:`set_max_pixels` wins; otherwise the environment variable ``FLAWMAP_MAX_PIXELS``;
    otherwise :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        ConfigError: ``FLAWMAP_MAX_PIXELS`` is set but is not a positive integer.
    """
    if _max_pixels_override is not None:
        return _max_pixels_override
    env = os.environ.get(MAX_PIXELS_ENV)
    if env is None or not env.strip():
        return DEFAULT_MAX_PIXELS
    return _check_limit(env, f"environment variable {MAX_PIXELS_ENV}")


def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit of :func:`max_pixels` for this process; ``None`` restores the default.

    Raises:
        ConfigError: ``limit`` is not a positive integer.
    """
    global _max_pixels_override
    _max_pixels_override = None if limit is None else _check_limit(limit, "the pixel limit")


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


def _too_large(kind: str, path: Path, size: str, limit: int) -> DataError:
    return DataError(
        f"{kind} file {path} is {size}, above the limit of {limit} pixels "
        f"({limit / 1e6:g} megapixels). If the file is genuine, raise the limit with the "
        f"environment variable {MAX_PIXELS_ENV}=<pixels> or flawmap.data.set_max_pixels(<pixels>)"
    )


def _orientation(im: Image.Image) -> Image.Transpose | None:
    """The transpose that the file's EXIF orientation tag asks for (None: stored as displayed).

    Damaged EXIF data gives a warning and the stored orientation.
    """
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError, KeyError, IndexError, TypeError, struct.error) as e:
        warnings.warn(f"damaged EXIF data ({e or type(e).__name__})", stacklevel=2)
        return None
    return _ORIENTATION_FIX.get(value) if isinstance(value, int) else None


def _decode(path: Path, kind: str, limit: int) -> Image.Image:
    """Header checks, decoding and EXIF orientation of one file (see :func:`_open`)."""
    # Our own file object: Pillow's memory-mapped reading of a path mis-sizes some uncompressed
    # TIFFs with an orientation tag; decoding from a file object does not.
    with open(path, "rb") as file, Image.open(file) as im:
        width, height = im.size
        if width * height > limit:
            size = f"{width}x{height} pixels (W x H, {width * height / 1e6:.1f} megapixels)"
            raise _too_large(kind, path, size, limit)
        if kind == "image" and min(width, height) < MIN_IMAGE_SIDE:
            raise DataError(
                f"image file {path} is only {width}x{height} pixels (W x H); flawmap needs at "
                f"least {MIN_IMAGE_SIDE} pixels on each side"
            )
        # EXIF is parsed while the file is open (TIFF reads it from the file); a plugin that
        # applies the orientation itself while decoding removes the tag, so ask again after.
        fix = _orientation(im)
        im.load()  # leaving the block closes the file; the decoded pixels stay valid
        if fix is not None:
            fix = _orientation(im)
    return im.transpose(fix) if fix is not None else im


_SWAPS_SIDES = {
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
}


def image_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(H, W)`` of an image file as :func:`load_image` would return it (EXIF orientation
    applied), read from its header without decoding the pixels.

    Raises:
        DataError: the file cannot be read as an image.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(path, "rb") as file, Image.open(file) as im:
                width, height = im.size
                fix = _orientation(im)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image file {path}: {exc}") from exc
    return (width, height) if fix in _SWAPS_SIDES else (height, width)


def _open(path: Path, kind: str) -> Image.Image:
    """Open ``path``, check its header size, decode it and apply its EXIF orientation.

    Any failure becomes a DataError naming the file. The pixel limit is checked before decoding;
    Pillow's own decompression-bomb guard is kept no stricter than it and its warning dropped
    (flawmap refuses those files itself); Pillow's other warnings about the file (such as
    damaged EXIF data) become one :class:`~flawmap.errors.FlawmapWarning` each, naming it.
    """
    limit = max_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            im = _decode(path, kind, limit)
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise _too_large(kind, path, f"over {2 * Image.MAX_IMAGE_PIXELS} pixels", limit) from None
    except FileNotFoundError:
        raise DataError(f"{kind} file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{kind} path {path} is a directory, not a file") from None
    except UnidentifiedImageError as exc:
        raise DataError(
            f"cannot read {kind} file {path}: not an image in a format Pillow can decode "
            f"(empty, damaged, or not really a {path.suffix or 'image'} file)"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read {kind} file {path}: {exc}") from exc
    for w in caught:
        if not issubclass(w.category, Image.DecompressionBombWarning):
            message = " ".join(str(w.message).split())
            warnings.warn(f"{kind} file {path}: {message}", FlawmapWarning, stacklevel=3)
    return im


def _sixteen_bit_to_l(im: Image.Image) -> Image.Image:
    """Scale a 16-bit (or 32-bit integer) grayscale image to 8-bit ``L`` (full 16-bit range)."""
    arr = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
    arr += 128
    arr //= 257  # == rint(value / 257) for integers (no ties)
    return Image.fromarray(arr.astype(np.uint8), mode="L")


def _float_to_l(im: Image.Image) -> Image.Image:
    """Scale a float image to 8-bit: [0, 1] data x 255, otherwise 8- or 16-bit ranges."""
    arr = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(arr.max()) if arr.size else 0.0
    scale = 255.0 if peak <= 1.0 else (1.0 if peak <= 255.0 else 1.0 / 257.0)
    arr *= scale
    np.clip(arr, 0.0, 255.0, out=arr)
    return Image.fromarray(np.rint(arr).astype(np.uint8), mode="L")


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
    """Read an image file as 8-bit RGB, in its displayed (EXIF) orientation.

    Grayscale, palette, RGBA (alpha dropped), 16-bit and float images are converted to 3 channels.

    Raises:
        DataError: the file is missing, cannot be decoded, has more than :func:`max_pixels`
            pixels or a side shorter than :data:`MIN_IMAGE_SIDE`; the message names it.
    """
    path = Path(path)
    return to_rgb(_open(path, "image"), path)


def _binarise(values: np.ndarray, full_range: float) -> np.ndarray:
    """The mask rule of :func:`load_mask` on one channel of sample range ``full_range``."""
    peak = values.max() if values.size else 0
    half = full_range / 2.0
    if peak < half:  # a label-index mask (0/1, 0/1/2, ...): every non-zero value is a defect
        return values > 0
    if np.issubdtype(values.dtype, np.integer):
        return values >= math.ceil(half)
    return values >= half


def load_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a mask file as a ``bool`` array of shape ``(H, W)``, in its displayed orientation.

    Any binary encoding is accepted. Let ``R`` be the largest value of the file's sample type
    (255 for 8-bit, 65535 for 16-bit; 1, 255 or 65535 for float masks, whichever first holds
    their largest value). If the mask's largest value is below ``R / 2`` it is a label-index mask
    (0/1, 0/1/2, 0/100, ...) and every non-zero pixel is a defect. Otherwise a pixel is a defect
    when its value is ``>= R / 2`` (>= 128 for 8-bit), which reads 0/255, 0/128/255 and
    anti-aliased or JPEG-blurred edges. Colour and palette masks use their largest channel; an
    alpha channel is ignored; 1-bit masks are read as they are.

    Raises:
        DataError: the file is missing, cannot be decoded or has more than :func:`max_pixels`
            pixels; the message names it.
    """
    path = Path(path)
    im = _open(path, "mask")
    if im.mode == "1":
        return np.array(im, dtype=bool)
    if im.mode == "L":
        arr, full_range = np.asarray(im), 255.0
    elif im.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(im)
        full_range = 65535.0 if (arr.size == 0 or arr.max() <= 65535) else float(2**31 - 1)
    elif im.mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(arr.max()) if arr.size else 0.0
        full_range = 1.0 if peak <= 1.0 else (255.0 if peak <= 255.0 else 65535.0)
    elif im.mode == "LA":
        arr, full_range = np.asarray(im)[..., 0], 255.0
    else:
        try:
            rgb = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA") else im.convert("RGB")
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot convert mask {path} (mode {im.mode}): {exc}") from exc
        arr, full_range = np.asarray(rgb).max(axis=2), 255.0
    return np.ascontiguousarray(_binarise(arr, full_range))
