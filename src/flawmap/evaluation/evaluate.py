"""Evaluate a fitted detector on a labelled test set and write the results."""

from __future__ import annotations

import json
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

import flawmap
from flawmap.data import load_image, with_transform
from flawmap.errors import DataError
from flawmap.evaluation.timing import measure_latency
from flawmap.metrics import compute_metrics
from flawmap.models.base import Detector, Prediction
from flawmap.report import heatmap_overlay
from flawmap.runtime.format import EVALUATION_FILE

METRIC_KEYS = (
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "pixel_ap",
    "image_f1",
    "pixel_f1",
    "threshold_fpr",
    "threshold_tpr",
    "latency_ms",
    "throughput_ips",
    "train_seconds",
)


@dataclass
class Evaluation:
    """Metrics of one detector on one test set, and the prediction they came from.

    ``metrics`` holds the keys of ``METRIC_KEYS`` (None where not defined, e.g. pixel metrics
    without masks); ``threshold_fpr``/``threshold_tpr`` are the fractions of good/defective
    test images flagged at the model's learned threshold (no test label is used to set it).
    ``info`` holds the counts behind them (``n_test``, ``n_defective``, ``n_with_masks``,
    ``n_defective_with_masks``, ``n_empty_defect_masks`` with the image paths in
    ``empty_defect_masks``: defective images whose mask has no defect pixel at the evaluated
    size) and the software/hardware versions.
    """

    metrics: dict[str, float | None]
    prediction: Prediction
    labels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    #: Each test image's defect type (a flawmap dataset's ``defect_type``: "good" or the
    #: defect folder's name), or None when the dataset does not say.
    defect_types: list[str] | None = None


def evaluate(
    detector: Detector,
    dataset: Dataset,
    *,
    progress: bool = False,
    latency_runs: int = 20,
) -> Evaluation:
    """Predict every test image once and compute image and pixel metrics, timing included.

    A flawmap dataset built with another transform (e.g. before ``fit`` planned the model's
    input size) is read through the model's own."""
    dataset = with_transform(dataset, detector.transform)
    start = time.perf_counter()
    prediction = detector.predict(dataset, progress=progress, keep=("label", "mask", "has_mask"))
    wall = time.perf_counter() - start
    labels = prediction.targets["label"].astype(np.int64)
    if (labels < 0).any():
        raise DataError("evaluation needs labelled images (good / defective)")
    has_mask = prediction.targets["has_mask"].astype(bool)
    masks = maps = None
    if has_mask.any():
        masks = prediction.targets["mask"][has_mask, 0] > 0.5
        maps = prediction.maps[has_mask]
    empty = np.zeros(len(labels), dtype=bool)  # defective, with a mask, no defect pixel
    if masks is not None:
        empty[has_mask] = ~masks.any(axis=(1, 2))
        empty &= labels == 1
    metrics: dict[str, float | None] = dict(compute_metrics(labels, prediction.scores, masks, maps))
    flagged = prediction.labels
    good, bad = labels == 0, labels == 1
    metrics["threshold_fpr"] = (
        float(flagged[good].mean()) if flagged is not None and good.any() else None
    )
    metrics["threshold_tpr"] = (
        float(flagged[bad].mean()) if flagged is not None and bad.any() else None
    )
    metrics["latency_ms"] = (
        measure_latency(detector, dataset[0]["image"], runs=latency_runs) if latency_runs else None
    )
    metrics["throughput_ips"] = len(labels) / wall
    metrics["train_seconds"] = detector.train_seconds_
    info = {
        "n_test": len(labels),
        "n_defective": int(bad.sum()),
        "n_with_masks": int(has_mask.sum()),
        "n_defective_with_masks": int((has_mask & (labels == 1)).sum()),
        "n_empty_defect_masks": int(empty.sum()),
        "empty_defect_masks": [prediction.paths[i] for i in np.flatnonzero(empty)],
        "threshold": prediction.threshold,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "flawmap": flawmap.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        **getattr(detector, "export_info", {}),
    }
    ordered = {k: metrics.get(k) for k in METRIC_KEYS}
    return Evaluation(
        metrics=ordered,
        prediction=prediction,
        labels=labels,
        info=info,
        defect_types=_defect_types(dataset),
    )


def _defect_types(dataset: Dataset) -> list[str] | None:
    """The ``defect_type`` of every sample of a flawmap dataset (or a ``Subset`` of one)."""
    if isinstance(dataset, Subset):
        inner = _defect_types(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    samples = getattr(dataset, "samples", None)
    if not isinstance(samples, list) or len(samples) != len(dataset):
        return None
    types = [getattr(s, "defect_type", None) for s in samples]
    return types if all(isinstance(t, str) and t for t in types) else None


def record_evaluation(evaluation: Evaluation, model_dir: str | Path, data: str | Path) -> bool:
    """Write the metrics of ``evaluation`` on ``data`` into ``model_dir/evaluation.json``
    (atomically, replacing an earlier one); a warning and False when the folder is read-only."""
    from datetime import UTC, datetime

    from flawmap.errors import FlawmapWarning
    from flawmap.outputs import write_text_atomic

    payload = {
        "metrics": evaluation.metrics,
        "data": str(data),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "flawmap_version": flawmap.__version__,
    }
    try:
        write_text_atomic(Path(model_dir) / EVALUATION_FILE, json.dumps(payload, indent=2) + "\n")
    except (OSError, DataError) as exc:
        warnings.warn(
            f"the metrics were not recorded in {model_dir} ({exc}); the model card of flawmap "
            "serve will not show them",
            FlawmapWarning,
            stacklevel=2,
        )
        return False
    return True


def evaluation_notes(evaluation: Evaluation) -> list[str]:
    """Sentences a reader of the metrics must know: empty ground-truth masks, missing masks."""
    info = evaluation.info
    notes: list[str] = []
    n_empty = int(info.get("n_empty_defect_masks", 0))
    n_masked = int(info.get("n_defective_with_masks", 0))
    if n_empty:
        shown = [Path(p) for p in info.get("empty_defect_masks", [])[:5]]
        names = ", ".join(f"{p.parent.name}/{p.name}" for p in shown)
        more = f" and {n_empty - 5} more" if n_empty > 5 else ""
        notes.append(
            f"{n_empty} of {n_masked} defective images with a mask have an empty ground-truth "
            f"mask at the evaluated size ({names}{more}; full list in metrics.json). They count "
            "as defective in the image metrics; their pixels count as normal in the pixel metrics."
        )
        if n_empty == n_masked:
            notes.append(
                "No mask marks a defect pixel, so the pixel metrics (pixel AUROC, pixel AP, "
                "pixel F1, AUPRO) are not defined and were not computed."
            )
    elif info.get("n_with_masks", 0) == 0:
        notes.append("The test set has no ground-truth masks: pixel metrics were not computed.")
    return notes


def example_overlay(
    pred: Prediction, i: int, vmin: float, vmax: float, gt_mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Image ``i`` at the map's size and its heatmap overlay (threshold outline, optional gt)."""
    image = np.asarray(load_image(pred.paths[i]).resize(pred.maps[i].shape[::-1]), dtype=np.uint8)
    overlay = heatmap_overlay(
        image, pred.maps[i], vmin, vmax, threshold=pred.threshold, gt_mask=gt_mask
    )
    return image, overlay


def display_range(pred: Prediction) -> tuple[float, float]:
    """A colour range shared by all overlays: 1st percentile of the maps to max(threshold, max)."""
    low = float(np.percentile(pred.maps[:: max(1, len(pred.maps) // 64)], 1))
    high = float(pred.maps.max())
    if pred.threshold is not None:
        high = max(high, pred.threshold)
    return low, max(high, low + 1e-6)
