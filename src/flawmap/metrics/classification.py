"""Image-level (detection) metrics of the MVTec AD protocol: image AUROC and F1-max.

Convention: a higher score means more anomalous; label 1 = anomalous, 0 = normal.
"""

from __future__ import annotations

from typing import Any

from flawmap.metrics._curves import auroc_from, f1_max_from
from flawmap.metrics._ranking import (
    RankedCounts,
    as_binary,
    as_numpy,
    as_scores,
    check_same_shape,
    rank,
)

__all__ = ["f1_max", "image_auroc", "image_metrics"]


def rank_labels(labels: Any, scores: Any, labels_name: str, scores_name: str) -> RankedCounts:
    """Validate (labels, scores) of the same shape and rank them (one sort)."""
    lab = as_numpy(labels, labels_name)
    sco = as_numpy(scores, scores_name)
    check_same_shape(lab, sco, labels_name, scores_name)
    lab_bool = as_binary(lab, labels_name)
    return rank(as_scores(sco, scores_name), lab_bool)


def image_auroc(labels: Any, scores: Any) -> float:
    """Image-level area under the ROC curve (MVTec AD "image AUROC").

    Args:
        labels: (N,) bool or {0, 1}, 1 = anomalous image. numpy array or torch tensor.
        scores: (N,) float image anomaly scores, higher = more anomalous.

    Returns:
        The AUROC in [0, 1]; equals ``sklearn.metrics.roc_auc_score(labels, scores)``.

    Raises:
        DataError: shapes differ, NaN scores, non-binary labels, or only one class present.
    """
    return auroc_from(rank_labels(labels, scores, "labels", "scores"))


def f1_max(labels: Any, scores: Any) -> float:
    """Maximum F1 score over all thresholds ``score >= t`` ("F1-max").

    Used on images (image F1-max) and on pixels (pixel F1-max, pass masks and maps of any
    matching shape; they are flattened).

    Args:
        labels: (N,) or any shape, bool or {0, 1}, 1 = anomalous.
        scores: same shape as ``labels``, float, higher = more anomalous.

    Returns:
        ``max_t 2 P(t) R(t) / (P(t) + R(t))`` over every distinct score ``t``.

    Raises:
        DataError: shapes differ, NaN scores, non-binary labels, or no anomalous sample.
    """
    return f1_max_from(rank_labels(labels, scores, "labels", "scores"))


def image_metrics(labels: Any, scores: Any) -> dict[str, float]:
    """Image AUROC and image F1-max from a single sort.

    Args:
        labels: (N,) bool or {0, 1}, 1 = anomalous image.
        scores: (N,) float image anomaly scores.

    Returns:
        ``{"image_auroc": float, "image_f1": float}``.

    Raises:
        DataError: as :func:`image_auroc`.
    """
    counts = rank_labels(labels, scores, "labels", "scores")
    return {"image_auroc": auroc_from(counts), "image_f1": f1_max_from(counts)}
