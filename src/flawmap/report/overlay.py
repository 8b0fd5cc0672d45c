"""Heatmap colouring, overlays, panel strips and image/TIFF writing (numpy + Pillow only).

Colour maps are 256-entry lookup tables built here in numpy (no matplotlib):

* ``"jet"`` follows matplotlib's piecewise-linear ``jet`` definition exactly.
* ``"inferno"`` is an *approximation* of matplotlib's perceptually uniform ``inferno``: a
  piecewise-linear interpolation between 10 anchor colours sampled from the real map at
  0, 1/9, ..., 1 (the same anchors as R's ``viridisLite::inferno(10)``). It is close to, but
  not identical with, the original between the anchors.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from flawmap.errors import ConfigError, DataError

__all__ = [
    "COLORMAPS",
    "GT_COLOR",
    "THRESHOLD_COLOR",
    "colorize",
    "colormap_lut",
    "decision_range",
    "heatmap_overlay",
    "save_float_tiff",
    "save_png",
    "side_by_side",
    "to_uint8_image",
]

#: Names accepted by :func:`colorize` / :func:`colormap_lut`.
COLORMAPS: tuple[str, ...] = ("jet", "inferno")

#: Colour of the predicted-region outline (amap >= threshold) drawn by :func:`heatmap_overlay`.
THRESHOLD_COLOR: tuple[int, int, int] = (255, 255, 255)
#: Colour of the ground-truth outline drawn by :func:`heatmap_overlay`.
GT_COLOR: tuple[int, int, int] = (0, 255, 0)

# matplotlib's ``jet`` segment data: per channel, (x, value) knots of a piecewise-linear ramp.
_JET_KNOTS: dict[str, tuple[tuple[float, float], ...]] = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}

# matplotlib ``inferno`` sampled at k/9, k = 0..9 (anchors of the approximation).
_INFERNO_ANCHORS: tuple[str, ...] = (
    "#000004",
    "#1B0C42",
    "#4B0C6B",
    "#781C6D",
    "#A52C60",
    "#CF4446",
    "#ED6925",
    "#FB9A06",
    "#F7D03C",
    "#FCFFA4",
)

_BAND_PIXELS = 1 << 18  # pixels per band of the per-pixel loops (bounds temporary memory)
_PANEL_GAP = 4  # px of background between panels in side_by_side
_BACKGROUND = (255, 255, 255)
_TEXT_COLOR = (0, 0, 0)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)


@cache
def _lut(name: str) -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    if name == "jet":
        channels = []
        for channel in ("red", "green", "blue"):
            knots = np.asarray(_JET_KNOTS[channel])
            channels.append(np.interp(x, knots[:, 0], knots[:, 1]))
        lut = _to_uint8(np.stack(channels, axis=1))
    elif name == "inferno":
        rgb = np.array(
            [[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in _INFERNO_ANCHORS], dtype=float
        )
        xp = np.linspace(0.0, 1.0, len(_INFERNO_ANCHORS))
        lut = np.clip(
            np.rint(np.stack([np.interp(x, xp, rgb[:, c]) for c in range(3)], axis=1)), 0, 255
        ).astype(np.uint8)
    else:  # pragma: no cover - guarded by colormap_lut
        raise ConfigError(f"unknown colormap {name!r}")
    lut.setflags(write=False)
    return lut


def colormap_lut(colormap: str = "jet") -> np.ndarray:
    """Return the read-only colour lookup table of ``colormap``: shape (256, 3) uint8 RGB."""
    if colormap not in COLORMAPS:
        raise ConfigError(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    return _lut(colormap)


def _check_range(vmin: float, vmax: float) -> tuple[float, float]:
    try:
        lo, hi = float(vmin), float(vmax)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"vmin/vmax must be numbers, got {vmin!r} and {vmax!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(f"vmin and vmax must be finite, got vmin={lo} and vmax={hi}")
    if hi <= lo:
        raise ConfigError(f"vmax must be greater than vmin, got vmin={lo} and vmax={hi}")
    return lo, hi


def _check_amap(amap: np.ndarray, name: str = "amap") -> np.ndarray:
    """A finite 2-D real map as a float array (float32/float64 kept as they are, no copy)."""
    arr = np.asarray(amap)
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"{name} must be a non-empty 2-D array (H, W), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating) or arr.dtype.itemsize < 4:
        arr = arr.astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        raise DataError(f"{name} contains {bad} NaN/inf value(s); refusing to colour them")
    return arr


def _bands(height: int, width: int) -> list[slice]:
    """Row bands of about ``_BAND_PIXELS`` pixels: per-pixel work allocates per band only."""
    rows = max(1, _BAND_PIXELS // max(1, width))
    return [slice(top, min(top + rows, height)) for top in range(0, height, rows)]


def _lut_index(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(h, w) uint8 colour-table index of a finite map band: 256 equal bins over [lo, hi]."""
    t = (np.clip(arr.astype(np.float64), lo, hi) - lo) / (hi - lo)
    return np.minimum((t * 256.0).astype(np.intp), 255).astype(np.uint8)


def _check_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise DataError(
            f"{name} must be a non-empty (H, W, 3) uint8 array, got shape {arr.shape} "
            f"and dtype {arr.dtype} (see to_uint8_image)"
        )
    return arr


def colorize(amap: np.ndarray, vmin: float, vmax: float, colormap: str = "jet") -> np.ndarray:
    """Colour an anomaly map.

    ``amap`` (H, W) is clipped to [vmin, vmax], scaled to [0, 1] and mapped through the
    256-entry LUT of ``colormap`` (vmin → first entry, vmax → last; 256 equal-width bins).
    Returns (H, W, 3) uint8 RGB. Raises ConfigError if ``vmax <= vmin`` and DataError for
    NaN/inf values (they are not silently painted as some colour). Works in row bands, so
    temporaries stay small however large the map is.
    """
    lo, hi = _check_range(vmin, vmax)
    lut = colormap_lut(colormap)
    arr = _check_amap(amap)
    out = np.empty((*arr.shape, 3), dtype=np.uint8)
    for band in _bands(*arr.shape):
        out[band] = lut[_lut_index(arr[band], lo, hi)]
    return out


def _resize_map(amap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a (h, w) map to (height, width) float32 via Pillow mode "F"."""
    if amap.shape == (height, width):
        return np.asarray(amap, dtype=np.float32)  # no copy of a float32 map
    img = Image.fromarray(np.ascontiguousarray(amap, dtype=np.float32))
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a (h, w) bool mask to (height, width)."""
    if mask.shape == (height, width):
        return mask
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((width, height), Image.Resampling.NEAREST)) > 127


def _contour(mask: np.ndarray, width: int) -> np.ndarray:
    """Boundary pixels of a (H, W) bool mask, ``width`` px thick, on the inside of the region."""
    if not mask.any():
        return mask
    return mask & ~ndimage.binary_erosion(mask, iterations=width)


def _contour_width(height: int, width: int) -> int:
    return 1 if max(height, width) < 512 else 2


def decision_range(maps: np.ndarray, threshold: float | None) -> tuple[float, float]:
    """A colour range for overlays about decisions: from the 1st percentile of ``maps`` (one
    (h, w) map or a stack, subsampled to 64 maps) to as far above the threshold as that is
    below it, so the threshold is the middle of the scale (green with "jet") on every image and
    everything well above it is dark red. Without a threshold: up to the maps' maximum."""
    values = np.asarray(maps, dtype=np.float32)
    if values.ndim == 3:
        values = values[:: max(1, len(values) // 64)]
    low = float(np.percentile(values, 1))
    if threshold is None:
        return low, max(float(values.max()), low + 1e-6)
    low = min(low, float(threshold) - 1e-6)
    return low, 2.0 * float(threshold) - low


def heatmap_overlay(
    image: np.ndarray,
    amap: np.ndarray,
    vmin: float,
    vmax: float,
    alpha: float = 0.5,
    threshold: float | None = None,
    gt_mask: np.ndarray | None = None,
    colormap: str = "jet",
) -> np.ndarray:
    """Blend a coloured anomaly map over an image and outline regions.

    ``image`` (H, W, 3) uint8; ``amap`` (h, w) float, resized bilinearly to (H, W) if needed.
    Output pixel = (1 - alpha) * image + alpha * colorize(amap). With ``threshold`` the
    boundary of {amap >= threshold} (computed on the resized map) is drawn in white
    (:data:`THRESHOLD_COLOR`); with ``gt_mask`` ((h, w) or (H, W), bool or 0/non-zero) its
    boundary is drawn in green (:data:`GT_COLOR`), on top of the white one. Outlines are 1 px
    (2 px when the image's longer side is >= 512) and lie just inside each region; regions
    touching the image border are outlined along the border. Returns (H, W, 3) uint8.
    """
    img = _check_rgb(image)
    height, width = img.shape[:2]
    try:
        a = float(alpha)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"alpha must be a number in [0, 1], got {alpha!r}") from exc
    if not 0.0 <= a <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha!r}")
    lo, hi = _check_range(vmin, vmax)
    lut = colormap_lut(colormap)
    arr = _check_amap(amap)
    resized = _resize_map(arr, height, width)
    out = np.empty_like(img)
    for band in _bands(height, width):  # float32 temporaries per band, never full size
        colour = lut[_lut_index(resized[band], lo, hi)].astype(np.float32)
        out[band] = _to_uint8(((1.0 - a) * img[band].astype(np.float32) + a * colour) / 255.0)

    line = _contour_width(height, width)
    if threshold is not None:
        try:
            thr = float(threshold)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"threshold must be a number, got {threshold!r}") from exc
        if math.isnan(thr):
            raise ConfigError("threshold must not be NaN")
        out[_contour(resized >= thr, line)] = THRESHOLD_COLOR
    if gt_mask is not None:
        gt = np.asarray(gt_mask)
        if gt.ndim != 2 or gt.shape not in (arr.shape, (height, width)):
            raise DataError(
                f"gt_mask must have the map's shape {arr.shape} or the image's shape "
                f"{(height, width)}, got {gt.shape}"
            )
        out[_contour(_resize_mask(gt != 0, height, width), line)] = GT_COLOR
    return out


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """Shorten ``text`` with '...' so it fits in ``width`` px."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def side_by_side(panels: list[np.ndarray], titles: list[str] | None = None) -> np.ndarray:
    """Join panels left to right on a white background with a title strip above each.

    ``panels``: (H_i, W_i, 3) or (H_i, W_i) uint8 arrays; shorter ones are padded at the
    bottom. Titles use Pillow's default font and are shortened with '...' if wider than
    their panel. Returns (title_h + max H_i, sum W_i + gaps, 3) uint8.
    """
    if not panels:
        raise ConfigError("side_by_side needs at least one panel")
    if titles is not None and len(titles) != len(panels):
        raise ConfigError(f"got {len(panels)} panels but {len(titles)} titles")
    rgb = []
    for i, panel in enumerate(panels):
        p = np.asarray(panel)
        if p.ndim == 2 and p.dtype == np.uint8:
            p = np.repeat(p[:, :, None], 3, axis=2)
        rgb.append(_check_rgb(p, name=f"panels[{i}]"))

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if titles is not None:
        top, bottom = probe.textbbox((0, 0), "Ag|", font=font)[1::2]
        title_h = (bottom - top) + 2 * 3
    else:
        top, title_h = 0, 0
    height = title_h + max(p.shape[0] for p in rgb)
    width = sum(p.shape[1] for p in rgb) + _PANEL_GAP * (len(rgb) - 1)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = 0
    for i, p in enumerate(rgb):
        canvas.paste(Image.fromarray(p), (x, title_h))
        if titles is not None:
            text = _fit_text(draw, str(titles[i]), font, p.shape[1] - 4)
            text_w = draw.textlength(text, font=font)
            tx = x + max(0, int((p.shape[1] - text_w) // 2))
            draw.text((tx, 3 - top), text, fill=_TEXT_COLOR, font=font)
        x += p.shape[1] + _PANEL_GAP
    return np.asarray(canvas, dtype=np.uint8).copy()


def _prepare_path(path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a (H, W, 3) RGB or (H, W) grey uint8 array as PNG (parent dirs created)."""
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise DataError(
            f"save_png needs a (H, W, 3) or (H, W) uint8 array, got shape {arr.shape} "
            f"and dtype {arr.dtype}"
        )
    out = _prepare_path(path)
    Image.fromarray(np.ascontiguousarray(arr)).save(out, format="PNG")
    return out


def save_float_tiff(amap: np.ndarray, path: str | Path) -> Path:
    """Write a (H, W) map as a single-channel float32 TIFF (Pillow mode "F").

    Reading it back (e.g. ``np.asarray(Image.open(path))``) gives the map cast to float32
    exactly, as the MVTec AD evaluation scripts expect. Parent dirs are created.
    """
    arr = np.asarray(amap)
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"save_float_tiff needs a non-empty (H, W) array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"save_float_tiff needs real numbers, got dtype {arr.dtype}")
    out = _prepare_path(path)
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32)).save(out, format="TIFF")
    return out


def to_uint8_image(image: np.ndarray) -> np.ndarray:
    """Convert an image to (H, W, 3) uint8 for display.

    Accepts (3, H, W) channel-first (as from a torch tensor via ``.numpy()``) or (H, W, 3)
    channel-last arrays; an array whose first axis is 3 and last is not is taken as
    channel-first. uint8 input is copied as is; float input must lie in [0, 1] (values
    within 1e-3 outside are clipped) and is scaled by 255 and rounded. Float input far
    outside [0, 1] (e.g. still ImageNet-normalised) raises DataError instead of being
    silently clipped.
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or 0 in arr.shape or 3 not in (arr.shape[0], arr.shape[2]):
        raise DataError(f"image must be (3, H, W) or (H, W, 3), got shape {arr.shape}")
    if arr.shape[0] == 3 and arr.shape[2] != 3:
        arr = np.moveaxis(arr, 0, 2)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr).copy()
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"image must be uint8 or float in [0, 1], got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise DataError("image contains NaN/inf values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise DataError(
            f"float image values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]; "
            "undo any mean/std normalisation first"
        )
    return np.ascontiguousarray(_to_uint8(arr.astype(np.float64)))
