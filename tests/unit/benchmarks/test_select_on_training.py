"""benchmarks/select_on_training.py: explicit validation defects and the selection table."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from flawmap.synth import CutPaste, DefectSynthesizer
from tests.unit.benchmarks.loader import load_benchmark


@pytest.fixture(scope="module")
def selection() -> ModuleType:
    return load_benchmark("select_on_training.py")


def row(category: str, value: float, score: float, source: str | None) -> dict:
    r = {
        "category": category,
        "noise": value,
        "seed": 0,
        "val_image_auroc": score,
        "val_pixel_auroc": score,
        "final_train_loss": None,
        "fit_seconds": 1.0,
    }
    if source is not None:
        r["validation_defects"] = source
    return r


def test_validation_defects_are_explicit(selection: ModuleType, tmp_path: Path) -> None:
    neutral = selection.validation_defects("structural+blur", str(tmp_path))
    assert isinstance(neutral, DefectSynthesizer) and neutral.kinds == ("structural", "blur")
    assert isinstance(selection.validation_defects("cutpaste", str(tmp_path)), CutPaste)
    procedural = selection.validation_defects("procedural", str(tmp_path))
    assert procedural.texture_dir is None and "texture" in procedural.kinds
    (tmp_path / "dtd").mkdir()
    assert selection.validation_defects("dtd", str(tmp_path)).texture_dir == tmp_path / "dtd"
    image = torch.rand(3, 32, 32)
    out = neutral(image, torch.Generator().manual_seed(0))
    assert out.kind in ("structural", "blur")


def test_selection_records_its_validation_source(selection: ModuleType, tmp_path: Path) -> None:
    records = [row("bottle", 0.1, 0.8, "cutpaste"), row("bottle", 0.2, 0.9, "cutpaste")]
    summary = selection.write_selection(tmp_path, "m", "noise", records)
    assert summary["selected"] == 0.2 and summary["validation_defects"] == "cutpaste"
    assert "validation defects: cutpaste" in (tmp_path / "m_noise_selection.md").read_text()
    saved = json.loads((tmp_path / "m_noise_selection.json").read_text())
    assert saved["validation_defects"] == "cutpaste" and len(saved["records"]) == 2


def test_rows_of_another_validation_source_are_not_mixed(
    selection: ModuleType, tmp_path: Path
) -> None:
    selection.write_selection(tmp_path, "m", "noise", [row("bottle", 0.1, 0.8, None)])  # legacy
    with pytest.raises(SystemExit, match="other defects"):
        selection.write_selection(tmp_path, "m", "noise", [row("bottle", 0.2, 0.9, "cutpaste")])
    summary = selection.write_selection(tmp_path, "m", "noise", [row("bottle", 0.2, 0.9, "dtd")])
    assert summary["validation_defects"] == "dtd" and len(summary["records"]) == 2


@pytest.fixture(scope="module")
def texture_source(selection: ModuleType) -> ModuleType:
    return load_benchmark("texture_source.py")


def test_without_texture_kind_is_the_old_no_folder_synthesizer(
    texture_source: ModuleType, tmp_path: Path
) -> None:
    with texture_source.without_texture_kind():
        assert DefectSynthesizer().kinds == ("structural", "blur")
        (tmp_path / "t.png").write_bytes(b"")  # a folder keeps its texture kind
        assert "texture" in DefectSynthesizer(tmp_path).kinds
    assert DefectSynthesizer().kinds == ("texture", "structural", "blur")  # restored


def test_texture_source_results_merge_and_table(texture_source: ModuleType, tmp_path: Path) -> None:
    def run(source: str, score: float) -> dict:
        metrics = {"image_auroc": score, "pixel_auroc": score, "aupro": score}
        return {
            "model": "cse",
            "category": "bottle",
            "texture_source": source,
            "params": {},
            "seed": 0,
            "final_train_loss": 1.0,
            "fit_seconds": 2.0,
            "validation": {"cutpaste": metrics},
        }

    path = tmp_path / "cse_texture_source.json"
    texture_source.write_results(path, [run("none", 0.5)], "args")
    texture_source.write_results(path, [run("dtd", 0.7)], "args")
    merged = texture_source.write_results(path, [run("none", 0.6)], "args")
    assert [(r["texture_source"], r["validation"]["cutpaste"]["aupro"]) for r in merged] == [
        ("dtd", 0.7),
        ("none", 0.6),
    ]
    table = path.with_suffix(".md").read_text()
    assert "| cutpaste img | cutpaste pix | cutpaste PRO |" in table
    assert "| bottle | none | 0 | 0.600 | 0.600 | 0.600 | 1.000 | 2 |" in table
