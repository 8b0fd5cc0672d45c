"""Foundation benchmark: PaDiM and PatchCore on MVTec AD bottle and Magnetic-Tile-Defect.

Each (model, category) pair runs in its own subprocess (so peak RAM is that run's alone): fit on
train/good, evaluate on test/, write the metrics. The parent collects the runs into
``benchmarks/results/foundation.json`` and the table in ``BENCHMARKS.md``.

    python benchmarks/foundation.py --datasets ../shared/datasets --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = {"bottle": "mvtec_ad/bottle", "magnetic_tile": "magnetic_tile"}
MODELS = ("patchcore", "padim")


def run_single(args: argparse.Namespace) -> None:
    """Fit + evaluate one model on one category in this process; print a JSON line."""
    import torch

    from flawmap.data import MVTecDataset
    from flawmap.evaluation import evaluate, write_evaluation
    from flawmap.models import create_model

    torch.set_num_threads(args.threads)
    root = Path(args.datasets) / CATEGORIES[args.category]
    detector = create_model(
        args.model, backbone=args.backbone, image_size=args.image_size, seed=args.seed
    )
    train = MVTecDataset(root, "train", transform=detector.transform)
    test = MVTecDataset(root, "test", transform=detector.transform)
    start = time.perf_counter()
    detector.fit(train, progress=False)
    fit_wall = time.perf_counter() - start
    fit_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = evaluate(detector, test, latency_runs=30)
    out = Path(args.out) / f"{args.model}_{args.category}"
    write_evaluation(result, detector, out, title=f"{args.model} on {args.category}")
    record = {
        "model": args.model,
        "category": args.category,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "n_train": len(train),
        "n_test": len(test),
        "fit_seconds": fit_wall,
        "fit_peak_rss_mb": fit_peak_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **result.metrics,
    }
    if args.model == "patchcore":
        record["memory_bank"] = int(detector.module_.memory_bank.shape[0])
    print("RESULT " + json.dumps(record), flush=True)


def table(records: list[dict]) -> str:
    cols = [
        ("model", "model", "{}"),
        ("category", "category", "{}"),
        ("image_auroc", "image AUROC", "{:.3f}"),
        ("pixel_auroc", "pixel AUROC", "{:.3f}"),
        ("aupro", "AUPRO", "{:.3f}"),
        ("pixel_ap", "pixel AP", "{:.3f}"),
        ("image_f1", "image F1", "{:.3f}"),
        ("pixel_f1", "pixel F1", "{:.3f}"),
        ("threshold_fpr", "FPR@thr (good test)", "{:.3f}"),
        ("fit_seconds", "fit (s)", "{:.1f}"),
        ("fit_peak_rss_mb", "peak RAM fit (MB)", "{:.0f}"),
        ("latency_ms", "latency (ms, batch 1)", "{:.1f}"),
        ("throughput_ips", "throughput (img/s)", "{:.1f}"),
    ]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        cells = [("–" if r.get(k) is None else f.format(r[k])) for k, _, f in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "foundation"))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--single", nargs=2, metavar=("MODEL", "CATEGORY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        args.model, args.category = args.single
        run_single(args)
        return
    records = []
    for category in args.categories:
        for model in args.models:
            print(f"== {model} on {category}", flush=True)
            cmd = [sys.executable, __file__, "--single", model, category]
            for flag in ("datasets", "out", "backbone", "image_size", "seed", "threads"):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                sys.stderr.write(proc.stdout + proc.stderr)
                raise SystemExit(f"{model} on {category} failed")
            record = json.loads(lines[-1][len("RESULT ") :])
            print(json.dumps(record, indent=1), flush=True)
            records.append(record)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out.parent / "foundation.json"
    if results.is_file():  # a partial rerun replaces only its own (model, category) rows
        fresh = {(r["model"], r["category"]) for r in records}
        kept = [
            r for r in json.loads(results.read_text()) if (r["model"], r["category"]) not in fresh
        ]
        records = sorted(kept + records, key=lambda r: (r["category"], r["model"]))
    results.write_text(json.dumps(records, indent=2) + "\n")
    command = "python benchmarks/foundation.py " + " ".join(sys.argv[1:])
    (out.parent / "foundation.md").write_text(f"Command: `{command}`\n\n{table(records)}\n")
    print(table(records))


if __name__ == "__main__":
    main()
