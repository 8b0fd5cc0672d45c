"""``flawmap export`` end to end: the saved model, its ONNX export and its OpenVINO export give
the same decisions through ``flawmap predict``; exporting leaves the model as it was."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flawmap.cli import main
from flawmap.export import export_model
from flawmap.models import create_model

FIT = ["--image-size", "64", "--seed", "1", "--weights", "random", "--quiet"]


def _cli(*args: str) -> int:
    """``flawmap ARGS`` in a process of its own, as on an inspection PC. (In the pytest process,
    a SIGINT sent by the Ctrl-C tests after an OpenVINO predict or int8 export has run there
    ended it with a segmentation fault; a ``flawmap`` process itself exits 130 on Ctrl-C.)"""
    run = subprocess.run(
        [sys.executable, "-m", "flawmap.cli", *args], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    return run.returncode


def _scores(folder: Path) -> dict[str, tuple[float, str]]:
    rows = csv.DictReader((folder / "scores.csv").open())
    return {r["path"]: (float(r["score"]), r["label"]) for r in rows}


@pytest.mark.parametrize("model", ["patchcore", "padim", "fcdd"])
def test_model_onnx_and_openvino_exports_decide_alike(
    model: str, mvtec_category: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    extra = ["--param", "epochs=1"] if model == "fcdd" else []
    assert main(["fit", "--data", str(mvtec_category), "--model", model, *FIT, *extra,
                 "--out", str(model_dir)]) == 0  # fmt: skip
    outputs = {"model": model_dir}
    for fmt in ("onnx", "openvino"):
        outputs[fmt] = tmp_path / f"export-{fmt}"
        assert main(["export", str(model_dir), "--format", fmt, "--out",
                     str(outputs[fmt])]) == 0  # fmt: skip
    results = {}
    for name, folder in outputs.items():
        out = tmp_path / f"pred-{name}"
        assert _cli("predict", str(folder), str(mvtec_category / "test"), "--out", str(out),
                    "--quiet") == 0  # fmt: skip
        results[name] = _scores(out)
    reference = results.pop("model")
    for name, scored in results.items():
        assert scored.keys() == reference.keys(), name
        for path, (score, label) in scored.items():
            assert label == reference[path][1], (name, path)
            assert score == pytest.approx(reference[path][0], rel=1e-4, abs=1e-6), (name, path)


def test_export_int8_needs_training_images_and_onnx_bf16_is_refused(
    mvtec_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = tmp_path / "model"
    assert main(["fit", "--data", str(mvtec_category), "--model", "padim", *FIT,
                 "--out", str(model_dir)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["export", str(model_dir), "--precision", "int8", "--out",
                 str(tmp_path / "e8")]) == 2  # fmt: skip
    assert "--data" in capsys.readouterr().err
    assert main(["export", str(model_dir), "--precision", "bf16", "--out",
                 str(tmp_path / "eb")]) == 2  # fmt: skip
    assert "openvino" in capsys.readouterr().err
    assert not (tmp_path / "e8").exists() and not (tmp_path / "eb").exists()
    assert _cli("export", str(model_dir), "--format", "openvino", "--precision", "int8",
                "--data", str(mvtec_category), "--out", str(tmp_path / "e8")) == 0  # fmt: skip
    meta = json.loads((tmp_path / "e8" / "model.json").read_text())
    assert meta["calibration"]["source"] == "good training images"
    assert meta["graphs"]["backbone"]["precision"] == "int8"
    assert meta["graphs"]["head"]["precision"] == "fp32"
    report = tmp_path / "report"
    assert _cli("evaluate", str(tmp_path / "e8"), "--data", str(mvtec_category), "--out",
                str(report), "--latency-runs", "1", "--quiet") == 0  # fmt: skip
    info = json.loads((report / "metrics.json").read_text())["info"]
    assert info["backend"] == "openvino" and info["precision"] == "int8"


def test_exporting_leaves_the_fitted_module_in_eval_mode(tmp_path: Path) -> None:
    """The exporter restores the training flag of the wrapper modules it traces, on every
    submodule; a fine-tuned backbone (FCDD) would then update its BatchNorm statistics on the
    next forward and score differently."""
    images = torch.rand(10, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model = create_model("fcdd", weights="random", image_size=64, epochs=1).fit(images)
    before = model.predict(images[:4]).scores
    for fmt in ("onnx", "openvino"):
        export_model(model, tmp_path / fmt, format=fmt)
        assert not any(m.training for m in model.module.modules())
        np.testing.assert_array_equal(model.predict(images[:4]).scores, before)


def test_a_module_that_cannot_be_traced_fails_with_the_reason(tmp_path: Path) -> None:
    """A head that leaves torch (numpy) without an export path is refused with a message that
    names the graph and what to do, not an exporter traceback."""
    from flawmap.errors import ConfigError
    from flawmap.models.padim import PadimModule

    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model = create_model("padim", weights="random", image_size=64).fit(images)

    def untraceable(self: PadimModule, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.embed(x).numpy()).mean(1, keepdim=True)

    original = PadimModule.patch_scores
    PadimModule.patch_scores = untraceable  # type: ignore[method-assign]
    try:
        with pytest.raises(
            ConfigError, match=r"head graph .* cannot be exported faithfully.*export_plan"
        ):
            export_model(model, tmp_path / "e")
    finally:
        PadimModule.patch_scores = original  # type: ignore[method-assign]
    assert not (tmp_path / "e").exists()
