"""Issue 5 benchmark: CSE (3 seeds) next to PatchCore (seed 0), at 224 and 256 px.

MVTec AD bottle and magnetic tile; each (model, resolution, category, seed) runs in its own
subprocess (``benchmarks/common.py``), the resolution passed as the ``image_size`` parameter so
it is part of the method label. CSE runs with its defaults, as a CLI user gets them (texture
defects from procedural textures); a texture folder is passed only through ``--params``
(e.g. ``'{"texture_dir": "../shared/datasets/dtd"}'``) and is then part of the label. Besides
the accuracy metrics each record has the fit time, the model's latency and throughput at batch
1 and 8 (forward only, median), and the backbone's own batch-1 forward time, for the issue's target
"CSE latency <= 1.3 x backbone forward". Results go to ``benchmarks/results/cse.json`` and
``cse.md``.

    python benchmarks/cse.py --datasets ../shared/datasets --threads 2
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from common import CATEGORIES, Run, add_run_arguments, run_benchmark

SIZES = (224, 256)
COLUMNS = [
    ("image_auroc", "image AUROC", "{:.3f}"),
    ("pixel_auroc", "pixel AUROC", "{:.3f}"),
    ("aupro", "AUPRO", "{:.3f}"),
    ("threshold_fpr", "FPR@thr (good test)", "{:.3f}"),
    ("threshold_tpr", "TPR@thr (defective test)", "{:.3f}"),
    ("fit_seconds", "fit (s)", "{:.0f}"),
    ("latency_ms", "latency b1 (ms)", "{:.1f}"),
    ("latency_b8_ms", "latency b8 (ms)", "{:.1f}"),
    ("throughput_b1_ips", "throughput b1 (img/s)", "{:.1f}"),
    ("throughput_b8_ips", "throughput b8 (img/s)", "{:.1f}"),
    ("backbone_latency_ms", "backbone b1 (ms)", "{:.1f}"),
    ("latency_over_backbone", "latency / backbone", "{:.2f}"),
]
PREAMBLE = (
    "Mean ± std over seeds (CSE: 3 seeds; PatchCore: seed 0, deterministic fit). CSE with its "
    "CPU default schedule (see `CSE.epochs`), texture defects from the default procedural "
    "source unless the label names a `texture_dir`; the image score is the "
    "paper's mean distance. Latency/throughput: model forward only (no data loading), median, "
    "batch 1 and 8; backbone b1: the model's own feature extractor alone, batch 1; target "
    "latency / backbone <= 1.3. FPR/TPR@thr: share of good / defective test images at or "
    "above the threshold learned on held-out *training* images."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--no-patchcore", action="store_true", help="skip the PatchCore baseline runs"
    )
    add_run_arguments(parser)
    args = parser.parse_args()
    extra: dict[str, Any] = json.loads(args.params)  # extra CSE parameters, e.g. epochs
    runs: list[Run] = []
    for category in args.categories:
        for size in args.sizes:
            runs += [("cse", {**extra, "image_size": size}, category, s) for s in args.seeds]
            if not args.no_patchcore:
                runs.append(("patchcore", {"image_size": size}, category, 0))
    run_benchmark("cse", runs, args, COLUMNS, PREAMBLE)


if __name__ == "__main__":
    main()
