"""The flawmap command end to end: fit -> evaluate -> predict, and its errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flawmap.cli import main, parse_param
from flawmap.errors import ConfigError
from flawmap.evaluation import METRIC_KEYS
from flawmap.models import model_class

REQUIRED_METRICS = {
    "image_auroc", "pixel_auroc", "aupro", "pixel_ap", "image_f1", "pixel_f1",
    "latency_ms", "throughput_ips", "train_seconds",
}  # fmt: skip


def test_fit_evaluate_predict_end_to_end(mvtec_category: Path, tmp_path: Path) -> None:
    model_dir, report_dir, pred_dir = tmp_path / "model", tmp_path / "report", tmp_path / "pred"
    fit_args = ["fit", "--data", str(mvtec_category), "--model", "patchcore", "--quiet"]
    fit_args += ["--image-size", "64", "--seed", "3", "--weights", "random"]
    fit_args += ["--param", "coreset_ratio=0.2", "--param", "threshold_holdout=0.25"]
    assert main([*fit_args, "--out", str(model_dir)]) == 0
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model"] == "patchcore"
    assert config["params"]["coreset_ratio"] == 0.2 and config["params"]["seed"] == 3

    eval_args = ["evaluate", str(model_dir), "--data", str(mvtec_category), "--quiet"]
    assert main([*eval_args, "--out", str(report_dir), "--latency-runs", "2"]) == 0
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert set(metrics) >= REQUIRED_METRICS | set(METRIC_KEYS)
    for key in REQUIRED_METRICS:
        assert isinstance(metrics[key], float), key
    assert 0.0 <= metrics["aupro"] <= 1.0
    report = (report_dir / "report.md").read_text()
    assert "Image AUROC" in report and '"coreset_ratio": 0.2' in report

    test_dir = mvtec_category / "test"
    assert main(["predict", str(model_dir), str(test_dir), "--out", str(pred_dir),
                 "--save-maps", "--quiet"]) == 0  # fmt: skip
    rows = list(csv.DictReader((pred_dir / "scores.csv").open()))
    assert len(rows) == 8 and {r["label"] for r in rows} <= {"good", "defective"}
    assert len(json.loads((pred_dir / "scores.json").read_text())) == 8
    # raw maps at the original resolution, in the layout the MVTec AD evaluation reads
    tiff = pred_dir / "widget" / "test" / "spot" / "000.tiff"
    amap = np.asarray(Image.open(tiff))
    assert amap.dtype == np.float32 and amap.shape == (64, 64)
    assert (pred_dir / "overlays" / "spot" / "000.png").is_file()


def test_param_values_take_the_constructor_types() -> None:
    types = model_class("patchcore").param_types()
    assert parse_param("coreset_ratio=0.01", types) == ("coreset_ratio", 0.01)
    assert parse_param("projection_dim=none", types) == ("projection_dim", None)
    assert parse_param("projection_dim=64", types) == ("projection_dim", 64)
    assert parse_param("layers=2,3", types) == ("layers", (2, 3))
    assert parse_param("image_size=128", types) == ("image_size", 128)
    assert parse_param("search=brute_force", types) == ("search", "brute_force")
    with pytest.raises(ConfigError, match="unknown parameter"):
        parse_param("coreset=0.1", types)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_param("coreset_ratio", types)


def test_user_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["fit", "--data", str(tmp_path / "nowhere"), "--model", "padim",
                 "--out", str(tmp_path / "m"), "--quiet"])  # fmt: skip
    assert code == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--data", str(tmp_path), "--out", "x"]) == 2


def test_models_command_lists_the_registry(capsys: pytest.CaptureFixture) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "patchcore" in out and "padim" in out and "tf_efficientnet_lite0 (default)" in out


@pytest.mark.parametrize("command", ["fit", "evaluate", "predict", "models", "demo", "compare"])
def test_every_command_has_help(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flawmap.cli", command, "--help"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and "usage: flawmap" in result.stdout
