"""Metrics computed from :class:`~flawmap.metrics._ranking.RankedCounts` (no sorting here).

Notation: ``s_1 > s_2 > ... > s_D`` are the distinct scores of the anomalous samples; at
threshold ``s_j`` (predict anomalous when ``score >= s_j``) there are ``tp_j`` true positives
and ``fp_ge_j`` false positives, and ``fp_gt_j`` normal samples score strictly above ``s_j``.
Thresholds that only normal samples take just add false positives at constant ``tp`` and PRO,
so they lie on straight horizontal pieces of the ROC / PRO curves (they add nothing to AP,
cannot beat ``s_j`` for F1) and the curves through these points are exact.
"""

from __future__ import annotations

import numpy as np

from flawmap.errors import DataError
from flawmap.metrics._ranking import RankedCounts

__all__ = ["aupro_from", "auroc_from", "average_precision_from", "f1_max_from", "require_classes"]


def require_classes(counts: RankedCounts, what: str, *, need_negative: bool = True) -> None:
    """Raise :class:`DataError` when a metric is undefined for lack of one class."""
    if counts.n_pos == 0:
        raise DataError(f"{what} is undefined: there is no anomalous sample (label/mask 1)")
    if need_negative and counts.n_neg == 0:
        raise DataError(f"{what} is undefined: there is no normal sample (label/mask 0)")


def auroc_from(counts: RankedCounts) -> float:
    """Area under the ROC curve (trapezoidal rule, i.e. ties count half), like sklearn's
    ``roc_auc_score``; computed as the Mann-Whitney statistic in exact integer arithmetic."""
    require_classes(counts, "AUROC")
    n_at = np.diff(counts.tp, prepend=0)  # anomalous samples scoring exactly s_j
    # Each scores 1 against every normal below it and 1/2 against each tie: doubled,
    # (n_neg - fp_ge) * 2 + (fp_ge - fp_gt) = 2 n_neg - fp_ge - fp_gt.
    twice_wins = int(np.dot(n_at, 2 * counts.n_neg - counts.fp_ge - counts.fp_gt))
    return twice_wins / (2.0 * counts.n_pos * counts.n_neg)


def average_precision_from(counts: RankedCounts) -> float:
    """Step-wise average precision ``sum_j (R_j - R_{j-1}) * P_j``, exactly as sklearn's
    ``average_precision_score`` (no interpolation)."""
    require_classes(counts, "average precision", need_negative=False)
    tp = counts.tp.astype(np.float64)
    recall_step = np.diff(tp, prepend=0.0) / counts.n_pos
    precision = tp / (tp + counts.fp_ge)
    return float(np.dot(recall_step, precision))


def f1_max_from(counts: RankedCounts) -> float:
    """Maximum over all thresholds of ``F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (TP + FP + P)``."""
    require_classes(counts, "F1", need_negative=False)
    tp = counts.tp.astype(np.float64)
    return float(np.max(2.0 * tp / (tp + counts.fp_ge + counts.n_pos)))


def pro_curve(
    counts: RankedCounts, fpr_limit: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve as (FPR, PRO) vertices from (0, 0), FPR non-decreasing.

    Vertex pairs ``(fp_gt_j / n_neg, PRO_{j-1})`` -> ``(fp_ge_j / n_neg, PRO_j)`` are the
    curve just above and at ``s_j`` (a sloped piece when normal pixels tie with ``s_j``);
    between pairs the curve is horizontal, and it ends with ``(1, PRO_D)`` = (1, 1). Collinear
    vertices of normal-only thresholds are left out, which changes neither the trapezoidal
    area nor interpolated values. With ``fpr_limit``, vertices after the first one beyond the
    limit are dropped (they cannot matter up to the limit).
    """
    require_classes(counts, "AUPRO")
    if counts.pro is None:
        raise DataError("AUPRO is undefined: there is no ground-truth region")
    fp_gt, fp_ge, pro_at = counts.fp_gt, counts.fp_ge, counts.pro
    if fpr_limit is not None:
        # Groups whose first vertex is at FPR <= limit, plus one; integer bound with slack.
        bound = int(np.floor(fpr_limit * counts.n_neg * (1.0 + 1e-9))) + 1
        d = int(np.searchsorted(fp_gt, bound, side="right")) + 1
        fp_gt, fp_ge, pro_at = fp_gt[:d], fp_ge[:d], pro_at[:d]
    d = fp_gt.size
    fpr = np.empty(2 * d + 2)
    pro = np.empty(2 * d + 2)
    fpr[0] = pro[0] = 0.0
    fpr[1:-1:2] = fp_gt / counts.n_neg
    fpr[2:-1:2] = fp_ge / counts.n_neg
    pro[1] = 0.0
    pro[3:-1:2] = pro_at[:-1]
    pro[2:-1:2] = pro_at
    fpr[-1] = 1.0
    pro[-1] = counts.pro[-1]
    return fpr, pro


def aupro_from(counts: RankedCounts, fpr_limit: float) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AD protocol).

    The curve (:func:`pro_curve`) is integrated with the trapezoidal rule up to
    ``fpr_limit``, the PRO at exactly ``fpr_limit`` being linearly interpolated between its
    neighbours, and divided by ``fpr_limit`` -- as ``trapezoid(fprs, pros, x_max=limit) / limit``
    in the official MVTec AD evaluation code.
    """
    x, y = pro_curve(counts, fpr_limit)
    n_in = int(np.searchsorted(x, fpr_limit, side="right"))  # x[:n_in] <= fpr_limit
    xi, yi = x[:n_in], y[:n_in]
    area = 0.5 * float(np.dot(xi[1:] - xi[:-1], yi[1:] + yi[:-1]))
    if n_in < x.size and xi[-1] < fpr_limit:
        x0, x1, y0, y1 = xi[-1], x[n_in], yi[-1], y[n_in]
        y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_limit) * (fpr_limit - x0)
    return float(area / fpr_limit)
