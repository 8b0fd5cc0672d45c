"""Image pre-processing without torch, equal to :class:`flawmap.data.ImageTransform`.

An 8-bit RGB image is resized per channel (in parallel) in Pillow's 32-bit float mode (bilinear
with antialiasing: the same separable triangle filter, half-pixel centres, as torch's
``interpolate(..., antialias=True)``), scaled to [0, 1], clipped, then centre-cropped.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

_POOL = ThreadPoolExecutor(max_workers=3, thread_name_prefix="flawmap-resize")


class Preprocessor:
    """PIL image (any mode) or (H, W, 3) uint8 array -> (3, h, w) float32 in [0, 1].

    Args:
        image_size: resize target ``(H, W)``.
        center_crop: optional ``(h, w)`` taken from the centre after resizing.
    """

    def __init__(self, image_size: tuple[int, int], center_crop: tuple[int, int] | None) -> None:
        self.image_size = image_size
        self.center_crop = center_crop

    @property
    def output_size(self) -> tuple[int, int]:
        return self.center_crop or self.image_size

    def __call__(self, image: Image.Image | np.ndarray) -> np.ndarray:
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"expected an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}"
                )
            image = Image.fromarray(image)
        elif not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image or a uint8 array, got {type(image).__name__}")
        if image.mode != "RGB":
            from flawmap.data.io import to_rgb

            image = to_rgb(image)
        h, w = self.image_size
        if (image.height, image.width) == (h, w):
            out = np.asarray(image).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        else:
            bands = list(_POOL.map(lambda band: _resize_band(band, w, h), image.split()))
            out = np.stack(bands)
            out /= np.float32(255.0)
            np.clip(out, 0.0, 1.0, out=out)
        if self.center_crop is not None:
            ch, cw = self.center_crop
            top, left = (h - ch) // 2, (w - cw) // 2
            out = np.ascontiguousarray(out[:, top : top + ch, left : left + cw])
        return out


def _resize_band(band: Image.Image, width: int, height: int) -> np.ndarray:
    """One 8-bit band -> (height, width) float32 in [0, 255], resized in float (mode "F")."""
    return np.asarray(band.convert("F").resize((width, height), Image.Resampling.BILINEAR))
