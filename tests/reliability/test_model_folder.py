"""Model folders: atomic saves, the overwrite rule, and what load_model refuses.

Every test builds its own small folder from one tiny PatchCore fit (64 px, random weights),
except the contract test at the end, which fits every registered model once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from flawmap.errors import ConfigError, DataError, FlawmapWarning
from flawmap.models import Detector, create_model, list_models, load_model
from flawmap.models.base import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE
from flawmap.models.folder import check_save_target

FAST: dict[str, Any] = {
    "weights": "random",
    "image_size": 64,
    "batch_size": 4,
    "threshold_holdout": 0.25,
}


def toy_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def fit_patchcore(seed: int = 0) -> Detector:
    return create_model("patchcore", **FAST, coreset_ratio=0.25, seed=seed).fit(toy_images(4))


@pytest.fixture(scope="module")
def fitted() -> Detector:
    return fit_patchcore()


@pytest.fixture(scope="module")
def refitted() -> Detector:
    """A second fit with the same parameters (the same weights, another fit)."""
    return fit_patchcore()


@pytest.fixture(scope="module")
def probe() -> torch.Tensor:
    return toy_images(2, seed=9)


@pytest.fixture
def saved(fitted: Detector, tmp_path: Path) -> Path:
    return fitted.save(tmp_path / "model")


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / CONFIG_FILE).read_text())


def write_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def metadata(folder: Path) -> dict[str, str]:
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as handle:
        return dict(handle.metadata() or {})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_same_scores(a: Detector, b: Detector, images: torch.Tensor) -> None:
    pa, pb = a.predict(images), b.predict(images)
    np.testing.assert_array_equal(pa.scores, pb.scores)
    np.testing.assert_array_equal(pa.maps, pb.maps)
    assert pa.threshold == pb.threshold


# ------------------------------------------------------------------------------ the save target
def test_saving_over_a_model_needs_overwrite(
    fitted: Detector, refitted: Detector, saved: Path
) -> None:
    before = snapshot(saved)
    with pytest.raises(ConfigError, match="already holds a model") as info:
        refitted.save(saved)
    message = str(info.value)
    assert str(saved) in message and "--overwrite" in message and "overwrite=True" in message
    assert snapshot(saved) == before
    with pytest.raises(ConfigError, match="--overwrite"):
        check_save_target(saved, overwrite=False)  # the check the CLI runs before fitting


def test_overwrite_replaces_the_model_and_leaves_nothing_beside_it(
    refitted: Detector, saved: Path, probe: torch.Tensor
) -> None:
    refitted.save(saved, overwrite=True)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model"]
    assert read_config(saved)["fit_id"] == refitted.fit_id_
    assert_same_scores(load_model(saved), refitted, probe)


def test_a_file_is_not_a_save_target(fitted: Detector, tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.write_text("not a folder")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="is a file, not a folder") as info:
            fitted.save(target, overwrite=overwrite)
        assert str(target) in str(info.value)
    assert target.read_text() == "not a folder"


def test_a_folder_of_other_files_is_never_overwritten(fitted: Detector, tmp_path: Path) -> None:
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"precious")
    (target / CONFIG_FILE).write_text("{}")
    with pytest.raises(ConfigError, match=r"not a flawmap model folder \(it holds holiday\.jpg\)"):
        check_save_target(target, overwrite=True)
    with pytest.raises(ConfigError, match=r"holiday\.jpg"):
        fitted.save(target, overwrite=True)
    assert (target / "holiday.jpg").read_bytes() == b"precious"


def test_a_path_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder") as info:
        check_save_target(tmp_path / "file" / "sub" / "model")
    assert str(tmp_path / "file" / "sub" / "model") in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_parent_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            check_save_target(parent / "model")
    finally:
        parent.chmod(0o700)


def test_a_parent_that_cannot_be_written_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the same check as above, for a root user: creating the probe file in it fails
    locked = tmp_path / "locked"
    locked.mkdir()
    real_touch = Path.touch

    def touch(self: Path, *args: object, **kwargs: object) -> None:
        if self.parent == locked:
            raise PermissionError(13, "Permission denied", str(self))
        real_touch(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "touch", touch)
    with pytest.raises(ConfigError, match=r"locked is not writable") as info:
        check_save_target(locked / "new" / "model")
    assert str(locked / "new" / "model") in str(info.value)


def test_checking_the_target_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "model"
    assert check_save_target(target) == target
    assert list(tmp_path.iterdir()) == []


def test_an_empty_folder_is_a_valid_target(
    fitted: Detector, tmp_path: Path, probe: torch.Tensor
) -> None:
    (tmp_path / "empty").mkdir()
    fitted.save(tmp_path / "empty")
    assert_same_scores(load_model(tmp_path / "empty"), fitted, probe)


def test_overwriting_through_a_symlink_keeps_the_link(
    fitted: Detector, refitted: Detector, saved: Path, probe: torch.Tensor
) -> None:
    link = saved.parent / "current"
    link.symlink_to(saved, target_is_directory=True)
    refitted.save(link, overwrite=True)
    assert link.is_symlink() and link.resolve() == saved.resolve()
    assert read_config(saved)["fit_id"] == refitted.fit_id_
    assert sorted(p.name for p in saved.parent.iterdir()) == ["current", "model"]


# ------------------------------------------------------------------------------ interrupted saves
def interrupt_writing_weights(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Make the weights write stop half-way (a truncated file, then ``error``)."""
    real = safetensors.torch.save_file

    def half_then_fail(state: dict[str, torch.Tensor], path: str, **kwargs: Any) -> None:
        real(state, path, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise error

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_an_interrupted_overwrite_keeps_the_previous_model(
    refitted: Detector,
    fitted: Detector,
    saved: Path,
    probe: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
) -> None:
    before = snapshot(saved)
    interrupt_writing_weights(monkeypatch, error)
    with pytest.raises(type(error)):
        refitted.save(saved, overwrite=True)
    monkeypatch.undo()
    assert snapshot(saved) == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model"]  # no temporary debris
    assert_same_scores(load_model(saved), fitted, probe)


def test_an_interrupted_first_save_leaves_no_folder(
    fitted: Detector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_writing_weights(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        fitted.save(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_final_rename_puts_the_previous_model_back(
    refitted: Detector, fitted: Detector, saved: Path, probe: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    before = snapshot(saved)
    real_rename = os.rename
    calls: list[tuple[str, str]] = []

    def rename(src: Any, dst: Any) -> None:
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new folder into place
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="Input/output"):
        refitted.save(saved, overwrite=True)
    monkeypatch.undo()
    assert [c[1] for c in calls][1:] == ["model", "model"]  # tried, then moved the old one back
    assert snapshot(saved) == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model"]
    assert_same_scores(load_model(saved), fitted, probe)


def test_ctrl_c_between_the_renames_waits_for_the_swap(
    refitted: Detector, saved: Path, probe: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = os.rename
    calls = []

    def rename(src: Any, dst: Any) -> None:
        calls.append(dst)
        real_rename(src, dst)
        if len(calls) == 1:  # the old folder is aside, the new one not yet in place
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        refitted.save(saved, overwrite=True)
    monkeypatch.undo()
    assert len(calls) == 2  # the interrupt was delivered after both renames
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert read_config(saved)["fit_id"] == refitted.fit_id_
    assert_same_scores(load_model(saved), refitted, probe)


# ------------------------------------------------------------------------------ load refusals
def test_a_newer_format_version_asks_to_upgrade(saved: Path) -> None:
    config = read_config(saved)
    config["format_version"] = FORMAT_VERSION + 1
    write_config(saved, config)
    with pytest.raises(DataError, match="written by a newer flawmap") as info:
        load_model(saved)
    assert "upgrade" in str(info.value) and str(saved / CONFIG_FILE) in str(info.value)


def test_config_and_weights_from_two_fits_are_refused(
    fitted: Detector, refitted: Detector, tmp_path: Path
) -> None:
    a, b = fitted.save(tmp_path / "a"), refitted.save(tmp_path / "b")
    shutil.copy(b / CONFIG_FILE, a / CONFIG_FILE)  # a half-replaced folder
    with pytest.raises(DataError, match="come from two different fits") as info:
        load_model(a)
    assert str(a / CONFIG_FILE) in str(info.value) and fitted.fit_id_[:12] in str(info.value)


def test_an_edited_state_parameter_is_refused_with_both_values(saved: Path) -> None:
    config = read_config(saved)
    config["params"]["image_size"] = 128
    config["params"]["patch_size"] = 5
    write_config(saved, config)
    with pytest.raises(DataError, match="does not match the fitted weights") as info:
        load_model(saved)
    message = str(info.value)
    assert "image_size: 64 -> 128" in message and "patch_size: 3 -> 5" in message
    assert "seed" not in message  # only the differing keys


def test_an_edited_runtime_parameter_is_accepted(saved: Path, fitted: Detector) -> None:
    config = read_config(saved)
    config["params"]["batch_size"] = 1
    write_config(saved, config)
    loaded = load_model(saved)
    assert loaded.batch_size == 1
    images = toy_images(2, seed=5)  # another batch size may change the last float bits
    np.testing.assert_allclose(loaded.predict(images).scores, fitted.predict(images).scores, 1e-5)


@pytest.mark.parametrize("keep", [0, 7, 4096])
def test_a_truncated_weights_file_is_named(saved: Path, keep: int) -> None:
    weights = saved / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(DataError, match="damaged or truncated") as info:
        load_model(saved)
    assert str(weights) in str(info.value)


def test_flipped_bytes_in_the_tensors_are_detected(saved: Path) -> None:
    weights = saved / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor data: the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupted") as info:
        load_model(saved)
    assert str(weights) in str(info.value)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.pop("model"), r"required field 'model' is missing"),
        (lambda c: c.pop("fit_id"), r"required field 'fit_id' is missing"),
        (lambda c: c.pop("format_version"), r"'format_version' must be an integer.*missing"),
        (lambda c: c.update(format_version="2"), r"'format_version' must be an integer, got '2'"),
        (lambda c: c.update(params=[1, 2]), r"field 'params' must be a JSON object"),
        (lambda c: c.update(fit_id=17), r"field 'fit_id' must be a JSON string"),
        (lambda c: c["fit"].update(n_train="many"), r"'fit\.n_train' must be a number"),
        (lambda c: c.update(format="something-else"), r"is not a flawmap model config"),
        (lambda c: c.update(model="nosuchmodel"), r"model 'nosuchmodel' is not known"),
        (lambda c: c["params"].update(coreset_rate=0.1), r"no parameter coreset_rate"),
        (lambda c: c["params"].update(image_size="big"), r"image_size"),
        (lambda c: c["params"].update(seed=-1), r"seed must be an integer"),
    ],
)
def test_a_broken_config_is_named_with_its_field(saved: Path, edit: Any, match: str) -> None:
    config = read_config(saved)
    edit(config)
    write_config(saved, config)
    with pytest.raises(DataError, match=match) as info:
        load_model(saved)
    assert str(saved / CONFIG_FILE) in str(info.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2, 3]", ""])
def test_a_config_that_is_not_a_json_object_is_named(saved: Path, text: str) -> None:
    (saved / CONFIG_FILE).write_text(text)
    with pytest.raises(DataError) as info:
        load_model(saved)
    assert str(saved / CONFIG_FILE) in str(info.value)


def make_v1_folder(folder: Path) -> None:
    """Turn a saved folder into what format 1 wrote: no fit id, weights without metadata."""
    config = read_config(folder)
    config["format_version"] = 1
    del config["fit_id"]
    write_config(folder, config)
    state = safetensors.torch.load_file(str(folder / WEIGHTS_FILE))
    safetensors.torch.save_file(state, str(folder / WEIGHTS_FILE))


def test_a_format_1_folder_still_loads_with_a_warning(
    saved: Path, fitted: Detector, probe: torch.Tensor, tmp_path: Path
) -> None:
    make_v1_folder(saved)
    with pytest.warns(FlawmapWarning, match="model format 1") as record:
        loaded = load_model(saved)
    assert str(saved) in str(record[0].message)
    assert_same_scores(loaded, fitted, probe)
    # saving it again upgrades it: a fresh fit id, and no warning on the next load
    again = loaded.save(tmp_path / "upgraded")
    assert read_config(again)["format_version"] == FORMAT_VERSION
    assert metadata(again)["fit_id"] == read_config(again)["fit_id"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlawmapWarning)
        assert_same_scores(load_model(again), fitted, probe)


def test_format_1_weights_beside_a_format_2_config_are_refused(saved: Path) -> None:
    state = safetensors.torch.load_file(str(saved / WEIGHTS_FILE))
    safetensors.torch.save_file(state, str(saved / WEIGHTS_FILE))  # no metadata
    with pytest.raises(DataError, match="mixes files of different saves") as info:
        load_model(saved)
    assert str(saved / WEIGHTS_FILE) in str(info.value)


def test_weights_of_another_model_kind_are_refused(saved: Path, tmp_path: Path) -> None:
    other = create_model("padim", **FAST, n_features=8).fit(toy_images(4))
    folder = other.save(tmp_path / "padim")
    shutil.copy(folder / WEIGHTS_FILE, saved / WEIGHTS_FILE)
    with pytest.raises(DataError, match="two different fits") as info:
        load_model(saved)
    assert "patchcore" in str(info.value) and "padim" in str(info.value)


def test_saving_after_changing_a_state_parameter_is_refused(
    fitted: Detector, tmp_path: Path
) -> None:
    model = fit_patchcore()
    model.set_params(patch_size=5)
    with pytest.raises(ConfigError, match=r"changed since this model was fitted \(patch_size"):
        model.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()
    model.set_params(patch_size=3, batch_size=2)  # back, and a runtime parameter may change
    assert read_config(model.save(tmp_path / "model"))["params"]["batch_size"] == 2


# ------------------------------------------------------------------------------ every model
MODEL_FAST: dict[str, dict[str, Any]] = {
    "padim": {"n_features": 8},
    "patchcore": {"coreset_ratio": 0.25},
    "simplenet": {"epochs": 1},
    "trisimplenet": {"epochs": 1},
    # resnet18: FCDD's receptive-field probe of the default backbone takes seconds per build
    "fcdd": {"epochs": 1, "passes_per_epoch": 1, "backbone": "resnet18"},
    "mlff": {"epochs": 1, "repeats": 1},
    "cse": {"epochs": 1, "validation_fraction": 0.0},
}


@pytest.mark.parametrize("name", list_models())
def test_every_model_records_its_fit_and_refuses_an_edited_config(
    name: str, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CSE: no texture folder
        model = create_model(name, **FAST, **MODEL_FAST.get(name, {})).fit(toy_images(4))
    folder = model.save(tmp_path / name)
    config, meta = read_config(folder), metadata(folder)
    assert meta["model"] == config["model"] == name
    assert meta["fit_id"] == config["fit_id"] == model.fit_id_
    recorded = json.loads(meta["params"])
    assert "batch_size" not in recorded and recorded["seed"] == 0
    assert recorded == {k: v for k, v in config["params"].items() if k != "batch_size"}
    loaded = load_model(folder)
    assert loaded.get_params() == model.get_params()  # tuples come back as tuples
    config["params"]["seed"] = 1
    write_config(folder, config)
    with pytest.raises(DataError, match="seed: 0 -> 1"):
        load_model(folder)


# ------------------------------------------------------------------------------ command line
def test_cli_fit_into_a_model_folder_needs_overwrite(
    mvtec_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from flawmap.cli import main

    out = tmp_path / "model"
    args = ["fit", "--data", str(mvtec_category), "--model", "patchcore", "--quiet",
            "--weights", "random", "--image-size", "64", "--param", "coreset_ratio=0.2",
            "--param", "threshold_holdout=0.25", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main([*args, "--seed", "1"]) == 2
    captured = capsys.readouterr()
    assert str(out) in captured.err and "--overwrite" in captured.err
    assert "fitting" not in captured.out  # refused before the fit
    assert snapshot(out) == before
    assert main([*args, "--seed", "1", "--overwrite"]) == 0
    assert read_config(out)["params"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
