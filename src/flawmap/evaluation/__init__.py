"""Evaluation: metrics of a detector on a test set, timing, result files."""

from __future__ import annotations

from flawmap.evaluation.evaluate import (
    METRIC_KEYS,
    Evaluation,
    display_range,
    evaluate,
    evaluation_notes,
    example_overlay,
    save_examples,
    write_evaluation,
)
from flawmap.evaluation.timing import measure_latency

__all__ = [
    "METRIC_KEYS",
    "Evaluation",
    "display_range",
    "evaluate",
    "evaluation_notes",
    "example_overlay",
    "measure_latency",
    "save_examples",
    "write_evaluation",
]
