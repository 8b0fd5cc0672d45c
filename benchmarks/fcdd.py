"""Issue 4 benchmark: FCDD with its original loss (eq. 4) and the pixel-wise HSC loss (eq. 5).

Unsupervised setting (confetti noise), 3 seeds, MVTec AD bottle and magnetic tile at the paper's
224 px; each run in its own subprocess (``benchmarks/common.py``). Results go to
``benchmarks/results/fcdd.json`` and ``fcdd.md``; then ``flawmap compare`` tests the two losses
(Wilcoxon signed-rank over (category, seed) blocks, Holm) and draws the critical-difference
diagrams into ``benchmarks/results/fcdd_compare/``.

    python benchmarks/fcdd.py --datasets ../shared/datasets --threads 2
"""

from __future__ import annotations

import argparse

from common import CATEGORIES, ROOT, add_run_arguments, run_benchmark

LOSSES = ("fcdd", "hsc_pixel")
COLUMNS = [
    ("pixel_auroc", "pixel AUROC", "{:.3f}"),
    ("pixel_ap", "pixel AP", "{:.3f}"),
    ("image_auroc", "image AUROC", "{:.3f}"),
    ("aupro", "AUPRO", "{:.3f}"),
    ("threshold_fpr", "FPR@thr (good test)", "{:.3f}"),
    ("fit_seconds", "fit (s)", "{:.0f}"),
    ("latency_ms", "latency (ms, batch 1)", "{:.1f}"),
]
PREAMBLE = "Mean ± std over seeds, unsupervised (confetti noise), 224 px."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_run_arguments(parser)
    parser.set_defaults(image_size=224)
    args = parser.parse_args()
    runs = [
        ("fcdd", {"loss": loss}, c, s)
        for c in args.categories
        for loss in args.losses
        for s in args.seeds
    ]
    run_benchmark("fcdd", runs, args, COLUMNS, PREAMBLE)
    from flawmap.cli import main as flawmap_main

    results = ROOT / "benchmarks" / "results"
    flawmap_main(
        [
            "compare",
            str(results / "fcdd.json"),
            "--metric",
            "pixel_ap",
            "--metric",
            "pixel_auroc",
            "--method-key",
            "model,params.loss",
            "--out",
            str(results / "fcdd_compare"),
        ]
    )


if __name__ == "__main__":
    main()
