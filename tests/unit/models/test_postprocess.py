"""Direct tests of the shared post-processing (flawmap.models.postprocess) and its use by
``AnomalyModule.forward``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flawmap.errors import ConfigError
from flawmap.models.base import AnomalyModule
from flawmap.models.postprocess import AnomalyMapPostprocessor, gaussian_kernel1d, learn_threshold


@pytest.mark.parametrize("sigma", [0.5, 1.0, 4.0, 6.3])
def test_gaussian_kernel_is_normalised_symmetric_and_4_sigma_wide(sigma: float) -> None:
    k = gaussian_kernel1d(sigma)
    assert len(k) == 2 * int(4.0 * sigma + 0.5) + 1
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(k, k.flip(0)) and int(k.argmax()) == len(k) // 2


def test_maps_are_bilinear_upsampled_then_smoothed() -> None:
    raw = torch.rand(2, 1, 4, 5, generator=torch.Generator().manual_seed(0))
    post = AnomalyMapPostprocessor(sigma=1.5)
    scores, maps = post(raw, (16, 20))
    up = F.interpolate(raw, size=(16, 20), mode="bilinear", align_corners=False)
    assert maps.shape == (2, 16, 20) and scores.shape == (2,)
    # the two matrix products equal the reference ops up to float rounding
    assert torch.allclose(maps, post.smooth(up)[:, 0], atol=1e-6)
    assert torch.equal(scores, maps.amax(dim=(1, 2)))
    # sigma = 0: no smoothing
    assert torch.allclose(AnomalyMapPostprocessor(sigma=0.0)(raw, (16, 20))[1], up[:, 0], atol=1e-6)


@pytest.mark.parametrize("sigma", [0.0, 1.0, 4.0])
@pytest.mark.parametrize(("low", "size"), [((56, 56), (448, 448)), ((20, 50), (160, 400))])
def test_resize_and_smoothing_operators_match_the_reference_ops(sigma, low, size) -> None:
    post = AnomalyMapPostprocessor(sigma)
    raw = torch.rand(2, 1, *low, generator=torch.Generator().manual_seed(2)) * 5
    ref = post.smooth(F.interpolate(raw, size=size, mode="bilinear", align_corners=False))
    rows, cols = post.operators(low, size)
    assert rows.shape == (size[0], low[0]) and cols.shape == (low[1], size[1])
    assert torch.allclose(post(raw, size)[1], ref[:, 0], atol=1e-5)


def test_smoothing_keeps_a_constant_map_and_small_maps_work() -> None:
    post = AnomalyMapPostprocessor(sigma=4.0)
    const = torch.full((1, 1, 40, 40), 0.7)
    assert torch.allclose(post.smooth(const), const, atol=1e-6)
    _, maps = post(torch.rand(1, 1, 2, 2), (8, 8))  # map smaller than the kernel: replicate
    assert maps.shape == (1, 8, 8) and bool(torch.isfinite(maps).all())


def test_image_score_mean_is_the_raw_mean_and_a_callable_is_a_models_own() -> None:
    raw = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    _, maps = AnomalyMapPostprocessor(2.0)(raw, (16, 16))
    scores, maps_mean = AnomalyMapPostprocessor(2.0, image_score="mean")(raw, (16, 16))
    assert torch.equal(scores, raw.mean(dim=(1, 2, 3))) and torch.equal(maps, maps_mean)

    def own(r: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return r.amin(dim=(1, 2, 3)) + m.mean(dim=(1, 2))

    scores, _ = AnomalyMapPostprocessor(2.0, image_score=own)(raw, (16, 16))
    assert torch.equal(scores, own(raw, maps))


def test_model_upsampler_replaces_bilinear_upsampling() -> None:
    calls: list[tuple[int, int]] = []

    def nearest(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        calls.append(size)
        return F.interpolate(low, size=size, mode="nearest")

    raw = torch.rand(2, 1, 3, 3)
    post = AnomalyMapPostprocessor(sigma=1.0)
    _, maps = post(raw, (12, 12), upsample=nearest)
    assert calls == [(12, 12)]
    # the bilinear resize that follows the upsampler is an identity, bit for bit
    ref = post.smooth(F.interpolate(raw, size=(12, 12), mode="nearest"))[:, 0]
    assert torch.allclose(maps, ref, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": 1.0, "image_score": "median"}, "image_score"),
    ],
)
def test_invalid_options_raise_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AnomalyMapPostprocessor(**kwargs)


class _Extractor(nn.Module):
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [F.avg_pool2d(images.mean(dim=1, keepdim=True), 4)]


class _Upsample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("gain", torch.tensor(2.0))

    def forward(self, low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.gain * F.interpolate(low, size=size, mode="nearest")


class _Module(AnomalyModule):
    def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(images)[0]


def test_anomaly_module_forward_uses_its_upsampler_and_image_score() -> None:
    images = torch.rand(2, 3, 16, 16)
    module = _Module(_Extractor(), 1.0, upsample=_Upsample(), image_score="mean")  # type: ignore[arg-type]
    assert "upsample.gain" in module.state_dict()  # saved with the model
    scores, maps = module(images)
    raw = module.patch_scores(images)
    assert torch.equal(scores, raw.mean(dim=(1, 2, 3)))
    expected = module.postprocess.smooth(2.0 * F.interpolate(raw, size=(16, 16), mode="nearest"))
    assert torch.allclose(maps, expected[:, 0], atol=1e-6)
    plain = _Module(_Extractor(), 1.0)  # type: ignore[arg-type]
    assert plain.upsample is None and not any(k.startswith("upsample") for k in plain.state_dict())


def test_learn_threshold_is_the_quantile_of_held_out_scores() -> None:
    scores = np.array([0.1, 0.4, 0.2, 0.3], dtype=np.float32)
    assert learn_threshold(scores, 1.0) == pytest.approx(0.4)
    assert learn_threshold(scores, 0.5) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="held-out"):
        learn_threshold(np.array([]), 0.9)
    with pytest.raises(ConfigError, match="threshold_quantile"):
        learn_threshold(scores, 0.0)
