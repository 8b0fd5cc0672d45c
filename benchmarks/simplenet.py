"""Issue 3 benchmark: SimpleNet and TrisimpleNet, 3 seeds, next to PatchCore and PaDiM.

Each (model, category, seed) runs in its own subprocess (``benchmarks/common.py``). Results go
to ``benchmarks/results/simplenet.json``; the table (mean ± std over seeds) to
``benchmarks/results/simplenet.md``, with the foundation benchmark's PatchCore and PaDiM rows
(``foundation.json``, seed 0) beside them.

    python benchmarks/simplenet.py --datasets ../shared/datasets --threads 2
"""

from __future__ import annotations

import argparse

from common import CATEGORIES, ROOT, add_run_arguments, load_records, run_benchmark

MODELS = ("simplenet", "trisimplenet")
COLUMNS = [
    ("image_auroc", "image AUROC", "{:.3f}"),
    ("pixel_auroc", "pixel AUROC", "{:.3f}"),
    ("aupro", "AUPRO", "{:.3f}"),
    ("pixel_ap", "pixel AP", "{:.3f}"),
    ("threshold_fpr", "FPR@thr (good test)", "{:.3f}"),
    ("threshold_tpr", "TPR@thr (defective test)", "{:.3f}"),
    ("fit_seconds", "fit (s)", "{:.0f}"),
    ("latency_ms", "latency (ms, batch 1)", "{:.1f}"),
]
PREAMBLE = (
    "Mean ± std over seeds; PatchCore and PaDiM rows are the foundation benchmark's (seed 0, "
    "deterministic fit). FPR/TPR@thr: share of good / defective test images at or above the "
    "threshold learned on held-out *training* images."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_run_arguments(parser)
    args = parser.parse_args()
    runs = [(m, {}, c, s) for c in args.categories for m in args.models for s in args.seeds]
    baselines = load_records(ROOT / "benchmarks" / "results" / "foundation.json")
    run_benchmark("simplenet", runs, args, COLUMNS, PREAMBLE, baselines)


if __name__ == "__main__":
    main()
