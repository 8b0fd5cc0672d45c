"""PaDiM and PatchCore on a slice of real MVTec AD bottle data (skipped when absent).

A quick check that the real pipeline (pretrained Lite0 weights, real images, real masks) separates
real defects; the full-size numbers come from benchmarks/foundation.py, not from tests.
"""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import Subset

from flawmap.data import MVTecDataset
from flawmap.evaluation import evaluate
from flawmap.models import create_model
from tests.integration.test_real_datasets import category
from tests.synthetic import lite0_weights_installed

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not lite0_weights_installed(), reason="lite0 weights package missing"),
]


@pytest.mark.parametrize(
    ("name", "params"), [("patchcore", {"coreset_ratio": 0.1}), ("padim", {"n_features": 100})]
)
def test_real_bottle_slice(name: str, params: dict) -> None:
    root = category("mvtec_ad/bottle")
    detector = create_model(name, image_size=128, **params)
    train = MVTecDataset(root, "train", transform=detector.transform)
    test = MVTecDataset(root, "test", transform=detector.transform)
    # 60 training images; 10 good + 20 defective test images (a fixed, label-agnostic stride)
    detector.fit(Subset(train, range(0, 180, 3)))
    labels = test.labels
    good = np.flatnonzero(labels == 0)[:10]
    bad = np.flatnonzero(labels == 1)[::3][:20]
    result = evaluate(detector, Subset(test, [*good, *bad]), latency_runs=0)
    assert result.metrics["image_auroc"] >= 0.95
    assert result.metrics["pixel_auroc"] >= 0.93
    assert result.metrics["aupro"] >= 0.75
