"""Plain reference implementations that tests and benchmarks compare the library against."""

from __future__ import annotations

import numpy as np


def naive_greedy_coreset(features: np.ndarray, n_select: int, start_index: int) -> np.ndarray:
    """PatchCore's k-center greedy loop (Roth et al., CVPR 2022, Algorithm 1) in plain numpy.

    features (N, d), read as float32 then summed in float64 -> (n_select,) int64 indices in
    selection order. ``min_d = |x - x[start]|^2``; then ``n_select - 1`` times: pick
    ``argmax(min_d)`` over the points not selected yet (lowest index on ties) and lower ``min_d``
    by its distances. ``O(n_select * N * d)``.
    """
    x = np.ascontiguousarray(features, dtype=np.float32).astype(np.float64)
    n = x.shape[0]
    if not 1 <= n_select <= n or not 0 <= start_index < n:
        raise ValueError(f"need 1 <= n_select <= {n} and 0 <= start_index < {n}")
    diff = x - x[start_index]
    min_d = np.einsum("ij,ij->i", diff, diff)
    min_d[start_index] = -1.0  # selected points never win again
    selected = np.empty(n_select, dtype=np.int64)
    selected[0] = start_index
    for t in range(1, n_select):
        c = int(np.argmax(min_d))
        selected[t] = c
        np.subtract(x, x[c], out=diff)
        np.minimum(min_d, np.einsum("ij,ij->i", diff, diff), out=min_d)
        min_d[c] = -1.0
    return selected
