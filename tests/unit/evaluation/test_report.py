"""flawmap.evaluation.report: every section of the evaluation report, and the sections that
cannot exist for a test set saying why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flawmap.data import MVTecDataset, PathsDataset
from flawmap.evaluation import evaluate, evaluation_report, write_evaluation
from flawmap.models import create_model, load_model
from flawmap.models.base import Detector
from flawmap.report.document import Figure, Gallery, Paragraph, Table, render_html

SECTIONS = [
    "Model",
    "Metrics",
    "Score distributions",
    "Curves",
    "Decisions at the threshold",
    "Missed defects",
    "False alarms",
    "Most anomalous images",
]


def fitted(category: Path, **params) -> Detector:
    model = create_model(
        "patchcore",
        image_size=64,
        weights="random",
        coreset_ratio=0.2,
        **{"threshold_holdout": 0.25, **params},
    )
    return model.fit(MVTecDataset(category, "train", transform=model.transform))


@pytest.fixture(scope="module")
def detector(mvtec_category: Path) -> Detector:
    return fitted(mvtec_category)


def blocks_of(document, title: str) -> list:
    return next(s.blocks for s in document.sections if s.title == title)


def empty_texts(blocks: list) -> list[str]:
    texts = [b.text for b in blocks if isinstance(b, Paragraph) and b.kind == "empty"]
    return texts + [b.empty for b in blocks if isinstance(b, Gallery) and not b.cards]


def test_every_section_with_masks_and_both_classes(
    detector: Detector, mvtec_category: Path, tmp_path: Path
) -> None:
    test = MVTecDataset(mvtec_category, "test", transform=detector.transform)
    result = evaluate(detector, test, latency_runs=1)
    document = evaluation_report(result, detector, "t", config={"a": 1})
    assert [s.title for s in document.sections] == [*SECTIONS, "Configuration"]
    figures = {b.name for s in document.sections for b in s.blocks if isinstance(b, Figure)}
    assert figures == {"scores_test", "scores_holdout", "roc", "precision_recall", "pro"}
    card = dict(blocks_of(document, "Model")[0].rows)
    assert card["Model"] == "patchcore" and card["Input size"] == "64 × 64 px"
    assert "quantile of the scores of 3 good training images held out" in card["Threshold"]
    assert card["Training images"].startswith("9 good images (train split of")
    metrics = {row[0]: row for row in blocks_of(document, "Metrics")[0].rows}
    assert "False-alarm rate at the threshold" in metrics  # readable names, no raw keys
    assert all(row[2] for row in metrics.values())  # each metric says what it means
    decisions = blocks_of(document, "Decisions at the threshold")
    confusion = decisions[0].rows
    flagged = result.prediction.labels
    labels = result.labels
    assert int(confusion[0][2]) == int((flagged & (labels == 0)).sum())  # false alarms
    assert int(confusion[1][1]) == int((~flagged & (labels == 1)).sum())  # misses
    per_type = next(b for b in decisions if isinstance(b, Table) and b.header[0] == "defect type")
    assert [row[0] for row in per_type.rows] == ["spot"] and per_type.rows[0][1] == "4"
    top = next(b for b in blocks_of(document, "Most anomalous images") if isinstance(b, Gallery))
    assert len(top.cards) == len(labels)
    assert "from the threshold" in top.cards[0].caption
    # the written report: HTML self-contained, Markdown with its figures and images
    out = write_evaluation(result, detector, tmp_path / "r", "PatchCore on widget")
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 5 and "http" not in html.replace("http://www.w3.org", "")
    md = (out / "report.md").read_text()
    for name in figures:
        assert f"(figures/{name}.svg)" in md and (out / "figures" / f"{name}.svg").is_file()
    assert json.loads((out / "metrics.json").read_text())["image_auroc"] is not None


def test_sections_that_cannot_exist_say_why(detector: Detector, mvtec_category: Path) -> None:
    good_only = PathsDataset([mvtec_category / "test" / "good"], transform=detector.transform)
    for sample in good_only.samples:
        object.__setattr__(sample, "label", 0)
    result = evaluate(detector, good_only, latency_runs=0)
    document = evaluation_report(result, detector, "good only")
    assert "ROC and precision-recall need good and defective test images." in empty_texts(
        blocks_of(document, "Curves")
    )
    assert any(
        "no defective images" in t for t in empty_texts(blocks_of(document, "Missed defects"))
    )
    assert any(
        "no defective images" in t
        for t in empty_texts(blocks_of(document, "Decisions at the threshold"))
    )
    render_html(document)  # renders without the missing parts


def test_no_masks_and_no_threshold(mvtec_category: Path, tmp_path: Path) -> None:
    detector = fitted(mvtec_category, threshold_holdout=0.0)
    test = MVTecDataset(mvtec_category, "test", transform=detector.transform)
    no_masks = PathsDataset(
        [mvtec_category / "test" / "good", mvtec_category / "test" / "spot"],
        transform=detector.transform,
    )
    for sample in no_masks.samples:
        object.__setattr__(sample, "label", 1 if sample.path.parent.name == "spot" else 0)
    result = evaluate(detector, no_masks, latency_runs=0)
    document = evaluation_report(result, detector, "no masks")
    curves = blocks_of(document, "Curves")
    assert "The test set has no ground-truth masks: no PRO curve." in empty_texts(curves)
    assert {b.name for b in curves if isinstance(b, Figure)} == {"roc", "precision_recall"}
    assert empty_texts(blocks_of(document, "Decisions at the threshold")) == [
        "The model has no threshold, so it makes no decisions."
    ]
    distributions = blocks_of(document, "Score distributions")
    assert any("No held-out training scores" in t for t in empty_texts(distributions))
    assert "No threshold" in empty_texts(blocks_of(document, "False alarms"))[0]
    assert len(test) == len(no_masks)


def test_held_out_scores_survive_save_load_and_export(detector: Detector, tmp_path: Path) -> None:
    from flawmap.export import export_model
    from flawmap.models.exported import ExportedDetector

    assert detector.holdout_scores_ is not None and len(detector.holdout_scores_) == 3
    assert np.quantile(detector.holdout_scores_, 0.99) == pytest.approx(
        detector.threshold, rel=1e-5
    )
    loaded = load_model(detector.save(tmp_path / "m"))
    assert loaded.holdout_scores_ == detector.holdout_scores_
    assert loaded.train_data_ == detector.train_data_
    exported = ExportedDetector(export_model(detector, tmp_path / "e", format="onnx"))
    assert exported.holdout_scores_ == detector.holdout_scores_
    assert exported.n_train_ == detector.n_train_
