"""Choose one model parameter on training data only (never the test split).

For each category, ``--val-fraction`` of train/good is held out; the model is fitted on the rest
for every candidate value of ``--param``; it is scored on the held-out good images plus one
synthetically damaged copy of each (:class:`flawmap.evaluation.synthetic.SyntheticValidationSet`:
DTD texture, structural and blur defects). The selected value maximises the mean over categories
of (validation image AUROC + validation pixel AUROC) / 2; ties go to the first value given.

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
    parser.add_argument("--datasets", default=str(DEFAULT_DATASETS))
    parser.add_argument("--textures", default=None, help="DTD-style folder (default DATASETS/dtd)")
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    import torch
    from torch.utils.data import Subset

    from flawmap.data import MVTecDataset, split_holdout
    from flawmap.evaluation.synthetic import SyntheticValidationSet, validate
    from flawmap.models import create_model
    from flawmap.synth import DefectSynthesizer

    torch.set_num_threads(args.threads)
    synthesizer = DefectSynthesizer(texture_dir=args.textures or Path(args.datasets) / "dtd")
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
                "n_fit": len(fit_idx),
                "n_validation_good": len(val_idx),
                "final_train_loss": history.epoch_losses[-1] if history else None,
                "fit_seconds": fit_seconds,
                **{f"val_{k}": v for k, v in metrics.items()},
            }
            records.append(record)
            print(json.dumps(record), flush=True)
    write_selection(Path(args.out), args.model, args.param, records)


def write_selection(
    out: Path, model: str, param: str, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Merge with earlier rows, pick the best value, write ``<model>_<param>_selection.*``."""
    name = f"{model}_{param}_selection"
    out.mkdir(parents=True, exist_ok=True)
    previous = out / f"{name}.json"
    order = [r[param] for r in records]
    if previous.is_file():
        fresh = {(r["category"], json.dumps(r[param]), r["seed"]) for r in records}
        old = json.loads(previous.read_text())["records"]
        kept = [r for r in old if (r["category"], json.dumps(r[param]), r["seed"]) not in fresh]
        records = kept + records
        order = [r[param] for r in kept] + order
    values = list(dict.fromkeys(json.dumps(v) for v in order))
    by_value = {v: [objective(r) for r in records if json.dumps(r[param]) == v] for v in values}
    means = {v: sum(s) / len(s) for v, s in by_value.items()}
    best = max(values, key=lambda v: means[v])  # first of equals wins
    summary = {
        "param": param,
        "selected": json.loads(best),
        "objective_by_value": means,
        "records": records,
    }
    previous.write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# {model}: `{param}` chosen on training data only",
        "",
        "Validation = held-out train/good images + one synthetic-defect copy of each;",
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
