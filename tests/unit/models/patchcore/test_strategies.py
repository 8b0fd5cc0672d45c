"""PatchCore strategies: exact greedy coreset sampler, random sampler, exact NN searches."""

from __future__ import annotations

import numpy as np
import pytest

from flawmap.errors import ConfigError
from flawmap.models.patchcore.sampler import (
    GreedyCoresetSampler,
    RandomSampler,
    coverage_radius,
)
from flawmap.models.patchcore.search import BruteForceSearch, ClusterPrunedSearch
from tests.reference import naive_greedy_coreset


def _gaussian(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _mixture(n: int, d: int, seed: int, components: int = 30, rank: int = 6) -> np.ndarray:
    """Clustered, low intrinsic dimension (like CNN patch features): each component is a
    random low-rank Gaussian around its own mean, plus a little isotropic noise."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((components, d)) * 4.0
    bases = rng.standard_normal((components, rank, d))
    label = rng.integers(components, size=n)
    coeff = rng.standard_normal((n, rank)) * rng.uniform(0.3, 1.5, size=(n, 1))
    x = means[label] + np.einsum("nr,nrd->nd", coeff, bases[label])
    return (x + 0.05 * rng.standard_normal((n, d))).astype(np.float32)


def _true_nn(queries: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 brute force: (distances (Q,), gap (Q,) second minus first distance)."""
    q = queries.astype(np.float64)
    b = bank.astype(np.float64)
    d2 = (q * q).sum(1)[:, None] - 2.0 * q @ b.T + (b * b).sum(1)[None, :]
    d = np.sqrt(np.maximum(d2, 0.0))
    part = np.partition(d, 1, axis=1) if d.shape[1] > 1 else np.concatenate([d, d + 1.0], 1)
    return part[:, 0], part[:, 1] - part[:, 0]


# ------------------------------------------------------------------------------------------
# greedy coreset


@pytest.mark.parametrize(
    ("data", "n_select", "projection_dim", "start"),
    [
        (_gaussian(600, 12, 0), 60, None, "first"),
        (_gaussian(1500, 152, 1), 150, 128, "random"),
        (_gaussian(400, 3, 2), 400, None, "random"),  # select everything
        (_gaussian(900, 40, 3), 90, 16, "first"),
        (_mixture(2000, 152, 4), 200, 128, "random"),
        (_mixture(1200, 24, 5), 300, None, "first"),
        (_gaussian(50, 1, 6), 20, None, "random"),  # one dimension
    ],
)
def test_greedy_equals_naive(
    data: np.ndarray, n_select: int, projection_dim: int | None, start: str
) -> None:
    sampler = GreedyCoresetSampler(projection_dim=projection_dim, start=start)  # type: ignore[arg-type]
    got = sampler.select(data, n_select, seed=11)
    projected = sampler.project(data, seed=11)
    want = naive_greedy_coreset(projected, n_select, sampler.start_index(len(data), seed=11))
    assert got.dtype == np.int64 and got.shape == (n_select,)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) == n_select


def test_greedy_duplicates_and_exact_ties_resolve_like_naive() -> None:
    base = _gaussian(40, 5, 7)
    data = np.repeat(base, 3, axis=0)  # every point three times: radius 0 after 40 picks
    sampler = GreedyCoresetSampler(projection_dim=None, start="first")
    got = sampler.select(data, 100, seed=0)
    np.testing.assert_array_equal(got, naive_greedy_coreset(data, 100, 0))
    assert len(np.unique(got)) == 100
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2)  # many ties
    grid = grid.astype(np.float32)
    got = GreedyCoresetSampler(None, "first").select(grid, 36, seed=0)
    np.testing.assert_array_equal(got, naive_greedy_coreset(grid, 36, 0))


def test_greedy_huge_values_use_the_exact_path() -> None:
    data = _gaussian(300, 6, 15) * np.float32(1e17)  # bounds would overflow float32
    sampler = GreedyCoresetSampler(projection_dim=None, start="first")
    np.testing.assert_array_equal(
        sampler.select(data, 40, seed=0), naive_greedy_coreset(data, 40, 0)
    )


def test_greedy_is_seeded_and_deterministic() -> None:
    data = _mixture(1000, 64, 8)
    sampler = GreedyCoresetSampler(projection_dim=32)
    a = sampler.select(data, 50, seed=3)
    np.testing.assert_array_equal(a, sampler.select(data.copy(), 50, seed=3))
    assert a[0] == sampler.start_index(1000, 3)
    assert not np.array_equal(a, sampler.select(data, 50, seed=4))
    assert GreedyCoresetSampler(start="first").select(data, 5, seed=9)[0] == 0


def test_projection_shape_and_passthrough() -> None:
    data = _gaussian(20, 10, 9)
    projected = GreedyCoresetSampler(projection_dim=4).project(data, seed=0)
    assert projected.shape == (20, 4) and projected.dtype == np.float32
    np.testing.assert_array_equal(GreedyCoresetSampler(None).project(data, 0), data)
    np.testing.assert_array_equal(GreedyCoresetSampler(10).project(data, 0), data)


def test_greedy_accepts_float64_and_non_contiguous_input() -> None:
    data = np.asfortranarray(_gaussian(300, 8, 10).astype(np.float64))
    sampler = GreedyCoresetSampler(projection_dim=None)
    got = sampler.select(data, 30, seed=1)
    want = naive_greedy_coreset(data.astype(np.float32), 30, sampler.start_index(300, 1))
    np.testing.assert_array_equal(got, want)


def test_random_sampler_seeded_distinct() -> None:
    data = _gaussian(500, 4, 11)
    a = RandomSampler().select(data, 100, seed=5)
    np.testing.assert_array_equal(a, RandomSampler().select(data, 100, seed=5))
    assert not np.array_equal(a, RandomSampler().select(data, 100, seed=6))
    assert a.dtype == np.int64 and len(np.unique(a)) == 100
    assert a.min() >= 0 and a.max() < 500


def test_coverage_radius_greedy_beats_random_and_is_exact() -> None:
    data = _mixture(3000, 32, 12)
    greedy = GreedyCoresetSampler(projection_dim=None).select(data, 150, seed=0)
    random = RandomSampler().select(data, 150, seed=0)
    r_greedy = coverage_radius(data, greedy)
    assert r_greedy <= coverage_radius(data, random)
    want, _ = _true_nn(data, data[greedy])
    assert r_greedy == pytest.approx(want.max(), rel=1e-5)
    assert coverage_radius(data, np.arange(3000)) == pytest.approx(0.0, abs=1e-3)
    wide = _gaussian(9000, 8, 16)  # several exact-search steps
    chosen = RandomSampler().select(wide, 40, seed=1)
    want = BruteForceSearch().fit(wide[chosen]).query(wide)[0].max()
    assert coverage_radius(wide, chosen) == pytest.approx(float(want), rel=1e-5)


@pytest.mark.parametrize(
    ("n_select", "message"), [(0, "n_select"), (101, "n_select"), (2.5, "integer")]
)
def test_sampler_rejects_bad_counts(n_select: object, message: str) -> None:
    data = _gaussian(100, 4, 13)
    for sampler in (GreedyCoresetSampler(), RandomSampler()):
        with pytest.raises(ConfigError, match=message):
            sampler.select(data, n_select, seed=0)  # type: ignore[arg-type]


def test_sampler_rejects_bad_features_and_options() -> None:
    sampler = GreedyCoresetSampler()
    with pytest.raises(ConfigError, match="2-D"):
        sampler.select(np.zeros(10, np.float32), 1, seed=0)
    with pytest.raises(ConfigError, match="2-D"):
        sampler.select(np.zeros((2, 3, 4), np.float32), 1, seed=0)
    with pytest.raises(ConfigError, match="at least one"):
        sampler.select(np.zeros((0, 4), np.float32), 1, seed=0)
    bad = _gaussian(10, 4, 14)
    bad[3, 1] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        sampler.select(bad, 2, seed=0)
    with pytest.raises(ConfigError, match="projection_dim"):
        GreedyCoresetSampler(projection_dim=0)
    with pytest.raises(ConfigError, match="start"):
        GreedyCoresetSampler(start="middle")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="selected"):
        coverage_radius(_gaussian(10, 2, 0), np.array([0, 10]))


# ------------------------------------------------------------------------------------------
# nearest-neighbour search


def _queries(bank: np.ndarray, seed: int, n: int = 400) -> np.ndarray:
    """Queries near bank entries, fresh draws from the same spread, and far outliers."""
    rng = np.random.default_rng(seed)
    near = bank[rng.integers(len(bank), size=n // 2)] + 0.1 * rng.standard_normal(
        (n // 2, bank.shape[1])
    ).astype(np.float32)
    spread = bank.std(axis=0) * rng.standard_normal((n // 4, bank.shape[1])) + bank.mean(axis=0)
    far = 50.0 * rng.standard_normal((n - n // 2 - n // 4, bank.shape[1]))
    return np.concatenate([near, spread, far]).astype(np.float32)


def _check_search(search: object, bank: np.ndarray, queries: np.ndarray) -> None:
    dist, idx = search.query(queries)  # type: ignore[attr-defined]
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    assert dist.shape == idx.shape == (len(queries),)
    true, gap = _true_nn(queries, bank)
    np.testing.assert_allclose(dist, true, rtol=1e-4, atol=1e-4)
    own = np.linalg.norm(queries.astype(np.float64) - bank[idx].astype(np.float64), axis=1)
    np.testing.assert_allclose(dist, own, rtol=1e-5, atol=1e-5)
    clear = gap > 1e-3 * np.maximum(true, 1.0)  # no near-tie: the index is determined
    brute_dist, brute_idx = BruteForceSearch().fit(bank).query(queries)
    np.testing.assert_array_equal(idx[clear], brute_idx[clear])
    np.testing.assert_allclose(dist, brute_dist, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "bank",
    [_gaussian(3000, 152, 20), _mixture(5000, 152, 21, components=200), _mixture(800, 8, 22)],
    ids=["gaussian", "mixture152", "mixture8"],
)
def test_cluster_pruned_equals_brute_force(bank: np.ndarray) -> None:
    queries = _queries(bank, 23)
    pruned = ClusterPrunedSearch(seed=1).fit(bank)
    _check_search(pruned, bank, queries)
    _check_search(BruteForceSearch().fit(bank), bank, queries)
    bound = pruned.upper_bounds(queries)
    true, _ = _true_nn(queries, bank)
    assert bound.shape == true.shape and np.all(bound >= true * (1 - 1e-6) - 1e-5)


@pytest.mark.parametrize("n_clusters", [1, 7, 800])
def test_cluster_pruned_any_partition_is_exact(n_clusters: int) -> None:
    bank = _mixture(800, 16, 24)
    search = ClusterPrunedSearch(n_clusters=n_clusters, n_iter=2).fit(bank)
    assert 1 <= search.n_clusters_fitted <= n_clusters
    _check_search(search, bank, _queries(bank, 25, n=97))


def test_search_exact_matches_and_single_entry_bank() -> None:
    bank = _mixture(500, 20, 26)
    for search in (ClusterPrunedSearch(), BruteForceSearch()):
        dist, idx = search.fit(bank).query(bank[::7])
        np.testing.assert_array_equal(idx, np.arange(0, 500, 7))
        np.testing.assert_allclose(dist, 0.0, atol=1e-6)
        one = search.fit(bank[:1]).query(bank[:5])
        np.testing.assert_array_equal(one[1], 0)


def test_brute_force_chunking_is_invisible() -> None:
    bank = _gaussian(300, 10, 27)
    queries = _queries(bank, 28, n=101)
    big = BruteForceSearch(chunk_size=4096).fit(bank).query(queries)
    for chunk in (2, 7, 64):
        small = BruteForceSearch(chunk_size=chunk).fit(bank).query(queries)
        np.testing.assert_array_equal(small[1], big[1])
        np.testing.assert_allclose(small[0], big[0], rtol=1e-6)


def test_search_dtype_conversion() -> None:
    bank = _gaussian(300, 6, 31)
    queries = _queries(bank, 32, n=50)
    ref = ClusterPrunedSearch().fit(bank).query(queries)
    got = ClusterPrunedSearch().fit(bank.astype(np.float64)).query(np.asfortranarray(queries))
    np.testing.assert_array_equal(ref[1], got[1])


def test_search_errors() -> None:
    bank = _gaussian(50, 4, 33)
    for search in (ClusterPrunedSearch(), BruteForceSearch()):
        with pytest.raises(ConfigError, match="not fitted"):
            search.query(bank)
        with pytest.raises(ConfigError, match="at least one row"):
            search.fit(np.zeros((0, 4), np.float32))
        search.fit(bank)
        with pytest.raises(ConfigError, match="at least one row"):
            search.query(np.zeros((0, 4), np.float32))
        with pytest.raises(ConfigError, match="dimension"):
            search.query(np.zeros((3, 5), np.float32))
        with pytest.raises(ConfigError, match="2-D"):
            search.query(np.zeros(4, np.float32))
        with pytest.raises(ConfigError, match="NaN"):
            search.query(np.full((2, 4), np.inf, np.float32))
    with pytest.raises(ConfigError, match="chunk_size"):
        BruteForceSearch(chunk_size=0)
    with pytest.raises(ConfigError, match="n_clusters"):
        ClusterPrunedSearch(n_clusters=0)


def test_pruned_search_split_over_threads_finds_the_same_neighbours() -> None:
    rng = np.random.default_rng(5)
    bank = rng.normal(size=(3000, 24)).astype(np.float32)
    queries = rng.normal(size=(1500, 24)).astype(np.float32)
    one = ClusterPrunedSearch(seed=0).fit(bank).query(queries)
    many = ClusterPrunedSearch(seed=0, threads=3).fit(bank).query(queries)
    assert np.array_equal(one[1], many[1]) and np.array_equal(one[0], many[0])
    with pytest.raises(ConfigError, match="threads"):
        ClusterPrunedSearch(threads=0)
