"""flawmap.export: every model's ONNX and OpenVINO export scores like the torch model
(synthetic images, random weights), and export_model refuses bad options and bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flawmap.errors import ConfigError, NotFittedError
from flawmap.export import export_model
from flawmap.models import create_model, list_models
from flawmap.models.base import Detector, Prediction, as_dataset
from flawmap.runtime import RuntimePrediction, load_exported

#: Models that train, and the epochs that keep the unit tests fast.
TRAINED = {"cse", "fcdd", "mlff", "simplenet", "trisimplenet"}
SIZE = 64


def seeded_images(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """(n, 3, size, size) float32 uniform noise in [0, 1] from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=generator)


def fit_small(name: str, train: torch.Tensor, **params: object) -> Detector:
    """``name`` with random weights at 64 px (one epoch where it trains), fitted on ``train``."""
    if name in TRAINED:
        params = {"epochs": 1, **params}
    return create_model(name, weights="random", image_size=SIZE, **params).fit(train)


def assert_parity(got: RuntimePrediction, ref: Prediction) -> None:
    """fp32 parity: scores within 1e-4 relative, maps within 1e-3 of the map's range,
    identical labels at the stored threshold.

    "Relative" is to the scores' scale (their largest magnitude): a score near zero (SimpleNet's
    can be orders of magnitude below the others) carries the float32 rounding of the terms that
    cancel to it, so its own relative error says nothing about the export.
    """
    assert got.scores.shape == ref.scores.shape and got.maps.shape == ref.maps.shape
    scale = float(np.abs(ref.scores).max())
    assert scale > 0
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=1e-4 * scale)
    span = float(ref.maps.max() - ref.maps.min())
    assert span > 0
    assert float(np.abs(got.maps - ref.maps).max()) <= 1e-3 * span
    if ref.labels is None:
        assert got.labels is None and got.threshold is None
    else:
        assert got.threshold == pytest.approx(ref.threshold) and got.labels is not None
        np.testing.assert_array_equal(got.labels, ref.labels)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """12 training images and 6 other images to score (different seeds)."""
    return seeded_images(12, seed=0), seeded_images(6, seed=1)


@pytest.fixture(scope="module", params=list_models())
def fitted(request: pytest.FixtureRequest, data) -> tuple[Detector, Prediction]:
    """Each model fitted once, with its torch prediction of the test images."""
    train, test = data
    model = fit_small(request.param, train)
    return model, model.predict(test)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_fp32_parity_every_model(fitted, data, fmt, tmp_path_factory) -> None:
    model, ref = fitted
    assert ref.threshold is not None  # the default holdout learns one: labels are compared
    out = export_model(model, tmp_path_factory.mktemp(f"{model.name}_{fmt}"), format=fmt)
    runtime = load_exported(out)
    assert runtime.name == model.name and runtime.input_size == (SIZE, SIZE)
    assert runtime.threshold == pytest.approx(model.threshold)
    assert_parity(runtime.predict(data[1].numpy()), ref)
    # batch size must not change the results
    assert_parity(runtime.predict(data[1].numpy(), batch_size=1), ref)


@pytest.mark.parametrize(
    ("fmt", "precision"), [("openvino", "bf16"), ("onnx", "int8"), ("openvino", "int8")]
)
def test_low_precision_exports_run(fitted, data, fmt, precision, tmp_path_factory) -> None:
    model, ref = fitted
    train, test = data
    calibration = as_dataset(train) if precision == "int8" else None
    out = export_model(
        model,
        tmp_path_factory.mktemp(f"{model.name}_{fmt}_{precision}"),
        format=fmt,
        precision=precision,
        calibration=calibration,
    )
    meta = json.loads((out / "model.json").read_text())
    assert (meta["backend"], meta["precision"]) == (fmt, precision)
    if precision == "int8":
        assert meta["calibration"]["images"] == len(train)
    runtime = load_exported(out)
    got = runtime.predict(test.numpy())
    assert got.scores.shape == ref.scores.shape and got.maps.shape == ref.maps.shape
    assert got.scores.dtype == np.float32 and got.maps.dtype == np.float32
    assert np.isfinite(got.scores).all() and np.isfinite(got.maps).all()


# ---------------------------------------------------------------------- export_model errors
@pytest.fixture(scope="module")
def padim(data) -> Detector:
    return fit_small("padim", data[0])


def test_onnx_bf16_refused_pointing_to_openvino(padim, tmp_path) -> None:
    with pytest.raises(ConfigError, match="openvino"):
        export_model(padim, tmp_path / "out", format="onnx", precision="bf16")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("fmt", "precision", "word"),
    [("tflite", "fp32", "tflite"), ("onnx", "fp16", "fp16"), ("openvino", "int4", "int4")],
)
def test_unknown_format_or_precision(padim, tmp_path, fmt, precision, word) -> None:
    with pytest.raises(ConfigError, match=word):
        export_model(padim, tmp_path / "out", format=fmt, precision=precision)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_int8_without_calibration(padim, tmp_path, fmt) -> None:
    with pytest.raises(ConfigError, match="calibration"):
        export_model(padim, tmp_path / "out", format=fmt, precision="int8")
    assert not (tmp_path / "out").exists()


def test_unfitted_model(tmp_path) -> None:
    model = create_model("padim", weights="random", image_size=SIZE)
    with pytest.raises(NotFittedError):
        export_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_foreign_folder_untouched(padim, tmp_path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"notes\.txt"):
        export_model(padim, folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep me"


def test_existing_export_needs_overwrite(padim, data, tmp_path) -> None:
    out = export_model(padim, tmp_path / "out")
    before = json.loads((out / "model.json").read_text())
    assert before["fit_id"] == padim.fit_id_
    other = fit_small("padim", data[1])  # another fit: another fit id and other scores
    with pytest.raises(ConfigError, match="overwrite"):
        export_model(other, out)
    assert json.loads((out / "model.json").read_text()) == before
    export_model(other, out, overwrite=True)
    after = json.loads((out / "model.json").read_text())
    assert after["fit_id"] == other.fit_id_ != before["fit_id"]
    assert_parity(load_exported(out).predict(data[0].numpy()), other.predict(data[0]))


def test_export_folder_contents(padim, tmp_path) -> None:
    out = export_model(padim, tmp_path / "out")
    assert isinstance(out, Path)
    meta = json.loads((out / "model.json").read_text())
    graph_files = {spec["file"] for spec in meta["graphs"].values()}
    assert graph_files and all(name.endswith(".onnx") for name in graph_files)
    assert set(meta["files"]) == graph_files | set(meta["arrays"].values())
    names = {p.name for p in out.iterdir()}
    assert names == {"model.json", "preprocess.json", "threshold.json", *meta["files"]}
    pre = json.loads((out / "preprocess.json").read_text())
    assert pre["image_size"] == [SIZE, SIZE] and pre["center_crop"] is None
    assert json.loads((out / "threshold.json").read_text())["threshold"] == pytest.approx(
        padim.threshold
    )
