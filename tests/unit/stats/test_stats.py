"""flawmap.stats and ``flawmap compare``: Wilcoxon + Holm against worked examples, ranks with ties,
cliques, critical-difference diagrams, result loading and its errors, the HTML report."""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from flawmap.cli import main
from flawmap.errors import ConfigError, DataError
from flawmap.report.document import Code, Figure, Paragraph, Table
from flawmap.report.markdown import METRIC_HELP
from flawmap.stats import (
    PairResult,
    average_ranks,
    cliques,
    compare,
    comparison_markdown,
    comparison_report,
    critical_difference_diagram,
    critical_difference_svg,
    holm_bonferroni,
    load_records,
    method_labels,
    min_attainable_p,
    pairwise_wilcoxon,
    score_table,
    write_comparison,
    write_comparison_report,
)

# Hollander & Wolfe, Nonparametric Statistical Methods (Wiley, 1973, pp. 29 f.; 2nd ed. 1999,
# Example 3.1): Hamilton depression scale factor IV of 9 patients at the first (x) and second (y)
# visit after starting a tranquilizer. Also the example of R's ``wilcox.test`` help page, where
# ``wilcox.test(x, y, paired = TRUE, alternative = "greater")`` gives V = 40, p-value = 0.01953.
HW_X = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
HW_Y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]


# ------------------------------------------------------------------------------ Wilcoxon
def test_wilcoxon_matches_the_hollander_wolfe_textbook_example() -> None:
    """Hollander & Wolfe Example 3.1: T+ = 40, exact one-sided p = 10/512 = 0.01953.

    Worked by hand: the |differences| ranked 1..9 have the two negative ones (−0.08, −0.147) at
    ranks 2 and 3, so T− = 5 and T+ = 45 − 5 = 40. Under H0 each of the 2⁹ sign patterns is
    equally likely and 10 subsets of {1..9} sum to ≤ 5, so P(T− ≤ 5) = 10/512.
    """
    d = np.subtract(HW_X, HW_Y)
    ranks = np.argsort(np.argsort(np.abs(d))) + 1  # no ties here
    t_minus = int(ranks[d < 0].sum())
    assert (t_minus, 45 - t_minus) == (5, 40)
    subsets = sum(
        1 for r in range(10) for c in itertools.combinations(range(1, 10), r) if sum(c) <= 5
    )
    assert subsets == 10

    greater = pairwise_wilcoxon({"x": HW_X, "y": HW_Y}, alternative="greater")
    assert len(greater) == 1
    assert greater[0].statistic == 40.0  # scipy reports T+ for a one-sided test
    assert greater[0].p_value == pytest.approx(10 / 512, abs=1e-12)
    assert greater[0].p_value == pytest.approx(0.01953, abs=5e-6)  # R's printed value

    two_sided = pairwise_wilcoxon({"x": HW_X, "y": HW_Y})[0]
    assert (two_sided.a, two_sided.b, two_sided.n, two_sided.n_nonzero) == ("x", "y", 9, 9)
    assert two_sided.statistic == 5.0  # min(T+, T−)
    assert two_sided.p_value == pytest.approx(20 / 512, abs=1e-12)
    assert two_sided.p_holm == two_sided.p_value  # one pair: nothing to adjust
    assert two_sided.reject  # 0.039 <= 0.05
    assert not pairwise_wilcoxon({"x": HW_X, "y": HW_Y}, alpha=0.01)[0].reject
    assert two_sided.median_difference == pytest.approx(np.median(d))

    less = pairwise_wilcoxon({"y": HW_Y, "x": HW_X}, alternative="less")[0]
    assert less.p_value == pytest.approx(10 / 512, abs=1e-12)  # same test, other direction


def test_identical_methods_get_p_one_and_bad_options_are_refused() -> None:
    same = [0.5, 0.6, 0.7, 0.8]
    for zero_method in ("wilcox", "pratt", "zsplit"):
        pair = pairwise_wilcoxon({"a": same, "b": same}, zero_method=zero_method)[0]
        assert pair.p_value == 1.0 and pair.p_holm == 1.0 and not pair.reject
        assert pair.n_nonzero == 0
    with pytest.raises(DataError, match="at least 2 methods"):
        pairwise_wilcoxon({"a": same})
    with pytest.raises(DataError, match="same blocks"):
        pairwise_wilcoxon({"a": same, "b": same[:3]})
    with pytest.raises(DataError, match="finite"):
        pairwise_wilcoxon({"a": same, "b": [0.1, np.nan, 0.2, 0.3]})
    with pytest.raises(ConfigError, match="alpha"):
        pairwise_wilcoxon({"a": same, "b": same}, alpha=1.5)
    with pytest.raises(ConfigError, match="zero_method"):
        pairwise_wilcoxon({"a": same, "b": same}, zero_method="drop")  # type: ignore[arg-type]


def test_min_attainable_p() -> None:
    assert min_attainable_p(5) == 0.0625
    assert min_attainable_p(5, "greater") == 1 / 32
    assert min_attainable_p(0) == 1.0


# ------------------------------------------------------------------------------ Holm
def test_holm_on_a_hand_worked_example() -> None:
    """Holm (1979), Scand. J. Statist. 6:65–70, step-down procedure, worked by hand (this is
    also the example of Wikipedia's "Holm–Bonferroni method" article).

    p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005, 0.01, 0.03, 0.04 against α/4, α/3, α/2,
    α/1 at α = 0.05: 0.005 ≤ 0.0125 and 0.01 ≤ 0.0167 are rejected, 0.03 > 0.025 stops.
    Adjusted: 4·0.005 = 0.02, max(0.02, 3·0.01) = 0.03, max(0.03, 2·0.03) = 0.06,
    max(0.06, 1·0.04) = 0.06.
    """
    adjusted = holm_bonferroni([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], atol=1e-12)
    assert list(adjusted <= 0.05) == [True, False, False, True]
    np.testing.assert_allclose(holm_bonferroni([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    assert holm_bonferroni([]).size == 0
    with pytest.raises(ConfigError):
        holm_bonferroni([0.1, 1.2])


def _holm_step_down(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's procedure as written: reject p₍ᵢ₎ while p₍ᵢ₎ ≤ α / (m − i + 1), then stop."""
    reject = np.zeros(p.size, bool)
    for i, k in enumerate(np.argsort(p, kind="stable")):
        if p[k] > alpha / (p.size - i):
            break
        reject[k] = True
    return reject


def test_holm_adjusted_p_values_reproduce_the_step_down_decisions() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.1, size=int(rng.integers(1, 12))) ** rng.uniform(0.5, 2)
        adjusted = holm_bonferroni(p)
        assert np.all(adjusted >= p) and np.all(adjusted <= 1)
        for alpha in (0.01, 0.05, 0.1):
            np.testing.assert_array_equal(adjusted <= alpha, _holm_step_down(p, alpha))


# ------------------------------------------------------------------------------ ranks
def test_average_ranks_average_ties_within_each_block() -> None:
    scores = {"a": [0.9, 0.1], "b": [0.9, 0.2], "c": [0.5, 0.3]}
    # block 1: a, b tie for first (1.5 each), c third; block 2: c 1, b 2, a 3
    ranks = average_ranks(scores)
    assert ranks == {"b": 1.75, "c": 2.0, "a": 2.25}
    assert list(ranks) == ["b", "c", "a"]  # best first
    lower = average_ranks(scores, higher_is_better=False)
    assert lower == {"a": 1.75, "c": 2.0, "b": 2.25}
    assert sum(average_ranks({"x": [1, 2, 3], "y": [1, 2, 3]}).values()) == 3.0  # all tied


# ------------------------------------------------------------------------------ cliques
def _pair(a: str, b: str, p_holm: float) -> PairResult:
    return PairResult(a, b, 0.0, p_holm, p_holm, p_holm <= 0.05, 10, 10, 0.0)


def test_cliques_from_constructed_pair_results() -> None:
    ranks = {"A": 1.2, "B": 2.0, "C": 2.8}
    one_significant = [_pair("A", "B", 0.3), _pair("A", "C", 0.01), _pair("B", "C", 0.4)]
    assert cliques(ranks, one_significant, alpha=0.05) == [("A", "B"), ("B", "C")]
    assert cliques(ranks, one_significant) == [("A", "B"), ("B", "C")]  # uses .reject
    assert cliques(ranks, one_significant, alpha=0.005) == [("A", "B", "C")]
    none = [_pair("A", "B", 0.01), _pair("A", "C", 0.01), _pair("B", "C", 0.01)]
    assert cliques(ranks, none, alpha=0.05) == []
    # A ~ C but B differs from both: no bar can show A ~ C without covering B
    split = [_pair("A", "B", 0.01), _pair("A", "C", 0.5), _pair("B", "C", 0.01)]
    assert cliques(ranks, split, alpha=0.05) == []
    with pytest.raises(DataError, match="no pairwise test"):
        cliques(ranks, one_significant[:2])


def test_three_methods_one_significant_pair_end_to_end() -> None:
    """A beats C on every block; B alternates above and below both, so only A–C differs."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.4, 0.8, size=12)
    scores = {
        "A": base + 0.05,
        "B": base + np.where(np.arange(12) % 2 == 0, 0.12, -0.06) + rng.normal(0, 1e-3, 12),
        "C": base,
    }
    pairs = {(p.a, p.b): p for p in pairwise_wilcoxon(scores, alpha=0.05)}
    assert list(pairs) == [("A", "B"), ("A", "C"), ("B", "C")]
    assert pairs["A", "C"].p_value == pytest.approx(2 / 2**12)
    assert pairs["A", "C"].p_holm == pytest.approx(3 * 2 / 2**12)
    assert pairs["A", "C"].reject
    assert not pairs["A", "B"].reject and not pairs["B", "C"].reject
    ranks = average_ranks(scores)
    assert list(ranks) == ["A", "B", "C"]
    assert cliques(ranks, list(pairs.values()), alpha=0.05) == [("A", "B"), ("B", "C")]


# ------------------------------------------------------------------------------ diagram
@pytest.mark.parametrize("ext", ["png", "svg"])
def test_diagram_is_written_by_extension(tmp_path: Path, ext: str) -> None:
    ranks = {"A": 1.2, "B": 2.0, "C (loss=x)": 2.8}
    pairs = [_pair("A", "B", 0.3), _pair("A", "C (loss=x)", 0.01), _pair("B", "C (loss=x)", 0.4)]
    out = critical_difference_diagram(ranks, pairs, tmp_path / "sub" / f"cd.{ext}", title="t")
    assert out == tmp_path / "sub" / f"cd.{ext}" and out.stat().st_size > 500
    if ext == "png":
        with Image.open(out) as image:
            assert image.format == "PNG" and image.width > 400 and image.height > 100
            pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
            assert np.any(np.all(pixels == (214, 39, 40), axis=1))  # a clique bar is drawn
    else:
        text = out.read_text()
        assert text.lstrip().startswith("<?xml") and "<svg" in text
        assert "C (loss=x)" in text and "1.20" in text  # labels stay text


def test_diagram_as_svg_text_is_the_file_without_its_metadata(tmp_path: Path) -> None:
    ranks = {"A": 1.2, "B": 2.0, "C <x> & y": 2.8}
    pairs = [_pair("A", "B", 0.3), _pair("A", "C <x> & y", 0.01), _pair("B", "C <x> & y", 0.4)]
    text = critical_difference_svg(ranks, pairs, title="t")
    assert "<svg" in text and "<metadata" not in text and "C &lt;x&gt; &amp; y (2.80)" in text
    written = critical_difference_diagram(ranks, pairs, tmp_path / "cd.svg", title="t")
    assert re.sub(r"\s*<metadata>.*?</metadata>", "", written.read_text(), flags=re.S) == text
    assert critical_difference_svg(ranks, pairs, title="t") == text  # reproducible
    with pytest.raises(ConfigError, match="alpha"):
        critical_difference_svg(ranks, pairs, alpha=1.0)


def test_diagram_rejects_unknown_formats(tmp_path: Path) -> None:
    pairs = [_pair("A", "B", 0.3)]
    with pytest.raises(ConfigError, match=r"\.png, \.svg"):
        critical_difference_diagram({"A": 1.0, "B": 2.0}, pairs, tmp_path / "cd.jpg")
    with pytest.raises(ConfigError, match="2 methods"):
        critical_difference_diagram({"A": 1.0}, [], tmp_path / "cd.png")


# ------------------------------------------------------------------------------ loading
def _records(
    models: list[tuple[str, dict[str, Any]]], categories: list[str], seeds: list[int]
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [
        {
            "model": model,
            "category": category,
            "seed": seed,
            "params": params,
            "pixel_ap": float(rng.uniform(0.2, 0.8)) + 0.1 * j,
            "latency_ms": float(rng.uniform(10, 20)) + j,
        }
        for category in categories
        for seed in seeds
        for j, (model, params) in enumerate(models)
    ]


FCDD = [("fcdd", {"loss": "fcdd", "epochs": 5}), ("fcdd", {"loss": "hsc_pixel", "epochs": 5})]
METRICS = ("pixel_ap", "latency_ms")


def test_default_methods_split_a_model_by_the_params_that_differ(tmp_path: Path) -> None:
    records = _records([*FCDD, ("padim", {})], ["bottle", "tile"], [0, 1])
    labels = method_labels(records)
    assert labels[:3] == ["fcdd (loss=fcdd)", "fcdd (loss=hsc_pixel)", "padim"]
    assert method_labels(records, "model")[:3] == ["fcdd", "fcdd", "padim"]
    assert method_labels(records, "model,params.loss")[:3] == [
        "fcdd (loss=fcdd)", "fcdd (loss=hsc_pixel)", "padim",
    ]  # fmt: skip
    assert method_labels([{"method": "m1", "model": "x"}]) == ["m1"]
    with pytest.raises(DataError, match="none of the method fields"):
        method_labels([{"model": "x"}], "params.loss")


def test_score_table_pairs_blocks_and_averages_seeds(tmp_path: Path) -> None:
    records = _records([*FCDD, ("padim", {})], ["bottle", "tile", "wood"], [0, 1])
    table = score_table(records, "pixel_ap")
    assert table.methods == ("fcdd (loss=fcdd)", "fcdd (loss=hsc_pixel)", "padim")
    assert table.blocks[:2] == ("bottle (seed 0)", "bottle (seed 1)")
    assert table.scores.shape == (6, 3) and not table.seeds_averaged
    averaged = score_table(records, "pixel_ap", average_seeds=True)
    assert averaged.blocks == ("bottle", "tile", "wood") and averaged.scores.shape == (3, 3)
    np.testing.assert_allclose(averaged.scores, table.scores.reshape(3, 2, 3).mean(axis=1))
    np.testing.assert_allclose(averaged.seed_std, table.scores.reshape(3, 2, 3).std(1, ddof=1))
    assert np.all(averaged.n_seeds == 2)
    with pytest.raises(DataError, match="two results for method 'fcdd'"):
        score_table(records, "pixel_ap", method_key="model")


def test_loader_reads_json_lists_record_dicts_and_csv(tmp_path: Path) -> None:
    records = _records([*FCDD, ("padim", {})], ["bottle", "tile"], [0])
    (tmp_path / "a.json").write_text(json.dumps(records[:3]))
    (tmp_path / "b.json").write_text(json.dumps({"records": records[3:], "note": "x"}))
    with (tmp_path / "c.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["model", "category", "seed", "params.loss", "pixel_ap"])
        writer.writeheader()
        for r in records:
            writer.writerow({**{k: r[k] for k in ("model", "category", "seed", "pixel_ap")},
                             "params.loss": r["params"].get("loss", "")})  # fmt: skip
    loaded = load_records([tmp_path / "a.json", tmp_path / "b.json"])
    assert len(loaded) == 6 and loaded[0]["_source"].endswith("a.json:0")
    from_csv = load_records([tmp_path / "c.csv"])
    assert from_csv[0]["seed"] == 0 and isinstance(from_csv[0]["pixel_ap"], float)
    a = score_table(loaded, "pixel_ap")
    b = score_table(from_csv, "pixel_ap", method_key="model,params.loss")
    assert a.methods == b.methods
    np.testing.assert_allclose(a.scores, b.scores)


def test_loader_errors_are_clear(tmp_path: Path) -> None:
    records = _records([("padim", {}), ("patchcore", {})], ["bottle", "tile"], [0, 1])
    with pytest.raises(DataError, match="not found"):
        load_records([tmp_path / "missing.json"])
    (tmp_path / "x.txt").write_text("[]")
    with pytest.raises(DataError, match="unsupported"):
        load_records([tmp_path / "x.txt"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read JSON"):
        load_records([tmp_path / "bad.json"])
    (tmp_path / "obj.json").write_text('{"rows": []}')
    with pytest.raises(DataError, match="'records' list"):
        load_records([tmp_path / "obj.json"])
    with pytest.raises(ConfigError, match="no result files"):
        load_records([])

    with pytest.raises(DataError, match=r"no metric 'aupro'.*pixel_ap"):
        score_table(records, "aupro")
    with pytest.raises(DataError, match="at least 2 methods"):
        score_table([r for r in records if r["model"] == "padim"], "pixel_ap")
    unmatched = [r for r in records if not (r["model"] == "padim" and r["category"] == "tile")]
    with pytest.raises(DataError, match="'padim' lacks tile \\(seed 0\\), tile \\(seed 1\\)"):
        score_table(unmatched, "pixel_ap")
    one_seed_less = [r for r in records if not (r["model"] == "padim" and r["seed"] == 1)]
    with pytest.raises(DataError, match="same blocks"):
        score_table(one_seed_less, "pixel_ap")
    assert score_table(one_seed_less, "pixel_ap", average_seeds=True).n_seeds[:, 0].tolist() == [
        1, 1,
    ]  # fmt: skip
    nan = [{**r, "pixel_ap": float("nan")} if i == 0 else r for i, r in enumerate(records)]
    with pytest.raises(DataError, match="not a finite number"):
        score_table(nan, "pixel_ap")
    with pytest.raises(DataError, match="no 'category'"):
        score_table([{"model": "a", "pixel_ap": 1.0}, {"model": "b", "pixel_ap": 1.0}], "pixel_ap")


# ------------------------------------------------------------------------------ summary
def test_compare_and_markdown_summary() -> None:
    records = _records([*FCDD, ("padim", {})], [f"c{i}" for i in range(8)], [0, 1, 2])
    result = compare(score_table(records, "pixel_ap", average_seeds=True), alpha=0.1)
    best = next(iter(result.average_ranks))
    assert best == "padim"  # +0.2 on every block
    assert all(p.a == best for p in result.pairs[:2])
    text = comparison_markdown(result)
    for piece in ("Average ranks", "Pairwise tests", "p (Holm)", "mean seed std", "c7", "± "):
        assert piece in text
    assert "Scores per block" not in comparison_markdown(result, per_block=False)
    json.dumps(result.to_dict())
    latency = compare(score_table(records, "latency_ms"))
    assert not latency.higher_is_better
    assert next(iter(latency.average_ranks)) == "fcdd (loss=fcdd)"
    few = compare(score_table(records[:9], "pixel_ap"))  # 3 blocks
    assert "no pair can be significant" in comparison_markdown(few)


def test_write_comparison_writes_the_summary_and_both_diagrams(tmp_path: Path) -> None:
    records = _records([*FCDD, ("padim", {})], [f"c{i}" for i in range(6)], [0])
    result = compare(score_table(records, "pixel_ap"), alpha=0.2)
    written = write_comparison(result, tmp_path / "new")
    names = ["compare_pixel_ap.md", "compare_pixel_ap.json"]
    names += ["cd_pixel_ap.png", "cd_pixel_ap.svg"]
    assert [p.name for p in written] == names and all(p.is_file() for p in written)
    assert written[0].read_text() == comparison_markdown(result)
    assert json.loads(written[1].read_text()) == json.loads(json.dumps(result.to_dict()))


def test_comparison_report_shows_the_summary_numbers_per_metric(tmp_path: Path) -> None:
    records = _records([*FCDD, ("padim", {})], [f"c{i}" for i in range(4)], [0, 1, 2])
    results = [compare(score_table(records, m, average_seeds=True)) for m in METRICS]
    document = comparison_report(results, sources=["a.json"])
    assert [s.title for s in document.sections] == ["Pixel AP", "Latency (ms/image, batch 1)"]
    for result, section in zip(results, document.sections, strict=True):
        markdown = comparison_markdown(result)
        tables = [b for b in section.blocks if isinstance(b, Table)]
        assert [t.header[0] for t in tables] == ["rank", "A"]
        for table in tables:  # every cell also stands in the per-metric summary
            assert all(f" {cell} |" in markdown for row in table.rows for cell in row)
        figure = next(b for b in section.blocks if isinstance(b, Figure))
        assert figure.name == f"cd_{result.table.metric}" and "<svg" in figure.svg
        code = next(b for b in section.blocks if isinstance(b, Code))
        assert "c3" in code.text and "±" in code.text and "Scores per block" in code.summary
    texts = [b.text for b in document.sections[0].blocks if isinstance(b, Paragraph)]
    assert any("no pair can be significant" in t for t in texts)  # 4 blocks
    assert "a.json" in document.intro[-1].text
    with pytest.raises(ConfigError, match="at least one"):
        comparison_report([])
    written = write_comparison_report(results, tmp_path / "new")
    assert [p.name for p in written] == ["compare.html", "compare.md"]
    assert "a.json" not in written[0].read_text()  # no sources given


# ------------------------------------------------------------------------------ CLI
def test_compare_command_writes_summary_and_diagrams(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    records = _records([*FCDD, ("padim", {})], [f"c{i}" for i in range(10)], [0, 1])
    results = tmp_path / "results.json"
    results.write_text(json.dumps(records))
    out = tmp_path / "out"
    args = ["compare", str(results), "--metric", "pixel_ap", "--metric", "latency_ms"]
    assert main([*args, "--average-seeds", "--alpha", "0.1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fcdd (loss=hsc_pixel)" in printed and "Pairwise tests" in printed
    for metric in ("pixel_ap", "latency_ms"):
        assert "Scores per block" in (out / f"compare_{metric}.md").read_text()
        assert json.loads((out / f"compare_{metric}.json").read_text())["alpha"] == 0.1
        with Image.open(out / f"cd_{metric}.png") as image:
            assert image.format == "PNG"
        assert "<svg" in (out / f"cd_{metric}.svg").read_text()

    key = ["--method-key", "model", "--quiet"]
    assert main(["compare", str(results), "--metric", "pixel_ap", *key, "--out", str(out)]) == 2
    assert "two results for method 'fcdd'" in capsys.readouterr().err
    assert main(["compare", str(results), "--metric", "nope", "--out", str(out)]) == 2
    assert "no metric 'nope'" in capsys.readouterr().err


def test_compare_command_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "--help"]) == 0
    assert "--method-key" in capsys.readouterr().out


def test_compare_command_writes_one_html_report_of_every_metric(tmp_path: Path) -> None:
    records = _records([*FCDD, ("padim", {})], [f"c{i}" for i in range(6)], [0, 1])
    for r in records:
        r["method"] = "pa<b>dim</b> & co" if r["model"] == "padim" else r["params"]["loss"]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(records))
    out = tmp_path / "out"
    args = ["compare", str(results), "--metric", "pixel_ap", "--metric", "latency_ms", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    page = (out / "compare.html").read_text()
    for title in ("Pixel AP", "Latency (ms/image, batch 1)"):
        assert f"<h2>{title}</h2>" in page
    assert page.count("<svg") == 2 and page.count("<details>") == 2
    assert "http" not in page.replace("http://www.w3.org", "")
    assert "<script" not in page and "<link" not in page
    assert "pa&lt;b&gt;dim&lt;/b&gt; &amp; co" in page and "<b>dim" not in page
    for piece in ("Wilcoxon signed-rank", "Holm", "α = 0.05", "category × seed", "p (Holm)"):
        assert piece in page
    assert METRIC_HELP["pixel_ap"] in page
    markdown = (out / "compare.md").read_text()
    figures = re.findall(r"\]\((figures/[^)]+\.svg)\)", markdown)
    assert figures == ["figures/cd_pixel_ap.svg", "figures/cd_latency_ms.svg"]
    assert all((out / f).is_file() for f in figures)
    for metric in METRICS:  # the per-metric files stay
        assert (out / f"compare_{metric}.md").is_file() and (out / f"cd_{metric}.png").is_file()
