"""Evaluation: metrics of a detector on a test set, timing, result files and reports."""

from __future__ import annotations

from flawmap.evaluation.evaluate import (
    EVALUATION_FILE,
    METRIC_KEYS,
    Evaluation,
    display_range,
    evaluate,
    evaluation_notes,
    example_overlay,
    record_evaluation,
)
from flawmap.evaluation.report import evaluation_report, write_evaluation
from flawmap.evaluation.timing import measure_latency

__all__ = [
    "EVALUATION_FILE",
    "METRIC_KEYS",
    "Evaluation",
    "display_range",
    "evaluate",
    "evaluation_notes",
    "evaluation_report",
    "example_overlay",
    "measure_latency",
    "record_evaluation",
    "write_evaluation",
]
