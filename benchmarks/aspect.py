"""Square resize against the aspect-keeping pixel budget, on real parts of other shapes.

Categories:

- ``magnetic_tile`` as it is (crops of about 100 to 630 px a side, typical width / height 0.87);
- ``bottle_band``: a 1:2.5 horizontal band through the centre of every MVTec bottle image
  (512 x 204 px, like a line-scan or elongated part), made in a temporary folder from
  ``DATASETS/mvtec_ad/bottle``: the same crop of every train, test and mask image; defective
  test images whose defect lies outside the band are left out (they would be defective
  images without a defect pixel).

Every run fits on all of ``train/good`` and is evaluated on all of ``test/`` (no selection is
made here: both modes are reported). Pixel metrics are computed at each model's input size.

    python benchmarks/aspect.py --datasets ../shared/datasets --threads 2

Writes ``benchmarks/results/aspect.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common import parse_study_arguments

BAND = 2.5
"""Width / height of the bottle band."""


def bottle_band(source: Path, target: Path) -> Path:
    """Write the ``bottle_band`` category (see the module docstring) under ``target``."""
    out = target / "bottle_band"
    for image in sorted(source.rglob("*.png")):
        rel = image.relative_to(source)
        if rel.parts[0] not in ("train", "test", "ground_truth"):
            continue
        im = Image.open(image)
        w, h = im.size
        band = round(w / BAND)
        top = (h - band) // 2
        crop = im.crop((0, top, w, top + band))
        if rel.parts[0] == "test" and rel.parts[1] != "good":
            mask = source / "ground_truth" / rel.parts[1] / f"{image.stem}_mask.png"
            if not np.asarray(Image.open(mask).crop((0, top, w, top + band))).any():
                continue
        if rel.parts[0] == "ground_truth":
            tested = source / "test" / rel.parts[1] / f"{image.stem.removesuffix('_mask')}.png"
            mask_band = np.asarray(crop)
            if not mask_band.any() or not tested.is_file():
                continue
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        crop.save(dest)
    return out


def run(category: Path, model: str, aspect: str, seed: int) -> dict[str, Any]:
    from flawmap.data import MVTecDataset
    from flawmap.evaluation import evaluate
    from flawmap.models import create_model

    detector = create_model(model, aspect=aspect, seed=seed)
    detector.fit(MVTecDataset(category, "train"))
    result = evaluate(detector, MVTecDataset(category, "test", detector.transform), latency_runs=0)
    return {
        "category": category.name,
        "model": model,
        "aspect": aspect,
        "seed": seed,
        "input_size": list(detector.geometry_.size),
        "n_test": result.info["n_test"],
        "n_defective": result.info["n_defective"],
        "train_seconds": detector.train_seconds_,
        **{k: result.metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")},
    }


def markdown(records: list[dict[str, Any]]) -> str:
    lines = [
        "# Square resize vs aspect-keeping pixel budget (`benchmarks/aspect.py`)",
        "",
        "| category | model | aspect | input (H×W) | image AUROC | pixel AUROC | AUPRO | "
        "pixel AP | test images (defective) | fit (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['category']} | {r['model']} | {r['aspect']} | "
            f"{r['input_size'][0]}×{r['input_size'][1]} | {r['image_auroc']:.3f} | "
            f"{r['pixel_auroc']:.3f} | {r['aupro']:.3f} | {r['pixel_ap']:.3f} | "
            f"{r['n_test']} ({r['n_defective']}) | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="+", default=["bottle_band", "magnetic_tile"])
    parser.add_argument("--models", nargs="+", default=["patchcore", "padim"])
    args = parse_study_arguments(parser)
    out = Path(args.out)
    path = out / "aspect.json"
    records = json.loads(path.read_text())["records"] if path.is_file() else []
    with tempfile.TemporaryDirectory(prefix="flawmap-aspect-") as tmp:
        roots = {"magnetic_tile": Path(args.datasets) / "magnetic_tile"}
        if "bottle_band" in args.categories:
            roots["bottle_band"] = bottle_band(
                Path(args.datasets) / "mvtec_ad" / "bottle", Path(tmp)
            )
        for name in args.categories:
            for model in args.models:
                for aspect in ("squeeze", "keep"):
                    record = run(roots[name], model, aspect, args.seed)
                    print(json.dumps(record), flush=True)
                    key = (name, model, aspect, args.seed)
                    records = [
                        r
                        for r in records
                        if (r["category"], r["model"], r["aspect"], r["seed"]) != key
                    ] + [record]
                    out.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps({"records": records}, indent=2) + "\n")
                    (out / "aspect.md").write_text(markdown(records))
    print(markdown(records))


if __name__ == "__main__":
    main()
