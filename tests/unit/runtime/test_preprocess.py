"""flawmap.runtime.preprocess.Preprocessor equals flawmap.data.ImageTransform (no torch needed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flawmap.data import ImageTransform
from flawmap.runtime.preprocess import Preprocessor


def noise_image(height: int, width: int, seed: int) -> np.ndarray:
    """(height, width, 3) uint8 with smooth structure plus noise (resizing has work to do)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 127 + 100 * np.sin(xx[..., None] / 3.0 + yy[..., None] / 5.0 + np.arange(3))
    pixels = base + rng.normal(0, 30, size=(height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def reference(pil: Image.Image, size: tuple[int, int], crop: tuple[int, int] | None) -> np.ndarray:
    return ImageTransform(size, crop).image(pil).numpy()


@pytest.mark.parametrize(
    ("source", "size", "crop"),
    [
        ((173, 251), (64, 64), None),  # downscale by non-integer factors
        ((256, 256), (100, 100), None),  # downscale 2.56x
        ((40, 30), (96, 80), None),  # upscale
        ((120, 200), (48, 80), None),  # non-square
        ((300, 180), (70, 90), None),  # aspect ratio changes
        ((100, 100), (72, 72), (64, 64)),  # resize, then centre crop
        ((97, 131), (73, 81), (60, 51)),  # odd crop margins
        ((64, 64), (64, 64), None),  # already the right size: no resampling
        ((64, 80), (64, 80), (32, 40)),  # right size, with crop
    ],
)
def test_equals_image_transform(source, size, crop) -> None:
    pixels = noise_image(*source, seed=sum(source))
    pil = Image.fromarray(pixels, "RGB")
    expected = reference(pil, size, crop)
    pre = Preprocessor(size, crop)
    got = pre(pil)
    assert got.dtype == np.float32 and got.shape == expected.shape == (3, *(crop or size))
    assert pre.output_size == (crop or size)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert got.min() >= 0.0 and got.max() <= 1.0
    # an (H, W, 3) uint8 array is the same image
    np.testing.assert_array_equal(pre(pixels), got)


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "I;16", "CMYK"])
@pytest.mark.parametrize(("size", "crop"), [((48, 56), None), ((60, 60), (50, 40))])
def test_other_pil_modes(mode, size, crop) -> None:
    rgb = Image.fromarray(noise_image(90, 70, seed=3), "RGB")
    if mode == "I;16":
        gray = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        pil = Image.fromarray(gray.astype("<u2"))
    elif mode == "P":
        pil = rgb.quantize(colors=32, method=Image.Quantize.MEDIANCUT)
    elif mode == "RGBA":
        alpha = Image.fromarray((noise_image(90, 70, seed=4)[..., 0]), "L")
        pil = rgb.copy()
        pil.putalpha(alpha)
    else:
        pil = rgb.convert(mode)
    assert pil.mode == mode
    expected = reference(pil, size, crop)
    got = Preprocessor(size, crop)(pil)
    assert got.shape == expected.shape == (3, *(crop or size))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_rejects_bad_arrays() -> None:
    pre = Preprocessor((32, 32), None)
    with pytest.raises(ValueError, match="uint8"):
        pre(np.zeros((40, 40, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="RGB"):
        pre(np.zeros((40, 40), dtype=np.uint8))
