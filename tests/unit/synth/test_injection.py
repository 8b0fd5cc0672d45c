"""The shared defect-injection path: ``DefectGenerator.apply``, ``synthesize_batch``,
``RandomChoice``, ``RealDefects`` and the colour jitter, each against the per-image loop it
replaces (same random draws in the same order, bit-identical results)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flawmap.errors import ConfigError, DataError
from flawmap.synth import (
    ConfettiNoise,
    CutPaste,
    DefectSynthesizer,
    RandomChoice,
    RealDefects,
)
from flawmap.synth.color import color_jitter, rotate_hue
from tests.synthetic import textured_image


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int, size: int = 48) -> torch.Tensor:
    rng = np.random.default_rng(0)
    arr = np.stack([textured_image(rng, size) for _ in range(n)])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


def test_apply_is_the_per_image_loop() -> None:
    images = batch(3)
    synth = DefectSynthesizer(kinds=("structural", "blur"))
    out, masks = synth.apply(images, gen(3))
    g = gen(3)
    for k in range(3):
        defect = synth(images[k], g)
        assert torch.equal(out[k], defect.image) and torch.equal(masks[k], defect.mask)
    assert masks.shape == (3, 1, 48, 48) and masks.dtype == torch.float32
    assert torch.equal(images, batch(3))  # the input is not modified
    empty, no_masks = synth.apply(images[:0], gen(0))
    assert empty.shape == (0, 3, 48, 48) and no_masks.shape == (0, 1, 48, 48)
    with pytest.raises(DataError, match="shape"):
        synth.apply(images[0], gen(0))


def test_synthesize_batch_draws_the_choice_first() -> None:
    images = batch(5)
    confetti = ConfettiNoise()
    out, masks = confetti.synthesize_batch(images, gen(1), 0.5)
    g = gen(1)
    chosen = torch.rand(5, generator=g) < 0.5
    assert chosen.any() and not chosen.all()
    for i in range(5):
        if chosen[i]:
            defect = confetti(images[i], g)
            assert torch.equal(out[i], defect.image) and torch.equal(masks[i], defect.mask)
        else:
            assert torch.equal(out[i], images[i]) and not masks[i].any()


def test_random_choice_draws_every_choice_first() -> None:
    images = batch(6)
    cutpaste, confetti = CutPaste(), ConfettiNoise()
    out, masks = RandomChoice((cutpaste, confetti)).apply(images, gen(2))
    g = gen(2)
    first = torch.rand(6, generator=g) < 0.5  # u < 0.5 -> the first generator
    assert first.any() and not first.all()
    for j in range(6):
        defect = (cutpaste if first[j] else confetti)(images[j], g)
        assert torch.equal(out[j], defect.image) and torch.equal(masks[j], defect.mask)
    single = RandomChoice((cutpaste, confetti))(images[0], gen(4))
    assert single.kind in ("cutpaste", "confetti")
    with pytest.raises(ConfigError, match="non-empty"):
        RandomChoice(())
    with pytest.raises(ConfigError, match="DefectGenerators"):
        RandomChoice((cutpaste, "blur"))  # type: ignore[list-item]


def test_random_choice_of_three_is_uniform() -> None:
    gens = (ConfettiNoise(), CutPaste(), DefectSynthesizer(kinds=("blur",)))
    picks = RandomChoice(gens)._choose(3000, gen(0))
    counts = [sum(p is g for p in picks) for g in gens]
    assert all(900 < c < 1100 for c in counts), counts


def test_real_defects_replace_the_image() -> None:
    real, masks = batch(2, 32), torch.zeros(2, 1, 32, 32)
    masks[:, :, 4:9, 4:9] = 1
    defects = RealDefects(real, masks)
    assert len(defects) == 2
    images = batch(4, 32).flip(0)
    out, got = defects.synthesize_batch(images, gen(0), 1.0)
    g = gen(0)
    torch.rand(4, generator=g)
    for i in range(4):
        k = int(torch.randint(2, (1,), generator=g))
        assert torch.equal(out[i], real[k]) and torch.equal(got[i], masks[k])
    with pytest.raises(DataError, match="shape"):
        defects(batch(1, 48)[0], gen(0))
    with pytest.raises(DataError, match="masks"):
        RealDefects(real, masks[:1])


def test_color_jitter_is_seeded_and_in_range() -> None:
    image = batch(1)[0]
    a, b = color_jitter(image, 0.5, gen(0)), color_jitter(image, 0.5, gen(0))
    assert torch.equal(a, b) and not torch.equal(a, image)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    torch.testing.assert_close(color_jitter(image, 0.0, gen(1)), image)
    grey = torch.full((3, 4, 4), 0.5)
    torch.testing.assert_close(rotate_hue(grey, 0.3), grey)  # a grey image has no hue
