"""The evaluation report a quality engineer acts on: where the model is wrong, and how close the
threshold sits to the good and the defective images.

Sections (:func:`evaluation_report`): the model card; the metrics, named and explained; score
distributions of the test images and of the held-out good training images the threshold came
from; ROC, precision-recall and PRO curves; the decisions at the threshold (confusion matrix,
false-alarm and miss rates, detection and pixel metrics per defect type); the missed defects and
the false alarms, most confident first; the most anomalous images; the configuration. A section
that cannot exist for the data (no defective image, no mask, no threshold) says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from flawmap.evaluation.evaluate import Evaluation, evaluation_notes, example_overlay
from flawmap.metrics._curves import average_precision_from
from flawmap.metrics.classification import rank_labels
from flawmap.metrics.localization import pixel_metrics_or_none, pro_curve_points
from flawmap.report.document import (
    Card,
    Code,
    Document,
    Figure,
    Gallery,
    Paragraph,
    Section,
    Table,
    write_report,
)
from flawmap.report.figures import DEFECT_COLOUR, GOOD_COLOUR, curve_figure, score_histogram
from flawmap.report.markdown import METRIC_HELP, config_json, format_value, metric_label
from flawmap.report.overlay import decision_range

__all__ = ["evaluation_report", "write_evaluation"]

#: Images per gallery.
GALLERY_SIZE = 8


def _fmt(value: Any, digits: int = 3) -> str:
    return format_value(value, digits)


def _rate(part: int, whole: int) -> str:
    return "–" if whole == 0 else f"{part / whole:.1%} ({part} of {whole})"


def evaluation_report(
    evaluation: Evaluation,
    detector: Any,
    title: str,
    *,
    notes: list[str] | None = None,
    config: dict[str, Any] | None = None,
    gallery_size: int = GALLERY_SIZE,
) -> Document:
    """The report :class:`~flawmap.report.document.Document` of one evaluation.

    ``detector`` is the evaluated model (a fitted detector or an exported one); ``notes`` are
    sentences shown under the title; ``config`` is shown collapsed at the end.
    """
    pred = evaluation.prediction
    labels = evaluation.labels
    doc = Document(title, intro=[Paragraph(n, "note") for n in notes or []])
    doc.sections.append(_model_card(evaluation, detector))
    doc.sections.append(_metrics(evaluation))
    doc.sections.append(_distributions(evaluation, detector))
    doc.sections.append(_curves(evaluation))
    doc.sections.append(_decisions(evaluation))
    has_images = bool(pred.paths) and bool(pred.paths[0]) and gallery_size > 0
    if has_images:
        vmin, vmax = decision_range(pred.maps, pred.threshold)
        threshold = pred.threshold
        flagged = pred.labels if pred.labels is not None else np.zeros(len(labels), bool)
        misses = [i for i in np.argsort(pred.scores, kind="stable") if labels[i] == 1]
        misses = [i for i in misses if not flagged[i]]
        alarms = [i for i in np.argsort(-pred.scores, kind="stable") if labels[i] == 0]
        alarms = [i for i in alarms if flagged[i]]
        top = list(np.argsort(-pred.scores, kind="stable"))
        legend = Paragraph(
            "Overlay colour: the anomaly map on one scale for every image, centred on the "
            "threshold: green at the threshold, red above it, blue well below; white outline: "
            "the region at or above the threshold; green outline: the ground-truth defect, "
            "where a mask exists.",
            "note",
        )
        for heading, indices, reason in (
            ("Missed defects", misses, _missed_reason(labels, threshold)),
            ("False alarms", alarms, _alarm_reason(labels, threshold)),
            ("Most anomalous images", top, "No test images."),
        ):
            shown = indices[:gallery_size]
            cards = [_card(evaluation, i, vmin, vmax) for i in shown]
            blocks: list[Any] = [legend] if cards else []
            if len(indices) > len(shown):
                blocks.append(
                    Paragraph(f"The {len(shown)} most confident of {len(indices)} shown.", "note")
                )
            blocks.append(Gallery(cards, empty=reason))
            doc.sections.append(Section(heading, blocks))
    if config is not None:
        doc.sections.append(
            Section("Configuration", [Code("Show the configuration (JSON)", config_json(config))])
        )
    return doc


def write_evaluation(
    evaluation: Evaluation,
    detector: Any,
    out_dir: str | Path,
    title: str,
    n_examples: int = GALLERY_SIZE,
) -> Path:
    """Write ``metrics.json`` (metrics, info, model config) and the report (``report.html``,
    self-contained, and ``report.md`` with ``figures/`` and ``images/``) into ``out_dir``;
    ``n_examples`` images per gallery (0: no galleries). Returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {k: v for k, v in evaluation.info.items() if k != "empty_defect_masks"}
    config = {"model": detector.name, "params": detector.get_params(), **info}
    payload = {**evaluation.metrics, "info": evaluation.info, "config": config}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    document = evaluation_report(
        evaluation,
        detector,
        title,
        notes=evaluation_notes(evaluation),
        config=config,
        gallery_size=n_examples,
    )
    write_report(document, out)
    return out


# ---------------------------------------------------------------------------------- sections
def _model_card(evaluation: Evaluation, detector: Any) -> Section:
    params = detector.get_params()
    geometry = getattr(detector, "geometry", None)
    if geometry is not None:
        (h, w), (rows, cols) = geometry.size, geometry.tiles
    else:
        fit = getattr(detector, "fit_info", {}) or {}
        g = fit.get("geometry") or {}
        (h, w) = tuple(g.get("size", detector.transform.output_size))
        (rows, cols) = tuple(g.get("tiles", (1, 1)))
    size = f"{h} × {w} px" + (f", in {rows} × {cols} tiles" if (rows, cols) != (1, 1) else "")
    n_train = getattr(detector, "n_train_", None)
    data = getattr(detector, "train_data_", None)
    training = "–" if n_train is None else f"{n_train} good images"
    if data:
        training += f" ({data})"
    held = getattr(detector, "holdout_scores_", None)
    threshold = evaluation.prediction.threshold
    quantile = params.get("threshold_quantile")
    if threshold is None:
        rule = "no threshold (the model was fitted without held-out images)"
    elif held:
        rule = (
            f"{threshold:.4g}: the {quantile} quantile of the scores of {len(held)} good "
            "training images held out of fitting (no test image was used)"
        )
    else:
        rule = f"{threshold:.4g} (set by hand or learned before held-out scores were recorded)"
    rows_ = [
        ("Model", str(detector.name)),
        ("Backbone", str(params.get("backbone", "–"))),
        ("Input size", size),
        ("Training images", training),
        ("Threshold", rule),
        ("Training time", _seconds(getattr(detector, "train_seconds_", None))),
        ("Latency", _latency(evaluation.metrics.get("latency_ms"))),
    ]
    export = getattr(detector, "export_info", None)
    if export:
        rows_.append(
            ("Runs on", f"{export['backend']} {export['precision']} export ({export['export']})")
        )
    info = evaluation.info
    rows_.append(
        (
            "Test images",
            f"{info.get('n_test', len(evaluation.labels))} "
            f"({info.get('n_defective', int((evaluation.labels == 1).sum()))} defective, "
            f"{info.get('n_defective_with_masks', 0)} of them with a ground-truth mask)",
        )
    )
    return Section("Model", [Table(("", ""), rows_)])


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


def _latency(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms per image (batch 1, after warm-up)"


def _metrics(evaluation: Evaluation) -> Section:
    rows = []
    for key, value in evaluation.metrics.items():
        meaning = METRIC_HELP.get(key, "")
        if value is None:
            meaning += " Not defined for this test set." if meaning else "Not defined."
        digits = 1 if key in ("latency_ms", "throughput_ips", "train_seconds") else 3
        rows.append((metric_label(key), _fmt(value, digits), meaning))
    return Section("Metrics", [Table(("Metric", "Value", "What it means"), rows, numeric=(1,))])


def _distributions(evaluation: Evaluation, detector: Any) -> Section:
    pred, labels = evaluation.prediction, evaluation.labels
    threshold = pred.threshold
    blocks: list[Any] = []
    groups = [
        ("good test", pred.scores[labels == 0], GOOD_COLOUR),
        ("defective test", pred.scores[labels == 1], DEFECT_COLOUR),
    ]
    blocks.append(
        Figure(
            "scores_test",
            score_histogram(groups, threshold, "Test images"),
            "Image scores of the good and the defective test images; dashed: the threshold.",
        )
    )
    held = getattr(detector, "holdout_scores_", None)
    if held:
        blocks.append(
            Figure(
                "scores_holdout",
                score_histogram(
                    [("held-out good training", np.asarray(held), GOOD_COLOUR)],
                    threshold,
                    "Held-out good training images (the threshold's source)",
                ),
                "The threshold is a quantile of these scores; test good images far to their "
                "right mean the test conditions differ from training.",
            )
        )
    else:
        blocks.append(
            Paragraph(
                "No held-out training scores are recorded for this model (fitted with "
                "threshold_holdout=0, or saved by an older flawmap), so their distribution "
                "cannot be shown.",
                "empty",
            )
        )
    if threshold is not None:
        good, bad = pred.scores[labels == 0], pred.scores[labels == 1]
        rows = [
            ("good test", str(len(good)), str(int((good < threshold).sum())),
             str(int((good >= threshold).sum())), _margin(good, threshold, below=True)),
            ("defective test", str(len(bad)), str(int((bad < threshold).sum())),
             str(int((bad >= threshold).sum())), _margin(bad, threshold, below=False)),
        ]  # fmt: skip
        if held:
            h = np.asarray(held)
            rows.append(
                ("held-out good training", str(len(h)), str(int((h < threshold).sum())),
                 str(int((h >= threshold).sum())), _margin(h, threshold, below=True))
            )  # fmt: skip
        blocks.append(
            Table(
                ("images", "count", "below threshold", "at/above", "closest to the threshold"),
                rows,
                numeric=(1, 2, 3),
            )
        )
    return Section("Score distributions", blocks)


def _margin(scores: np.ndarray, threshold: float, *, below: bool) -> str:
    """How close the group's nearest score on its correct side comes to the threshold."""
    if not len(scores):
        return "–"
    side = scores[scores < threshold] if below else scores[scores >= threshold]
    if not len(side):
        return "none on the correct side"
    nearest = float(side.max() if below else side.min())
    return f"{nearest:.4g} ({nearest - threshold:+.3g} from the threshold)"


def _curves(evaluation: Evaluation) -> Section:
    pred, labels = evaluation.prediction, evaluation.labels
    if not ((labels == 0).any() and (labels == 1).any()):
        return Section(
            "Curves",
            [Paragraph("ROC and precision-recall need good and defective test images.", "empty")],
        )
    blocks: list[Any] = []
    fpr, tpr, precision, recall = _roc_pr(labels, pred.scores)
    auroc = evaluation.metrics.get("image_auroc")
    point = None
    if pred.labels is not None:
        flagged = pred.labels
        point = (
            float(flagged[labels == 0].mean()),
            float(flagged[labels == 1].mean()),
            "at the threshold",
        )
    blocks.append(
        Figure(
            "roc",
            curve_figure(
                [(f"image AUROC {_fmt(auroc)}", fpr, tpr)],
                xlabel="false-alarm rate (good flagged)",
                ylabel="detection rate (defective flagged)",
                title="ROC, image level",
                diagonal=True,
                point=point,
            ),
            "Every threshold's detection rate against its false-alarm rate; the dot is the "
            "model's threshold.",
        )
    )
    ap = average_precision_from(rank_labels(labels, pred.scores, "labels", "scores"))
    blocks.append(
        Figure(
            "precision_recall",
            curve_figure(
                [(f"image AP {ap:.3f}", recall, precision)],
                xlabel="recall (defective flagged)",
                ylabel="precision (flagged that are defective)",
                title="Precision-recall, image level",
            ),
            "How many flagged images are really defective, at every detection rate.",
        )
    )
    masks = pred.targets.get("mask")
    has_mask = pred.targets.get("has_mask")
    if masks is None or has_mask is None or not has_mask.astype(bool).any():
        blocks.append(Paragraph("The test set has no ground-truth masks: no PRO curve.", "empty"))
    else:
        keep = has_mask.astype(bool)
        gt = masks[keep, 0] > 0.5
        if not gt.any():
            blocks.append(Paragraph("No mask marks a defect pixel: no PRO curve.", "empty"))
        else:
            x, y = pro_curve_points(gt, pred.maps[keep], 0.3)
            aupro = evaluation.metrics.get("aupro")
            blocks.append(
                Figure(
                    "pro",
                    curve_figure(
                        [(f"AUPRO (FPR ≤ 0.3) {_fmt(aupro)}", x, y)],
                        xlabel="false-positive rate (normal pixels)",
                        ylabel="per-region overlap",
                        title="PRO curve, pixel level, up to 30 % FPR",
                        xlim=(0.0, 0.3),
                    ),
                    "Mean fraction of each defect region covered, against the share of normal "
                    "pixels flagged.",
                )
            )
    return Section("Curves", blocks)


def _roc_pr(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ROC (FPR, TPR) and precision-recall (precision, recall) points at every threshold."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    return fpr, tpr, precision, recall


def _decisions(evaluation: Evaluation) -> Section:
    pred, labels = evaluation.prediction, evaluation.labels
    if pred.labels is None:
        return Section(
            "Decisions at the threshold",
            [Paragraph("The model has no threshold, so it makes no decisions.", "empty")],
        )
    flagged = pred.labels.astype(bool)
    good, bad = labels == 0, labels == 1
    tn, fp = int((good & ~flagged).sum()), int((good & flagged).sum())
    fn, tp = int((bad & ~flagged).sum()), int((bad & flagged).sum())
    blocks: list[Any] = [
        Table(
            ("truth \\ decision", "passed as good", "flagged defective"),
            [("good", str(tn), str(fp)), ("defective", str(fn), str(tp))],
            numeric=(1, 2),
        ),
        Table(
            ("rate", "value"),
            [
                ("False-alarm rate (good images flagged)", _rate(fp, tn + fp)),
                ("Miss rate (defective images passed)", _rate(fn, fn + tp)),
            ],
        ),
    ]
    types = _defect_types(evaluation)
    if not bad.any():
        blocks.append(Paragraph("The test set has no defective images: no defect types.", "empty"))
        return Section("Decisions at the threshold", blocks)
    masks = pred.targets.get("mask")
    has_mask = pred.targets.get("has_mask")
    has_mask = has_mask.astype(bool) if has_mask is not None else np.zeros(len(labels), bool)
    rows = []
    for name in sorted(set(types[bad])):
        members = bad & (types == name)
        n = int(members.sum())
        pixel: dict[str, float] | None = None
        if masks is not None:
            chosen = (members | good) & has_mask
            if (members & has_mask).any():
                pixel = pixel_metrics_or_none(masks[chosen, 0] > 0.5, pred.maps[chosen])
        rows.append(
            (
                name,
                str(n),
                _rate(int((members & flagged).sum()), n),
                f"{float(pred.scores[members].mean()):.4g}",
                _fmt(pixel.get("pixel_auroc") if pixel else None),
                _fmt(pixel.get("pixel_ap") if pixel else None),
            )
        )
    blocks.append(
        Table(
            ("defect type", "images", "detected", "mean score", "pixel AUROC", "pixel AP"),
            rows,
            numeric=(1, 3, 4, 5),
        )
    )
    blocks.append(
        Paragraph(
            "Pixel metrics per type pool that type's images with the good test images that "
            "have (empty) masks; – where the type has no masks.",
            "note",
        )
    )
    return Section("Decisions at the threshold", blocks)


def _defect_types(evaluation: Evaluation) -> np.ndarray:
    """Each image's defect type: the dataset's, else its folder name ("good" for good ones)."""
    labels, paths = evaluation.labels, evaluation.prediction.paths
    names = evaluation.defect_types
    if names is None or len(names) != len(labels):
        names = [Path(p).parent.name if p else "defective" for p in paths]
    if len(names) != len(labels):
        names = ["defective"] * len(labels)
    return np.array([n if lab == 1 else "good" for n, lab in zip(names, labels, strict=True)])


def _missed_reason(labels: np.ndarray, threshold: float | None) -> str:
    if threshold is None:
        return "No threshold: no decisions, so no misses."
    if not (labels == 1).any():
        return "The test set has no defective images."
    return "No defective image was missed."


def _alarm_reason(labels: np.ndarray, threshold: float | None) -> str:
    if threshold is None:
        return "No threshold: no decisions, so no false alarms."
    if not (labels == 0).any():
        return "The test set has no good images."
    return "No good image was flagged."


def _card(evaluation: Evaluation, i: int, vmin: float, vmax: float) -> Card:
    pred, labels = evaluation.prediction, evaluation.labels
    masks = pred.targets.get("mask")
    gt = masks[i, 0] > 0.5 if masks is not None and labels[i] == 1 else None
    if gt is not None and not gt.any():
        gt = None
    _, overlay = example_overlay(pred, i, vmin, vmax, gt)
    path = Path(pred.paths[i])
    truth = "defective" if labels[i] == 1 else "good"
    score = float(pred.scores[i])
    relative = ""
    if pred.threshold is not None:
        decided = "flagged" if pred.labels is not None and pred.labels[i] else "passed"
        relative = f", {score - pred.threshold:+.3g} from the threshold, {decided}"
    caption = f"{path.parent.name}/{path.name} ({truth}): score {score:.4g}{relative}"
    name = f"{i:04d}_{path.stem}"
    return Card(name, overlay, caption)
