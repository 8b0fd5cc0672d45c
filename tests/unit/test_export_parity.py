"""fp32 ONNX and OpenVINO exports of every model score every real MVTec AD bottle test image like
the torch model (pretrained weights, 256 px); skipped when ../shared/datasets is absent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flawmap.data import ImageTransform, MVTecDataset
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
#: One short epoch for the models that train (parity, not accuracy, is under test here).
FAST = {
    "cse": {"epochs": 1},
    "fcdd": {"epochs": 1},
    "mlff": {"epochs": 1, "repeats": 1},
    "simplenet": {"epochs": 1},
    "trisimplenet": {"epochs": 1},
}


def test_fast_settings_cover_the_trained_models() -> None:
    assert set(FAST) == TRAINED and set(list_models()) >= TRAINED


@pytest.fixture(scope="module")
def bottle() -> dict[ImageTransform, tuple[torch.Tensor, torch.Tensor]]:
    """Decoded (train subset, test) image tensors per transform, shared by the models."""
    return {}


def bottle_images(
    cache: dict[ImageTransform, tuple[torch.Tensor, torch.Tensor]], transform: ImageTransform
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N_TRAIN, 3, H, W) seeded train/good subset and every (83, 3, H, W) test image."""
    if transform not in cache:
        root = category("mvtec_ad/bottle")
        train = MVTecDataset(root, "train", transform=transform)
        chosen = np.random.default_rng(SEED).choice(len(train), size=N_TRAIN, replace=False)
        test = MVTecDataset(root, "test", transform=transform)
        cache[transform] = (
            torch.stack([train[int(i)]["image"] for i in sorted(chosen)]),
            torch.stack([test[i]["image"] for i in range(len(test))]),
        )
    return cache[transform]


@pytest.fixture(scope="module", params=list_models())
def fitted(request: pytest.FixtureRequest, bottle) -> tuple[Detector, np.ndarray, Prediction]:
    """Each model fitted once on the training subset, with every bottle test image as an
    (N, 3, 256, 256) float32 array and the torch model's prediction of them."""
    category("mvtec_ad/bottle")
    model = create_model(request.param, image_size=256, seed=SEED, **FAST.get(request.param, {}))
    train, test = bottle_images(bottle, model.transform)
    assert len(test) == 83
    model.fit(train)
    return model, test.numpy(), model.predict(test)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_fp32_parity_on_bottle(fitted, fmt, tmp_path) -> None:
    model, images, ref = fitted
    assert ref.threshold is not None
    runtime = load_exported(export_model(model, tmp_path / "export", format=fmt))
    assert runtime.threshold == pytest.approx(model.threshold)
    assert_parity(runtime.predict(images), ref)
