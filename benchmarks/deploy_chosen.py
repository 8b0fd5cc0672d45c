"""The configuration ``flawmap tune`` chose, fitted on all training images, as it would ship:
torch eager, its OpenVINO fp32 export and its OpenVINO bf16 export.

For each variant: accuracy on the whole test set (``flawmap.evaluation.evaluate``) and the
latency of every test image at batch size 1 (from a pre-processed image to score + map; median
of 5 after one warm-up per image), reported as the median and 95th percentile over the images.
The variants run one after the other on a quiet machine (``--threads``).

    python benchmarks/deploy_chosen.py --datasets ../shared/datasets --threads 2 \\
        --category bottle --model patchcore --params '{"tiling": "auto", "coreset_ratio": 0.01}'

Writes ``benchmarks/results/deploy_chosen.{json,md}`` (rows replaced per category).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common import CATEGORIES, parse_study_arguments

VARIANTS = (
    ("torch", None, None),
    ("openvino fp32", "openvino", "fp32"),
    ("openvino bf16", "openvino", "bf16"),
)


def per_image_ms(predict: Callable[[np.ndarray], object], images: list[np.ndarray]) -> list[float]:
    """Median ms of 5 calls of ``predict`` on each image (batch 1), after one warm-up call."""
    out = []
    for x in images:
        predict(x)
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            predict(x)
            runs.append(1000 * (time.perf_counter() - start))
        out.append(statistics.median(runs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", default="bottle", choices=CATEGORIES)
    parser.add_argument("--model", default="patchcore")
    parser.add_argument("--params", default='{"tiling": "auto", "coreset_ratio": 0.01}')
    args = parse_study_arguments(parser)

    import torch

    from flawmap.data import MVTecDataset
    from flawmap.evaluation import evaluate
    from flawmap.export import export_model
    from flawmap.models import create_model
    from flawmap.models.exported import load_any

    root = Path(args.datasets) / CATEGORIES[args.category]
    params = json.loads(args.params)
    detector = create_model(args.model, seed=args.seed, **params)
    detector.fit(MVTecDataset(root, "train"))
    test = MVTecDataset(root, "test", detector.transform)
    images = [test[i]["image"][None] for i in range(len(test))]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="flawmap-deploy-") as tmp:
        for name, fmt, precision in VARIANTS:
            if fmt is None:
                variant: Any = detector
                module = detector.module

                def predict(x: np.ndarray, module: Any = module) -> object:
                    with torch.inference_mode():
                        return module(torch.from_numpy(x))
            else:
                folder = export_model(
                    detector, Path(tmp) / name.replace(" ", "_"), format=fmt, precision=precision
                )
                variant = load_any(folder, threads=args.threads)
                runtime = variant.runtime

                def predict(x: np.ndarray, runtime: Any = runtime) -> object:
                    return runtime.predict(x)

            result = evaluate(variant, test, latency_runs=0)
            times = per_image_ms(predict, [x.numpy() for x in images])
            rows.append(
                {
                    "variant": name,
                    **{k: result.metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro")},
                    "latency_median_ms": float(np.median(times)),
                    "latency_p95_ms": float(np.percentile(times, 95)),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    record = {
        "category": args.category,
        "model": args.model,
        "params": params,
        "seed": args.seed,
        "threads": args.threads,
        "input_size": list(detector.geometry_.size),
        "tiles": list(detector.geometry_.tiles),
        "n_train": detector.n_train_,
        "n_test": len(test),
        "fit_seconds": detector.train_seconds_,
        "variants": rows,
    }
    out = Path(args.out)
    path = out / "deploy_chosen.json"
    records = json.loads(path.read_text())["records"] if path.is_file() else []
    records = [r for r in records if r["category"] != args.category] + [record]
    path.write_text(json.dumps({"records": records}, indent=2) + "\n")
    lines = [
        "# The tuned configuration as shipped (`benchmarks/deploy_chosen.py`)",
        "",
        "| category | configuration | variant | image AUROC | pixel AUROC | AUPRO | "
        "latency median (ms) | latency p95 (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        label = " ".join([r["model"], *(f"{k}={v}" for k, v in r["params"].items())])
        for v in r["variants"]:
            lines.append(
                f"| {r['category']} | {label} | {v['variant']} | {v['image_auroc']:.3f} | "
                f"{v['pixel_auroc']:.3f} | {v['aupro']:.3f} | {v['latency_median_ms']:.1f} | "
                f"{v['latency_p95_ms']:.1f} |"
            )
    (out / "deploy_chosen.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
