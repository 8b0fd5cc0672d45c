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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = ROOT.parent / "shared" / "datasets"
CATEGORIES = {"bottle": "mvtec_ad/bottle", "magnetic_tile": "magnetic_tile"}
RUN_KEY = ("model", "category", "seed")


def run_single(args: argparse.Namespace) -> dict[str, Any]:
    """Fit on train/good, evaluate on test/ (examples written under ``args.out``)."""
    import torch

    from flawmap.data import MVTecDataset
    from flawmap.evaluation import evaluate, write_evaluation
    from flawmap.models import create_model

    torch.set_num_threads(args.threads)
    root = Path(args.datasets) / CATEGORIES[args.category]
    params = json.loads(args.params)
    detector = create_model(
        args.model, backbone=args.backbone, image_size=args.image_size, seed=args.seed, **params
    )
    train = MVTecDataset(root, "train", transform=detector.transform)
    test = MVTecDataset(root, "test", transform=detector.transform)
    start = time.perf_counter()
    detector.fit(train, progress=False)
    fit_wall = time.perf_counter() - start
    fit_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = evaluate(detector, test, latency_runs=30)
    if args.out:
        out = Path(args.out) / f"{args.model}_{args.category}_seed{args.seed}"
        write_evaluation(result, detector, out, title=f"{args.model} on {args.category}")
    record: dict[str, Any] = {
        "model": args.model,
        "category": args.category,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "seed": args.seed,
        "params": params,
        "threads": torch.get_num_threads(),
        "n_train": len(train),
        "n_test": len(test),
        "fit_seconds": fit_wall,
        "fit_peak_rss_mb": fit_peak_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **result.metrics,
    }
    history = getattr(detector, "history_", None)
    if history is not None:
        record["final_train_loss"] = history.epoch_losses[-1]
    bank = getattr(detector.module_, "memory_bank", None)
    if bank is not None:
        record["memory_bank"] = int(bank.shape[0])
    return record


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default=str(DEFAULT_DATASETS))
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="", help="folder for evaluation examples (optional)")
    parser.add_argument("--params", default="{}", help="JSON dict of extra model parameters")


def run_in_subprocess(
    args: argparse.Namespace, model: str, category: str, seed: int
) -> dict[str, Any]:
    """One :func:`run_single` in a fresh interpreter; returns its record."""
    cmd = [sys.executable, __file__, "--model", model, "--category", category, "--seed", str(seed)]
    for flag in ("datasets", "backbone", "image_size", "threads", "out", "params"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{model} on {category} (seed {seed}) failed")
    return json.loads(lines[-1][len("RESULT ") :])


def merge_records(path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write ``records`` to ``path``, keeping earlier rows of other (model, category, seed)."""
    fresh = {tuple(r.get(k, 0) for k in RUN_KEY) for r in records}
    kept = []
    if path.is_file():
        kept = [
            r
            for r in json.loads(path.read_text())
            if tuple(r.get(k, 0) for k in RUN_KEY) not in fresh
        ]
    merged = sorted(kept + records, key=lambda r: tuple(str(r.get(k, 0)) for k in RUN_KEY))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    return merged


Column = tuple[str, str, str]  # (record key, header, number format)


def mean_std_table(records: list[dict[str, Any]], columns: list[Column]) -> str:
    """Markdown table, one row per (model, category): 'mean ± std (n seeds)' per column."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["model"], r["category"]), []).append(r)
    header = ["model", "category", "seeds", *(c[1] for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, category), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
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


def main() -> None:
    parser = argparse.ArgumentParser(description="one benchmark run (fit + evaluate)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--category", required=True, choices=CATEGORIES)
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser)
    print("RESULT " + json.dumps(run_single(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
