"""The synthetic validation set: good images + damaged copies, and validate()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flawmap.evaluation.synthetic import SyntheticValidationSet, validate
from flawmap.models import create_model
from flawmap.models.base import as_dataset
from flawmap.synth import DefectSynthesizer
from tests.synthetic import textured_image


def _images(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    stack = np.stack([textured_image(rng) for _ in range(n)])
    return torch.from_numpy(stack).permute(0, 3, 1, 2).float() / 255


def test_items_pair_good_images_with_damaged_copies() -> None:
    good = as_dataset(_images(3, 0))
    synthesizer = DefectSynthesizer(kinds=("structural", "blur"))
    val = SyntheticValidationSet(good, synthesizer, seed=5)
    assert len(val) == 6
    for i in range(3):
        clean, damaged = val[i], val[i + 3]
        assert clean["label"] == 0 and damaged["label"] == 1
        assert clean["mask"].sum() == 0 and damaged["mask"].sum() > 0
        torch.testing.assert_close(clean["image"], good[i]["image"])
        outside = damaged["mask"][0] == 0
        torch.testing.assert_close(damaged["image"][:, outside], clean["image"][:, outside])
        assert not torch.equal(damaged["image"], clean["image"])
    again = SyntheticValidationSet(good, synthesizer, seed=5)
    assert all(torch.equal(again[i]["image"], val[i]["image"]) for i in range(6))
    with pytest.raises(IndexError):
        val[6]


def test_validate_returns_image_and_pixel_metrics() -> None:
    model = create_model("padim", weights="random", image_size=64, threshold_holdout=0.0)
    model.fit(_images(8, 1))
    synthesizer = DefectSynthesizer(kinds=("structural", "blur"))
    metrics = validate(model, SyntheticValidationSet(as_dataset(_images(4, 2)), synthesizer))
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0.0 <= metrics[key] <= 1.0
