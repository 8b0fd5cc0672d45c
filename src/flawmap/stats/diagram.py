"""Critical-difference diagram (Demšar 2006 layout; cliques from pairwise tests as in the seed
paper's Fig. 3 and Benavoli et al. 2016), drawn with matplotlib to PNG, SVG or PDF,
or returned as SVG text."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flawmap.errors import ConfigError
from flawmap.stats.significance import PairResult, cliques

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

__all__ = ["critical_difference_diagram", "critical_difference_svg"]

_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
_BAR_COLOR = "#d62728"
_ROW = 0.26  # inches between label rows
_BAR_STEP = 0.13  # inches between clique bars
#: SVG text for embedding: no <metadata> block (no creation date, no RDF links).
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


def critical_difference_diagram(
    avg_ranks: Mapping[str, float],
    pair_results: Sequence[PairResult],
    path: str | Path,
    *,
    alpha: float = 0.05,
    title: str | None = None,
    note: str | None = None,
    dpi: int = 200,
) -> Path:
    """Draw methods on an average-rank axis (1 = best, on the left), joined by thick bars where
    the Holm-adjusted pairwise p-value is > ``alpha``; the format follows ``path``'s extension
    (.png, .svg or .pdf). ``note`` (default: the test and α) is printed under the diagram.
    Returns the written path."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"diagram path must end in .png, .svg or .pdf, got {path.name!r}")
    with _svg_settings():
        fig = _draw(avg_ranks, pair_results, alpha=alpha, title=title, note=note)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"Date": None} if fmt in ("svg", "pdf") else None
        fig.savefig(path, format=fmt, dpi=dpi, metadata=metadata, facecolor="white")
    return path


def critical_difference_svg(
    avg_ranks: Mapping[str, float],
    pair_results: Sequence[PairResult],
    *,
    alpha: float = 0.05,
    title: str | None = None,
    note: str | None = None,
) -> str:
    """The diagram of :func:`critical_difference_diagram` as the text of an SVG document, to embed
    in a report: the drawing its .svg file holds, without the metadata block."""
    buffer = io.StringIO()
    with _svg_settings():
        fig = _draw(avg_ranks, pair_results, alpha=alpha, title=title, note=note)
        fig.savefig(buffer, format="svg", metadata=_NO_METADATA, facecolor="white")
    return buffer.getvalue()


def _svg_settings() -> contextlib.AbstractContextManager[Any]:
    """Fonts stay text and ids are salted with a fixed string: the same data, the same SVG."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise ConfigError(
            "critical-difference diagrams need matplotlib: pip install matplotlib"
        ) from exc
    return matplotlib.rc_context({"svg.hashsalt": "flawmap", "svg.fonttype": "none"})


def _draw(
    avg_ranks: Mapping[str, float],
    pair_results: Sequence[PairResult],
    *,
    alpha: float,
    title: str | None,
    note: str | None,
) -> MplFigure:
    """The diagram as a matplotlib figure (not saved)."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if len(avg_ranks) < 2:
        raise ConfigError(f"a diagram needs at least 2 methods, got {len(avg_ranks)}")
    from matplotlib.figure import Figure

    order = sorted(avg_ranks, key=lambda m: avg_ranks[m])
    groups = cliques(avg_ranks, pair_results, alpha=alpha)
    k = len(order)
    low, high = 1, max(k, math.ceil(max(avg_ranks.values())))
    labels = {m: f"{m} ({avg_ranks[m]:.2f})" for m in order}
    longest = max(len(t) for t in labels.values())
    text_space = min(3.2, max(1.3, 0.3 + 0.075 * longest))
    scale_width = max(3.0, 0.55 * (high - low))
    width = 2 * text_space + scale_width
    top = 0.35 + (0.3 if title else 0.0)  # the rank axis
    n_left = math.ceil(k / 2)
    first_row = top + max(0.45, 0.25 + _BAR_STEP * len(groups) + 0.15)
    bottom = first_row + _ROW * (max(n_left, k - n_left) - 1) + 0.25
    height = bottom + (0.35 if note != "" else 0.1)

    def x_of(rank: float) -> float:
        return text_space + scale_width * (rank - low) / (high - low)

    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    if title:
        ax.text(width / 2, 0.22, title, ha="center", va="center", fontsize=12)
    ax.plot([x_of(low), x_of(high)], [top, top], color="black", lw=1.0)
    for tick in range(2 * low, 2 * high + 1):
        r = tick / 2
        major = tick % 2 == 0
        ax.plot([x_of(r)] * 2, [top, top - (0.1 if major else 0.05)], color="black", lw=0.8)
        if major:
            ax.text(x_of(r), top - 0.14, str(int(r)), ha="center", va="bottom", fontsize=9)
    for i, group in enumerate(groups):
        y = top + 0.25 + _BAR_STEP * i
        x0, x1 = x_of(avg_ranks[group[0]]) - 0.05, x_of(avg_ranks[group[-1]]) + 0.05
        ax.plot([x0, x1], [y, y], color=_BAR_COLOR, lw=4.0, solid_capstyle="round")
    for i, method in enumerate(order):
        left = i < n_left
        row = i if left else k - 1 - i
        y = first_row + _ROW * row
        x = x_of(avg_ranks[method])
        edge = text_space - 0.1 if left else width - text_space + 0.1
        ax.plot([x, x, edge], [top, y, y], color="black", lw=0.8)
        ax.text(
            edge - 0.05 if left else edge + 0.05,
            y,
            labels[method],
            ha="right" if left else "left",
            va="center",
            fontsize=9,
        )
    if note is None:
        note = (
            f"bars: no significant difference (pairwise Wilcoxon signed-rank, Holm, α = {alpha:g})"
        )
    if note:
        ax.text(width / 2, height - 0.18, note, ha="center", va="center", fontsize=7.5)
    return fig
