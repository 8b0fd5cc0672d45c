"""Unit tests of flawmap.synth (Perlin masks and the DRAEM/MemSeg/CSE defect synthesizer)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flawmap.errors import ConfigError, DataError
from flawmap.synth import (
    DEFECT_KINDS,
    DefectSynthesizer,
    SyntheticDefect,
    perlin_mask,
    perlin_noise,
    procedural_texture,
)
from tests.synthetic import textured_image


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def textured(size: int = 64, seed: int = 0) -> torch.Tensor:
    """The shared stripes-plus-noise test surface as a (3, size, size) float tensor in [0, 1]."""
    arr = textured_image(np.random.default_rng(seed), size)
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0


@pytest.fixture
def texture_dir(tmp_path: Path) -> Path:
    """A DTD-like folder dtd/images/<class>/*.png with a few small random-colour textures."""
    rng = np.random.default_rng(1)
    root = tmp_path / "dtd" / "images"
    for cls in ("banded", "dotted"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{cls}_{i}.png")
    (root / "banded" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def synth(texture_dir: Path) -> DefectSynthesizer:
    return DefectSynthesizer(texture_dir)


# ---------------------------------------------------------------- Perlin noise and masks


@pytest.mark.parametrize(("h", "w", "ry", "rx"), [(64, 64, 4, 8), (50, 70, 3, 5), (17, 9, 32, 1)])
def test_perlin_noise_shape_and_finite(h: int, w: int, ry: int, rx: int) -> None:
    noise = perlin_noise(h, w, ry, rx, gen(0))
    assert noise.shape == (h, w)
    assert noise.dtype == torch.float32
    assert torch.isfinite(noise).all()
    assert noise.abs().max() <= 1.5
    assert noise.std() > 0  # not the all-zero lattice


def test_perlin_noise_deterministic_and_seed_dependent() -> None:
    a, b = perlin_noise(40, 30, 4, 2, gen(3)), perlin_noise(40, 30, 4, 2, gen(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, perlin_noise(40, 30, 4, 2, gen(4)))


def test_perlin_noise_rejects_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="res_x"):
        perlin_noise(16, 16, 2, 0, gen(0))
    with pytest.raises(ConfigError, match="generator"):
        perlin_noise(16, 16, 2, 2, None)  # type: ignore[arg-type]


def test_perlin_mask_binary_and_non_empty_over_seeds() -> None:
    for seed in range(100):
        mask = perlin_mask(48, 64, gen(seed))
        assert mask.shape == (48, 64)
        assert mask.dtype == torch.bool
        assert mask.any()
        assert not mask.all()


def test_perlin_mask_falls_back_to_ellipse() -> None:
    # Noise never exceeds ~1, so every Perlin draw is empty and the ellipse is used.
    for seed in range(10):
        mask = perlin_mask(32, 40, gen(seed), threshold=5.0, max_tries=2)
        assert mask.any()


def test_perlin_mask_rejects_bad_scales() -> None:
    with pytest.raises(ConfigError, match="min_scale_exp"):
        perlin_mask(16, 16, gen(0), min_scale_exp=3, max_scale_exp=3)


# ---------------------------------------------------------------- DefectSynthesizer


@pytest.mark.parametrize("kind", ["texture", "structural", "blur"])
@pytest.mark.parametrize("size", [(64, 64), (50, 70)])
def test_defect_changes_only_masked_pixels(
    synth: DefectSynthesizer, kind: str, size: tuple[int, int]
) -> None:
    h, w = size
    image = torch.nn.functional.interpolate(textured()[None], size=size, mode="bilinear")[0]
    for seed in range(5):
        result = synth(image, gen(seed), kind=kind)
        assert isinstance(result, SyntheticDefect)
        assert result.kind == kind
        assert result.image.shape == (3, h, w)
        assert result.image.dtype == image.dtype
        assert result.mask.shape == (1, h, w)
        assert result.mask.dtype == torch.float32
        assert set(result.mask.unique().tolist()) <= {0.0, 1.0}
        inside = result.mask[0].bool()
        assert inside.any()
        assert torch.equal(result.image[:, ~inside], image[:, ~inside])
        assert (result.image - image).abs()[:, inside].mean() >= 1e-3
        assert result.image.min() >= 0 and result.image.max() <= 1


def test_same_seed_same_output_different_seed_different(synth: DefectSynthesizer) -> None:
    image = textured()
    a, b = synth(image, gen(7)), synth(image, gen(7))
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and a.kind == b.kind
    c = synth(image, gen(8))
    assert not torch.equal(a.image, c.image)


def test_every_kind_is_drawn(synth: DefectSynthesizer) -> None:
    image = textured(32)
    g = gen(0)
    kinds = {synth(image, g).kind for _ in range(30)}
    assert kinds == {"texture", "structural", "blur"}


def test_without_texture_folder_uses_procedural_textures_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning any more, neither now nor while drawing
        synth = DefectSynthesizer()
        assert synth.texture_dir is None and synth.kinds == DEFECT_KINDS
        image = textured(32)
        g = gen(0)
        kinds = {synth(image, g).kind for _ in range(30)}
    assert kinds == {"texture", "structural", "blur"}


def test_default_texture_is_the_procedural_texture() -> None:
    synth = DefectSynthesizer()
    torch.testing.assert_close(
        synth._texture(40, 48, gen(3)), procedural_texture(40, 48, gen(3)), rtol=0, atol=0
    )
    out = DefectSynthesizer(kinds=("texture",))(textured(32), gen(4))
    assert out.kind == "texture" and out.mask.sum() > 0


def test_structural_and_blur_only_without_texture_kind() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        synth = DefectSynthesizer(kinds=("structural", "blur"))
    assert synth.kinds == ("structural", "blur")
    image, g = textured(32), gen(0)
    assert {synth(image, g).kind for _ in range(30)} == {"structural", "blur"}
    with pytest.raises(ConfigError, match="texture"):
        synth(image, g, kind="texture")
    assert DefectSynthesizer(kinds=("blur",)).kinds == ("blur",)


def test_missing_texture_folder_raises_data_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="nope"):
        DefectSynthesizer(missing)


def test_empty_texture_folder_raises_data_error_on_first_use(tmp_path: Path) -> None:
    empty = tmp_path / "empty_textures"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no images here")
    synth = DefectSynthesizer(empty)  # listed lazily
    with pytest.raises(DataError, match="empty_textures"):
        synth(textured(32), gen(0), kind="texture")


def test_texture_files_listed_recursively_and_sorted(
    synth: DefectSynthesizer, texture_dir: Path
) -> None:
    names = [p.relative_to(texture_dir).as_posix() for p in synth.texture_files]
    assert names == [
        "banded/banded_0.png",
        "banded/banded_1.png",
        "dotted/dotted_0.png",
        "dotted/dotted_1.png",
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kinds": ("blur", "scratch")}, "scratch"),
        ({"kinds": ()}, "at least one"),
        ({"kinds": "blur"}, "sequence"),
        ({"kinds": ("blur",), "blend_range": (0.8, 0.2)}, "blend_range"),
        ({"kinds": ("blur",), "blend_range": (0.2, 1.5)}, "blend_range"),
        ({"kinds": ("blur",), "blur_sigma_range": (0.0, 2.0)}, "blur_sigma_range"),
        ({"kinds": ("blur",), "blur_sigma_range": (3.0,)}, "blur_sigma_range"),
        ({"kinds": ("blur",), "structural_grid": 0}, "structural_grid"),
        ({"kinds": ("blur",), "mask_threshold": 2.0}, "mask_threshold"),
    ],
)
def test_bad_configuration_raises_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DefectSynthesizer(**kwargs)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (torch.rand(1, 16, 16), "shape"),
        (torch.rand(16, 16), "shape"),
        (torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8), "float"),
        (torch.rand(3, 16, 16) * 2 - 1, r"\[0, 1\]"),
    ],
)
def test_bad_image_raises_data_error(image: torch.Tensor, match: str) -> None:
    synth = DefectSynthesizer(kinds=("blur",))
    with pytest.raises(DataError, match=match):
        synth(image, gen(0))


def test_flat_image_keeps_a_non_empty_mask() -> None:
    # Documented limitation: blur and structural defects cannot change a perfectly flat image.
    synth = DefectSynthesizer(kinds=("structural", "blur"))
    flat = torch.full((3, 32, 32), 0.5)
    result = synth(flat, gen(0))
    assert result.mask.any()
    assert torch.equal(result.image, flat)


def test_float64_in_float64_out(synth: DefectSynthesizer) -> None:
    image = textured(32).double()
    for kind in synth.kinds:
        assert synth(image, gen(0), kind=kind).image.dtype == torch.float64


def test_synthesize_batch(synth: DefectSynthesizer) -> None:
    images = torch.stack([textured(32, seed) for seed in range(4)])
    same, masks = synth.synthesize_batch(images, gen(0), probability=0.0)
    assert torch.equal(same, images)
    assert masks.shape == (4, 1, 32, 32) and not masks.any()

    out, masks = synth.synthesize_batch(images, gen(0), probability=1.0)
    assert out.shape == images.shape and masks.shape == (4, 1, 32, 32)
    assert all(m.any() for m in masks)
    outside = (masks == 0).expand_as(images)
    assert torch.equal(out[outside], images[outside])

    with pytest.raises(ConfigError, match="probability"):
        synth.synthesize_batch(images, gen(0), probability=1.5)
    with pytest.raises(DataError, match="B, 3, H, W"):
        synth.synthesize_batch(images[0], gen(0))
