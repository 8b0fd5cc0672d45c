"""Issue 18 benchmark: the knowledge-distillation family (STPM, Reverse Distillation, EfficientAD).

Each model with its CPU default schedule, ``--seeds`` (3 by default), MVTec AD bottle and
magnetic tile at 256 px: image AUROC, pixel AUROC, AUPRO, pixel AP, fit time (EfficientAD's
includes distilling its teacher unless the teacher cache already holds it: see
``teacher_seconds``), latency at batch 1 and 8, next to the foundation benchmark's PatchCore and
PaDiM rows (``foundation.json``, seed 0). EfficientAD distils its teacher from the DTD textures
and the training images (``--dtd``, default ``<datasets>/dtd``; part of its method label). Each
run happens in its own subprocess (``benchmarks/common.py``); results are merged into
``benchmarks/results/distillation.json`` after every run (an interrupted benchmark keeps what
finished) and tabulated in ``distillation.md``.

``--compare`` then runs ``flawmap compare`` over every model of the project on these two
categories (this file's records and the other model benchmarks' result files), seeds averaged
per category, into ``benchmarks/results/compare_all/``.

    python benchmarks/distillation.py --datasets ../shared/datasets --threads 2
    python benchmarks/distillation.py --datasets ../shared/datasets --threads 2 --seeds 0 \\
        --models efficientad --categories bottle
    python benchmarks/distillation.py --table-only --compare
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import (
    CATEGORIES,
    ROOT,
    add_run_arguments,
    load_records,
    method_label,
    run_benchmark,
    run_key,
)

MODELS = ("stpm", "reverse_distillation", "efficientad")
#: Result files of every model benchmark (records of the same shape) for ``--compare``.
COMPARED_RESULTS = (
    "foundation.json",
    "simplenet.json",
    "fcdd.json",
    "cse.json",
    "mlff.json",
    "distillation.json",
)
COMPARED_METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "latency_ms")
COLUMNS = [
    ("image_auroc", "image AUROC", "{:.3f}"),
    ("pixel_auroc", "pixel AUROC", "{:.3f}"),
    ("aupro", "AUPRO", "{:.3f}"),
    ("pixel_ap", "pixel AP", "{:.3f}"),
    ("threshold_fpr", "FPR@thr (good test)", "{:.3f}"),
    ("fit_seconds", "fit (s)", "{:.0f}"),
    ("latency_ms", "latency b1 (ms)", "{:.1f}"),
    ("latency_b8_ms", "latency b8 (ms)", "{:.1f}"),
    ("final_train_loss", "final train loss", "{:.4f}"),
]
PREAMBLE = (
    "Mean ± std over seeds, 256 px, each model's CPU default schedule (`PAPER_SCHEDULE` on each "
    "class has the paper's); `tf_efficientnet_lite0` ImageNet weights for the teachers and "
    "encoders. EfficientAD's PDN teacher is distilled from EfficientNet-Lite0 on the DTD "
    "textures and the training images (the paper: WideResNet-101 on ImageNet). PatchCore and "
    "PaDiM rows are the foundation benchmark's (seed 0). Latency: model forward only (no data "
    "loading), median, batch 1 and 8, 2 threads."
)


def compare_all(args: argparse.Namespace) -> None:
    """``flawmap compare`` over every model benchmark's records on bottle and magnetic tile:
    each model at 256 px (FCDD, benchmarked at 224 px only, at that size), methods measured on
    both categories, a texture folder counted as a parameter, seeds averaged per category."""
    results = ROOT / "benchmarks" / "results"
    pooled_runs: dict[tuple[str, str, int], dict] = {}
    for name in COMPARED_RESULTS:
        for record in load_records(results / name):
            if record["category"] not in CATEGORIES:
                continue
            params = {k: v for k, v in (record.get("params") or {}).items() if k != "image_size"}
            if record.get("texture_dir"):
                params["texture_dir"] = Path(record["texture_dir"]).name
            size = int(record.get("image_size") or 256)
            record = {**record, "params": params, "texture_dir": None, "image_size": size}
            # the same run may appear in several files (baselines): keep the first
            pooled_runs.setdefault((*run_key(record), str(size)), record)
    sizes: dict[str, set[int]] = {}
    for record in pooled_runs.values():
        sizes.setdefault(record["model"], set()).add(record["image_size"])
    chosen = [
        r
        for r in pooled_runs.values()
        if r["image_size"] == (256 if 256 in sizes[r["model"]] else min(sizes[r["model"]]))
    ]
    categories: dict[str, set[str]] = {}
    for record in chosen:
        categories.setdefault(method_label(record), set()).add(record["category"])
    records = [r for r in chosen if categories[method_label(r)] == set(CATEGORIES)]
    pooled = results / "compare_all" / "records.json"
    pooled.parent.mkdir(parents=True, exist_ok=True)
    pooled.write_text(json.dumps(records, indent=1) + "\n")
    command = [sys.executable, "-m", "flawmap.cli", "compare", str(pooled), "--average-seeds"]
    for metric in COMPARED_METRICS:
        command += ["--metric", metric]
    command += ["--out", str(pooled.parent), "--quiet"]
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--dtd", default=None, help="EfficientAD's texture pool (<datasets>/dtd)")
    parser.add_argument("--compare", action="store_true", help="then run flawmap compare")
    add_run_arguments(parser)
    parser.set_defaults(image_size=256)
    args = parser.parse_args()
    extra = json.loads(args.params)
    dtd = str(Path(args.dtd) if args.dtd else Path(args.datasets) / "dtd")
    runs = []
    for category in args.categories:
        for model in args.models:
            params = {**extra, "teacher_image_dir": dtd} if model == "efficientad" else extra
            runs += [(model, params, category, seed) for seed in args.seeds]
    baselines = [
        r
        for r in load_records(ROOT / "benchmarks" / "results" / "foundation.json")
        if r["model"] in ("patchcore", "padim") and not r.get("params")
    ]
    run_benchmark("distillation", runs, args, COLUMNS, PREAMBLE, baselines)
    if args.compare:
        compare_all(args)


if __name__ == "__main__":
    main()
