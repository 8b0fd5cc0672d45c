"""Reporting: coloured anomaly maps, overlays, Markdown tables and self-contained HTML pages."""

from __future__ import annotations

from flawmap.report.html import OVERLAY_LEGEND, png_data_uri, write_html_report
from flawmap.report.markdown import (
    METRIC_LABELS,
    config_json,
    evaluation_markdown,
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
    heatmap_overlay,
    save_float_tiff,
    save_png,
    side_by_side,
    to_uint8_image,
)

__all__ = [
    "COLORMAPS",
    "GT_COLOR",
    "METRIC_LABELS",
    "OVERLAY_LEGEND",
    "THRESHOLD_COLOR",
    "colorize",
    "colormap_lut",
    "config_json",
    "evaluation_markdown",
    "format_value",
    "heatmap_overlay",
    "metric_label",
    "metrics_table",
    "png_data_uri",
    "save_float_tiff",
    "save_png",
    "side_by_side",
    "to_uint8_image",
    "write_html_report",
]
