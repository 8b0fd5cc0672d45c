"""flawmap tune: candidates, criteria, budget, the table, and never reading the test folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flawmap.cli import main, read_candidates
from flawmap.errors import ConfigError, DataError
from flawmap.tuning import Candidate, objective, tune, write_tuned
from tests.synthetic import plant_defect, textured_image, write_mvtec_category

CANDIDATES = [
    Candidate("padim", {"image_size": 64, "weights": "random", "n_features": 16}),
    Candidate("patchcore", {"image_size": 48, "weights": "random", "aspect": "squeeze"}),
]
SPECS = [
    "padim:image_size=64:weights=random:n_features=16",
    "patchcore:image_size=48:weights=random",
]


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mvtec_category(tmp_path_factory.mktemp("tune") / "widget", n_train=15)


def _quiet(_message: str) -> None:
    pass


def test_tune_scores_every_candidate_and_writes_the_model_with_its_table(category, tmp_path):
    result = tune(category, candidates=CANDIDATES, seed=0, latency_runs=2, log=_quiet)
    assert result.criterion == "synthetic" and result.n_fit == 12
    assert [r.status for r in result.rows] == ["done", "done"]
    scores = [r.score("synthetic") for r in result.rows]
    assert result.chosen is result.rows[int(np.argmax(scores))]
    assert all(0.0 <= s <= 1.0 for s in scores)
    out = write_tuned(result, tmp_path / "model")
    table = json.loads((out / "tuning.json").read_text())
    assert table["chosen"] == result.chosen.candidate.label
    assert [c["label"] for c in table["candidates"]] == [c.label for c in CANDIDATES]
    assert all(c["fit_seconds"] > 0 and c["latency_ms"] > 0 for c in table["candidates"])
    assert "| candidate |" in (out / "tuning.md").read_text()
    from flawmap.models import load_model

    assert load_model(out).name == result.chosen.candidate.model
    # The model folder (with its table) can be overwritten by a new tuning run.
    write_tuned(result, tmp_path / "model", overwrite=True)


def test_the_budget_skips_candidates_after_the_first(category):
    result = tune(category, candidates=CANDIDATES, budget_seconds=1e-3, latency_runs=0, log=_quiet)
    assert [r.status for r in result.rows] == ["done", "skipped (budget)"]


def test_a_latency_limit_nobody_meets_leaves_nothing_to_save(category, tmp_path):
    result = tune(
        category, candidates=CANDIDATES[:1], max_latency_ms=1e-6, latency_runs=2, log=_quiet
    )
    assert result.chosen is None and result.rows[0].status.startswith("done, over")
    with pytest.raises(DataError, match="no candidate finished"):
        write_tuned(result, tmp_path / "none")


def test_bad_candidates_and_options_are_refused_before_any_fit(category):
    with pytest.raises(ConfigError, match="no parameter"):
        tune(category, candidates=[Candidate("padim", {"coreset_ratio": 0.1})], log=_quiet)
    with pytest.raises(ConfigError, match="center_crop"):
        tune(category, candidates=[Candidate("padim", {"center_crop": 32})], log=_quiet)
    with pytest.raises(ConfigError, match="val_fraction"):
        tune(category, candidates=CANDIDATES, val_fraction=1.0, log=_quiet)
    with pytest.raises(ConfigError, match="at least one candidate"):
        tune(category, candidates=[], log=_quiet)


def _write_val_folder(root: Path, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("good", "spot", "ground_truth/spot"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(2):
        Image.fromarray(textured_image(rng)).save(root / "good" / f"v{i}.png")
        image, mask = plant_defect(textured_image(rng), rng)
        Image.fromarray(image).save(root / "spot" / f"v{i}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(
            root / "ground_truth" / "spot" / f"v{i}_mask.png"
        )
    return root


def test_criterion_b_scores_the_users_folder_and_the_synthetic_set_on_request(category, tmp_path):
    val = _write_val_folder(tmp_path / "val")
    result = tune(
        category,
        candidates=CANDIDATES[:1],
        val_dir=val,
        score_synthetic=True,
        latency_runs=0,
        log=_quiet,
    )
    assert result.criterion == "folder"
    row = result.rows[0]
    assert set(row.metrics) == {"folder", "synthetic"}
    assert objective(row.metrics["folder"]) == row.score("folder")
    assert "2 defective" in result.validations["folder"]


@pytest.mark.parametrize("source", ["test", "train"])
def test_criterion_b_refuses_a_validation_folder_that_overlaps(category, tmp_path, source):
    val = _write_val_folder(tmp_path / "val")
    if source == "test":
        shutil.copy(category / "test" / "spot" / "000.png", val / "spot" / "copied.png")
        shutil.copy(
            category / "ground_truth" / "spot" / "000_mask.png",
            val / "ground_truth" / "spot" / "copied_mask.png",
        )
    else:
        shutil.copy(category / "train" / "good" / "003.png", val / "good" / "copied.png")
    with pytest.raises(DataError, match=f"same file as the {source}"):
        tune(category, candidates=CANDIDATES[:1], val_dir=val, log=_quiet)


def test_criterion_b_refuses_a_folder_inside_test_and_one_without_defects(category, tmp_path):
    with pytest.raises(DataError, match="inside the test folder"):
        tune(category, candidates=CANDIDATES[:1], val_dir=category / "test", log=_quiet)
    (tmp_path / "only_good" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="no defective images"):
        tune(category, candidates=CANDIDATES[:1], val_dir=tmp_path / "only_good", log=_quiet)


GUARD = r"""
import os, sys
test_dir = os.path.realpath(sys.argv[1])

def guard(event, args):
    paths = (str, bytes, os.PathLike)
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], paths):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path == test_dir or path.startswith(test_dir + os.sep):
            os.write(2, f"READ THE TEST FOLDER: {event} {path}\n".encode())
            os._exit(99)

sys.addaudithook(guard)
if sys.argv[2] == "probe":  # the guard's own check: reading test/ must trip it
    from flawmap.data import MVTecDataset
    MVTecDataset(sys.argv[3], "test")
    sys.exit(0)
from flawmap.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _guarded(category: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", GUARD, str(category / "test"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.mark.slow
def test_flawmap_tune_never_opens_the_test_folder(category, tmp_path):
    probe = _guarded(category, "probe", str(category))
    assert probe.returncode == 99, probe.stderr  # the guard does catch a read of test/
    out = tmp_path / "tuned"
    run = _guarded(
        category,
        "tune",
        "--data",
        str(category),
        "--out",
        str(out),
        "--budget",
        "5",
        "--threads",
        "1",
        "--candidates",
        *SPECS,
    )
    assert run.returncode == 0, run.stderr
    assert "READ THE TEST FOLDER" not in run.stderr
    assert (out / "tuning.md").is_file() and (out / "model.safetensors").is_file()
    table = json.loads((out / "tuning.json").read_text())
    assert table["criterion"] == "synthetic" and len(table["candidates"]) == 2


def test_read_candidates_from_specs_and_json(tmp_path):
    file = tmp_path / "c.json"
    file.write_text(json.dumps([{"model": "padim", "params": {"n_features": 10}}]))
    got = read_candidates(["patchcore:image_size=48x64:coreset_ratio=0.05", str(file)])
    assert got[0] == Candidate("patchcore", {"image_size": (48, 64), "coreset_ratio": 0.05})
    assert got[1] == Candidate("padim", {"n_features": 10})
    with pytest.raises(ConfigError, match="unknown parameter"):
        read_candidates(["padim:coreset=1"])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="JSON list"):
        read_candidates([str(tmp_path / "bad.json")])


def test_cli_tune_reports_user_errors_without_a_traceback(category, tmp_path, capsys):
    code = main(
        [
            "tune",
            "--data",
            str(category),
            "--out",
            str(tmp_path / "m"),
            "--val",
            str(tmp_path / "missing"),
            "--candidates",
            SPECS[0],
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "validation folder" in err and "Traceback" not in err
    assert (
        main(["tune", "--data", str(category), "--out", str(tmp_path / "m"), "--budget", "0"]) == 2
    )
