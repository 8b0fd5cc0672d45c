"""fp32 ONNX and OpenVINO exports of every model score every real MVTec AD bottle test image like
the torch model (pretrained weights, 256 px); skipped when ../shared/datasets is absent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from flawmap.data import MVTecDataset
from flawmap.export import export_model
from flawmap.models import create_model, list_models
from flawmap.models.base import Detector, Prediction
from flawmap.runtime import load_exported
from tests.integration.test_real_datasets import category
from tests.synthetic import lite0_weights_installed
from tests.unit.test_export import TRAINED, assert_parity

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not lite0_weights_installed(), reason="lite0 weights package missing"),
]

#: Training images: a seeded random subset of bottle's train/good (never test images).
N_TRAIN = 24
SEED = 0


@pytest.fixture(scope="module", params=list_models())
def fitted(request: pytest.FixtureRequest) -> tuple[Detector, np.ndarray, Prediction]:
    """Each model fitted once on the training subset, with every bottle test image as an
    (N, 3, 256, 256) float32 array and the torch model's prediction of them."""
    root = category("mvtec_ad/bottle")
    params = {"epochs": 1} if request.param in TRAINED else {}
    model = create_model(request.param, image_size=256, seed=SEED, **params)
    train = MVTecDataset(root, "train", transform=model.transform)
    chosen = np.random.default_rng(SEED).choice(len(train), size=N_TRAIN, replace=False)
    model.fit(Subset(train, sorted(chosen.tolist())))
    test = MVTecDataset(root, "test", transform=model.transform)
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    assert len(images) == 83
    return model, images.numpy(), model.predict(images)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_fp32_parity_on_bottle(fitted, fmt, tmp_path) -> None:
    model, images, ref = fitted
    assert ref.threshold is not None
    runtime = load_exported(export_model(model, tmp_path / "export", format=fmt))
    assert runtime.threshold == pytest.approx(model.threshold)
    assert_parity(runtime.predict(images), ref)
