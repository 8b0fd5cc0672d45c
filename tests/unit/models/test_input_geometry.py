"""Detectors plan their input geometry from the training images: aspect, tiling, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flawmap.data import FolderDataset, MVTecDataset
from flawmap.errors import ConfigError, DataError
from flawmap.models import create_model, load_model

TINY = {"weights": "random", "threshold_holdout": 0.25}


def _write_images(folder: Path, n: int, h: int, w: int, seed: int = 0) -> Path:
    """``n`` striped images of ``h`` x ``w`` pixels (a wide or tall part)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = np.arange(w, dtype=np.float32)[None, :].repeat(h, 0)
    for i in range(n):
        base = 128 + 40 * np.sin(2 * np.pi * x / 12 + rng.uniform(0, 6)) + rng.normal(0, 4, (h, w))
        array = np.clip(base, 0, 255).astype(np.uint8)[..., None].repeat(3, 2)
        Image.fromarray(array).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def wide_part(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A category of 1:2.5 images (H 80, W 200), MVTec layout, train only."""
    root = tmp_path_factory.mktemp("wide") / "strip"
    _write_images(root / "train" / "good", 8, 80, 200)
    return root


@pytest.mark.parametrize("model", ["padim", "patchcore"])
def test_keep_fits_on_the_training_shape_and_predicts_full_size_maps(wide_part, model):
    detector = create_model(model, image_size=64, **TINY)
    train = MVTecDataset(wide_part, "train", detector.transform)  # built before fit: square
    detector.fit(train)
    h, w = detector.geometry_.size
    stride = detector.deepest_stride()
    assert h % stride == 0 and w % stride == 0 and abs(w / h - 2.5) <= 2.5 * stride / h
    assert detector.transform.output_size == (h, w)
    # A dataset built with another transform is re-read at the model's size.
    prediction = detector.predict(MVTecDataset(wide_part, "train"))
    assert prediction.maps.shape[1:] == (h, w)


def test_padim_keeps_one_gaussian_per_position_of_the_planned_grid(wide_part):
    detector = create_model("padim", image_size=64, n_features=8, **TINY)
    detector.fit(MVTecDataset(wide_part, "train"))
    h, w = detector.geometry_.size
    grid = (h // 4, w // 4)  # PaDiM's finest stage has stride 4
    assert tuple(detector.module.mean.shape) == (grid[0] * grid[1], 8)
    assert tuple(detector.module.inv_covariance.shape) == (grid[0] * grid[1], 8, 8)


def test_squeeze_keeps_the_old_square_resize(wide_part):
    detector = create_model("padim", image_size=64, aspect="squeeze", n_features=8, **TINY)
    detector.fit(MVTecDataset(wide_part, "train"))
    assert detector.geometry_.size == (64, 64)


def test_tiling_one_by_one_reproduces_the_untiled_map_exactly(wide_part):
    maps = {}
    for tiling in ("off", "1x1"):
        detector = create_model("patchcore", image_size=64, tiling=tiling, seed=3, **TINY)
        detector.fit(MVTecDataset(wide_part, "train"))
        maps[tiling] = detector.predict(MVTecDataset(wide_part, "train"))
    assert np.array_equal(maps["off"].maps, maps["1x1"].maps)
    assert np.array_equal(maps["off"].scores, maps["1x1"].scores)


def test_tiled_model_sees_the_image_at_tiles_times_the_budget(wide_part):
    detector = create_model("padim", image_size=32, tiling="2x2", n_features=8, **TINY)
    detector.fit(MVTecDataset(wide_part, "train"))
    tile = detector.geometry_.tile_size
    assert detector.geometry_.tiles == (2, 2)
    assert detector.transform.output_size == (2 * tile[0], 2 * tile[1])
    assert detector.module.extractor.tiles == (2, 2)
    prediction = detector.predict(MVTecDataset(wide_part, "train"))
    assert prediction.maps.shape[1:] == detector.transform.output_size


def test_tiling_with_a_centre_crop_is_refused():
    with pytest.raises(ConfigError, match="drop center_crop"):
        create_model("padim", image_size=64, center_crop=48, tiling="2x2")
    with pytest.raises(ConfigError, match="'off', 'auto' or 'RxC'"):
        create_model("padim", tiling="4")


def test_geometry_is_saved_checked_and_restored(wide_part, tmp_path):
    detector = create_model("padim", image_size=48, tiling="auto", n_features=8, **TINY)
    detector.fit(MVTecDataset(wide_part, "train"))
    folder = detector.save(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert config["fit"]["geometry"] == detector.geometry_.to_json()
    loaded = load_model(folder)
    assert loaded.geometry_ == detector.geometry_
    data = FolderDataset(wide_part / "train" / "good")
    assert np.allclose(loaded.predict(data).maps, detector.predict(data).maps, atol=1e-6)
    config["fit"]["geometry"]["size"] = [64, 64]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match="geometry"):
        load_model(folder)


def test_a_model_saved_before_aspect_existed_loads_as_squeezed(mvtec_category, tmp_path):
    detector = create_model("padim", image_size=64, aspect="squeeze", n_features=8, **TINY)
    detector.fit(MVTecDataset(mvtec_category, "train"))
    folder = detector.save(tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    for name in ("aspect", "tiling"):
        del config["params"][name]
    del config["fit"]["geometry"]
    (folder / "config.json").write_text(json.dumps(config))
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        metadata = dict(handle.metadata())
        state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    params = json.loads(metadata["params"])
    for name in ("aspect", "tiling"):
        del params[name]
    metadata["params"] = json.dumps(params, sort_keys=True)
    del metadata["geometry"]
    save_file(state, str(folder / "model.safetensors"), metadata=metadata)
    loaded = load_model(folder)
    assert loaded.aspect == "squeeze" and loaded.tiling == "off"
    assert loaded.geometry_.size == (64, 64)
    images = torch.rand(2, 3, 64, 64)
    assert np.allclose(loaded.predict(images).maps, detector.predict(images).maps, atol=1e-6)


def test_fit_failure_leaves_the_previous_geometry(wide_part):
    detector = create_model("padim", image_size=64, n_features=8, **TINY)
    detector.fit(MVTecDataset(wide_part, "train"))
    before = detector.geometry_
    with pytest.raises(DataError):
        detector.fit(torch.full((2, 3, 32, 32), 7.0))  # not in [0, 1]
    assert detector.geometry_ == before and detector.is_fitted


@pytest.mark.parametrize("model", ["padim", "patchcore"])
def test_a_tiled_wide_model_exports_with_the_same_maps(wide_part, tmp_path, model):
    from flawmap.export import export_model
    from flawmap.runtime import load_exported

    detector = create_model(model, image_size=32, tiling="2x1", **TINY)
    detector.fit(MVTecDataset(wide_part, "train"))
    runtime = load_exported(export_model(detector, tmp_path / "export", format="onnx"))
    assert runtime.input_size == detector.transform.output_size
    images = torch.rand(2, 3, *detector.transform.output_size)
    ref = detector.predict(images)
    got = runtime.predict(images.numpy())
    assert np.allclose(got.scores, ref.scores, rtol=1e-4, atol=1e-5)
    span = float(ref.maps.max() - ref.maps.min())
    assert np.abs(got.maps - ref.maps).max() <= 1e-3 * span
