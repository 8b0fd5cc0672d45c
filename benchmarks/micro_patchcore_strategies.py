"""Micro benchmark of the PatchCore strategies at realistic sizes; prints a table.

Sampler: N = 214,016 patch features of d = 152 (MVTec bottle: 209 images x 32 x 32), 10% coreset
(k = 21,402) on the 128-d random projection, on two synthetic sets:

- ``mixture``: 500 low-rank Gaussian components in 152-d with a power-law spectrum (see
  :func:`mixture`): clusters and low intrinsic dimension, closer to real CNN patch features;
- ``gaussian``: i.i.d. N(0, 1), no structure at all: the worst case for every exact shortcut.

The naive greedy loop (numpy, float64) is timed on its first 100 selections at full N and
extrapolated linearly (its cost per selection is constant); exact equality with it is checked on
a 20,000-row subset. ``--large`` adds magnetic-tile size (N = 780,288, k = 78,029) on the
mixture. ``--features train.npy`` adds a run on real (N, 152) float32 patch features, and with
``--queries test.npy`` (real test patches) a search run against that coreset.

Search: Q = 1,024 queries (one image) against banks of M = 21,402 and 78,029 rows, d = 152:
:class:`BruteForceSearch` vs :class:`ClusterPrunedSearch` (fit time, min / median query time of
several runs; the machine is shared, so take the minimum as the cost). Mixture queries come from
the same mixture plus 5% outliers; gaussian queries are fresh N(0, 1) draws.

Run: ``python benchmarks/micro_patchcore_strategies.py [--large] [--features F.npy [--queries
Q.npy]]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flawmap.models.patchcore.sampler import GreedyCoresetSampler, RandomSampler, coverage_radius
from flawmap.models.patchcore.search import BruteForceSearch, ClusterPrunedSearch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the naive loop lives in tests/
from tests.reference import naive_greedy_coreset

D = 152
N_BOTTLE = 214_016
N_TILE = 780_288
RATIO = 0.1


def mixture(n: int, seed: int, components: int = 500, rank: int = 8) -> np.ndarray:
    """(n, 152) float32 rows of a fixed Gaussian mixture shaped like CNN patch features.

    Component means have a power-law spectrum (scale ``12 / i`` along the i-th of 152 random
    orthogonal directions: the top 8 directions hold ~85% of the variance, as in real features);
    each component spreads along its own 8 random directions (scales ``2.5 / j^0.7``) plus
    isotropic noise of 0.05. ``seed`` draws the rows; the mixture itself is fixed.
    """
    shape = np.random.default_rng(12345)
    rotation, _ = np.linalg.qr(shape.standard_normal((D, D)))
    scales = 12.0 / np.arange(1, D + 1)
    means = ((shape.standard_normal((components, D)) * scales) @ rotation).astype(np.float32)
    local = shape.standard_normal((components, rank, D)) / np.sqrt(D)
    local *= (2.5 * np.arange(1, rank + 1) ** -0.7)[None, :, None]
    local = local.astype(np.float32)
    rng = np.random.default_rng(seed)
    label = rng.integers(components, size=n)
    out = np.empty((n, D), dtype=np.float32)
    for s in range(0, n, 65536):
        lab = label[s : s + 65536]
        coeff = rng.standard_normal((len(lab), rank)).astype(np.float32)
        block = means[lab] + np.einsum("nr,nrd->nd", coeff, local[lab])
        block += 0.05 * rng.standard_normal(block.shape).astype(np.float32)
        out[s : s + 65536] = block
    return out


def gaussian(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D), dtype=np.float32)


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, float, object]:
    """(min seconds, median seconds, last result) over ``repeat`` runs."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times)), result


def row(cells: list[str], widths: tuple[int, ...] = (34, 22, 12, 12, 40)) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False))


def bench_sampler(name: str, features: np.ndarray, check_naive: bool = True) -> np.ndarray:
    n = len(features)
    k = round(RATIO * n)
    sampler = GreedyCoresetSampler(projection_dim=128, start="random")
    t_fast, _, selected = timed(lambda: sampler.select(features, k, seed=0))
    assert isinstance(selected, np.ndarray)
    projected = sampler.project(features, seed=0)
    start = sampler.start_index(n, 0)
    steps = 100
    t_naive, _, _ = timed(lambda: naive_greedy_coreset(projected, steps, start))
    naive_est = t_naive * k / steps
    random_sel = RandomSampler().select(features, k, seed=0)
    t_cov, _, r_greedy = timed(lambda: coverage_radius(features, selected))
    r_random = coverage_radius(features, random_sel)
    same = "-"
    if check_naive:
        sub = features[:20_000]
        want = naive_greedy_coreset(sampler.project(sub, 0), 2000, sampler.start_index(20_000, 0))
        same = "yes" if np.array_equal(sampler.select(sub, 2000, seed=0), want) else "NO"
    size = f"N={n:,} k={k:,}"
    print(
        row(
            [
                f"greedy sampler ({name})",
                size,
                f"{t_fast:.1f} s",
                "",
                f"naive est. {naive_est:.0f} s",
            ]
        )
    )
    print(
        row(
            [
                "  coverage radius greedy / random",
                "",
                f"{r_greedy:.3f}",
                f"{r_random:.3f}",
                f"identical to naive (20k/2k): {same}; radius in {t_cov:.1f} s",
            ]
        )
    )
    return selected


def bench_search(name: str, bank: np.ndarray, queries: np.ndarray, repeat: int = 7) -> None:
    size = f"M={len(bank):,} Q={len(queries):,}"
    t_fit_b, _, brute = timed(lambda: BruteForceSearch().fit(bank))
    t_fit_p, _, pruned = timed(lambda: ClusterPrunedSearch().fit(bank))
    assert isinstance(brute, BruteForceSearch) and isinstance(pruned, ClusterPrunedSearch)
    brute.query(queries)
    pruned.query(queries)  # warm-up (numba load, BLAS threads)
    b_min, b_med, (bd, bi) = timed(lambda: brute.query(queries), repeat)  # type: ignore[misc]
    p_min, p_med, (pd, pi) = timed(lambda: pruned.query(queries), repeat)  # type: ignore[misc]
    rel = float(np.max(np.abs(pd - bd) / np.maximum(bd, 1e-6)))
    same = float(np.mean(pi == bi))
    print(
        row(
            [
                f"brute force ({name})",
                size,
                f"{1e3 * b_min:.1f} ms",
                f"{1e3 * b_med:.1f} ms",
                f"fit {t_fit_b:.2f} s",
            ]
        )
    )
    print(
        row(
            [
                f"cluster pruned ({name})",
                size,
                f"{1e3 * p_min:.1f} ms",
                f"{1e3 * p_med:.1f} ms",
                f"fit {t_fit_p:.2f} s, {pruned.n_clusters_fitted} clusters; "
                f"max rel diff {rel:.1e}, same idx {same:.4f}",
            ]
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also N = 780,288 (magnetic tile)")
    parser.add_argument("--features", help="(N, 152) float32 .npy of real patch features")
    parser.add_argument("--queries", help="(Q, 152) .npy of real test patches (with --features)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, numpy {np.__version__}")
    print(row(["what", "size", "min", "median", "notes"]))
    data = mixture(N_BOTTLE, seed=1)
    bank_mix = data[bench_sampler("mixture", data)]
    data_g = gaussian(N_BOTTLE, seed=2)
    bench_sampler("gaussian", data_g)
    del data_g
    real_bank = None
    if args.features:
        real = np.load(args.features).astype(np.float32)
        real_bank = real[bench_sampler(f"real {os.path.basename(args.features)}", real)]
        del real
    if args.large:
        big = mixture(N_TILE, seed=3)
        bank_big = big[bench_sampler("mixture", big, check_naive=False)]
        del big
    else:
        bank_big = mixture(round(RATIO * N_TILE), seed=3)
    rng = np.random.default_rng(4)
    queries = mixture(1024, seed=5)
    outliers = rng.choice(1024, 51, replace=False)
    queries[outliers] += rng.standard_normal((51, D)).astype(np.float32) * 3.0
    bench_search("mixture", bank_mix, queries)
    bench_search("mixture", bank_big, queries)
    bench_search("gaussian", gaussian(len(bank_mix), 6), gaussian(1024, 7))
    bench_search("gaussian", gaussian(len(bank_big), 8), gaussian(1024, 9))
    if real_bank is not None and args.queries:
        test = np.load(args.queries, mmap_mode="r")
        for image in np.random.default_rng(10).choice(len(test) // 1024, 3, replace=False):
            one = np.ascontiguousarray(test[image * 1024 : (image + 1) * 1024], dtype=np.float32)
            bench_search(f"real, test image {image}", real_bank, one)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
