"""All MVTec AD metrics of one category at once: :func:`compute_metrics`."""

from __future__ import annotations

from typing import Any

from flawmap.errors import DataError
from flawmap.metrics._curves import auroc_from, f1_max_from
from flawmap.metrics.classification import rank_labels
from flawmap.metrics.localization import pixel_metrics_or_none

__all__ = ["METRIC_NAMES", "compute_metrics"]

METRIC_NAMES: tuple[str, ...] = (
    "image_auroc",
    "image_f1",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1",
    "aupro",
)
"""Keys of the dict returned by :func:`compute_metrics`, in report order."""


def compute_metrics(
    labels: Any,
    scores: Any,
    masks: Any | None = None,
    maps: Any | None = None,
    fpr_limit: float = 0.3,
) -> dict[str, float | None]:
    """Image- and pixel-level metrics of one test set (MVTec AD protocol).

    Args:
        labels: (N,) bool or {0, 1} image labels, 1 = anomalous.
        scores: (N,) float image anomaly scores, higher = more anomalous.
        masks: optional (N, H, W) bool or {0, 1} ground-truth masks (defect-free images
            included, all zero).
        maps: optional (N, H, W) float anomaly maps; given together with ``masks``.
        fpr_limit: FPR integration limit of AUPRO (0.3 in the MVTec AD protocol).

    Returns:
        Dict with the keys of :data:`METRIC_NAMES`. ``image_auroc``/``image_f1`` are ``None``
        when ``labels`` hold a single class; the pixel metrics (``pixel_auroc``, ``pixel_ap``,
        ``pixel_f1``, ``aupro``) are ``None`` when masks/maps are not given or when the masks
        hold a single class of pixel (e.g. no anomalous pixel).

    Raises:
        DataError: shapes differ, NaN scores, non-binary labels/masks, or only one of
            ``masks``/``maps`` given.
        ConfigError: ``fpr_limit`` outside (0, 1].
    """
    if (masks is None) != (maps is None):
        missing = "maps" if maps is None else "masks"
        raise DataError(f"masks and maps must be given together ({missing} is None)")

    result: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    counts = rank_labels(labels, scores, "labels", "scores")
    if counts.n_pos > 0 and counts.n_neg > 0:
        result["image_auroc"] = auroc_from(counts)
        result["image_f1"] = f1_max_from(counts)
    if masks is not None:
        result.update(pixel_metrics_or_none(masks, maps, fpr_limit))
    return result
