"""Reporting: coloured anomaly maps, overlays, metric tables, figures and self-contained
reports (:mod:`flawmap.report.document`)."""

from __future__ import annotations

from flawmap.report.html import png_data_uri
from flawmap.report.markdown import (
    METRIC_HELP,
    METRIC_LABELS,
    config_json,
    format_value,
    metric_label,
    metrics_table,
)
from flawmap.report.overlay import (
    COLORMAPS,
    GT_COLOR,
    THRESHOLD_COLOR,
    colorize,
    colormap_lut,
    decision_range,
    heatmap_overlay,
    save_float_tiff,
    save_png,
    side_by_side,
    to_uint8_image,
)

__all__ = [
    "COLORMAPS",
    "GT_COLOR",
    "METRIC_HELP",
    "METRIC_LABELS",
    "THRESHOLD_COLOR",
    "colorize",
    "colormap_lut",
    "config_json",
    "decision_range",
    "format_value",
    "heatmap_overlay",
    "metric_label",
    "metrics_table",
    "png_data_uri",
    "save_float_tiff",
    "save_png",
    "side_by_side",
    "to_uint8_image",
]
