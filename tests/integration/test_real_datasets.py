"""Checks of flawmap.data against the real data sets in ../shared/datasets (skipped when absent).

The data root is ``<repo>/../shared/datasets`` unless the ``FLAWMAP_DATASETS`` environment
variable names another folder.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from flawmap.data import ElpvDataset, ImageTransform, MVTecDataset

pytestmark = pytest.mark.integration

DATASETS = Path(
    os.environ.get(
        "FLAWMAP_DATASETS", Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
    )
)
SMALL = ImageTransform(64)


def category(relative: str) -> Path:
    """The category folder, or skip the test with the reason when it is absent."""
    folder = DATASETS / relative
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} is absent (set FLAWMAP_DATASETS to its root)")
    return folder


def test_bottle_counts():
    root = category("mvtec_ad/bottle")
    train = MVTecDataset(root, "train", transform=SMALL)
    test = MVTecDataset(root, "test", transform=SMALL)
    assert train.category == "bottle"
    assert len(train) == 209 and train.labels.sum() == 0
    assert len(test) == 83 and int(test.labels.sum()) == 63
    assert sum(s.mask_path is not None for s in test.samples) == 63
    assert Counter(s.defect_type for s in test.samples) == {
        "good": 20,
        "broken_large": 20,
        "broken_small": 22,
        "contamination": 21,
    }
    assert test.has_pixel_labels and all(s.has_mask for s in test.samples)


def test_bottle_item_shapes():
    root = category("mvtec_ad/bottle")
    test = MVTecDataset(root, "test", transform=SMALL)
    item = test[0]  # broken_large/000.png
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert item["mask"].shape == (1, 64, 64)
    assert item["label"] == 1 and item["has_mask"] and item["defect_type"] == "broken_large"
    assert 0 < float(item["mask"].sum()) < 64 * 64
    assert item["original_size"].tolist() == [512, 512]


def test_magnetic_tile_counts():
    root = category("magnetic_tile")
    train = MVTecDataset(root, "train", transform=SMALL)
    test = MVTecDataset(root, "test", transform=SMALL)
    assert len(train) == 762
    assert Counter(s.defect_type for s in test.samples) == {
        "good": 190,
        "blowhole": 115,
        "break": 85,
        "crack": 57,
        "fray": 32,
        "uneven": 103,
    }
    assert int((test.labels == 0).sum()) == 190 and int(test.labels.sum()) == 392
    assert sum(s.mask_path is not None for s in test.samples) == 392


def test_magnetic_tile_grayscale_item():
    root = category("magnetic_tile")
    test = MVTecDataset(root, "test", transform=SMALL)
    index = next(i for i, s in enumerate(test.samples) if s.defect_type == "blowhole")
    item = test[index]
    assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
    assert torch.equal(item["image"][0], item["image"][1])  # grayscale replicated
    h0, w0 = item["original_size"].tolist()
    assert 50 <= h0 <= 1000 and 50 <= w0 <= 1000


def test_elpv_mono_split_sizes():
    if importlib.util.find_spec("elpv_dataset") is None:
        pytest.skip("elpv_dataset is not installed (pip install elpv-dataset)")
    train = ElpvDataset("train", transform=SMALL)
    test = ElpvDataset("test", transform=SMALL)
    # 588 functional mono cells -> 412 train / 176 test; 117 + 56 + 313 = 486 defective.
    assert len(train) == 412 and train.labels.sum() == 0
    assert len(test) == 176 + 486 and int(test.labels.sum()) == 486
    assert {s.path for s in train.samples}.isdisjoint(s.path for s in test.samples)
    item = test[0]
    assert item["image"].shape == (3, 64, 64) and not item["has_mask"]
    assert item["original_size"].tolist() == [300, 300]
    capped = ElpvDataset("test", max_images=100, transform=SMALL)
    assert len(capped) == 100 and 60 <= int(capped.labels.sum()) <= 80
