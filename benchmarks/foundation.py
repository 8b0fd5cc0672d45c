"""Foundation benchmark: PaDiM and PatchCore on MVTec AD bottle and Magnetic-Tile-Defect.

Each (model, category) pair runs in its own subprocess (``benchmarks/common.py``): fit on
train/good, evaluate on test/, write the metrics. The parent collects the runs into
``benchmarks/results/foundation.json`` and the table in ``foundation.md``.

    python benchmarks/foundation.py --datasets ../shared/datasets --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import CATEGORIES, ROOT, add_run_arguments, merge_records, run_in_subprocess

MODELS = ("patchcore", "padim")
COLUMNS = [
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


def table(records: list[dict]) -> str:
    lines = ["| " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in records:
        cells = [("–" if r.get(k) is None else f.format(r[k])) for k, _, f in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser)
    parser.set_defaults(out=str(ROOT / "benchmarks" / "results" / "foundation"))
    args = parser.parse_args()
    records = []
    for category in args.categories:
        for model in args.models:
            print(f"== {model} on {category}", flush=True)
            record = run_in_subprocess(args, model, category, args.seed)
            print(json.dumps(record, indent=1), flush=True)
            records.append(record)
    results = Path(args.out).parent / "foundation.json"
    merged = merge_records(results, records)
    merged.sort(key=lambda r: (r["category"], r["model"]))
    command = "python benchmarks/foundation.py " + " ".join(sys.argv[1:])
    (results.parent / "foundation.md").write_text(f"Command: `{command}`\n\n{table(merged)}\n")
    print(table(merged))


if __name__ == "__main__":
    main()
