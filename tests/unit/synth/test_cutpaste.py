"""Unit tests of flawmap.synth.CutPaste (a patch of the image pasted elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flawmap.errors import ConfigError, DataError
from flawmap.synth import CutPaste, DefectGenerator, SyntheticDefect
from tests.synthetic import textured_image


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def textured(size: int = 64, seed: int = 0) -> torch.Tensor:
    arr = textured_image(np.random.default_rng(seed), size)
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0


def noise_image(seed: int, size: tuple[int, int] = (48, 64)) -> torch.Tensor:
    return torch.rand(3, *size, generator=gen(100 + seed))


@pytest.mark.parametrize("seed", range(8))
def test_mask_is_binary_non_empty_and_outside_pixels_are_unchanged(seed: int) -> None:
    image = textured(seed=seed)
    cutpaste = CutPaste()
    assert isinstance(cutpaste, DefectGenerator)
    out = cutpaste(image, gen(seed))
    assert isinstance(out, SyntheticDefect) and out.kind == "cutpaste"
    assert out.image.shape == image.shape and out.image.dtype == image.dtype
    assert out.mask.shape == (1, 64, 64) and out.mask.dtype == torch.float32
    assert set(out.mask.unique().tolist()) <= {0.0, 1.0}
    inside = out.mask[0].bool()
    assert inside.any()
    assert torch.equal(out.image[:, ~inside], image[:, ~inside])
    change = (out.image - image).abs().amax(dim=0)
    assert bool((change[inside] >= cutpaste.min_change).all())
    assert out.image.min() >= 0.0 and out.image.max() <= 1.0


def test_reproducible_with_a_seed_and_only_the_given_generator_is_used() -> None:
    image = textured()
    cutpaste = CutPaste()
    state = torch.get_rng_state()
    a, b = cutpaste(image, gen(3)), cutpaste(image, gen(3))
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    c = cutpaste(image, gen(4))
    assert not torch.equal(a.mask, c.mask)


@pytest.mark.parametrize("seed", range(6))
def test_the_pasted_patch_is_a_copy_of_another_region(seed: int) -> None:
    image = noise_image(seed)  # every pasted pixel differs from the one it covers
    out = CutPaste(flip=False, jitter=0.0)(image, gen(seed))
    rows, cols = out.mask[0].bool().nonzero().unbind(1)
    top, left = int(rows.min()), int(cols.min())
    ph, pw = int(rows.max()) - top + 1, int(cols.max()) - left + 1
    assert int(out.mask.sum()) == ph * pw  # one filled rectangle
    patch = out.image[:, top : top + ph, left : left + pw]
    _, h, w = image.shape
    sources = [
        (y, x)
        for y in range(h - ph + 1)
        for x in range(w - pw + 1)
        if torch.equal(image[:, y : y + ph, x : x + pw], patch)
    ]
    assert sources and (top, left) not in sources


def test_area_and_aspect_ranges() -> None:
    image = noise_image(0, (64, 64))
    cutpaste = CutPaste(area_range=(0.1, 0.1), aspect_range=(1.0, 1.0), flip=False, jitter=0.0)
    for seed in range(5):
        mask = cutpaste(image, gen(seed)).mask[0]
        assert int(mask.sum()) == 20 * 20  # sqrt(0.1 * 64 * 64) = 20.2 -> 20 x 20
    wide = CutPaste(area_range=(0.1, 0.1), aspect_range=(4.0, 4.0), flip=False, jitter=0.0)
    rows, cols = wide(image, gen(0)).mask[0].bool().nonzero().unbind(1)
    assert int(cols.max() - cols.min() + 1) == 40 and int(rows.max() - rows.min() + 1) == 10


def test_flip_and_jitter_change_the_patch() -> None:
    image = noise_image(1, (64, 64))
    plain = CutPaste(flip=False, jitter=0.0)
    jittered = CutPaste(flip=False, jitter=0.5)
    a, b = plain(image, gen(2)), jittered(image, gen(2))
    assert torch.equal(a.mask, b.mask)  # same draws, same place
    assert not torch.equal(a.image, b.image)


def test_batch_probability() -> None:
    images = torch.stack([textured(seed=s) for s in range(6)])
    cutpaste = CutPaste()
    out, masks = cutpaste.synthesize_batch(images, gen(0), probability=0.0)
    assert torch.equal(out, images) and not masks.any()
    out, masks = cutpaste.synthesize_batch(images, gen(0), probability=1.0)
    assert masks.shape == (6, 1, 64, 64) and bool(masks.flatten(1).any(1).all())
    outside = ~masks.bool().expand_as(images)
    assert torch.equal(out[outside], images[outside])


def test_flat_image_gives_an_empty_mask() -> None:
    image = torch.full((3, 32, 32), 0.4)
    out = CutPaste(jitter=0.0)(image, gen(0))
    assert not out.mask.any() and torch.equal(out.image, image)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"area_range": (0.5, 0.1)},
        {"area_range": (0.0, 1.5)},
        {"aspect_range": (0.0, 2.0)},
        {"aspect_range": (3.0, 1.0)},
        {"jitter": -0.1},
        {"jitter": 1.0},
        {"min_change": 1.0},
    ],
)
def test_bad_parameters_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        CutPaste(**kwargs)


def test_bad_inputs() -> None:
    cutpaste = CutPaste()
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        cutpaste(textured() * 2, gen(0))
    with pytest.raises(DataError, match="shape"):
        cutpaste(torch.rand(1, 8, 8), gen(0))
    with pytest.raises(ConfigError, match="Generator"):
        cutpaste(textured(), 0)  # type: ignore[arg-type]
