"""Metric names and meanings, and Markdown metric tables."""

from __future__ import annotations

import json
import math
from numbers import Integral, Real

from flawmap.errors import ConfigError

__all__ = [
    "METRIC_HELP",
    "METRIC_LABELS",
    "MISSING",
    "config_json",
    "format_value",
    "metric_label",
    "metrics_table",
]

#: Shown for a value that is None (not computed / not applicable) or a missing column.
MISSING = "–"

#: Human-readable names of the metric keys flawmap produces.
METRIC_LABELS: dict[str, str] = {
    "image_auroc": "Image AUROC",
    "image_ap": "Image AP",
    "image_f1": "Image F1",
    "pixel_auroc": "Pixel AUROC",
    "pixel_ap": "Pixel AP",
    "pixel_f1": "Pixel F1",
    "aupro": "AUPRO (FPR ≤ 0.3)",
    "threshold_fpr": "False-alarm rate at the threshold",
    "threshold_tpr": "Detection rate at the threshold",
    "latency_ms": "Latency (ms/image, batch 1)",
    "throughput_ips": "Throughput (images/s)",
    "train_seconds": "Training time (s)",
}


#: One line per metric saying what it means (shown beside it in reports).
METRIC_HELP: dict[str, str] = {
    "image_auroc": "Chance that a random defective image scores above a random good one "
    "(1 = perfect ranking, 0.5 = guessing); independent of the threshold.",
    "image_ap": "Average precision of the image scores: precision averaged over every recall.",
    "image_f1": "Best F1 of image decisions over all thresholds (not necessarily the model's).",
    "pixel_auroc": "Chance that a random defect pixel scores above a random normal pixel, over "
    "all test pixels.",
    "pixel_ap": "Average precision of the pixel scores; low when defects are small and the map "
    "lights up normal areas.",
    "pixel_f1": "Best F1 of pixel decisions over all thresholds.",
    "aupro": "Mean share of each defect region found, averaged over false-positive rates up to "
    "30 % (small defects count as much as large ones).",
    "threshold_fpr": "Share of good test images the model's threshold flags as defective.",
    "threshold_tpr": "Share of defective test images the model's threshold flags.",
    "latency_ms": "Time to score one image (batch 1, after warm-up) on this machine.",
    "throughput_ips": "Images scored per second over the whole test set (batched).",
    "train_seconds": "Wall-clock time of fitting, threshold hold-out included.",
}


def metric_label(key: str) -> str:
    """Readable name of a metric key (``"image_auroc"`` → ``"Image AUROC"``); unknown keys as is."""
    return METRIC_LABELS.get(key, key)


def _check_digits(float_digits: int) -> int:
    if isinstance(float_digits, bool) or not isinstance(float_digits, Integral):
        raise ConfigError(f"float_digits must be an integer, got {float_digits!r}")
    if float_digits < 0:
        raise ConfigError(f"float_digits must be >= 0, got {float_digits}")
    return int(float_digits)


def format_value(value: object, float_digits: int = 3) -> str:
    """Format one table cell: None → "–", floats with ``float_digits`` decimals, NaN → "NaN".

    Integers and bools are printed as they are; anything else via ``str``.
    """
    digits = _check_digits(float_digits)
    if value is None:
        return MISSING
    if isinstance(value, bool | Integral):
        return str(value)
    if isinstance(value, Real):
        number = float(value)
        if math.isnan(number):
            return "NaN"
        return f"{number:.{digits}f}"
    return str(value)


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell (no newlines, escaped pipes)."""
    return " ".join(text.split()).replace("|", "\\|")


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def metrics_table(
    rows: list[dict[str, object]], columns: list[str] | None = None, float_digits: int = 3
) -> str:
    """Render rows as a GitHub Markdown table (string ending in a newline).

    ``columns`` defaults to every key in order of first appearance. None values and keys a
    row lacks are shown as "–"; floats get ``float_digits`` decimals. Columns whose values
    are all numbers (or missing) are right-aligned.
    """
    _check_digits(float_digits)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        raise ConfigError("metrics_table needs at least one column")
    header = "| " + " | ".join(_cell(str(c)) for c in columns) + " |"
    align = []
    for col in columns:
        values = [row.get(col) for row in rows]
        numeric = any(v is not None for v in values) and all(
            v is None or _is_number(v) for v in values
        )
        align.append("---:" if numeric else "---")
    lines = [header, "| " + " | ".join(align) + " |"]
    for row in rows:
        cells = [_cell(format_value(row.get(col), float_digits)) for col in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def config_json(config: dict) -> str:
    """The config as indented JSON; non-JSON values (paths, ...) are written with ``str``."""
    return json.dumps(config, indent=2, ensure_ascii=False, default=str)
