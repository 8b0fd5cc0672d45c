"""Choose SimpleNet's noise scale on training data only (never the test split).

For each category, 20 % of train/good is held out; the model is fitted on the other 80 % for
every candidate ``noise_sigma``; it is scored on the held-out good images plus synthetically
damaged copies of them (:class:`flawmap.evaluation.synthetic.SyntheticValidationSet`, DTD
textures + structural + blur defects). The selected value maximises the mean over categories
of (validation image AUROC + validation pixel AUROC) / 2; ties go to the smaller sigma.

    python benchmarks/simplenet_noise_selection.py --datasets ../shared/datasets --threads 2

Writes ``benchmarks/results/simplenet_noise_selection.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = {"bottle": "mvtec_ad/bottle", "magnetic_tile": "magnetic_tile"}


def objective(record: dict) -> float:
    return (record["val_image_auroc"] + record["val_pixel_auroc"]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--textures", default=None, help="DTD-style folder (default DATASETS/dtd)")
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    parser.add_argument("--model", default="simplenet")
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.015, 0.05, 0.1, 0.2, 0.4])
    parser.add_argument("--epochs", type=int, default=None, help="default: the model's default")
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
    textures = args.textures or str(Path(args.datasets) / "dtd")
    synthesizer = DefectSynthesizer(texture_dir=textures)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {} if args.epochs is None else {"epochs": args.epochs}
    records = []
    for category in args.categories:
        probe = create_model(args.model, seed=args.seed, **extra)
        train = MVTecDataset(Path(args.datasets) / CATEGORIES[category], "train", probe.transform)
        fit_idx, val_idx = split_holdout(len(train), args.val_fraction, args.seed)
        validation = SyntheticValidationSet(
            Subset(train, val_idx.tolist()), synthesizer, seed=args.seed
        )
        for sigma in args.sigmas:
            detector = create_model(args.model, seed=args.seed, noise_sigma=sigma, **extra)
            start = time.perf_counter()
            detector.fit(Subset(train, fit_idx.tolist()))
            fit_seconds = time.perf_counter() - start
            metrics = validate(detector, validation)
            record = {
                "model": args.model,
                "category": category,
                "noise_sigma": sigma,
                "epochs": detector.epochs,
                "seed": args.seed,
                "n_fit": len(fit_idx),
                "n_validation_good": len(val_idx),
                "final_train_loss": detector.history_.epoch_losses[-1],
                "fit_seconds": fit_seconds,
                **{f"val_{k}": v for k, v in metrics.items()},
            }
            records.append(record)
            print(json.dumps(record), flush=True)
    name = f"{args.model}_noise_selection"
    previous = out / f"{name}.json"
    if previous.is_file():  # a rerun with other sigmas adds to (or replaces) earlier rows
        key = ("category", "noise_sigma", "epochs", "seed")
        fresh = {tuple(r[k] for k in key) for r in records}
        old = json.loads(previous.read_text())["records"]
        records = [r for r in old if tuple(r[k] for k in key) not in fresh] + records
        records.sort(key=lambda r: (r["category"], r["noise_sigma"]))
    by_sigma: dict[float, list[float]] = {}
    for r in records:
        by_sigma.setdefault(r["noise_sigma"], []).append(objective(r))
    means = {s: sum(v) / len(v) for s, v in by_sigma.items()}
    best = max(sorted(means), key=lambda s: (means[s], -s))
    summary = {"selected_noise_sigma": best, "objective_by_sigma": means, "records": records}
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# {args.model}: noise_sigma chosen on training data only",
        "",
        "Validation = 20 % held-out train/good images + synthetic-defect copies of them.",
        "",
        "| category | noise_sigma | val image AUROC | val pixel AUROC | final loss | fit (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['category']} | {r['noise_sigma']} | {r['val_image_auroc']:.3f} | "
            f"{r['val_pixel_auroc']:.3f} | {r['final_train_loss']:.3f} | {r['fit_seconds']:.0f} |"
        )
    lines += ["", f"Selected: noise_sigma = {best} (mean objective {means[best]:.4f})", ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    print(f"selected noise_sigma = {best}")


if __name__ == "__main__":
    main()
