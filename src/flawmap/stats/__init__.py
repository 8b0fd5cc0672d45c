"""Statistical comparison of methods over datasets/categories and seeds.

Result files → paired score table (:func:`load_records`, :func:`score_table`) → average ranks,
pairwise Wilcoxon signed-rank tests with Holm–Bonferroni correction and cliques
(:func:`compare`) → Markdown summary and critical-difference diagram, as in the seed paper's
Fig. 3, and one HTML report of every compared metric (``flawmap compare`` on the command line).
"""

from __future__ import annotations

from flawmap.stats.diagram import critical_difference_diagram, critical_difference_svg
from flawmap.stats.results import (
    ScoreTable,
    get_field,
    higher_is_better,
    load_records,
    method_labels,
    parse_method_key,
    score_table,
)
from flawmap.stats.significance import (
    PairResult,
    average_ranks,
    cliques,
    holm_bonferroni,
    min_attainable_p,
    pairwise_wilcoxon,
)
from flawmap.stats.summary import (
    Comparison,
    compare,
    comparison_markdown,
    comparison_report,
    write_comparison,
    write_comparison_report,
)

__all__ = [
    "Comparison",
    "PairResult",
    "ScoreTable",
    "average_ranks",
    "cliques",
    "compare",
    "comparison_markdown",
    "comparison_report",
    "critical_difference_diagram",
    "critical_difference_svg",
    "get_field",
    "higher_is_better",
    "holm_bonferroni",
    "load_records",
    "method_labels",
    "min_attainable_p",
    "pairwise_wilcoxon",
    "parse_method_key",
    "score_table",
    "write_comparison",
    "write_comparison_report",
]
