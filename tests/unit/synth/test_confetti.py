"""Unit tests of flawmap.synth.ConfettiNoise (FCDD's synthetic anomalies)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flawmap.errors import ConfigError, DataError
from flawmap.synth import ConfettiNoise, SyntheticDefect
from tests.synthetic import textured_image


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def textured(size: int = 64, seed: int = 0) -> torch.Tensor:
    arr = textured_image(np.random.default_rng(seed), size)
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0


@pytest.mark.parametrize("seed", range(8))
def test_mask_is_binary_non_empty_and_outside_pixels_are_unchanged(seed: int) -> None:
    image = textured(seed=seed)
    noise = ConfettiNoise()
    out = noise(image, gen(seed))
    assert isinstance(out, SyntheticDefect) and out.kind == "confetti"
    assert out.image.shape == image.shape and out.image.dtype == image.dtype
    assert out.mask.shape == (1, 64, 64) and out.mask.dtype == torch.float32
    assert set(out.mask.unique().tolist()) <= {0.0, 1.0}
    inside = out.mask[0].bool()
    assert inside.any()
    # outside the mask: exactly the input; inside: every pixel changed by >= min_change
    assert torch.equal(out.image[:, ~inside], image[:, ~inside])
    change = (out.image - image).abs().amax(dim=0)
    assert bool((change[inside] >= noise.min_change).all())
    assert out.image.min() >= 0.0 and out.image.max() <= 1.0


def test_reproducible_with_a_seed_and_only_the_given_generator_is_used() -> None:
    image = textured()
    noise = ConfettiNoise()
    state = torch.get_rng_state()
    a, b = noise(image, gen(3)), noise(image, gen(3))
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    c = noise(image, gen(4))
    assert not torch.equal(a.mask, c.mask)


def test_one_opaque_axis_aligned_rectangle() -> None:
    image = textured()
    noise = ConfettiNoise(count_range=(1, 1), blend_range=(1.0, 1.0), max_rotation=0.0)
    for seed in range(5):
        out = noise(image, gen(seed))
        rows, cols = out.mask[0].bool().nonzero().unbind(1)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        # an axis-aligned filled rectangle (possibly clipped by the border) ...
        assert int(out.mask.sum()) == int(box)
        # ... painted in one colour
        colours = out.image[:, out.mask[0].bool()]
        assert torch.allclose(colours, colours[:, :1].expand_as(colours))


def test_size_range_and_squares() -> None:
    noise = ConfettiNoise(
        count_range=(1, 1), size_range=(0.25, 0.25), max_rotation=0.0, squares=True
    )
    sides = []
    for seed in range(10):
        out = noise(textured(), gen(seed))
        rows, cols = out.mask[0].bool().nonzero().unbind(1)
        sides.append((int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)))
    assert all(h <= 16 and w <= 16 for h, w in sides)  # 0.25 * 64, clipped at the border
    assert (16, 16) in sides


def test_rotation_gives_non_rectangular_masks() -> None:
    noise = ConfettiNoise(count_range=(1, 1), size_range=(0.3, 0.3), max_rotation=45.0)
    not_boxes = 0
    for seed in range(10):
        mask = noise(textured(), gen(seed)).mask[0].bool()
        rows, cols = mask.nonzero().unbind(1)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        not_boxes += int(mask.sum()) < int(box)
    assert not_boxes >= 5


def test_batch_probability() -> None:
    images = torch.stack([textured(seed=s) for s in range(6)])
    noise = ConfettiNoise()
    out, masks = noise.synthesize_batch(images, gen(0), probability=0.0)
    assert torch.equal(out, images) and not masks.any()
    out, masks = noise.synthesize_batch(images, gen(0), probability=1.0)
    assert masks.shape == (6, 1, 64, 64) and bool(masks.flatten(1).any(1).all())
    outside = ~masks.bool().expand_as(images)
    assert torch.equal(out[outside], images[outside])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count_range": (0, 2)},
        {"count_range": (3, 2)},
        {"count_range": (1.5, 2)},
        {"size_range": (0.5, 0.1)},
        {"size_range": (0.0, 1.5)},
        {"blend_range": (0.0, 0.0)},
        {"max_rotation": -1.0},
        {"min_change": 1.0},
    ],
)
def test_bad_parameters_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        ConfettiNoise(**kwargs)


def test_bad_inputs() -> None:
    noise = ConfettiNoise()
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        noise(textured() * 2, gen(0))
    with pytest.raises(DataError, match="shape"):
        noise(torch.rand(1, 8, 8), gen(0))
    with pytest.raises(ConfigError, match="Generator"):
        noise(textured(), 0)  # type: ignore[arg-type]
