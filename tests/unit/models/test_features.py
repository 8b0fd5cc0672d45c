"""The frozen-feature cache (flawmap.models.features.collect_features / FeatureCache)."""

from __future__ import annotations

import pytest
import torch

from flawmap.errors import ConfigError
from flawmap.models import create_model
from flawmap.models.base import Detector, as_dataset
from flawmap.models.features import FeatureCache, collect_features


def two_outputs(images: torch.Tensor) -> list[torch.Tensor]:
    """(B, 3, H, W) -> [(B, 3), (B, 1, H, W)]: two deterministic 'stages'."""
    return [images.mean(dim=(2, 3)), images.sum(dim=1, keepdim=True)]


@pytest.fixture
def setup() -> tuple[Detector, torch.Tensor]:
    detector = create_model("padim", weights="random", image_size=32, batch_size=2)
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return detector, images


def test_collect_concatenates_every_output_in_order(setup: tuple[Detector, torch.Tensor]) -> None:
    detector, images = setup
    cache = collect_features(detector, as_dataset(images), two_outputs)
    assert len(cache) == 5 and cache.images is None and cache.batch_size == 2
    for got, expected in zip(cache.features, two_outputs(images), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    single = collect_features(detector, as_dataset(images), lambda x: x[:, :1])
    assert len(single.features) == 1 and torch.equal(single.features[0], images[:, :1])


def test_images_and_dtypes(setup: tuple[Detector, torch.Tensor]) -> None:
    detector, images = setup
    cache = collect_features(
        detector, as_dataset(images), two_outputs, keep_images=True, dtype=torch.float16
    )
    assert cache.images is not None and cache.images.dtype == torch.float16
    assert torch.equal(cache.images, images.half())
    assert all(f.dtype == torch.float16 for f in cache.features)
    only_images = collect_features(detector, as_dataset(images), None, keep_images=True)
    assert only_images.features == [] and len(only_images) == 5
    with pytest.raises(ConfigError, match="no feature function"):
        only_images.extract(images)


def test_no_gradients_are_recorded(setup: tuple[Detector, torch.Tensor]) -> None:
    detector, images = setup
    weight = torch.ones(3, requires_grad=True)
    cache = collect_features(
        detector, as_dataset(images), lambda x: x.mean(dim=(2, 3)) * weight, keep_images=True
    )
    assert not cache.features[0].requires_grad
    assert not cache.extract(images[:3])[0].requires_grad


def test_extract_in_chunks_matches_collect(setup: tuple[Detector, torch.Tensor]) -> None:
    detector, images = setup
    cache = collect_features(detector, as_dataset(images), two_outputs)
    for chunk in (None, 1, 3, 5):
        again = cache.extract(images.half(), chunk=chunk)  # cast back to float32 per chunk
        for got, expected in zip(again, two_outputs(images.half().float()), strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="chunk"):
        cache.extract(images, chunk=0)
    assert isinstance(cache, FeatureCache)
