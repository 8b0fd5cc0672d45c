"""Latency measurement (flawmap.evaluation.timing) and evaluate() on datasets built before fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flawmap.data import MVTecDataset
from flawmap.errors import DataError
from flawmap.evaluation import evaluate, measure_latency
from flawmap.models import create_model
from tests.synthetic import plant_defect


def _wide_category(root: Path) -> Path:
    """train/good and test/{good,spot} of 48 x 120 images, with masks."""
    rng = np.random.default_rng(0)
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / sub).mkdir(parents=True)
    for i in range(8):
        Image.fromarray(rng.integers(90, 160, (48, 120, 3), dtype=np.uint8)).save(
            root / "train/good" / f"{i}.png"
        )
    for i in range(2):
        good = rng.integers(90, 160, (48, 120, 3), dtype=np.uint8)
        Image.fromarray(good).save(root / "test/good" / f"{i}.png")
        bad, mask = plant_defect(rng.integers(90, 160, (64, 120, 3), dtype=np.uint8), rng, box=8)
        Image.fromarray(bad[:48]).save(root / "test/spot" / f"{i}.png")
        mask = mask[:48]
        mask[20:28, 50:58] = True
        Image.fromarray((mask * 255).astype(np.uint8)).save(
            root / "ground_truth/spot" / f"{i}_mask.png"
        )
    return root


def test_evaluate_reads_a_dataset_built_before_fit_at_the_planned_size(tmp_path):
    root = _wide_category(tmp_path / "wide")
    detector = create_model("padim", image_size=48, weights="random", n_features=8)
    test = MVTecDataset(root, "test", detector.transform)  # square: built before fit
    detector.fit(MVTecDataset(root, "train"))
    assert detector.transform.output_size != test.transform.output_size
    result = evaluate(detector, test, latency_runs=2)  # PaDiM's grid would refuse the square
    assert result.prediction.maps.shape[1:] == detector.transform.output_size
    assert result.metrics["latency_ms"] > 0


def test_a_timing_image_of_another_size_is_refused(tmp_path):
    detector = create_model("patchcore", image_size=32, weights="random")
    detector.fit(torch.rand(6, 3, 32, 32))
    assert measure_latency(detector, torch.rand(3, 32, 32), runs=1, warmup=0) > 0
    with pytest.raises(DataError, match=r"expects \(3, 32, 32\)"):
        measure_latency(detector, torch.rand(3, 32, 48), runs=1, warmup=0)
