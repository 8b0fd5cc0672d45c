"""One metric's comparison (ranks, pairwise tests, cliques), its Markdown summary, and the HTML
report of several metrics' comparisons (``compare.html``)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flawmap.errors import ConfigError
from flawmap.stats.diagram import critical_difference_diagram, critical_difference_svg
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

if TYPE_CHECKING:
    from flawmap.report.document import Block, Document, Section

__all__ = [
    "Comparison",
    "compare",
    "comparison_markdown",
    "comparison_report",
    "write_comparison",
    "write_comparison_report",
]


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


#: A table's header and rows of text cells, shared by the Markdown summary and the HTML report.
_Rows = tuple[tuple[str, ...], list[tuple[str, ...]]]


def _design(cmp: Comparison) -> str:
    """What was compared how: blocks, direction, the test and α."""
    t = cmp.table
    blocks = "categories, seeds averaged" if t.seeds_averaged else "category × seed"
    return (
        f"{len(t.blocks)} paired blocks ({blocks}); "
        f"{'higher' if cmp.higher_is_better else 'lower'} is better. Pairwise two-sided Wilcoxon "
        f"signed-rank tests (scipy, zero_method={cmp.zero_method}), Holm–Bonferroni correction "
        f"over {len(cmp.pairs)} pair{'s' if len(cmp.pairs) > 1 else ''}, α = {cmp.alpha:g}."
    )


def _rank_rows(cmp: Comparison, score: str = "mean") -> _Rows:
    """Average ranks, best first, with the metric's mean ± std over blocks (and, when seeds were
    averaged, the mean seed std and the seed count)."""
    t = cmp.table
    n = t.scores.shape[0]
    show_seed_std = t.seeds_averaged and bool(np.any(t.n_seeds > 1))
    header = ("rank", "method", "average rank", f"{score} ± std over blocks")
    header += ("mean seed std", "seeds") if show_seed_std else ()
    rows = []
    for position, (method, rank) in enumerate(cmp.average_ranks.items(), start=1):
        j = t.methods.index(method)
        col = t.scores[:, j]
        spread = f" ± {col.std(ddof=1):.4f}" if n > 1 else ""
        cells: tuple[str, ...] = (str(position), method, f"{rank:.2f}", f"{col.mean():.4f}{spread}")
        if show_seed_std:
            seed_std = t.seed_std[:, j]
            seed_text = f"{np.nanmean(seed_std):.4f}" if np.any(np.isfinite(seed_std)) else "–"
            lo, hi = int(t.n_seeds[:, j].min()), int(t.n_seeds[:, j].max())
            cells += (seed_text, str(lo) if lo == hi else f"{lo}–{hi}")
        rows.append(cells)
    return header, rows


def _cliques_text(cmp: Comparison) -> str:
    if not cmp.cliques:
        return "Cliques: none (every pair of neighbouring methods differs significantly)."
    groups = "; ".join("{" + ", ".join(c) + "}" for c in cmp.cliques)
    return f"Cliques (no significant difference inside, the diagram's bars): {groups}."


def _pair_rows(cmp: Comparison) -> _Rows:
    """One row per pair: A (the better-ranked), B, sizes, median difference, W, raw and Holm p."""
    header = ("A", "B", "n (nonzero)", "median A − B", "W", "p", "p (Holm)", "significant")
    rows = [
        (
            pair.a,
            pair.b,
            f"{pair.n} ({pair.n_nonzero})",
            f"{pair.median_difference:+.4f}",
            f"{pair.statistic:g}",
            _p(pair.p_value),
            _p(pair.p_holm),
            "yes" if pair.reject else "no",
        )
        for pair in cmp.pairs
    ]
    return header, rows


def _floor_note(cmp: Comparison) -> str | None:
    """A warning when too few blocks make every pair's significance unattainable, else None."""
    n = len(cmp.table.blocks)
    floor, needed = min_attainable_p(n), cmp.alpha / len(cmp.pairs)
    if floor <= needed:
        return None
    return (
        f"Note: with {n} blocks the smallest exact two-sided p-value is {_p(floor)}, above "
        f"the α/{len(cmp.pairs)} = {_p(needed)} that Holm's first step needs: no pair can be "
        "significant; more blocks (categories or seeds) are needed."
    )


def _block_rows(cmp: Comparison) -> _Rows:
    """The paired scores: one row per block, one column per method (± seed std (seeds))."""
    t = cmp.table
    rows = []
    for i, block in enumerate(t.blocks):
        cells = [block]
        for j in range(len(t.methods)):
            value = f"{t.scores[i, j]:.4f}"
            if t.n_seeds[i, j] > 1:
                value += f" ± {t.seed_std[i, j]:.4f} ({t.n_seeds[i, j]})"
            cells.append(value)
        rows.append(tuple(cells))
    return ("block", *t.methods), rows


def _markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def comparison_markdown(cmp: Comparison, *, per_block: bool = True) -> str:
    """Average-rank table (with mean ± std of the metric), pairwise table (raw and Holm p),
    cliques, a warning when too few blocks make significance unattainable, and (with
    ``per_block``) the paired scores themselves."""
    from flawmap.report.markdown import metric_label

    k = len(cmp.table.methods)
    lines = [
        f"# {metric_label(cmp.table.metric)}: comparison of {k} methods",
        "",
        _design(cmp),
        "",
        "## Average ranks (1 = best)",
        "",
        *_markdown_table(*_rank_rows(cmp)),
        "",
        _cell(_cliques_text(cmp)),
        "",
        "## Pairwise tests",
        "",
        *_markdown_table(*_pair_rows(cmp)),
    ]
    note = _floor_note(cmp)
    if note is not None:
        lines += ["", note]
    if per_block:
        lines += ["", "## Scores per block", "", *_markdown_table(*_block_rows(cmp))]
    return "\n".join(lines) + "\n"


def _file_stem(metric: str) -> str:
    return re.sub(r"[^\w.-]", "_", metric)


def _diagram_title(table: ScoreTable) -> str:
    from flawmap.report.markdown import metric_label  # imports the report package

    unit = "categories" if table.seeds_averaged else "blocks"
    return f"{metric_label(table.metric)}: average rank over {len(table.blocks)} {unit}"


def write_comparison(cmp: Comparison, out: str | os.PathLike[str]) -> list[Path]:
    """Write ``compare_<metric>.md`` and ``.json`` (:func:`comparison_markdown`,
    :meth:`Comparison.to_dict`) and the diagrams ``cd_<metric>.png`` and ``.svg`` into ``out``
    (created); ``<metric>`` keeps only word characters, dots and dashes. Returns the paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    table = cmp.table
    stem = _file_stem(table.metric)
    written = [folder / f"compare_{stem}.md", folder / f"compare_{stem}.json"]
    written[0].write_text(comparison_markdown(cmp))
    written[1].write_text(json.dumps(cmp.to_dict(), indent=2) + "\n")
    title = _diagram_title(table)
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


def comparison_report(
    comparisons: Sequence[Comparison],
    *,
    title: str = "Comparison of methods",
    sources: Sequence[str | os.PathLike[str]] = (),
) -> Document:
    """One report section per metric: what was compared and how, the average ranks with each
    method's mean score, the pairwise tests, the critical-difference diagram (as SVG) and,
    collapsed, the paired scores. ``sources`` (the result files) are named under the title."""
    from flawmap.report.document import Document, Paragraph

    if not comparisons:
        raise ConfigError("a comparison report needs at least one comparison")
    intro = [
        Paragraph(
            "Each section compares the methods on one metric over paired blocks (the same "
            "category, or category and seed, for every method): average ranks (1 = best), a "
            "two-sided Wilcoxon signed-rank test for every pair of methods with Holm–Bonferroni "
            "correction, and the critical-difference diagram, whose bars join methods that do "
            "not differ significantly."
        )
    ]
    if sources:
        names = ", ".join(str(s) for s in sources)
        intro.append(Paragraph(f"Result file{'s' if len(sources) > 1 else ''}: {names}.", "note"))
    return Document(title, [_report_section(c) for c in comparisons], intro)


def _report_section(cmp: Comparison) -> Section:
    from flawmap.report.document import Code, Figure, Paragraph, Section, Table
    from flawmap.report.markdown import METRIC_HELP, metric_label

    t = cmp.table
    label = metric_label(t.metric)
    blocks: list[Block] = [Paragraph(f"Methods compared: {', '.join(t.methods)}. {_design(cmp)}")]
    if t.metric in METRIC_HELP:
        blocks.append(Paragraph(f"{label}: {METRIC_HELP[t.metric]}", "note"))
    header, rows = _rank_rows(cmp, score=f"{label}: mean")
    blocks += [
        Paragraph("Average ranks over the blocks (1 = best in a block; ties share the mean rank):"),
        Table(header, rows, numeric=(0, *range(2, len(header)))),
        Paragraph(_cliques_text(cmp)),
        Paragraph("Pairwise tests (A is the better-ranked method; p (Holm) is compared with α):"),
        Table(*_pair_rows(cmp), numeric=(2, 3, 4, 5, 6)),
    ]
    note = _floor_note(cmp)
    if note is not None:
        blocks.append(Paragraph(note))
    svg = critical_difference_svg(
        cmp.average_ranks, cmp.pairs, alpha=cmp.alpha, title=_diagram_title(t)
    )
    caption = (
        f"Critical-difference diagram of {label}: methods on their average rank (1 = best, on "
        f"the left); a bar joins methods with no significant difference (Holm-adjusted p > "
        f"{cmp.alpha:g})."
    )
    blocks.append(Figure(f"cd_{_file_stem(t.metric)}", svg, caption, wide=True))
    blocks.append(
        Code(
            f"Scores per block ({len(t.blocks)} blocks × {len(t.methods)} methods)",
            _text_table(*_block_rows(cmp)),
        )
    )
    return Section(label, blocks)


def _text_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A fixed-width text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def write_comparison_report(
    comparisons: Sequence[Comparison],
    out: str | os.PathLike[str],
    *,
    title: str = "Comparison of methods",
    sources: Sequence[str | os.PathLike[str]] = (),
) -> list[Path]:
    """Write :func:`comparison_report` as ``compare.html`` (self-contained: tables and inline
    SVG diagrams, nothing loaded) and ``compare.md`` with its diagrams in ``figures/`` into
    ``out`` (created). Returns the paths of the two reports."""
    from flawmap.report.document import write_report

    document = comparison_report(comparisons, title=title, sources=sources)
    return write_report(document, out, "compare")
