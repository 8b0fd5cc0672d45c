"""Issue 6 benchmark: the multi-level feature fusion network (``mlff``, seed paper 004).

Default mode: the full model (``variant="full"``), 3 seeds, MVTec AD bottle and magnetic tile at
the paper's 256 px; image AUROC, pixel AUROC, AUPRO, training time and latency, next to the
foundation benchmark's PatchCore and PaDiM rows (``foundation.json``, seed 0). Each run happens
in its own subprocess (``benchmarks/common.py``). Results go to ``benchmarks/results/mlff.json``
and ``mlff.md``.

``--ablation`` mode: the paper's Table 4, every ``variant`` ("baseline", "+sc", "+stl",
"+score", "full", cumulative) on magnetic tile, seed 0 (``--ablation-seeds 0 1 2`` for three);
results go to ``benchmarks/results/mlff_ablation.json`` and ``mlff_ablation.md``.

    python benchmarks/mlff.py --datasets ../shared/datasets --threads 2
    python benchmarks/mlff.py --ablation --datasets ../shared/datasets --threads 2
"""

from __future__ import annotations

import argparse
import json

from common import (
    CATEGORIES,
    ROOT,
    add_run_arguments,
    load_records,
    method_label,
    run_benchmark,
)

VARIANTS = ("baseline", "+sc", "+stl", "+score", "full")
COLUMNS = [
    ("image_auroc", "image AUROC", "{:.3f}"),
    ("pixel_auroc", "pixel AUROC", "{:.3f}"),
    ("aupro", "AUPRO", "{:.3f}"),
    ("pixel_ap", "pixel AP", "{:.3f}"),
    ("threshold_fpr", "FPR@thr (good test)", "{:.3f}"),
    ("fit_seconds", "fit (s)", "{:.0f}"),
    ("latency_ms", "latency b1 (ms)", "{:.1f}"),
    ("latency_b8_ms", "latency b8 (ms)", "{:.1f}"),
    ("backbone_latency_ms", "backbone b1 (ms)", "{:.1f}"),
    ("final_train_loss", "final train loss", "{:.3f}"),
]
PREAMBLE = (
    "Mean ± std over seeds, pseudo-anomalies (confetti noise / CutPaste), 256 px, the CPU "
    "default schedule (`MLFF.PAPER_SCHEDULE` has the paper's). PatchCore and PaDiM rows are "
    "the foundation benchmark's (seed 0). Latency: model forward only (no data loading), "
    "median, batch 1 and 8; backbone b1: the model's feature extractor alone."
)
ABLATION_PREAMBLE = (
    "The paper's Table 4 ablation (cumulative variants) on magnetic tile, 256 px, CPU default "
    "schedule; mean ± std over seeds where more than one."
)


def main_full_runs(args: argparse.Namespace) -> list[dict]:
    """The default benchmark's runs (``variant="full"`` is the default) of the ablation's
    category and seeds, labelled as the ablation's last column: the same configuration and
    seed, so ``--variants`` without ``full`` need not train it again."""
    results = ROOT / "benchmarks" / "results"
    done = {  # seeds whose full variant the ablation itself ran
        int(r.get("seed", 0))
        for r in load_records(results / "mlff_ablation.json")
        if r.get("params") == {"variant": "full"} and r["category"] == args.ablation_category
    }
    return [
        {**r, "params": {"variant": "full"}}
        for r in load_records(results / "mlff.json")
        if not r.get("params")
        and r["category"] == args.ablation_category
        and int(r.get("seed", 0)) in set(args.ablation_seeds) - done
        and r.get("image_size", args.image_size) == args.image_size
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ablation", action="store_true", help="run Table 4's variants instead")
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="--ablation only"
    )
    parser.add_argument("--ablation-category", default="magnetic_tile", choices=CATEGORIES)
    parser.add_argument("--ablation-seeds", nargs="+", type=int, default=[0])
    add_run_arguments(parser)
    parser.set_defaults(image_size=256)
    args = parser.parse_args()
    extra = json.loads(args.params)
    if args.ablation:
        runs = [
            ("mlff", {**extra, "variant": variant}, args.ablation_category, seed)
            for variant in args.variants
            for seed in args.ablation_seeds
        ]
        rerun_full = "full" in args.variants and not args.table_only
        full = [] if rerun_full or extra else main_full_runs(args)
        order = [method_label({"model": "mlff", "params": {"variant": v}}) for v in VARIANTS]
        run_benchmark("mlff_ablation", runs, args, COLUMNS, ABLATION_PREAMBLE, full, order)
        return
    runs = [("mlff", extra, c, s) for c in args.categories for s in args.seeds]
    baselines = load_records(ROOT / "benchmarks" / "results" / "foundation.json")
    run_benchmark("mlff", runs, args, COLUMNS, PREAMBLE, baselines)


if __name__ == "__main__":
    main()
