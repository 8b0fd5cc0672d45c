"""Evaluation: metrics of a detector on a test set, timing, result files."""

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
    save_examples,
    write_evaluation,
)
from flawmap.evaluation.timing import measure_latency

__all__ = [
    "EVALUATION_FILE",
    "METRIC_KEYS",
    "Evaluation",
    "display_range",
    "evaluate",
    "evaluation_notes",
    "example_overlay",
    "measure_latency",
    "record_evaluation",
    "save_examples",
    "write_evaluation",
]
