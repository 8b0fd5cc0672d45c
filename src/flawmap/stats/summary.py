"""One metric's comparison (ranks, pairwise tests, cliques) and its Markdown summary."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flawmap.stats.diagram import critical_difference_diagram
from flawmap.stats.results import ScoreTable
from flawmap.stats.results import higher_is_better as default_direction
from flawmap.stats.significance import (
    PairResult,
    ZeroMethod,
    average_ranks,
    cliques,
    min_attainable_p,
    pairwise_wilcoxon,
)

__all__ = ["Comparison", "compare", "comparison_markdown", "write_comparison"]


@dataclass(frozen=True)
class Comparison:
    """Everything the summary and the diagram show for one metric.

    ``average_ranks`` is best first; ``pairs`` compare a better-ranked ``a`` with ``b`` (two-sided
    tests, Holm-adjusted over all pairs); ``cliques`` are the diagram's bars.
    """

    table: ScoreTable
    higher_is_better: bool
    alpha: float
    zero_method: str
    average_ranks: dict[str, float]
    pairs: list[PairResult]
    cliques: list[tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (scores per block included)."""
        t = self.table
        return {
            "metric": t.metric,
            "higher_is_better": self.higher_is_better,
            "alpha": self.alpha,
            "test": "two-sided Wilcoxon signed-rank (scipy), Holm–Bonferroni over all pairs",
            "zero_method": self.zero_method,
            "seeds_averaged": t.seeds_averaged,
            "blocks": list(t.blocks),
            "average_ranks": self.average_ranks,
            "pairs": [asdict(p) for p in self.pairs],
            "cliques": [list(c) for c in self.cliques],
            "scores": {m: t.scores[:, j].tolist() for j, m in enumerate(t.methods)},
        }


def compare(
    table: ScoreTable,
    *,
    alpha: float = 0.05,
    higher_is_better: bool | None = None,
    zero_method: ZeroMethod = "wilcox",
) -> Comparison:
    """Average ranks, pairwise two-sided Wilcoxon tests with Holm correction, and cliques.

    ``higher_is_better`` defaults to the metric's usual direction (lower for times/memory/loss).
    """
    better_high = default_direction(table.metric) if higher_is_better is None else higher_is_better
    ranks = average_ranks(table.as_dict(), higher_is_better=better_high)
    by_rank = {m: table.as_dict()[m] for m in ranks}
    pairs = pairwise_wilcoxon(by_rank, alpha=alpha, zero_method=zero_method)
    groups = cliques(ranks, pairs, alpha=alpha)
    return Comparison(table, better_high, alpha, zero_method, ranks, pairs, groups)


def _p(value: float) -> str:
    return f"{value:.4g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def comparison_markdown(cmp: Comparison, *, per_block: bool = True) -> str:
    """Average-rank table (with mean ± std of the metric), pairwise table (raw and Holm p),
    cliques, a warning when too few blocks make significance unattainable, and (with
    ``per_block``) the paired scores themselves."""
    from flawmap.report.markdown import metric_label

    t = cmp.table
    n, k = t.scores.shape
    blocks = "categories, seeds averaged" if t.seeds_averaged else "category × seed"
    lines = [
        f"# {metric_label(t.metric)}: comparison of {k} methods",
        "",
        f"{n} paired blocks ({blocks}); {'higher' if cmp.higher_is_better else 'lower'} is "
        f"better. Pairwise two-sided Wilcoxon signed-rank tests (scipy, zero_method="
        f"{cmp.zero_method}), Holm–Bonferroni correction over {len(cmp.pairs)} "
        f"pair{'s' if len(cmp.pairs) > 1 else ''}, "
        f"α = {cmp.alpha:g}.",
        "",
        "## Average ranks (1 = best)",
        "",
    ]
    show_seed_std = t.seeds_averaged and bool(np.any(t.n_seeds > 1))
    header = ["rank", "method", "average rank", "mean ± std over blocks"]
    header += ["mean seed std", "seeds"] if show_seed_std else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for position, (method, rank) in enumerate(cmp.average_ranks.items(), start=1):
        j = t.methods.index(method)
        col = t.scores[:, j]
        spread = f" ± {col.std(ddof=1):.4f}" if n > 1 else ""
        cells = [str(position), _cell(method), f"{rank:.2f}", f"{col.mean():.4f}{spread}"]
        if show_seed_std:
            seed_std = t.seed_std[:, j]
            seed_text = f"{np.nanmean(seed_std):.4f}" if np.any(np.isfinite(seed_std)) else "–"
            lo, hi = int(t.n_seeds[:, j].min()), int(t.n_seeds[:, j].max())
            cells += [seed_text, str(lo) if lo == hi else f"{lo}–{hi}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if cmp.cliques:
        groups = "; ".join("{" + ", ".join(_cell(m) for m in c) + "}" for c in cmp.cliques)
        lines.append(f"Cliques (no significant difference inside, the diagram's bars): {groups}.")
    else:
        lines.append("Cliques: none (every pair of neighbouring methods differs significantly).")
    lines += ["", "## Pairwise tests", ""]
    header = ["A", "B", "n (nonzero)", "median A − B", "W", "p", "p (Holm)", "significant"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for pair in cmp.pairs:
        cells = [
            _cell(pair.a),
            _cell(pair.b),
            f"{pair.n} ({pair.n_nonzero})",
            f"{pair.median_difference:+.4f}",
            f"{pair.statistic:g}",
            _p(pair.p_value),
            _p(pair.p_holm),
            "yes" if pair.reject else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    floor, needed = min_attainable_p(n), cmp.alpha / len(cmp.pairs)
    if floor > needed:
        lines += [
            "",
            f"Note: with {n} blocks the smallest exact two-sided p-value is {_p(floor)}, above "
            f"the α/{len(cmp.pairs)} = {_p(needed)} that Holm's first step needs: no pair can be "
            "significant; more blocks (categories or seeds) are needed.",
        ]
    if per_block:
        lines += ["", "## Scores per block", ""]
        header = ["block", *(_cell(m) for m in t.methods)]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for i, block in enumerate(t.blocks):
            cells = [_cell(block)]
            for j in range(k):
                value = f"{t.scores[i, j]:.4f}"
                if t.n_seeds[i, j] > 1:
                    value += f" ± {t.seed_std[i, j]:.4f} ({t.n_seeds[i, j]})"
                cells.append(value)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(cmp: Comparison, out: str | os.PathLike[str]) -> list[Path]:
    """Write ``compare_<metric>.md`` and ``.json`` (:func:`comparison_markdown`,
    :meth:`Comparison.to_dict`) and the diagrams ``cd_<metric>.png`` and ``.svg`` into ``out``
    (created); ``<metric>`` keeps only word characters, dots and dashes. Returns the paths."""
    from flawmap.report.markdown import metric_label  # imports the report package

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    table = cmp.table
    stem = re.sub(r"[^\w.-]", "_", table.metric)
    written = [folder / f"compare_{stem}.md", folder / f"compare_{stem}.json"]
    written[0].write_text(comparison_markdown(cmp))
    written[1].write_text(json.dumps(cmp.to_dict(), indent=2) + "\n")
    unit = "categories" if table.seeds_averaged else "blocks"
    title = f"{metric_label(table.metric)}: average rank over {len(table.blocks)} {unit}"
    for ext in ("png", "svg"):
        written.append(
            critical_difference_diagram(
                cmp.average_ranks,
                cmp.pairs,
                folder / f"cd_{stem}.{ext}",
                alpha=cmp.alpha,
                title=title,
            )
        )
    return written
