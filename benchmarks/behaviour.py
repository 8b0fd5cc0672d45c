"""Behaviour snapshot: every registered model's test scores and maps on one category, to compare.

A refactor must not change what models compute. ``record`` fits every registered model with its
defaults (seed 0, default schedule; texture-based models get the DTD folder explicitly) on
``train/good`` and writes, per model, the test image scores, a SHA-256 of the float32 maps and
the image/pixel AUROC and AUPRO to a JSON file (each model in its own subprocess).
``compare`` reads two snapshots and writes a Markdown table: bit-identical scores and maps, or
the largest score difference and the metrics side by side::

    python benchmarks/behaviour.py record --out benchmarks/results/behaviour_before.json
    python benchmarks/behaviour.py record --out benchmarks/results/behaviour_after.json
    python benchmarks/behaviour.py compare benchmarks/results/behaviour_before.json \
        benchmarks/results/behaviour_after.json --out benchmarks/results/behaviour.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import subprocess_result

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = ROOT.parent / "shared" / "datasets"
CATEGORY = "mvtec_ad/bottle"


def snapshot_model(model: str, datasets: Path, threads: int) -> dict[str, Any]:
    """Fit ``model`` with its defaults (seed 0) and record its test scores, map hash, metrics."""
    import numpy as np
    import torch

    from flawmap.data import MVTecDataset
    from flawmap.metrics import compute_metrics
    from flawmap.models import create_model, model_class

    torch.set_num_threads(threads)
    params: dict[str, Any] = {"seed": 0}
    dtd = datasets / "dtd"
    if "texture_dir" in model_class(model).param_types() and dtd.is_dir():
        params["texture_dir"] = str(dtd)
    detector = create_model(model, **params)
    root = datasets / CATEGORY
    train = MVTecDataset(root, "train", transform=detector.transform)
    test = MVTecDataset(root, "test", transform=detector.transform)
    start = time.perf_counter()
    detector.fit(train)
    fit_seconds = time.perf_counter() - start
    pred = detector.predict(test, keep=("label", "mask"))
    labels = pred.targets["label"].astype(np.int64)
    masks = pred.targets["mask"][:, 0] > 0.5
    metrics = compute_metrics(labels, pred.scores, masks, pred.maps)
    maps = np.ascontiguousarray(pred.maps, dtype=np.float32)
    return {
        "model": model,
        "category": CATEGORY,
        "params": {k: v for k, v in params.items() if k != "texture_dir"},
        "texture_dir": "dtd" if "texture_dir" in params else None,
        "threads": threads,
        "fit_seconds": fit_seconds,
        "threshold": pred.threshold,
        "scores": [float(s) for s in pred.scores],
        "maps_sha256": hashlib.sha256(maps.tobytes()).hexdigest(),
        "maps_shape": list(maps.shape),
        "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics["pixel_auroc"],
        "aupro": metrics["aupro"],
    }


def record(args: argparse.Namespace) -> None:
    from flawmap.models import list_models

    out = Path(args.out)
    rows: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    for model in args.models or list_models():
        print(f"== {model}", flush=True)
        cmd = [sys.executable, __file__, "_one", model, "--datasets", str(args.datasets)]
        cmd += ["--threads", str(args.threads)]
        rows[model] = subprocess_result(cmd, args.threads, model)
        rows[model]["git_head"] = _git_head()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        tmp.replace(out)
        r = rows[model]
        print(f"   {r['image_auroc']:.4f} {r['pixel_auroc']:.4f} {r['aupro']:.4f}", flush=True)


def _git_head() -> str:
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return proc.stdout.strip()


def compare(args: argparse.Namespace) -> None:
    before = json.loads(Path(args.before).read_text())
    after = json.loads(Path(args.after).read_text())
    header = (
        "| model | scores | maps | max abs score diff | image AUROC before → after "
        "| pixel AUROC before → after | AUPRO before → after | fit (s) before → after |"
    )
    lines = [header, "|" + "---|" * 8]
    for model in sorted(set(before) | set(after)):
        if model not in before or model not in after:
            where = "before" if model not in before else "after"
            lines.append(f"| {model} | not in the {where} snapshot |" + " |" * 6)
            continue
        b, a = before[model], after[model]
        same_scores = b["scores"] == a["scores"]
        same_maps = b["maps_sha256"] == a["maps_sha256"]
        diff = max(abs(x - y) for x, y in zip(b["scores"], a["scores"], strict=True))
        cells = [
            model,
            "identical" if same_scores else "differ",
            "identical" if same_maps else "differ",
            f"{diff:.2e}",
            *(f"{b[k]:.3f} → {a[k]:.3f}" for k in ("image_auroc", "pixel_auroc", "aupro")),
            f"{b['fit_seconds']:.0f} → {a['fit_seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    command = "python benchmarks/behaviour.py " + " ".join(sys.argv[1:])
    text = f"Command: `{command}`\n\n" + "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("record", help="fit every model and write a snapshot JSON")
    p.add_argument("--out", required=True)
    p.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    p.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("_one", help=argparse.SUPPRESS)
    p.add_argument("model")
    p.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("compare", help="compare two snapshots")
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--out", default="")
    args = parser.parse_args()
    if args.command == "record":
        record(args)
    elif args.command == "_one":
        result = snapshot_model(args.model, args.datasets, args.threads)
        print("RESULT " + json.dumps(result), flush=True)
    else:
        compare(args)


if __name__ == "__main__":
    main()
