"""The report's plots, drawn with matplotlib (no pyplot, no display) as SVG text.

Every function returns the SVG document of one small figure; fonts stay text (``svg.fonttype``
"none") and ids are salted with a fixed string, so the same data gives the same file.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

__all__ = ["curve_figure", "score_histogram"]

_GOOD = "#2b7bba"
_BAD = "#d7301f"
_THRESHOLD = "#222222"
_SIZE = (5.2, 3.4)
#: No <metadata> block: no creation date (the same data gives the same file), no RDF links.
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


def _svg(figure) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "flawmap", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata=_NO_METADATA)
    return buffer.getvalue()


def _figure():
    from matplotlib.figure import Figure

    figure = Figure(figsize=_SIZE, dpi=100)
    return figure, figure.add_subplot()


def score_histogram(
    groups: Sequence[tuple[str, np.ndarray, str]],
    threshold: float | None,
    title: str,
) -> str:
    """Histograms of image scores, one per ``(label, scores, colour)`` group, on shared bins,
    with the threshold as a vertical line; the legend gives each group's count on each side."""
    figure, axes = _figure()
    values = [np.asarray(s, dtype=np.float64) for _, s, _ in groups if len(s)]
    everything = np.concatenate(values) if values else np.zeros(1)
    low, high = float(everything.min()), float(everything.max())
    if threshold is not None:
        low, high = min(low, threshold), max(high, threshold)
    if high <= low:
        high = low + 1.0
    bins = np.linspace(low, high, 31)
    for label, scores, colour in groups:
        scores = np.asarray(scores, dtype=np.float64)
        if not len(scores):
            continue
        if threshold is not None:
            above = int((scores >= threshold).sum())
            label = f"{label}: {len(scores) - above} below, {above} at/above"
        else:
            label = f"{label} ({len(scores)})"
        axes.hist(scores, bins=bins, alpha=0.55, color=colour, label=label)
    if threshold is not None:
        axes.axvline(
            threshold,
            color=_THRESHOLD,
            linestyle="--",
            linewidth=1.5,
            label=f"threshold {threshold:.4g}",
        )
    from matplotlib.ticker import MaxNLocator

    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("image anomaly score")
    axes.set_ylabel("images")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    return _svg(figure)


def curve_figure(
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    xlim: tuple[float, float] = (0.0, 1.0),
    diagonal: bool = False,
    point: tuple[float, float, str] | None = None,
) -> str:
    """Step/line curves ``(legend label, x, y)``; ``diagonal`` draws the chance line,
    ``point`` marks ``(x, y, label)`` (e.g. the operating point at the threshold)."""
    figure, axes = _figure()
    for label, x, y in curves:
        axes.plot(x, y, linewidth=1.8, label=label)
    if diagonal:
        axes.plot(xlim, (0.0, 1.0), color="#999999", linestyle=":", linewidth=1)
    if point is not None:
        px, py, plabel = point
        axes.plot([px], [py], marker="o", color=_THRESHOLD, linestyle="none", label=plabel)
    pad = 0.02 * (xlim[1] - xlim[0])
    axes.set_xlim(xlim[0] - pad, xlim[1] + pad)  # curves along the frame stay visible
    axes.set_ylim(-0.02, 1.03)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return _svg(figure)


GOOD_COLOUR, DEFECT_COLOUR = _GOOD, _BAD
