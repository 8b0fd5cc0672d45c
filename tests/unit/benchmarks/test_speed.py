"""benchmarks/speed.py and benchmarks/load.py: timing statistics, ratios, the results table and
the CPU load generator (the measurements themselves run in the benchmark, not here)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.benchmarks.loader import load_benchmark


@pytest.fixture(scope="module")
def speed() -> ModuleType:
    return load_benchmark("speed.py")


@pytest.fixture(scope="module")
def load() -> ModuleType:
    return load_benchmark("load.py")


def test_percentile_interpolates_between_ranks(speed: ModuleType) -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert speed.percentile(values, 0) == 1.0
    assert speed.percentile(values, 100) == 5.0
    assert speed.percentile(values, 50) == statistics.median(values)
    assert speed.percentile(values, 95) == pytest.approx(4.8)
    assert speed.percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        speed.percentile([], 50)
    with pytest.raises(ValueError):
        speed.percentile(values, 101)


def test_summary_ms_and_ratio(speed: ModuleType) -> None:
    summary = speed.summary_ms([0.010, 0.020, 0.030])
    assert summary["median_ms"] == pytest.approx(20.0)
    assert summary["p95_ms"] == pytest.approx(29.0)
    assert speed.ratio(3.0, 2.0) == 1.5
    assert speed.ratio(None, 2.0) is None
    assert speed.ratio(3.0, 0.0) is None


def test_interleaved_takes_turns_and_drops_the_warmup(speed: ModuleType) -> None:
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = speed.interleaved(fns, warmup=2, runs=3)
    assert calls == ["a", "b"] * 5  # round-robin, warm-up included
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)


def test_precision_of_every_variant(speed: ModuleType) -> None:
    assert speed.precision_of("torch") == "fp32"
    assert speed.precision_of("openvino-bf16") == "bf16"
    assert speed.precision_of("onnx-int8") == "int8"
    assert set(speed.VARIANTS) == {"torch", *speed.EXPORTS}
    with pytest.raises(KeyError):
        speed.precision_of("onnx-bf16")  # no such export (ONNX Runtime has no bf16 kernels)


def test_threading_settings_cover_both_policies_spins_and_thread_counts(speed: ModuleType) -> None:
    rows = speed.threading_settings()
    torch_rows = {(env["OMP_WAIT_POLICY"], t) for e, env, t, _ in rows if e == "torch"}
    assert torch_rows == {(p, t) for p in ("ACTIVE", "PASSIVE") for t in (1, 2)}
    onnx_rows = {(spin, t) for e, _, t, spin in rows if e == "onnx-fp32"}
    assert onnx_rows == {(s, t) for s in (0, 1) for t in (1, 2)}


def _variant(model: str, variant: str, category: str = "bottle", **fields) -> dict:
    return {"kind": "variant", "model": model, "category": category, "variant": variant, **fields}


def test_speed_markdown_groups_by_category_and_orders_variants(speed: ModuleType) -> None:
    records = [
        {"kind": "peak", "threads": 2, "size": 64, "repeats": 1, "fp32": 100.0, "bf16": 500.0,
         "int8": 700.0, "int8_kernel": "torch._int_mm"},
        _variant("padim", "openvino-bf16", median_ms=10.0, ratio_to_torch=0.25),
        _variant("padim", "torch", median_ms=40.0, ratio_to_torch=1.0, image_auroc=None),
        _variant("padim", "torch", category="magnetic_tile", median_ms=50.0),
        {"kind": "threading", "category": "bottle", "engine": "torch",
         "setting": "OMP_WAIT_POLICY=ACTIVE", "threads": 2, "median_ms": 30.0,
         "loaded_median_ms": 300.0, "loaded_over_quiet": 10.0},
    ]  # fmt: skip
    text = speed.speed_markdown(records, "python benchmarks/speed.py --runs 5")
    assert "Command: `python benchmarks/speed.py --runs 5`" in text
    assert "fp32 100 GFLOP/s, bf16 500 GFLOP/s, int8 700 GOP/s" in text
    assert text.index("### bottle") < text.index("### magnetic_tile") < text.index("Threading")
    bottle = text[text.index("### bottle") : text.index("### magnetic_tile")]
    assert bottle.index("| padim | torch | 40.0 |") < bottle.index("| padim | openvino-bf16 | 10.0")
    assert "| 0.25 |" in bottle
    assert "| – |" in bottle  # a missing value
    assert "OMP_WAIT_POLICY=ACTIVE | 2 | 30.0 |" in text
    assert f"({speed.SHORT_EPOCHS} epoch(s))" in text


def test_busy_load_starts_and_stops_its_processes(load: ModuleType) -> None:
    busy = load.BusyLoad(2)
    assert busy.alive == 0
    with busy:
        assert busy.alive == 2
        with pytest.raises(RuntimeError):
            busy.start()  # already running
    assert busy.alive == 0
    busy.stop()  # stopping twice is harmless
    with pytest.raises(ValueError):
        load.BusyLoad(-1)


def _cpu_ticks(pid: int) -> int:
    """User + system clock ticks of a running process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_busy_load_processes_spin_while_running(load: ModuleType) -> None:
    with load.BusyLoad(1) as busy:
        (pid,) = busy.pids
        before = _cpu_ticks(pid)
        time.sleep(0.5)
        after = _cpu_ticks(pid)
    assert after > before, "the load process used no CPU while it ran"
    assert not Path(f"/proc/{pid}/stat").exists() or busy.alive == 0


def test_best_seconds_is_the_fastest_call(load: ModuleType) -> None:
    delays = iter([0.0, 0.0, 0.03, 0.01, 0.02])
    assert load.best_seconds(lambda: time.sleep(next(delays)), repeats=3, warmup=2) < 0.02


def test_targets_pick_the_fastest_export_that_keeps_parity(speed: ModuleType) -> None:
    ref = {"image_auroc": 0.99, "pixel_auroc": 0.98, "label_agreement_pct": 100.0}
    rows = [
        _variant("padim", "torch", median_ms=60.0, **ref),
        # fastest, but its labels drift: does not count
        _variant("padim", "openvino-int8", median_ms=5.0, **{**ref, "label_agreement_pct": 90.0}),
        _variant("padim", "openvino-bf16", median_ms=12.0, loaded_over_quiet=2.0, **ref),
        _variant("padim", "onnx-fp32", median_ms=20.0, loaded_over_quiet=1.5, **ref),
        _variant("patchcore", "torch", category="magnetic_tile", median_ms=100.0, **ref),
        _variant("patchcore", "onnx-int8", category="magnetic_tile", median_ms=30.0,
                 **{**ref, "pixel_auroc": 0.97}),
    ]  # fmt: skip
    found = {(r["category"], r["model"]): r for r in speed.targets_rows(rows)}
    padim = found[("bottle", "padim")]
    assert padim["best export"] == "openvino-bf16"
    assert padim["speedup"] == pytest.approx(5.0)
    assert padim["target_ms"] == 15.0 and padim["met"] == "yes"
    patchcore = found[("magnetic_tile", "patchcore")]
    assert patchcore["best export"] == "none keeps parity" and "met" not in patchcore
    assert patchcore["target_ms"] == 40.0
    slow = speed.targets_rows([rows[0], {**rows[3], "median_ms": 40.0}])[0]
    assert slow["met"] == "no"  # 1.5x torch, over 15 ms
