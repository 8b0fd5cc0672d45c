"""The benchmark machinery that turns run records into the committed results files and tables
(``benchmarks/common.py``): run identity, merging (also from parallel processes) and tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.benchmarks.loader import load_benchmark

COMMON = Path(__file__).resolve().parents[3] / "benchmarks" / "common.py"


@pytest.fixture(scope="module")
def common() -> ModuleType:
    return load_benchmark("common.py")


def record(seed: int, model: str = "mlff", category: str = "bottle", **fields) -> dict:
    return {"model": model, "category": category, "seed": seed, **fields}


def test_method_label_names_non_default_params(common: ModuleType) -> None:
    assert common.method_label(record(0)) == "mlff"
    labelled = record(0, params={"variant": "+sc", "epochs": 8})
    assert common.method_label(labelled) == "mlff (epochs=8, variant=+sc)"


def test_method_label_names_a_texture_folder(common: ModuleType) -> None:
    default = record(0, "cse", params={"image_size": 256}, texture_dir=None)
    assert common.method_label(default) == "cse (image_size=256)"
    passed = record(0, "cse", params={"texture_dir": "dtd"}, texture_dir="dtd")
    assert common.method_label(passed) == "cse (texture_dir=dtd)"
    legacy = record(0, "cse", params={"image_size": 256}, texture_dir="dtd")  # injected silently
    assert common.method_label(legacy) == "cse (image_size=256, texture_dir=dtd)"
    assert common.method_label(legacy) == common.method_label(
        record(0, "cse", params={"image_size": 256, "texture_dir": "dtd"}, texture_dir="dtd")
    )


def test_merge_replaces_the_same_run_and_keeps_the_others(
    common: ModuleType, tmp_path: Path
) -> None:
    path = tmp_path / "results" / "r.json"
    common.merge_records(path, [record(0, auroc=0.5), record(1, auroc=0.6)])
    merged = common.merge_records(path, [record(1, auroc=0.9), record(2, auroc=0.7)])
    assert [(r["seed"], r["auroc"]) for r in merged] == [(0, 0.5), (1, 0.9), (2, 0.7)]
    assert json.loads(path.read_text()) == merged
    other = record(1, params={"epochs": 8}, auroc=0.1)  # another method: its own run
    assert len(common.merge_records(path, [other])) == 4


def test_parallel_merges_lose_no_rows(tmp_path: Path) -> None:
    """Two benchmarks side by side write the same results file: every row must survive."""
    path = tmp_path / "r.json"
    script = (
        "import importlib.util, sys\n"
        "from pathlib import Path\n"
        f"spec = importlib.util.spec_from_file_location('c', {str(COMMON)!r})\n"
        "c = importlib.util.module_from_spec(spec); spec.loader.exec_module(c)\n"
        "worker = int(sys.argv[1])\n"
        "for i in range(25):\n"
        f"    c.merge_records(Path({str(path)!r}),\n"
        "                    [{'model': f'm{worker}', 'category': 'bottle', 'seed': i}])\n"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(w)], stderr=subprocess.PIPE)
        for w in range(4)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()
    rows = json.loads(path.read_text())
    assert len(rows) == 100
    assert {(r["model"], r["seed"]) for r in rows} == {
        (f"m{w}", i) for w in range(4) for i in range(25)
    }


def test_mean_std_table_and_row_order(common: ModuleType) -> None:
    rows = [
        record(0, params={"variant": "full"}, auroc=0.5),
        record(1, params={"variant": "full"}, auroc=0.7),
        record(0, params={"variant": "baseline"}, auroc=0.25),
        record(0, model="padim", category="aaa", auroc=1.0),
    ]
    columns = [("auroc", "AUROC", "{:.3f}"), ("missing", "other", "{:.1f}")]
    default = common.mean_std_table(rows, columns).splitlines()
    assert default[0] == "| method | category | seeds | AUROC | other |"
    body = default[2:]
    assert body[0] == "| padim | aaa | 1 | 1.000 | – |"  # categories first
    assert body[1] == "| mlff (variant=baseline) | bottle | 1 | 0.250 | – |"  # then alphabetical
    assert body[2] == "| mlff (variant=full) | bottle | 2 | 0.600 ± 0.141 | – |"
    ordered = common.mean_std_table(rows, columns, ["mlff (variant=full)"]).splitlines()[2:]
    assert [line.split(" | ")[0] for line in ordered] == [
        "| padim",
        "| mlff (variant=full)",
        "| mlff (variant=baseline)",
    ]
