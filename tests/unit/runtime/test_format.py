"""The export folder: read_export refuses damaged folders (naming the file), and the threshold
is a plain number in threshold.json that changes labels without re-exporting."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flawmap.errors import ConfigError
from flawmap.export import export_model
from flawmap.models.base import Detector
from flawmap.runtime import is_export_folder, load_exported, read_export
from tests.unit.test_export import fit_small, seeded_images


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    return seeded_images(12, seed=10), seeded_images(6, seed=11)


@pytest.fixture(scope="module")
def models(images) -> dict[str, Detector]:
    return {name: fit_small(name, images[0]) for name in ("padim", "patchcore")}


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {name: export_model(model, root / name) for name, model in models.items()}


@pytest.fixture(params=["padim", "patchcore"])
def copy(request: pytest.FixtureRequest, exports, tmp_path) -> Path:
    """A private copy of an export, free to damage."""
    return Path(shutil.copytree(exports[request.param], tmp_path / request.param))


def edit_json(path: Path, **changes: object) -> None:
    payload = json.loads(path.read_text())
    payload.update(changes)
    path.write_text(json.dumps(payload))


def test_reads_intact_export(copy) -> None:
    info = read_export(copy)
    assert is_export_folder(copy) and not is_export_folder(copy.parent)
    assert info.backend == "onnx" and info.precision == "fp32"
    assert info.input_size == (64, 64) and info.center_crop is None
    assert info.head == ("nearest_neighbour" if info.model == "patchcore" else "graph")
    assert set(info.meta["files"]) == {spec["file"] for spec in info.graphs.values()} | set(
        info.arrays.values()
    )


def test_changed_graph_byte(copy) -> None:
    graph = read_export(copy).graphs
    name = next(iter(graph.values()))["file"]
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=f"{re.escape(name)}.*checksum"):
        read_export(copy)
    with pytest.raises(ConfigError, match=re.escape(name)):
        load_exported(copy)
    read_export(copy, verify=False)  # the JSON files themselves are fine


def test_changed_memory_bank(exports, tmp_path) -> None:
    folder = Path(shutil.copytree(exports["patchcore"], tmp_path / "pc"))
    bank_file = read_export(folder).arrays["memory_bank"]
    bank = np.load(folder / bank_file)
    bank[0, 0] += 1.0
    np.save(folder / bank_file, bank)
    with pytest.raises(ConfigError, match=f"{re.escape(bank_file)}.*checksum"):
        read_export(folder)


@pytest.mark.parametrize("which", ["graph", "preprocess.json", "threshold.json", "model.json"])
def test_missing_file(copy, which) -> None:
    name = next(iter(read_export(copy).graphs.values()))["file"] if which == "graph" else which
    (copy / name).unlink()
    with pytest.raises(ConfigError, match=re.escape(name)):
        read_export(copy)


def test_newer_format_version(copy) -> None:
    edit_json(copy / "model.json", format_version=99)
    with pytest.raises(ConfigError, match=r"model\.json.*99"):
        read_export(copy)


def test_not_an_export(copy) -> None:
    edit_json(copy / "model.json", format="flawmap-model")
    assert not is_export_folder(copy)
    with pytest.raises(ConfigError, match=r"model\.json"):
        read_export(copy)


@pytest.mark.parametrize(
    "text",
    [
        '{"threshold": "abc"}',
        '{"threshold": "NaN"}',
        '{"threshold": NaN}',
        '{"threshold": Infinity}',
        '{"threshold": true}',
        '{"threshold": [1.0]}',
        '{"limit": 1.0}',
        "not json",
        "[1.0]",
    ],
)
def test_malformed_threshold(copy, text) -> None:
    (copy / "threshold.json").write_text(text)
    with pytest.raises(ConfigError, match=r"threshold\.json"):
        read_export(copy)


@pytest.mark.parametrize("size", [[64], [64, 0], "64", [64.0, 64.0], None])
def test_malformed_preprocess(copy, size) -> None:
    edit_json(copy / "preprocess.json", image_size=size)
    with pytest.raises(ConfigError, match=r"preprocess\.json"):
        read_export(copy)


def test_edited_threshold_changes_labels(copy, images) -> None:
    test = images[1].numpy()
    before = load_exported(copy).predict(test)
    assert before.labels is not None
    new = float(np.median(before.scores))  # half the images on each side
    edit_json(copy / "threshold.json", threshold=new)
    after = load_exported(copy).predict(test)
    assert after.threshold == new
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after.labels, before.scores >= new)
    assert 0 < after.labels.sum() < len(test)


def test_save_threshold_writes_the_file(copy, images) -> None:
    test = images[1].numpy()
    model = load_exported(copy)
    scores = model.predict(test).scores
    value = float(np.sort(scores)[1])  # all but the lowest score are defective
    model.save_threshold(value)
    assert model.threshold == value
    payload = json.loads((copy / "threshold.json").read_text())
    assert payload["threshold"] == value and "rule" in payload  # other fields kept
    again = load_exported(copy)
    assert again.threshold == value
    np.testing.assert_array_equal(again.predict(test).labels, scores >= value)
    assert again.predict(test).labels.sum() == len(test) - 1
    with pytest.raises(ConfigError):
        again.save_threshold(float("nan"))
    assert json.loads((copy / "threshold.json").read_text())["threshold"] == value


def test_null_threshold(copy, images) -> None:
    load_exported(copy).save_threshold(None)
    assert json.loads((copy / "threshold.json").read_text())["threshold"] is None
    model = load_exported(copy)
    assert model.threshold is None
    pred = model.predict(images[1].numpy())
    assert pred.labels is None and pred.threshold is None and np.isfinite(pred.scores).all()
