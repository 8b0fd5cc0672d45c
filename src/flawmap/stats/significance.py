"""Pairwise Wilcoxon signed-rank tests, Holm–Bonferroni correction, average ranks and cliques.

The procedure of the seed paper's Fig. 3 (after Benavoli et al., JMLR 2016): every pair of
methods is compared with a two-sided Wilcoxon signed-rank test over the paired blocks
(categories, or category × seed), the p-values are Holm-adjusted over all pairs, and methods
whose difference is not significant are joined into cliques on an average-rank axis.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from flawmap.errors import ConfigError, DataError

__all__ = [
    "PairResult",
    "average_ranks",
    "cliques",
    "holm_bonferroni",
    "min_attainable_p",
    "pairwise_wilcoxon",
]

Alternative = Literal["two-sided", "greater", "less"]
ZeroMethod = Literal["wilcox", "pratt", "zsplit"]


@dataclass(frozen=True)
class PairResult:
    """One pairwise test of method ``a`` against ``b`` (differences are ``a − b``).

    ``statistic`` is scipy's: min(T+, T−) for two-sided, T+ otherwise; ``n`` the number of
    paired blocks; ``n_nonzero`` of them with a nonzero difference; ``p_holm`` the
    Holm–Bonferroni adjusted p-value over all pairs; ``reject`` = ``p_holm <= alpha``.
    """

    a: str
    b: str
    statistic: float
    p_value: float
    p_holm: float
    reject: bool
    n: int
    n_nonzero: int
    median_difference: float


def holm_bonferroni(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input order.

    With the p-values sorted ascending, p₍₁₎ ≤ … ≤ p₍ₘ₎, the adjusted value of p₍ᵢ₎ is
    ``max_{j ≤ i} min(1, (m − j + 1) · p₍ⱼ₎)``; rejecting where it is ≤ α is Holm's procedure at
    family-wise level α (same as R's ``p.adjust(p, "holm")``).
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ConfigError(f"p-values must be a 1-D sequence, got shape {p.shape}")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ConfigError(f"p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def _as_matrix(scores: Mapping[str, Sequence[float] | np.ndarray]) -> tuple[list[str], np.ndarray]:
    methods = list(scores)
    if len(methods) < 2:
        raise DataError(f"need at least 2 methods to compare, got {len(methods)}")
    columns = [np.asarray(scores[m], dtype=float) for m in methods]
    sizes = {c.shape for c in columns}
    if len(sizes) != 1 or columns[0].ndim != 1:
        shapes = ", ".join(f"{m}: {c.shape}" for m, c in zip(methods, columns, strict=True))
        raise DataError(f"every method needs one score per block, same blocks for all ({shapes})")
    matrix = np.stack(columns, axis=1)
    if matrix.shape[0] == 0:
        raise DataError("no blocks (paired scores) to compare")
    if not np.all(np.isfinite(matrix)):
        raise DataError("scores must be finite numbers (found NaN or inf)")
    return methods, matrix


def pairwise_wilcoxon(
    scores: Mapping[str, Sequence[float] | np.ndarray],
    *,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
    zero_method: ZeroMethod = "wilcox",
) -> list[PairResult]:
    """Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) for every pair of methods.

    ``scores`` maps each method to its scores over the same blocks, in the same order. Pairs come
    in the order of ``itertools.combinations(scores, 2)``; ``alternative`` is about ``a − b``.
    A pair whose differences are all zero gets p = 1. p-values are Holm-adjusted over all pairs.
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if alternative not in ("two-sided", "greater", "less"):
        raise ConfigError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    if zero_method not in ("wilcox", "pratt", "zsplit"):
        raise ConfigError(f"zero_method must be wilcox, pratt or zsplit, got {zero_method!r}")
    methods, matrix = _as_matrix(scores)
    raw = []
    for i, j in itertools.combinations(range(len(methods)), 2):
        d = matrix[:, i] - matrix[:, j]
        nonzero = int(np.count_nonzero(d))
        if nonzero == 0:
            statistic, p = (d.size * (d.size + 1) / 4 if zero_method == "zsplit" else 0.0), 1.0
        else:
            with warnings.catch_warnings():
                # scipy warns that the exact distribution is not exact with ties/zeros, and
                # divides by zero for a single nonzero difference under the normal approximation
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                res = stats.wilcoxon(d, zero_method=zero_method, alternative=alternative)
            statistic, p = float(res.statistic), float(res.pvalue)
            if not np.isfinite(p):
                p = 1.0
        raw.append((i, j, statistic, min(max(p, 0.0), 1.0), nonzero, float(np.median(d))))
    adjusted = holm_bonferroni([r[3] for r in raw])
    return [
        PairResult(
            a=methods[i],
            b=methods[j],
            statistic=statistic,
            p_value=p,
            p_holm=float(p_holm),
            reject=bool(p_holm <= alpha),
            n=matrix.shape[0],
            n_nonzero=nonzero,
            median_difference=median,
        )
        for (i, j, statistic, p, nonzero, median), p_holm in zip(raw, adjusted, strict=True)
    ]


def min_attainable_p(n: int, alternative: Alternative = "two-sided") -> float:
    """Smallest exact Wilcoxon p-value with ``n`` nonzero paired differences (2/2ⁿ two-sided).

    With few blocks no difference can be significant: e.g. n = 5 gives 0.0625 two-sided.
    """
    if n <= 0:
        return 1.0
    return min(1.0, (2.0 if alternative == "two-sided" else 1.0) / 2.0**n)


def average_ranks(
    scores: Mapping[str, Sequence[float] | np.ndarray], *, higher_is_better: bool = True
) -> dict[str, float]:
    """Mean over blocks of each method's rank in its block (1 = best, ties get the mean rank).

    Returned best first (ascending average rank; ties keep the input order).
    """
    methods, matrix = _as_matrix(scores)
    per_block = stats.rankdata(-matrix if higher_is_better else matrix, axis=1, method="average")
    means = per_block.mean(axis=0)
    order = np.argsort(means, kind="stable")
    return {methods[k]: float(means[k]) for k in order}


def cliques(
    avg_ranks: Mapping[str, float], pairs: Sequence[PairResult], *, alpha: float | None = None
) -> list[tuple[str, ...]]:
    """Groups of methods, contiguous in average-rank order, with no significant pair inside.

    These are the bars of a critical-difference diagram: the maximal runs ``[i, j]`` of the
    rank-sorted methods in which no pair is rejected (``p_holm <= alpha``, or ``reject`` when
    ``alpha`` is None). A single method is not a clique. A non-significant pair separated by a
    method that differs from both cannot be drawn as one bar and is left to the pair table.
    """
    order = sorted(avg_ranks, key=lambda m: avg_ranks[m])
    significant: set[frozenset[str]] = set()
    known: set[frozenset[str]] = set()
    for pair in pairs:
        key = frozenset((pair.a, pair.b))
        known.add(key)
        if (pair.p_holm <= alpha) if alpha is not None else pair.reject:
            significant.add(key)
    for a, b in itertools.combinations(order, 2):
        if frozenset((a, b)) not in known:
            raise DataError(f"no pairwise test result for {a!r} vs {b!r}")
    groups: list[tuple[str, ...]] = []
    last_end = -1
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and all(
            frozenset((order[k], order[end + 1])) not in significant for k in range(start, end + 1)
        ):
            end += 1
        if end > start and end > last_end:
            groups.append(tuple(order[start : end + 1]))
            last_end = end
    return groups
