"""Coreset samplers for the PatchCore memory bank (Roth et al., CVPR 2022, §3.2, Algorithm 1).

Computes: :class:`GreedyCoresetSampler` is the paper's k-center greedy selection (start from one
point, repeatedly add the point farthest from the selection); :class:`RandomSampler` is the
paper's random-subsampling ablation; :func:`coverage_radius` is the k-center objective.

Data path: patch features (N, d) float32 -> seeded Gaussian (Johnson-Lindenstrauss) projection
to d' = 128, used for the selection only -> (k,) int64 indices in selection order.

Deviation (speed only, the selection is the paper's): one compiled numba loop computes the same
sequence as the naive ``O(k * N * d)`` loop with two exact accelerations:

1. Lazy minimum distances: each point keeps ``u[p]``, its exact minimum squared distance over a
   prefix of the selected centres (an upper bound of its current value). A tournament tree
   yields the largest ``u`` (ties: lowest index); if that point is up to date it is the naive
   argmax, otherwise it is refreshed against the centres it has not seen and goes back into the
   tree, stopping early once it drops below the best other ``u``.
2. Sketch lower bounds: in a refresh, centre ``c`` is skipped when ``|V^T (x_p - x_c)|^2``
   (``V``: the top 48 principal directions, orthonormal; float32, 16 then 32 dimensions) already
   reaches ``u[p]``.

Exactness: every deciding distance is a float64 sum of squared float64 differences of the
float32 inputs, and a skip needs the float32 bound to exceed ``u[p] * (1 + 1e-4) + 1e-5 *
max_p |x_p - mean|^2``, a margin that dominates its rounding error. So the indices equal the
naive loop's on the same float64 distances (a numpy loop that sums in another order agrees
unless two candidates differ by less than float64 rounding; exact ties resolve identically).
Memory besides the input: the projected copy (N x d'), the sketches (N x 48, float32), the tree
and the selected centres. Timings: BENCHMARKS.md.
"""

from __future__ import annotations

import math
import operator
from typing import Literal, Protocol

import numba
import numpy as np

from flawmap.errors import ConfigError
from flawmap.interrupts import interrupt_safe
from flawmap.models.patchcore.search import _as_matrix

__all__ = [
    "CoresetSampler",
    "GreedyCoresetSampler",
    "RandomSampler",
    "coverage_radius",
]

# Reassociation lets LLVM vectorise the sums; no 'nnan'/'ninf'/'afn' (inputs are checked finite,
# and no value-changing shortcuts beyond summation order are allowed).
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_SKETCH_DIM = 48  # orthonormal directions used for the lower bounds
_SKETCH_FIRST = 16  # of which the first tier (SIMD over centres)
_BLOCK = 256  # centres per refresh block (early-exit granularity)
_REL_MARGIN = 1e-4  # skip margins, see the module docstring
_ABS_MARGIN = 1e-5
_PCA_SAMPLE = 65536  # rows used to estimate the principal directions
_SKETCH_CHUNK = 16384
_RADIUS_CHUNK = 4096  # rows searched exactly per step of coverage_radius


class CoresetSampler(Protocol):
    """Chooses ``n_select`` rows of ``features`` (N, d) float32; returns int64 indices in order."""

    def select(self, features: np.ndarray, n_select: int, seed: int) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# input checks


def _as_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    """(N, d) float32 C-contiguous, N >= 1, d >= 1, all finite; else ConfigError."""
    return _as_matrix(features, name)


def _as_count(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        count = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if not low <= count <= high:
        raise ConfigError(f"{name} must be in [{low}, {high}], got {count}")
    return count


def _as_seed(seed: object) -> int:
    if isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    try:
        return operator.index(seed)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"seed must be an integer, got {seed!r}") from None


# --------------------------------------------------------------------------------------------
# samplers


class RandomSampler:
    """Uniform selection without replacement (the paper's random-subsampling ablation)."""

    def select(self, features: np.ndarray, n_select: int, seed: int) -> np.ndarray:
        """features (N, d) -> (n_select,) int64 distinct indices, a seeded random order."""
        x = _as_features(features)
        k = _as_count(n_select, "n_select", 1, x.shape[0])
        rng = np.random.default_rng(_as_seed(seed))
        return rng.choice(x.shape[0], size=k, replace=False).astype(np.int64)


class GreedyCoresetSampler:
    """PatchCore's greedy k-center coreset (§3.2, Algorithm 1), exact and fast (module docstring).

    Args:
        projection_dim: size of the seeded Gaussian random projection used for the selection
            (paper: 128). ``None``, or a value ``>= d``, selects on the features as they are.
        start: ``"random"`` (seeded) or ``"first"`` (index 0) as the first centre.
    """

    def __init__(
        self,
        projection_dim: int | None = 128,
        start: Literal["random", "first"] = "random",
    ) -> None:
        if projection_dim is not None:
            projection_dim = _as_count(projection_dim, "projection_dim", 1, 2**31 - 1)
        if start not in ("random", "first"):
            raise ConfigError(f"start must be 'random' or 'first', got {start!r}")
        self.projection_dim = projection_dim
        self.start = start

    def project(self, features: np.ndarray, seed: int) -> np.ndarray:
        """(N, d) -> (N, d') float32 features the selection runs on.

        ``d' = projection_dim`` when that is smaller than ``d``: ``features @ G / sqrt(d')`` with
        ``G = default_rng(seed).standard_normal((d, d'), dtype=float32)``; else the features.
        """
        x = _as_features(features)
        d = x.shape[1]
        if self.projection_dim is None or self.projection_dim >= d:
            return x
        rng = np.random.default_rng(_as_seed(seed))
        matrix = rng.standard_normal((d, self.projection_dim), dtype=np.float32)
        matrix *= np.float32(1.0 / math.sqrt(self.projection_dim))
        projected = np.ascontiguousarray(x @ matrix, dtype=np.float32)
        if not np.isfinite(projected).all():
            raise ConfigError("the projected features overflow float32; rescale the features")
        return projected

    def start_index(self, n: int, seed: int) -> int:
        """First centre: 0 for ``start="first"``, else ``default_rng([seed, 1]).integers(n)``."""
        n = _as_count(n, "n", 1, 2**62)
        if self.start == "first":
            return 0
        return int(np.random.default_rng([_as_seed(seed), 1]).integers(n))

    def select(self, features: np.ndarray, n_select: int, seed: int) -> np.ndarray:
        """features (N, d) -> (n_select,) int64 indices in selection order.

        Equal to the plain greedy loop run on ``self.project(features, seed)`` from
        ``self.start_index(N, seed)`` (see the module docstring for the float64 caveat).
        """
        x = self.project(features, seed)
        n = x.shape[0]
        k = _as_count(n_select, "n_select", 1, n)
        start = self.start_index(n, seed)
        if k == 1:
            return np.array([start], dtype=np.int64)
        sketch, scale2 = _sketch(x)
        n_first = min(_SKETCH_FIRST, sketch.shape[1])
        if not scale2 * (1.0 + _REL_MARGIN) < 1e30:  # bounds would overflow float32: exact only
            sketch = np.zeros((n, 0), dtype=np.float32)
            n_first, scale2 = 0, 0.0
        return _lazy_greedy(
            x, sketch, k, start, n_first, 1.0 + _REL_MARGIN, _ABS_MARGIN * scale2, _BLOCK
        )


# --------------------------------------------------------------------------------------------
# quality measure


def coverage_radius(features: np.ndarray, selected: np.ndarray) -> float:
    """max over all rows of the Euclidean distance to the nearest selected row (same space).

    The k-center objective the greedy selection approximately minimises (within a factor 2).
    Exact: :meth:`ClusterPrunedSearch.upper_bounds` gives every row a cheap upper bound of its
    nearest-neighbour distance; rows are then searched exactly in decreasing bound order until
    the next bound cannot exceed the largest exact distance found.
    """
    from flawmap.models.patchcore.search import ClusterPrunedSearch

    x = _as_features(features)
    idx = np.asarray(selected)
    if idx.ndim != 1 or idx.size < 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ConfigError("selected must be a non-empty 1-D integer array of row indices")
    if idx.min() < 0 or idx.max() >= x.shape[0]:
        raise ConfigError(f"selected indices must be in [0, {x.shape[0] - 1}]")
    search = ClusterPrunedSearch().fit(x[idx])
    bound = search.upper_bounds(x)
    order = np.argsort(-bound, kind="stable")
    radius = 0.0
    for s in range(0, order.shape[0], _RADIUS_CHUNK):
        rows = order[s : s + _RADIUS_CHUNK]
        if bound[rows[0]] <= radius:
            break
        distances, _ = search.query(x[rows])
        radius = max(radius, float(distances.max()))
    return radius


# --------------------------------------------------------------------------------------------
# sketches (orthonormal lower-bound coordinates)


def _sketch(x: np.ndarray) -> tuple[np.ndarray, float]:
    """(N, d) float32 -> sketches (N, m) float32 = (x - mean) @ V, and max |x - mean|^2.

    ``V`` (d, m), m = min(48, d): orthonormal top principal directions, estimated on at most 65,536
    evenly spaced rows. Any orthonormal ``V`` keeps the bounds valid; a good one makes them tight.
    """
    n, d = x.shape
    m = min(_SKETCH_DIM, d)
    sample = x[:: max(1, n // _PCA_SAMPLE)].astype(np.float64)
    mean = sample.mean(axis=0)
    sample -= mean
    _, vectors = np.linalg.eigh(sample.T @ sample)
    basis = np.ascontiguousarray(vectors[:, ::-1][:, :m])
    sketch = np.empty((n, m), dtype=np.float32)
    scale2 = 0.0
    for s in range(0, n, _SKETCH_CHUNK):
        block = x[s : s + _SKETCH_CHUNK].astype(np.float64)
        block -= mean
        scale2 = max(scale2, float(np.einsum("ij,ij->i", block, block).max()))
        sketch[s : s + _SKETCH_CHUNK] = block @ basis
    return sketch, scale2


# --------------------------------------------------------------------------------------------
# compiled kernels


@numba.njit(cache=True, fastmath=_FASTMATH)
def _sqdist(x: np.ndarray, i: int, y: np.ndarray, j: int) -> float:
    """|x[i] - y[j]|^2 as a float64 sum of float64 squares (exact differences of float32)."""
    acc = 0.0
    for t in range(x.shape[1]):
        v = np.float64(x[i, t]) - np.float64(y[j, t])
        acc += v * v
    return acc


@numba.njit(cache=True, inline="always")
def _tree_node(key: np.ndarray, idx: np.ndarray, i: int) -> None:
    """Tournament node ``i`` takes its larger child (ties to the lower index)."""
    left = 2 * i
    right = left + 1
    if key[left] > key[right] or (key[left] == key[right] and idx[left] < idx[right]):
        key[i] = key[left]
        idx[i] = idx[left]
    else:
        key[i] = key[right]
        idx[i] = idx[right]


@numba.njit(cache=True)
def _tree_fix(key: np.ndarray, idx: np.ndarray, leaf: int) -> None:
    """Re-run the tournament from ``leaf`` to the root: larger key wins, ties to lower index."""
    i = leaf >> 1
    while i >= 1:
        _tree_node(key, idx, i)
        i >>= 1


@interrupt_safe
@numba.njit(cache=True, fastmath=_FASTMATH)
def _lazy_greedy(
    x: np.ndarray,
    sketch: np.ndarray,
    n_select: int,
    start: int,
    n_first: int,
    rel: float,
    absm: float,
    block: int,
) -> np.ndarray:
    """Exact lazy k-center greedy; x (N, d) float32, sketch (N, m) float32 -> (n_select,) int64.

    Invariant: for every unselected p, ``key[leaf p] = min_{j < done[p]} |x_p - c_j|^2`` (float64);
    selected points hold -1, padding leaves -2.
    """
    n, d = x.shape
    m = sketch.shape[1]
    n_second = m - n_first
    size = 1
    while size < n:
        size *= 2
    key = np.full(2 * size, -2.0)
    idx = np.empty(2 * size, dtype=np.int64)
    done = np.ones(n, dtype=np.int64)
    centres = np.empty((n_select, d), dtype=np.float32)
    first = np.empty((n_first, n_select), dtype=np.float32)  # tier 1, one row per dimension
    second = np.empty((n_select, n_second), dtype=np.float32)  # tier 2, one row per centre
    bound = np.empty(block, dtype=np.float32)
    selected = np.empty(n_select, dtype=np.int64)

    selected[0] = start
    centres[0] = x[start]
    first[:, 0] = sketch[start, :n_first]
    second[0] = sketch[start, n_first:]
    for p in range(n):
        key[size + p] = _sqdist(x, p, centres, 0)
        idx[size + p] = p
    for p in range(n, size):
        idx[size + p] = size + p
    key[size + start] = -1.0
    for i in range(size - 1, 0, -1):
        _tree_node(key, idx, i)

    for t in range(1, n_select):
        while True:
            p = idx[1]
            lo = done[p]
            if lo == t:  # up to date and on top: the exact argmax
                break
            leaf = size + p
            best = key[leaf]
            rival = -3.0  # best key among all other points (siblings along the path)
            i = leaf
            while i > 1:
                other = key[i ^ 1]
                if other > rival:
                    rival = other
                i >>= 1
            ps = sketch[p]
            while lo < t:
                hi = min(lo + block, t)
                width = hi - lo
                lb = bound[:width]
                lb[:] = 0.0
                for u in range(n_first):
                    s = ps[u]
                    row = first[u, lo:hi]
                    for q in range(width):
                        v = row[q] - s
                        lb[q] += v * v
                cut = np.float32(best * rel + absm)
                for q in range(width):
                    if lb[q] < cut:
                        j = lo + q
                        acc = lb[q]
                        for u in range(n_second):
                            v = second[j, u] - ps[n_first + u]
                            acc += v * v
                        if acc < cut:
                            dist = _sqdist(x, p, centres, j)
                            if dist < best:
                                best = dist
                                cut = np.float32(best * rel + absm)
                lo = hi
                if best < rival:  # no longer on top: stop at this block boundary
                    break
            done[p] = lo
            key[leaf] = best
            _tree_fix(key, idx, leaf)
        selected[t] = p
        centres[t] = x[p]
        first[:, t] = sketch[p, :n_first]
        second[t] = sketch[p, n_first:]
        key[size + p] = -1.0
        _tree_fix(key, idx, size + p)
    return selected
