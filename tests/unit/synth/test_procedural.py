"""Unit tests of flawmap.synth.procedural (the built-in texture source of texture defects)."""

from __future__ import annotations

import time

import pytest
import torch

from flawmap.errors import ConfigError
from flawmap.synth import procedural_texture
from flawmap.synth.procedural import PATTERNS


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("h", "w"), [(256, 256), (64, 96), (300, 17), (1, 1)])
def test_shape_dtype_and_range(h: int, w: int) -> None:
    for seed in range(8):
        tex = procedural_texture(h, w, gen(seed))
        assert tex.shape == (3, h, w) and tex.dtype == torch.float32
        assert torch.isfinite(tex).all()
        assert float(tex.min()) >= 0.0 and float(tex.max()) <= 1.0


def test_deterministic_for_a_generator_state() -> None:
    a, b = procedural_texture(64, 64, gen(7)), procedural_texture(64, 64, gen(7))
    assert torch.equal(a, b)
    g = gen(7)
    procedural_texture(64, 64, g)
    assert not torch.equal(procedural_texture(64, 64, g), a)  # the generator advanced


def test_different_seeds_give_varied_textures() -> None:
    textures = torch.stack([procedural_texture(64, 64, gen(s)) for s in range(24)])
    flat = textures.flatten(1)
    assert len({tuple(t[:16].tolist()) for t in flat}) == 24  # all distinct
    # Not one colour: textures differ in mean colour and have structure inside.
    assert float(textures.mean(dim=(2, 3)).std(dim=0).min()) > 0.05
    assert float(textures.std(dim=(2, 3)).mean()) > 0.03
    # Pairwise mean absolute differences are large (not near-copies of each other).
    diffs = (flat[:, None] - flat[None]).abs().mean(-1)
    off_diagonal = diffs[~torch.eye(24, dtype=torch.bool)]
    assert float(off_diagonal.min()) > 0.02


def test_every_pattern_is_drawn() -> None:
    drawn = []
    for seed in range(60):
        g = gen(seed)
        drawn.append(PATTERNS[int(torch.randint(len(PATTERNS), (1,), generator=g))])
    assert set(drawn) == set(PATTERNS)  # the first draw of a texture picks the pattern


def test_fast_enough() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        procedural_texture(256, 256, gen(0))  # warm-up
        start = time.perf_counter()
        for seed in range(20):
            procedural_texture(256, 256, gen(seed))
        per_texture = (time.perf_counter() - start) / 20
    finally:
        torch.set_num_threads(threads)
    assert per_texture < 0.05  # a sanity bound far above the expected cost


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 8), "height"), ((8, -1), "width"), ((8.0, 8), "height"), ((True, 8), "height")],
)
def test_bad_sizes_raise_config_error(args: tuple[object, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        procedural_texture(*args, gen(0))  # type: ignore[arg-type]


def test_bad_generator_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="generator"):
        procedural_texture(8, 8, 0)  # type: ignore[arg-type]
