"""Choose one model parameter on training data only (never the test split).

For each category, ``--val-fraction`` of train/good is held out; the model is fitted on the rest
for every candidate value of ``--param``; it is scored on the held-out good images plus one
synthetically damaged copy of each (:class:`flawmap.evaluation.synthetic.SyntheticValidationSet`).
The validation defects come from ``--validation-defects`` (recorded in every row):

- ``dtd`` (default, and what every selection in BENCHMARKS.md used): texture (``--textures``,
  default ``DATASETS/dtd``), structural and blur defects; it favours models trained on DTD
  textures, so compare texture sources with ``cutpaste`` or ``structural+blur``;
- ``structural+blur``: MemSeg-style shuffled patches and Gaussian blur through Perlin masks;
- ``cutpaste``: a patch of the image pasted elsewhere (CutPaste);
- ``procedural``: procedural texture, structural and blur defects.

The selected value maximises the mean over categories of (validation image AUROC + validation
pixel AUROC) / 2; ties go to the first value given.

    python benchmarks/select_on_training.py --model simplenet --param noise_sigma \
        --values 0.015 0.05 0.1 0.2 0.4 0.8 1.6 --datasets ../shared/datasets --threads 2

Writes ``benchmarks/results/<model>_<param>_selection.{json,md}``; a rerun with other values
adds to (or replaces) the earlier rows, and the selection is recomputed over all of them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common import CATEGORIES, DEFAULT_DATASETS, ROOT

VALIDATION_DEFECTS = ("structural+blur", "cutpaste", "dtd", "procedural")
"""The synthetic validation defect sources ``--validation-defects`` accepts."""


def validation_defects(name: str, datasets: str, textures: str | None = None) -> Any:
    """The :class:`flawmap.synth.DefectGenerator` of validation source ``name``."""
    from flawmap.synth import CutPaste, DefectSynthesizer

    if name == "structural+blur":
        return DefectSynthesizer(kinds=("structural", "blur"))
    if name == "cutpaste":
        return CutPaste()
    if name == "dtd":
        return DefectSynthesizer(texture_dir=textures or Path(datasets) / "dtd")
    if name == "procedural":
        return DefectSynthesizer()
    raise SystemExit(f"unknown validation defects {name!r}; choose from {VALIDATION_DEFECTS}")


def add_validation_arguments(parser: argparse.ArgumentParser) -> None:
    """The data, split and validation-defect options shared with ``texture_source.py``."""
    parser.add_argument("--datasets", default=str(DEFAULT_DATASETS))
    parser.add_argument(
        "--validation-defects",
        default="dtd",
        choices=VALIDATION_DEFECTS,
        help="synthetic defects of the validation images (recorded in every row)",
    )
    parser.add_argument("--textures", default=None, help="DTD-style folder (default DATASETS/dtd)")
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))


def objective(record: dict[str, Any]) -> float:
    return (record["val_image_auroc"] + record["val_pixel_auroc"]) / 2


def parse_value(text: str) -> Any:
    """'0.8' -> 0.8, '40' -> 40, 'true' -> True, anything else stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--param", required=True, help="the constructor parameter to choose")
    parser.add_argument("--values", nargs="+", type=parse_value, required=True)
    parser.add_argument("--params", default="{}", help="JSON dict of fixed model parameters")
    add_validation_arguments(parser)
    args = parser.parse_args()

    import torch
    from torch.utils.data import Subset

    from flawmap.data import MVTecDataset, split_holdout
    from flawmap.evaluation.synthetic import SyntheticValidationSet, validate
    from flawmap.models import create_model

    torch.set_num_threads(args.threads)
    synthesizer = validation_defects(args.validation_defects, args.datasets, args.textures)
    fixed = json.loads(args.params)
    records = []
    for category in args.categories:
        probe = create_model(args.model, seed=args.seed, **fixed)
        train = MVTecDataset(Path(args.datasets) / CATEGORIES[category], "train", probe.transform)
        fit_idx, val_idx = split_holdout(len(train), args.val_fraction, args.seed)
        validation = SyntheticValidationSet(
            Subset(train, val_idx.tolist()), synthesizer, seed=args.seed
        )
        for value in args.values:
            detector = create_model(args.model, seed=args.seed, **{**fixed, args.param: value})
            start = time.perf_counter()
            detector.fit(Subset(train, fit_idx.tolist()))
            fit_seconds = time.perf_counter() - start
            metrics = validate(detector, validation)
            history = getattr(detector, "history_", None)
            record = {
                "model": args.model,
                "category": category,
                args.param: value,
                "params": detector.get_params(),
                "seed": args.seed,
                "validation_defects": args.validation_defects,
                "n_fit": len(fit_idx),
                "n_validation_good": len(val_idx),
                "final_train_loss": history.epoch_losses[-1] if history else None,
                "fit_seconds": fit_seconds,
                **{f"val_{k}": v for k, v in metrics.items()},
            }
            records.append(record)
            print(json.dumps(record), flush=True)
    write_selection(Path(args.out), args.model, args.param, records)


def _source(record: dict[str, Any]) -> str:
    """The validation defects of a row (rows written before the option was added used DTD)."""
    return record.get("validation_defects", "dtd")


def _row_key(record: dict[str, Any], param: str) -> tuple[str, str, int, str]:
    return (record["category"], json.dumps(record[param]), record["seed"], _source(record))


def write_selection(
    out: Path, model: str, param: str, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Merge with earlier rows, pick the best value, write ``<model>_<param>_selection.*``."""
    name = f"{model}_{param}_selection"
    out.mkdir(parents=True, exist_ok=True)
    previous = out / f"{name}.json"
    order = [r[param] for r in records]
    if previous.is_file():
        fresh = {_row_key(r, param) for r in records}
        old = json.loads(previous.read_text())["records"]
        kept = [r for r in old if _row_key(r, param) not in fresh]
        sources = {_source(r) for r in records}
        if any(_source(r) not in sources for r in kept):
            raise SystemExit(
                f"{previous} holds rows validated on other defects than {sorted(sources)}; "
                "write to another --out folder instead of mixing validation sources"
            )
        records = kept + records
        order = [r[param] for r in kept] + order
    values = list(dict.fromkeys(json.dumps(v) for v in order))
    by_value = {v: [objective(r) for r in records if json.dumps(r[param]) == v] for v in values}
    means = {v: sum(s) / len(s) for v, s in by_value.items()}
    best = max(values, key=lambda v: means[v])  # first of equals wins
    sources = sorted({_source(r) for r in records})
    summary = {
        "param": param,
        "validation_defects": sources[0] if len(sources) == 1 else sources,
        "selected": json.loads(best),
        "objective_by_value": means,
        "records": records,
    }
    previous.write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# {model}: `{param}` chosen on training data only",
        "",
        "Validation = held-out train/good images + one synthetic-defect copy of each "
        f"(validation defects: {', '.join(sources)});",
        "objective = mean over categories of (image AUROC + pixel AUROC) / 2.",
        "",
        f"| category | {param} | val image AUROC | val pixel AUROC | final loss | fit (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["category"], values.index(json.dumps(r[param])))):
        loss = "–" if r.get("final_train_loss") is None else f"{r['final_train_loss']:.3f}"
        lines.append(
            f"| {r['category']} | {r[param]} | {r['val_image_auroc']:.3f} | "
            f"{r['val_pixel_auroc']:.3f} | {loss} | {r['fit_seconds']:.0f} |"
        )
    lines += ["", "| value | objective |", "|---|---|"]
    lines += [f"| {json.loads(v)} | {means[v]:.4f} |" for v in values]
    lines += ["", f"Selected: {param} = {json.loads(best)} (objective {means[best]:.4f})", ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    print(f"selected {param} = {json.loads(best)}")
    return summary


if __name__ == "__main__":
    main()
