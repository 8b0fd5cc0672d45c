"""Input geometry: aspect-keeping pixel budgets, tile grids, their options and JSON form."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flawmap.data import (
    FolderDataset,
    InputGeometry,
    image_shape,
    original_shapes,
    parse_tiling,
    plan_geometry,
    with_transform,
)
from flawmap.data.transforms import ImageTransform, typical_aspect
from flawmap.errors import ConfigError


@pytest.mark.parametrize("stride", [8, 16, 32])
@pytest.mark.parametrize("budget", [160, 256, 320])
def test_keep_holds_a_1_to_2_5_shape_within_one_stride(stride, budget):
    geometry = plan_geometry(budget, "keep", "off", [(200, 500)] * 3, stride)
    h, w = geometry.size
    assert h % stride == 0 and w % stride == 0
    assert abs(w - 2.5 * h) <= stride * 2.5  # each side is within half a stride of exact
    assert abs(w / h - 2.5) <= 2.5 * stride / h
    assert abs(h * w - budget * budget) / (budget * budget) < 0.25
    assert geometry.tiles == (1, 1)


def test_keep_follows_tall_images_too():
    h, w = plan_geometry(256, "keep", "off", [(500, 200)], 16).size
    assert h > w and abs(h / w - 2.5) < 0.3


def test_square_images_give_exactly_the_budget_without_rounding():
    # 250 is no multiple of 16: square data keeps the size as given, like "squeeze".
    assert plan_geometry(250, "keep", "off", [(300, 300), (301, 300)], 16).size == (250, 250)


def test_squeeze_and_pairs_ignore_the_images():
    shapes = [(100, 400)]
    assert plan_geometry(256, "squeeze", "off", shapes, 16).size == (256, 256)
    assert plan_geometry((64, 96), "keep", "off", shapes, 16).size == (64, 96)
    assert plan_geometry(256, "keep", "off", None, 16).size == (256, 256)


def test_typical_aspect_counts_tall_and_wide_alike():
    assert typical_aspect([(100, 200), (200, 100), (100, 100)]) == pytest.approx(1.0)


def test_auto_tiling_covers_large_images_near_their_resolution():
    geometry = plan_geometry(256, "squeeze", "auto", [(1024, 520)], 16)
    assert geometry.tiles == (4, 2) and geometry.size == (1024, 512)
    keep = plan_geometry(256, "keep", "auto", [(1024, 520)], 16)
    (th, tw), (rows, cols) = keep.tile_size, keep.tiles
    assert (rows, cols) == (round(1024 / th), round(520 / tw))
    assert keep.size == (th * rows, tw * cols)
    # small images: one tile; at most four per side.
    assert plan_geometry(256, "keep", "auto", [(300, 300)], 16).tiles == (1, 1)
    assert plan_geometry(64, "squeeze", "auto", [(4000, 4000)], 16).tiles == (4, 4)


def test_explicit_tiling_multiplies_the_size():
    geometry = plan_geometry(64, "squeeze", (2, 3), None, 16)
    assert geometry.size == (128, 192) and geometry.tile_size == (64, 64)


@pytest.mark.parametrize("text,expected", [("off", "off"), ("auto", "auto"), ("2x3", (2, 3))])
def test_parse_tiling(text, expected):
    assert parse_tiling(text) == expected


@pytest.mark.parametrize("bad", ["0x2", "2", "x", "2x2x2", 2, None, "on"])
def test_parse_tiling_refuses_other_values_naming_the_forms(bad):
    with pytest.raises(ConfigError, match="'off', 'auto' or 'RxC'"):
        parse_tiling(bad)


def test_geometry_checks_and_json_round_trip():
    geometry = InputGeometry((128, 192), (2, 3))
    assert InputGeometry.from_json(geometry.to_json()) == geometry
    with pytest.raises(ConfigError, match="cannot be split"):
        InputGeometry((100, 64), (3, 1))
    with pytest.raises(ConfigError, match="largest supported size"):
        InputGeometry((8192, 64))
    with pytest.raises(ConfigError, match="input geometry must be"):
        InputGeometry.from_json({"size": [1, 2]})
    with pytest.raises(ConfigError, match="aspect must be"):
        plan_geometry(64, "stretch", "off", None, 16)


def _image(path, h, w, exif_rotate=False):
    array = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(array)
    if exif_rotate:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 on display
        im.save(path, exif=exif)
    else:
        im.save(path)
    return path


def test_image_shape_reads_headers_and_applies_exif_orientation(tmp_path):
    assert image_shape(_image(tmp_path / "a.png", 30, 50)) == (30, 50)
    assert image_shape(_image(tmp_path / "b.jpg", 30, 50, exif_rotate=True)) == (50, 30)


def test_original_shapes_and_with_transform(tmp_path):
    (tmp_path / "good").mkdir()
    for i, (h, w) in enumerate([(30, 50), (40, 100)]):
        _image(tmp_path / "good" / f"{i}.png", h, w)
    data = FolderDataset(tmp_path / "good", transform=ImageTransform(32))
    assert original_shapes(data).tolist() == [[30, 50], [40, 100]]
    from torch.utils.data import Subset

    assert original_shapes(Subset(data, [1])).tolist() == [[40, 100]]
    wide = with_transform(Subset(data, [0, 1]), ImageTransform((16, 48)))
    assert tuple(wide[1]["image"].shape) == (3, 16, 48)
    assert data[1]["image"].shape[-2:] == (32, 32)  # the original is untouched
    assert with_transform(data, ImageTransform(32)) is data
