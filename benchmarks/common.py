"""Shared benchmark machinery: one fit + evaluate per subprocess, result merging, tables.

Each (model, category, seed) run happens in its own subprocess, so its peak RAM is its own and
one run's thread pools cannot slow the next. Run directly, this file does one run and prints a
``RESULT {json}`` line::

    python benchmarks/common.py --model simplenet --category bottle --seed 0 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; run one benchmark per results file there
    fcntl = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = ROOT.parent / "shared" / "datasets"
CATEGORIES = {"bottle": "mvtec_ad/bottle", "magnetic_tile": "magnetic_tile"}


def method_label(record: dict[str, Any]) -> str:
    """``model`` plus its non-default parameters, e.g. ``fcdd (loss=hsc_pixel)``.

    A texture folder the record names outside ``params`` is part of the label too: older runs
    got the datasets' DTD folder without it being in their parameters."""
    params = dict(record.get("params") or {})
    if record.get("texture_dir") is not None:
        params.setdefault("texture_dir", record["texture_dir"])
    if not params:
        return record["model"]
    return f"{record['model']} ({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})"


def run_key(record: dict[str, Any]) -> tuple[str, str, int]:
    """What identifies one run: (method, category, seed)."""
    return (method_label(record), record["category"], int(record.get("seed", 0)))


def run_single(args: argparse.Namespace) -> dict[str, Any]:
    """Fit on train/good, evaluate on test/ (examples written under ``args.out``)."""
    import torch

    from flawmap.data import MVTecDataset
    from flawmap.evaluation import evaluate, write_evaluation
    from flawmap.evaluation.timing import measure_backbone_latency, measure_latency
    from flawmap.models import create_model

    torch.set_num_threads(args.threads)
    root = Path(args.datasets) / CATEGORIES[args.category]
    params = json.loads(args.params)
    # The model's defaults are what a CLI user gets; anything else comes from ``params`` (and so
    # is part of the method label), e.g. a texture folder: {"texture_dir": ".../dtd"}. Only the
    # image size may be overridden by params (then it is part of the label too).
    defaults: dict[str, Any] = {"image_size": args.image_size}
    detector = create_model(
        args.model, backbone=args.backbone, seed=args.seed, **{**defaults, **params}
    )
    train = MVTecDataset(root, "train", transform=detector.transform)
    start = time.perf_counter()
    detector.fit(train, progress=False)
    fit_wall = time.perf_counter() - start
    test = MVTecDataset(root, "test", transform=detector.transform)  # at the planned size
    fit_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = evaluate(detector, test, latency_runs=30)
    image = test[0]["image"]
    latency_b8 = measure_latency(detector, image, runs=10, batch_size=8)
    backbone_ms = measure_backbone_latency(detector, image, runs=30)
    if args.out:
        tag = "".join(f"-{k}={v}" for k, v in sorted(params.items()))
        out = Path(args.out) / f"{args.model}{tag}_{args.category}_seed{args.seed}"
        write_evaluation(result, detector, out, title=f"{args.model} on {args.category}")
    record: dict[str, Any] = {
        "model": args.model,
        "category": args.category,
        "backbone": args.backbone,
        "image_size": detector.image_size,
        "seed": args.seed,
        "params": params,
        "texture_dir": getattr(detector, "texture_dir", None),
        "threads": torch.get_num_threads(),
        "n_train": len(train),
        "n_test": len(test),
        "fit_seconds": fit_wall,
        "fit_peak_rss_mb": fit_peak_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **result.metrics,
        # model forward only (no data loading), median; throughput = batch / latency
        "latency_b8_ms": latency_b8,
        "throughput_b1_ips": 1000.0 / result.metrics["latency_ms"],
        "throughput_b8_ips": 8000.0 / latency_b8,
        "backbone_latency_ms": backbone_ms,
        "latency_over_backbone": result.metrics["latency_ms"] / backbone_ms,
    }
    history = getattr(detector, "history_", None)
    if history is not None:
        record["final_train_loss"] = history.epoch_losses[-1]
        if getattr(history, "best_epoch", None) is not None:  # validation checkpointing (CSE)
            record["best_epoch"] = history.best_epoch
    bank = getattr(detector.module, "memory_bank", None)
    if bank is not None:
        record["memory_bank"] = int(bank.shape[0])
    return record


def parse_study_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add ``--datasets --seed --threads --out`` (results folder), parse, and give torch the
    thread count (the single-process studies: aspect, tune, inference parts, deploy)."""
    parser.add_argument("--datasets", default=str(DEFAULT_DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default=str(DEFAULT_DATASETS))
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="", help="folder for evaluation examples (optional)")
    parser.add_argument("--params", default="{}", help="JSON dict of extra model parameters")
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="rewrite the .md table from the .json, run nothing",
    )


def run_in_subprocess(
    args: argparse.Namespace,
    model: str,
    category: str,
    seed: int,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One :func:`run_single` in a fresh interpreter (``params`` overrides ``args.params``)."""
    cmd = [sys.executable, __file__, "--model", model, "--category", category, "--seed", str(seed)]
    for flag in ("datasets", "backbone", "image_size", "threads", "out"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    cmd += ["--params", args.params if params is None else json.dumps(params)]
    return subprocess_result(cmd, args.threads, f"{model} on {category} (seed {seed})")


def subprocess_result(cmd: list[str], threads: int, what: str) -> dict[str, Any]:
    """Run ``cmd`` with ``OMP_NUM_THREADS=threads`` and parse its last ``RESULT {json}`` line;
    on failure its output goes to stderr and the benchmark stops, naming ``what``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{what} failed")
    return json.loads(lines[-1][len("RESULT ") :])


def load_records(path: Path) -> list[dict[str, Any]]:
    """The run records of a results file, or none when it does not exist yet."""
    return json.loads(path.read_text()) if path.is_file() else []


def merge_records(path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write ``records`` to ``path``, keeping earlier rows of other (method, category, seed).

    The read-merge-write holds an exclusive lock on the file (where ``fcntl`` exists), so two
    benchmarks running side by side and writing the same results file never drop each other's
    rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        handle.seek(0)
        text = handle.read()
        fresh = {run_key(r) for r in records}
        kept = [r for r in (json.loads(text) if text.strip() else []) if run_key(r) not in fresh]
        merged = sorted(kept + records, key=run_key)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(merged, indent=2) + "\n")
    return merged


Column = tuple[str, str, str]  # (record key, header, number format)


def mean_std_table(
    records: list[dict[str, Any]], columns: list[Column], method_order: Sequence[str] = ()
) -> str:
    """Markdown table, one row per (method, category): 'mean ± std' over seeds per column.

    Rows go by category, then the methods named in ``method_order`` in that order, then the
    others alphabetically."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((method_label(r), r["category"]), []).append(r)
    header = ["method", "category", "seeds", *(c[1] for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rank = {label: i for i, label in enumerate(method_order)}

    def row_key(key: tuple[str, str]) -> tuple[str, int, str]:
        model, category = key
        return (category, rank.get(model, len(rank)), model)

    for (model, category), rows in sorted(groups.items(), key=lambda kv: row_key(kv[0])):
        cells = [model, category, str(len(rows))]
        for key, _, fmt in columns:
            values = [float(r[key]) for r in rows if r.get(key) is not None]
            if not values:
                cells.append("–")
            elif len(values) == 1:
                cells.append(fmt.format(values[0]))
            else:
                std = statistics.stdev(values)
                cells.append(f"{fmt.format(statistics.fmean(values))} ± {fmt.format(std)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


Run = tuple[str, dict[str, Any], str, int]  # (model, params, category, seed)


def run_benchmark(
    name: str,
    runs: list[Run],
    args: argparse.Namespace,
    columns: list[Column],
    preamble: str,
    baselines: Sequence[dict[str, Any]] = (),
    method_order: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Run every (model, params, category, seed) in its own subprocess; merge the records into
    ``benchmarks/results/<name>.json`` (after every run, so an interrupted benchmark keeps what
    finished) and write the mean ± std table to ``<name>.md``."""
    results_dir = ROOT / "benchmarks" / "results"
    merged = load_records(results_dir / f"{name}.json")
    for model, params, category, seed in [] if args.table_only else runs:
        print(f"== {model} {params or ''} on {category}, seed {seed}", flush=True)
        record = run_in_subprocess(args, model, category, seed, params)
        print(json.dumps(record), flush=True)
        merged = merge_records(results_dir / f"{name}.json", [record])
    command = f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:])
    what = (
        "Table rewritten from the runs of several commands (BENCHMARKS.md)"
        if args.table_only
        else "Command"
    )
    table = mean_std_table([*baselines, *merged], columns, method_order)
    text = f"{what}: `{command}`\n\n{preamble}\n\n{table}\n"
    (results_dir / f"{name}.md").write_text(text)
    print(text)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description="one benchmark run (fit + evaluate)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--category", required=True, choices=CATEGORIES)
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser)
    print("RESULT " + json.dumps(run_single(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
