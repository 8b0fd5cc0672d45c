"""Image pre-processing without torch, equal to :class:`flawmap.data.ImageTransform`.

An 8-bit RGB image is resized per channel in Pillow's 32-bit float mode (bilinear with
antialiasing: the same separable triangle filter, half-pixel centres, as torch's
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
        if isinstance(image, Image.Image):
            if image.mode != "RGB":
                from flawmap.data.io import to_rgb

                image = to_rgb(image)
            pixels = np.asarray(image)
        else:
            pixels = np.asarray(image)
            if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
                raise ValueError(
                    f"expected an (H, W, 3) uint8 RGB array, got {pixels.shape} {pixels.dtype}"
                )
        h, w = self.image_size
        if pixels.shape[:2] == (h, w):
            out = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        else:
            channels = list(_POOL.map(lambda c: _resize_channel(pixels[..., c], w, h), range(3)))
            out = np.stack(channels)
            np.clip(out, 0.0, 1.0, out=out)
        if self.center_crop is not None:
            ch, cw = self.center_crop
            top, left = (h - ch) // 2, (w - cw) // 2
            out = np.ascontiguousarray(out[:, top : top + ch, left : left + cw])
        return out


def _resize_channel(channel: np.ndarray, width: int, height: int) -> np.ndarray:
    """One uint8 (H, W) channel -> (height, width) float32 in [0, 1] (before clipping)."""
    plane = Image.fromarray(np.ascontiguousarray(channel).astype(np.float32) / np.float32(255.0))
    return np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
