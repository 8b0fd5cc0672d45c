"""Exact nearest-neighbour search over the PatchCore memory bank (Roth et al., CVPR 2022, eq. 6).

A test patch's anomaly score is its Euclidean distance to the nearest memory-bank entry. Both
indexes here are exact:

- :class:`BruteForceSearch`: faiss's exact flat index (without faiss: ``|q|^2 - 2 q.b + |b|^2``
  by float32 GEMM (numpy/OpenBLAS), chunked over queries and bank so the extra memory stays
  below ~100 MB whatever ``Q`` and ``M``).
- :class:`ClusterPrunedSearch`: k-means partition of the bank and triangle-inequality pruning of
  whole clusters; the distances left are computed by a register-blocked numba kernel.

Both pick the index with a float32 GEMM-style formula, then recompute the reported distance of
that index directly (float64 sum of squared differences), so a returned distance is exact for its
index to ~1e-7; two indexes can only disagree on near-ties within the float32 rounding of the
formula (~1e-5 relative), and then their distances agree to that level.

Fitted state: none is saved; both are cheap to fit, so a model re-fits its index from the
memory bank after loading.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, Self

import numba
import numpy as np

from flawmap.errors import ConfigError
from flawmap.interrupts import interrupt_safe

__all__ = ["BruteForceSearch", "ClusterPrunedSearch", "NearestNeighbourSearch"]

_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_U32 = 2.0**-24  # float32 unit round-off
_PRUNE_REL = 1e-5  # relative slack of the cluster pruning test
_QUERY_CHUNK = 8192  # queries per pass of ClusterPrunedSearch (bounds its scratch memory)
_BRUTE_FRACTION = 0.25  # a query that would scan more of the bank than this uses the GEMM
_ASSIGN_CHUNK = 16384  # bank rows per k-means assignment GEMM
_KMEANS_SAMPLE = 32  # k-means iterations run on at most this many rows per cluster
_MIN_PART = 256  # fewest queries worth a thread of their own


class NearestNeighbourSearch(Protocol):
    """Exact Euclidean 1-NN index over a bank (M, d) float32."""

    def fit(self, bank: np.ndarray) -> Self:
        """Index ``bank`` (M, d); returns self."""
        ...

    def query(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (Q, d) -> (distances (Q,) float32, Euclidean; indices (Q,) int64 into the bank)."""
        ...


def _as_matrix(a: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    """(n, d) float32 C-contiguous, n >= 1, finite, d == dim when given; else ConfigError."""
    array = np.asarray(a)
    if array.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ConfigError(f"{name} must have at least one row and one column, got {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ConfigError(f"{name} have dimension {array.shape[1]}, the bank has {dim}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ConfigError(f"{name} must be numeric, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ConfigError(f"{name} contain NaN or infinite values (or overflow float32)")
    return array


def _check_fitted(bank: np.ndarray | None, name: str) -> np.ndarray:
    if bank is None:
        raise ConfigError(f"{name} is not fitted: call fit(bank) first")
    return bank


@interrupt_safe
@numba.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _row_distances(x: np.ndarray, bank: np.ndarray, index: np.ndarray) -> np.ndarray:
    """|x[i] - bank[index[i]]| for each i, float64 sums of squared differences -> float32."""
    out = np.empty(x.shape[0], dtype=np.float32)
    for i in range(x.shape[0]):
        acc = 0.0
        j = index[i]
        for t in range(x.shape[1]):
            v = np.float64(x[i, t]) - np.float64(bank[j, t])
            acc += v * v
        out[i] = np.sqrt(acc)
    return out


# --------------------------------------------------------------------------------------------
# brute force


def _faiss() -> Any:
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


class BruteForceSearch:
    """Exact brute force over the mean-centred bank, then the exact distance.

    With faiss installed (the default install), its exact flat L2 index does the scan (a
    blocked float32 GEMM and a running top-1, faster than the numpy version here). Without it,
    ``|q - b|^2 = |q|^2 - 2 q.b + |b|^2``; ``|q|^2`` is constant per query, so the nearest entry
    maximises ``q.b - |b|^2 / 2``: one float32 GEMM of ``[q, 1]`` with ``[b, -|b|^2 / 2]`` and an
    argmax per row (ties to the lowest bank index). Time ``O(Q * M * d)``; extra memory
    ``chunk_size^2`` floats (64 MB at 4096) plus the augmented bank copy, whatever Q and M.
    ``use_faiss=False`` forces the numpy scan.
    """

    def __init__(self, chunk_size: int = 4096, use_faiss: bool = True) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
            raise ConfigError(f"chunk_size must be an integer, got {chunk_size!r}")
        if chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.use_faiss = bool(use_faiss)
        self._faiss_index: Any = None
        self._bank: np.ndarray | None = None
        self._mean = np.zeros(0, dtype=np.float32)
        self._augmented = np.zeros((0, 0), dtype=np.float32)

    def fit(self, bank: np.ndarray) -> Self:
        """bank (M, d) -> self. ``O(M * d)``."""
        b = _as_matrix(bank, "bank")
        m, d = b.shape
        self._bank = b
        self._mean = b.mean(axis=0, dtype=np.float64).astype(np.float32)
        augmented = np.empty((m, d + 1), dtype=np.float32)
        np.subtract(b, self._mean, out=augmented[:, :d])
        centred = augmented[:, :d].astype(np.float64)
        augmented[:, d] = -0.5 * np.einsum("ij,ij->i", centred, centred)
        self._augmented = augmented
        faiss = _faiss() if self.use_faiss else None
        self._faiss_index = None
        if faiss is not None:
            self._faiss_index = faiss.IndexFlatL2(d)
            self._faiss_index.add(np.ascontiguousarray(augmented[:, :d]))
        return self

    def query(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (Q, d) -> (distances (Q,) float32, indices (Q,) int64)."""
        bank = _check_fitted(self._bank, "BruteForceSearch")
        q = _as_matrix(x, "queries", bank.shape[1])
        index = self.nearest(q)
        return _row_distances(q, bank, index), index

    def nearest(self, q: np.ndarray) -> np.ndarray:
        """Checked (Q, d) float32 queries -> nearest bank indices (Q,) int64."""
        bank = _check_fitted(self._bank, "BruteForceSearch")
        if self._faiss_index is not None:
            _, found = self._faiss_index.search(np.ascontiguousarray(q - self._mean), 1)
            return found[:, 0].astype(np.int64)
        cs = self.chunk_size
        n_bank, d = bank.shape
        index = np.empty(q.shape[0], dtype=np.int64)
        for qs in range(0, q.shape[0], cs):
            qa = np.ones((min(cs, q.shape[0] - qs), d + 1), dtype=np.float32)
            np.subtract(q[qs : qs + cs], self._mean, out=qa[:, :d])
            best = np.full(qa.shape[0], -np.inf, dtype=np.float32)
            arg = np.zeros(qa.shape[0], dtype=np.int64)
            rows = np.arange(qa.shape[0])
            for bs in range(0, n_bank, cs):
                block = qa @ self._augmented[bs : bs + cs].T  # (cq, cb): q.b - |b|^2 / 2
                j = block.argmax(axis=1)
                value = block[rows, j]
                better = value > best  # strict: earlier (lower) indices win ties
                best[better] = value[better]
                arg[better] = j[better] + bs
            index[qs : qs + cs] = arg
        return index


# --------------------------------------------------------------------------------------------
# cluster-pruned search


class ClusterPrunedSearch:
    """Exact 1-NN with k-means cluster pruning, falling back to the GEMM where pruning cannot pay.

    Fit (``O(M * n_clusters * d)``): centre the bank on its mean, run seeded Lloyd k-means
    (``n_clusters``, default ``round(2 * sqrt(M))``; ``n_iter`` iterations on at most
    ``32 * n_clusters`` seeded random rows, then one assignment of all rows), store each
    cluster's centroid ``mu_g``, radius ``r_g = max_{b in g} |b - mu_g|`` and its members in
    centroid-local coordinates, contiguous (padded for the SIMD kernel).

    Query, per chunk of up to 8192 queries: distances to all centroids by one GEMM; each query
    scans the cluster of its nearest centroid (queries grouped by cluster, 4 x 4 register tiles),
    which gives an upper bound ``best``; then every other cluster with lower bound
    ``lb_g = |q - mu_g| - r_g < best * (1 + 1e-5)`` is scanned, again grouped by cluster. A query
    whose remaining clusters hold more than 25% of the bank (no structure to exploit: random
    high-dimensional data, far outliers, or a bank like magnetic tile's) is answered by the
    :class:`BruteForceSearch` GEMM instead, so the cost is never much above brute force.

    Exactness: for every member ``b`` of cluster ``g``, ``|q - b| >= |q - mu_g| - |b - mu_g| >=
    lb_g`` (triangle inequality). ``|q - mu_g|`` comes from a float32 GEMM with a bound of its
    rounding subtracted and ``r_g`` is rounded up, so ``lb_g`` is a true lower bound; a skipped
    cluster holds no member nearer than the current candidate (beyond float32 rounding of the
    distance formula). Scanning clusters in any order with any valid upper bound therefore finds
    the brute-force nearest neighbour, up to near-ties within that rounding; the reported
    distance is then recomputed exactly for the chosen index.
    """

    def __init__(
        self, n_clusters: int | None = None, seed: int = 0, n_iter: int = 8, threads: int = 1
    ) -> None:
        if n_clusters is not None and (isinstance(n_clusters, bool) or int(n_clusters) < 1):
            raise ConfigError(f"n_clusters must be None or >= 1, got {n_clusters!r}")
        if isinstance(threads, bool) or int(threads) < 1:
            raise ConfigError(f"threads must be >= 1, got {threads!r}")
        self.threads = int(threads)
        if isinstance(n_iter, bool) or int(n_iter) < 0:
            raise ConfigError(f"n_iter must be >= 0, got {n_iter!r}")
        self.n_clusters = None if n_clusters is None else int(n_clusters)
        self.seed = int(seed)
        self.n_iter = int(n_iter)
        self._bank: np.ndarray | None = None

    # ---- fitting ---------------------------------------------------------------------------

    def fit(self, bank: np.ndarray) -> Self:
        """bank (M, d) -> self. ``O(n_iter * M * n_clusters * d)`` GEMM flops."""
        b = _as_matrix(bank, "bank")
        m = b.shape[0]
        k = self.n_clusters if self.n_clusters is not None else round(2.0 * math.sqrt(m))
        k = max(1, min(k, m))
        mean = b.mean(axis=0, dtype=np.float64).astype(np.float32)
        centred = b - mean
        labels = _kmeans(centred, k, self.seed, self.n_iter)
        self._build(b, mean, labels)
        return self

    def _build(self, bank: np.ndarray, mean: np.ndarray, labels: np.ndarray) -> None:
        """Lay out the index from cluster labels (M,) in [0, k)."""
        centred = bank - mean
        d = bank.shape[1]
        counts = np.bincount(labels)
        keep = np.flatnonzero(counts)
        relabel = np.full(counts.shape[0], -1, dtype=np.int64)
        relabel[keep] = np.arange(keep.shape[0])
        labels = relabel[labels]
        counts = counts[keep]
        k = keep.shape[0]
        order = np.argsort(labels, kind="stable")
        sums = _cluster_sums(centred, labels, k)
        centroids = (sums / counts[:, None]).astype(np.float32)  # in the centred frame
        padded = (counts + 3) // 4 * 4
        offsets = np.zeros(k + 1, dtype=np.int64)
        np.cumsum(padded, out=offsets[1:])
        dpad = (d + 15) // 16 * 16
        local = np.zeros((int(offsets[-1]), dpad), dtype=np.float32)
        lnorm = np.full(int(offsets[-1]), np.inf, dtype=np.float32)
        perm = np.full(int(offsets[-1]), -1, dtype=np.int64)
        starts = np.zeros(k + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        slot = np.concatenate(
            [offsets[g] + np.arange(counts[g], dtype=np.int64) for g in range(k)]
        )  # padded position of the i-th member in cluster order
        members = centred[order].astype(np.float64) - centroids[labels[order]].astype(np.float64)
        sq = np.einsum("ij,ij->i", members, members)
        local[slot, :d] = members
        lnorm[slot] = sq
        perm[slot] = order
        radius = np.maximum.reduceat(np.sqrt(sq), starts[:-1]) * (1.0 + 4 * _U32)
        self._bank = bank
        self._mean = mean
        self._centroids = centroids
        self._cnorm = np.einsum("ij,ij->i", centroids.astype(np.float64), centroids)
        self._radius = radius
        self._offsets = offsets
        self._local = local
        self._lnorm = lnorm
        self._perm = perm
        # For the queries the clusters cannot prune: the numpy GEMM, not faiss, whose flat
        # search costs ~10 ms whatever the query count below ~1000 (and ~60 ms at some counts).
        self._brute = BruteForceSearch(use_faiss=False).fit(bank)

    # ---- querying --------------------------------------------------------------------------

    def query(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (Q, d) -> (distances (Q,) float32, indices (Q,) int64); with ``threads`` > 1 the
        queries are split into that many parts searched at once (the kernels release the GIL)."""
        bank = _check_fitted(self._bank, "ClusterPrunedSearch")
        q = _as_matrix(x, "queries", bank.shape[1])
        parts = min(self.threads, max(1, q.shape[0] // _MIN_PART))
        if parts == 1:
            index = self._nearest(q)
        else:
            bounds = np.linspace(0, q.shape[0], parts + 1).astype(np.int64)
            with ThreadPoolExecutor(max_workers=parts) as pool:
                found = pool.map(self._nearest, [q[a:b] for a, b in itertools.pairwise(bounds)])
                index = np.concatenate(list(found))
        return _row_distances(q, bank, index), index

    def _nearest(self, q: np.ndarray) -> np.ndarray:
        """Indices of the nearest bank rows of queries ``q`` (Q, d), chunk by chunk."""
        index = np.empty(q.shape[0], dtype=np.int64)
        gamma = 2.0 * (q.shape[1] + 4) * _U32  # float32 dot/norm rounding, with slack 2
        heavy_limit = _BRUTE_FRACTION * self._local.shape[0]
        for qs in range(0, q.shape[0], _QUERY_CHUNK):
            qc = q[qs : qs + _QUERY_CHUNK] - self._mean
            dots = qc @ self._centroids.T  # (cq, k) float32
            best, pos, first, lower, work = _first_pass(
                qc,
                dots,
                self._centroids,
                self._cnorm,
                self._radius,
                self._offsets,
                self._local,
                self._lnorm,
                gamma,
                1.0 + _PRUNE_REL,
            )
            heavy = work > heavy_limit  # pruning would not pay: one GEMM over the whole bank
            light = np.flatnonzero(~heavy)
            if light.size:
                _second_pass(
                    qc,
                    light,
                    best,
                    pos,
                    first,
                    lower,
                    self._centroids,
                    self._offsets,
                    self._local,
                    self._lnorm,
                    1.0 + _PRUNE_REL,
                )
            chunk_index = self._perm[pos]
            if light.size < qc.shape[0]:
                rows = np.flatnonzero(heavy)
                chunk_index[rows] = self._brute.nearest(q[qs : qs + _QUERY_CHUNK][rows])
            index[qs : qs + _QUERY_CHUNK] = chunk_index
        return index

    def upper_bounds(self, x: np.ndarray) -> np.ndarray:
        """x (Q, d) -> (Q,) float32: the exact distance of each query to the nearest member of
        its nearest centroid's cluster, an upper bound of (and often equal to) its nearest-
        neighbour distance. ``O(Q * (n_clusters + M / n_clusters) * d)``."""
        bank = _check_fitted(self._bank, "ClusterPrunedSearch")
        q = _as_matrix(x, "queries", bank.shape[1])
        index = np.empty(q.shape[0], dtype=np.int64)
        gamma = 2.0 * (bank.shape[1] + 4) * _U32
        for qs in range(0, q.shape[0], _QUERY_CHUNK):
            qc = q[qs : qs + _QUERY_CHUNK] - self._mean
            _, pos, _, _, _ = _first_pass(
                qc,
                qc @ self._centroids.T,
                self._centroids,
                self._cnorm,
                self._radius,
                self._offsets,
                self._local,
                self._lnorm,
                gamma,
                1.0 + _PRUNE_REL,
            )
            index[qs : qs + _QUERY_CHUNK] = self._perm[pos]
        return _row_distances(q, bank, index)

    @property
    def n_clusters_fitted(self) -> int:
        """Number of non-empty clusters of the fitted index."""
        return int(self._radius.shape[0]) if self._bank is not None else 0


def _kmeans(x: np.ndarray, k: int, seed: int, n_iter: int) -> np.ndarray:
    """Lloyd's k-means on x (M, d) float32 -> labels (M,) int64 of all rows.

    Seeded: k random rows start it; the iterations run on at most ``32 * k`` random rows, then
    every row is assigned once. Only the pruning speed depends on the result, never exactness.
    """
    rng = np.random.default_rng(seed)
    m = x.shape[0]
    sample = x if m <= _KMEANS_SAMPLE * k else x[np.sort(rng.choice(m, _KMEANS_SAMPLE * k, False))]
    centres = sample[rng.choice(sample.shape[0], size=k, replace=False)].copy()
    labels = _assign(sample, centres)
    for _ in range(n_iter):
        counts = np.bincount(labels, minlength=k)
        sums = _cluster_sums(sample, labels, k)
        filled = counts > 0
        centres[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        new = _assign(sample, centres)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels if sample is x else _assign(x, centres)


def _assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Nearest centre of each row (GEMM, chunked)."""
    cn = np.einsum("ij,ij->i", centres, centres)
    labels = np.empty(x.shape[0], dtype=np.int64)
    for s in range(0, x.shape[0], _ASSIGN_CHUNK):
        block = x[s : s + _ASSIGN_CHUNK] @ centres.T
        block *= -2.0
        block += cn
        labels[s : s + _ASSIGN_CHUNK] = block.argmin(axis=1)
    return labels


@interrupt_safe
@numba.njit(cache=True)
def _cluster_sums(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-cluster float64 sums of the rows of x (M, d): (k, d)."""
    sums = np.zeros((k, x.shape[1]))
    for i in range(x.shape[0]):
        g = labels[i]
        for t in range(x.shape[1]):
            sums[g, t] += x[i, t]
    return sums


@numba.njit(cache=True, fastmath=_FASTMATH)
def _scan_cluster(
    qbuf: np.ndarray,
    qnorm: np.ndarray,
    nq: int,
    local: np.ndarray,
    lnorm: np.ndarray,
    s: int,
    e: int,
    best: np.ndarray,
    arg: np.ndarray,
) -> None:
    """Update best/arg (squared distance, padded bank position) of queries qbuf[:nq] (local
    coordinates) with members local[s:e] (e - s a multiple of 4): |q|^2 + |b|^2 - 2 q.b, in
    4 x 4 register tiles, then 1 x 4 tiles for the last nq % 4 queries."""
    dpad = qbuf.shape[1]
    two = np.float32(2.0)
    full = nq - nq % 4
    for i in range(full, nq):
        q0 = qbuf[i]
        n0 = qnorm[i]
        m0 = best[i]
        g0 = arg[i]
        for j0 in range(s, e, 4):
            b0 = local[j0]
            b1 = local[j0 + 1]
            b2 = local[j0 + 2]
            b3 = local[j0 + 3]
            a00 = a01 = a02 = a03 = np.float32(0.0)
            for t in range(dpad):
                x0 = q0[t]
                a00 += x0 * b0[t]
                a01 += x0 * b1[t]
                a02 += x0 * b2[t]
                a03 += x0 * b3[t]
            v = n0 + lnorm[j0] - two * a00
            if v < m0:
                m0, g0 = v, j0
            v = n0 + lnorm[j0 + 1] - two * a01
            if v < m0:
                m0, g0 = v, j0 + 1
            v = n0 + lnorm[j0 + 2] - two * a02
            if v < m0:
                m0, g0 = v, j0 + 2
            v = n0 + lnorm[j0 + 3] - two * a03
            if v < m0:
                m0, g0 = v, j0 + 3
        best[i] = m0
        arg[i] = g0
    for i0 in range(0, full, 4):
        q0 = qbuf[i0]
        q1 = qbuf[i0 + 1]
        q2 = qbuf[i0 + 2]
        q3 = qbuf[i0 + 3]
        n0 = qnorm[i0]
        n1 = qnorm[i0 + 1]
        n2 = qnorm[i0 + 2]
        n3 = qnorm[i0 + 3]
        m0 = best[i0]
        m1 = best[i0 + 1]
        m2 = best[i0 + 2]
        m3 = best[i0 + 3]
        g0 = arg[i0]
        g1 = arg[i0 + 1]
        g2 = arg[i0 + 2]
        g3 = arg[i0 + 3]
        for j0 in range(s, e, 4):
            b0 = local[j0]
            b1 = local[j0 + 1]
            b2 = local[j0 + 2]
            b3 = local[j0 + 3]
            a00 = a01 = a02 = a03 = np.float32(0.0)
            a10 = a11 = a12 = a13 = np.float32(0.0)
            a20 = a21 = a22 = a23 = np.float32(0.0)
            a30 = a31 = a32 = a33 = np.float32(0.0)
            for t in range(dpad):
                x0 = q0[t]
                x1 = q1[t]
                x2 = q2[t]
                x3 = q3[t]
                y0 = b0[t]
                y1 = b1[t]
                y2 = b2[t]
                y3 = b3[t]
                a00 += x0 * y0
                a01 += x0 * y1
                a02 += x0 * y2
                a03 += x0 * y3
                a10 += x1 * y0
                a11 += x1 * y1
                a12 += x1 * y2
                a13 += x1 * y3
                a20 += x2 * y0
                a21 += x2 * y1
                a22 += x2 * y2
                a23 += x2 * y3
                a30 += x3 * y0
                a31 += x3 * y1
                a32 += x3 * y2
                a33 += x3 * y3
            c0 = lnorm[j0]
            c1 = lnorm[j0 + 1]
            c2 = lnorm[j0 + 2]
            c3 = lnorm[j0 + 3]
            v = n0 + c0 - two * a00
            if v < m0:
                m0, g0 = v, j0
            v = n0 + c1 - two * a01
            if v < m0:
                m0, g0 = v, j0 + 1
            v = n0 + c2 - two * a02
            if v < m0:
                m0, g0 = v, j0 + 2
            v = n0 + c3 - two * a03
            if v < m0:
                m0, g0 = v, j0 + 3
            v = n1 + c0 - two * a10
            if v < m1:
                m1, g1 = v, j0
            v = n1 + c1 - two * a11
            if v < m1:
                m1, g1 = v, j0 + 1
            v = n1 + c2 - two * a12
            if v < m1:
                m1, g1 = v, j0 + 2
            v = n1 + c3 - two * a13
            if v < m1:
                m1, g1 = v, j0 + 3
            v = n2 + c0 - two * a20
            if v < m2:
                m2, g2 = v, j0
            v = n2 + c1 - two * a21
            if v < m2:
                m2, g2 = v, j0 + 1
            v = n2 + c2 - two * a22
            if v < m2:
                m2, g2 = v, j0 + 2
            v = n2 + c3 - two * a23
            if v < m2:
                m2, g2 = v, j0 + 3
            v = n3 + c0 - two * a30
            if v < m3:
                m3, g3 = v, j0
            v = n3 + c1 - two * a31
            if v < m3:
                m3, g3 = v, j0 + 1
            v = n3 + c2 - two * a32
            if v < m3:
                m3, g3 = v, j0 + 2
            v = n3 + c3 - two * a33
            if v < m3:
                m3, g3 = v, j0 + 3
        best[i0] = m0
        best[i0 + 1] = m1
        best[i0 + 2] = m2
        best[i0 + 3] = m3
        arg[i0] = g0
        arg[i0 + 1] = g1
        arg[i0 + 2] = g2
        arg[i0 + 3] = g3


@numba.njit(cache=True, fastmath=_FASTMATH)
def _gather(
    qc: np.ndarray,
    rows: np.ndarray,
    centroid: np.ndarray,
    qbuf: np.ndarray,
    qnorm: np.ndarray,
    best: np.ndarray,
    arg: np.ndarray,
    best_all: np.ndarray,
    arg_all: np.ndarray,
) -> int:
    """Copy queries qc[rows] into qbuf as local coordinates (q - centroid); load their current
    best/arg. The padding columns of qbuf stay zero. Returns the row count."""
    n = rows.shape[0]
    d = qc.shape[1]
    for i in range(n):
        r = rows[i]
        acc = np.float32(0.0)
        for t in range(d):
            v = qc[r, t] - centroid[t]
            qbuf[i, t] = v
            acc += v * v
        qnorm[i] = acc
        best[i] = best_all[r]
        arg[i] = arg_all[r]
    return n


@interrupt_safe
@numba.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _first_pass(
    qc: np.ndarray,
    dots: np.ndarray,
    centroids: np.ndarray,
    cnorm: np.ndarray,
    radius: np.ndarray,
    offsets: np.ndarray,
    local: np.ndarray,
    lnorm: np.ndarray,
    gamma: float,
    rel: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Phase 1 for the centred queries qc (Q, d): each scans its nearest centroid's cluster
    (queries grouped by cluster). Returns best (Q,) float32 squared values, arg (Q,) padded bank
    positions, first (Q,) that cluster, lower (Q, k) float32 cluster lower bounds, and work (Q,)
    the bank rows phase 2 would scan for each query.

    dots (Q, k) = qc @ centroids.T in float32; |q - mu|^2 is recovered as |q|^2 + |mu|^2 - 2 dots
    minus ``gamma * (|q| + |mu|)^2``, a bound of its float32 rounding, so lower is a true bound.
    """
    n_q, d = qc.shape
    k = radius.shape[0]
    qn = np.empty(n_q)
    for i in range(n_q):
        acc = 0.0
        for t in range(d):
            acc += np.float64(qc[i, t]) * np.float64(qc[i, t])
        qn[i] = acc
    cabs = np.sqrt(cnorm)
    best_all = np.full(n_q, np.inf, dtype=np.float32)
    arg_all = np.full(n_q, -1, dtype=np.int64)
    qbuf = np.zeros((n_q, local.shape[1]), dtype=np.float32)
    qnorm = np.empty(n_q, dtype=np.float32)
    best = np.empty(n_q, dtype=np.float32)
    arg = np.empty(n_q, dtype=np.int64)
    first = np.empty(n_q, dtype=np.int64)
    count = np.zeros(k + 1, dtype=np.int64)
    for i in range(n_q):
        g_best = 0
        v_best = np.inf
        for g in range(k):
            v = cnorm[g] - 2.0 * dots[i, g]
            if v < v_best:
                v_best = v
                g_best = g
        first[i] = g_best
        count[g_best + 1] += 1
    for g in range(k):
        count[g + 1] += count[g]
    rows = np.empty(n_q, dtype=np.int64)
    fill = count[:k].copy()
    for i in range(n_q):
        rows[fill[first[i]]] = i
        fill[first[i]] += 1
    for g in range(k):
        if count[g + 1] > count[g]:
            sel = rows[count[g] : count[g + 1]]
            n_rows = _gather(qc, sel, centroids[g], qbuf, qnorm, best, arg, best_all, arg_all)
            _scan_cluster(qbuf, qnorm, n_rows, local, lnorm, offsets[g], offsets[g + 1], best, arg)
            for i in range(n_rows):
                best_all[sel[i]] = best[i]
                arg_all[sel[i]] = arg[i]
    lower = np.empty((n_q, k), dtype=np.float32)
    work = np.zeros(n_q, dtype=np.int64)
    for i in range(n_q):
        qabs = np.sqrt(qn[i])
        limit = np.sqrt(max(np.float64(best_all[i]), 0.0)) * rel
        for g in range(k):
            dc2 = qn[i] + cnorm[g] - 2.0 * np.float64(dots[i, g])
            err = gamma * (qabs + cabs[g]) ** 2
            lb = np.sqrt(max(dc2 - err, 0.0)) - radius[g]
            lower[i, g] = lb
            if g != first[i] and lb < limit:
                work[i] += offsets[g + 1] - offsets[g]
    return best_all, arg_all, first, lower, work


@interrupt_safe
@numba.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _second_pass(
    qc: np.ndarray,
    todo: np.ndarray,
    best_all: np.ndarray,
    arg_all: np.ndarray,
    first: np.ndarray,
    lower: np.ndarray,
    centroids: np.ndarray,
    offsets: np.ndarray,
    local: np.ndarray,
    lnorm: np.ndarray,
    rel: float,
) -> None:
    """Phase 2 for the queries qc[todo]: scan every other cluster whose lower bound is below the
    query's current best distance (grouped by cluster; re-tested as the bounds tighten).
    Updates best_all / arg_all in place."""
    n_q = todo.shape[0]
    k = lower.shape[1]
    qbuf = np.zeros((n_q, local.shape[1]), dtype=np.float32)
    qnorm = np.empty(n_q, dtype=np.float32)
    best = np.empty(n_q, dtype=np.float32)
    arg = np.empty(n_q, dtype=np.int64)
    rows = np.empty(n_q, dtype=np.int64)
    count = np.zeros(k + 1, dtype=np.int64)
    for i in todo:
        limit = np.sqrt(max(np.float64(best_all[i]), 0.0)) * rel
        for g in range(k):
            if g != first[i] and lower[i, g] < limit:
                count[g + 1] += 1
    for g in range(k):
        count[g + 1] += count[g]
    pairs = np.empty(count[k], dtype=np.int64)
    fill = count[:k].copy()
    for i in todo:
        limit = np.sqrt(max(np.float64(best_all[i]), 0.0)) * rel
        for g in range(k):
            if g != first[i] and lower[i, g] < limit:
                pairs[fill[g]] = i
                fill[g] += 1
    for g in range(k):
        n_sel = 0
        for p in range(count[g], count[g + 1]):
            i = pairs[p]
            if lower[i, g] < np.sqrt(max(np.float64(best_all[i]), 0.0)) * rel:
                rows[n_sel] = i
                n_sel += 1
        if n_sel > 0:
            sel = rows[:n_sel]
            n_rows = _gather(qc, sel, centroids[g], qbuf, qnorm, best, arg, best_all, arg_all)
            _scan_cluster(qbuf, qnorm, n_rows, local, lnorm, offsets[g], offsets[g + 1], best, arg)
            for i in range(n_sel):
                best_all[sel[i]] = best[i]
                arg_all[sel[i]] = arg[i]
