"""Exact nearest-neighbour distances to a memory bank, for PatchCore exports (eq. 6).

Two interchangeable searches, both exact: ``"pruned"`` (flawmap's cluster-pruned search,
:class:`flawmap.models.patchcore.search.ClusterPrunedSearch`, the trained model's own: k-means
pruning, and faiss's flat scan for the queries pruning cannot help) and ``"faiss"`` (faiss's
flat L2 index alone: a blocked float32 GEMM and a top-1 per query). Either
way the reported distance is recomputed in float64 for the index found, so the two differ only
on near-ties, by float32 rounding.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from flawmap.errors import ConfigError

SEARCHES = ("faiss", "pruned")


class BankSearch(Protocol):
    def distances(self, queries: np.ndarray) -> np.ndarray:
        """queries (Q, D) float32 -> (Q,) float32 Euclidean distance to the nearest bank row."""
        ...


def exact_distances(queries: np.ndarray, bank: np.ndarray, index: np.ndarray) -> np.ndarray:
    """|queries[i] - bank[index[i]]| in float64, returned as float32."""
    delta = queries.astype(np.float64) - bank[index].astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", delta, delta)).astype(np.float32)


class FaissSearch:
    """faiss ``IndexFlatL2`` (exact) over the bank, then :func:`exact_distances`."""

    def __init__(self, bank: np.ndarray, threads: int) -> None:
        try:
            import faiss
        except ImportError as exc:
            raise ConfigError(
                "PatchCore exports search their memory bank with faiss: pip install faiss-cpu "
                "(or pass search='pruned')"
            ) from exc
        faiss.omp_set_num_threads(threads)
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.index = faiss.IndexFlatL2(self.bank.shape[1])
        self.index.add(self.bank)

    def distances(self, queries: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        _, index = self.index.search(q, 1)
        return exact_distances(q, self.bank, index[:, 0])


class PrunedSearch:
    """flawmap's exact cluster-pruned search (the trained model's own)."""

    def __init__(self, bank: np.ndarray, threads: int, seed: int = 0) -> None:
        from flawmap.models.patchcore.search import ClusterPrunedSearch

        self.index = ClusterPrunedSearch(seed=seed, threads=max(1, threads)).fit(bank)

    def distances(self, queries: np.ndarray) -> np.ndarray:
        distances, _ = self.index.query(np.ascontiguousarray(queries, dtype=np.float32))
        return distances


def make_search(name: str, bank: np.ndarray, threads: int, seed: int = 0) -> BankSearch:
    """The search ``name`` (one of :data:`SEARCHES`) over ``bank`` (M, D)."""
    if name == "faiss":
        return FaissSearch(bank, threads)
    if name == "pruned":
        return PrunedSearch(bank, threads, seed)
    raise ConfigError(f"unknown search {name!r}; choose one of {', '.join(SEARCHES)}")
