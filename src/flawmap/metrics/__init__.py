"""Anomaly-detection evaluation metrics following the MVTec AD protocol.

Convention: higher score = more anomalous; labels and masks use 1 = anomalous, 0 = normal.
Inputs may be numpy arrays or torch tensors.

Image level (detection): :func:`image_auroc`, :func:`f1_max`, :func:`image_metrics`.
Pixel level (localisation): :func:`pixel_auroc`, :func:`pixel_ap`, :func:`aupro`
(Per-Region-Overlap, Bergmann et al., IJCV 2021), :func:`pixel_metrics`.
Everything at once: :func:`compute_metrics`.
"""

from __future__ import annotations

from flawmap.metrics.classification import f1_max, image_auroc, image_metrics
from flawmap.metrics.localization import aupro, label_regions, pixel_ap, pixel_auroc, pixel_metrics
from flawmap.metrics.summary import METRIC_NAMES, compute_metrics

__all__ = [
    "METRIC_NAMES",
    "aupro",
    "compute_metrics",
    "f1_max",
    "image_auroc",
    "image_metrics",
    "label_regions",
    "pixel_ap",
    "pixel_auroc",
    "pixel_metrics",
]
