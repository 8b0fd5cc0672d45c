"""``flawmap tune`` on real categories: what each selection criterion chooses, and how well its
ranking of the candidates agrees with the test set's.

For each category a seeded share of every test folder (``--carve``, good and each defect type)
becomes the criterion-(b) validation folder; a derived category whose ``test/`` holds only the
remaining images is built beside it (links, nothing copied into the repository), so the
overlap check of :func:`flawmap.tuning.check_no_overlap` passes and criterion (b) is reported
on the remaining images only. One :func:`flawmap.tuning.tune` run fits every candidate once and
scores it on both validations: (a) the synthetic one from held-out training images, (b) the
carved folder. Every fitted candidate is also predicted on the whole test set (for the report
only: nothing is chosen on it), giving test metrics on all test images (criterion a) and on the
remaining ones (criterion b), and the Spearman correlation between each criterion's validation
ranking and the test ranking (both ranked by the mean of image AUROC, pixel AUROC and AUPRO).

    python benchmarks/tune.py --datasets ../shared/datasets --threads 2 --categories bottle \\
        --max-latency-ms 60
    python benchmarks/tune.py --datasets ../shared/datasets --threads 2 --categories magnetic_tile

Writes ``benchmarks/results/tune.{json,md}`` (a rerun replaces its categories' rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from common import CATEGORIES, parse_study_arguments

#: Candidates the benchmark adds after the default search: the square resize, for comparison.
EXTRA_CANDIDATES = ({"model": "patchcore", "params": {"aspect": "squeeze"}},)


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None for fewer than 3 pairs."""
    if len(x) < 3:
        return None
    from scipy.stats import spearmanr

    value = spearmanr(x, y).statistic
    return None if value is None or not np.isfinite(value) else float(value)


def carve(category: Path, work: Path, share: float, seed: int) -> tuple[Path, Path, list[str]]:
    """``(derived category, validation folder, carved test paths)``: ``share`` of each test
    folder (at least one image each) moves to the validation folder, chosen by ``seed``."""
    derived, val = work / category.name, work / "val"
    (derived / "train").mkdir(parents=True)
    os.symlink((category / "train" / "good").resolve(), derived / "train" / "good")
    rng = np.random.default_rng(seed)
    carved: list[str] = []
    for folder in sorted(p for p in (category / "test").iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        n = max(1, round(share * len(files)))
        chosen = set(rng.choice(len(files), size=n, replace=False).tolist())
        for i, f in enumerate(files):
            kept = i not in chosen
            dest = (derived / "test" if kept else val) / folder.name
            dest.mkdir(parents=True, exist_ok=True)
            mask = category / "ground_truth" / folder.name / f"{f.stem}_mask.png"
            if kept:
                os.symlink(f.resolve(), dest / f.name)
            else:
                shutil.copy(f, dest / f.name)  # a copy: the validation folder is the user's own
                carved.append(str(f.resolve()))
            if mask.is_file():
                gt = (derived if kept else val) / "ground_truth" / folder.name
                gt.mkdir(parents=True, exist_ok=True)
                if kept:
                    os.symlink(mask.resolve(), gt / mask.name)
                else:
                    shutil.copy(mask, gt / mask.name)
    return derived, val, carved


def test_metrics(detector: Any, category: Path, carved: set[str]) -> dict[str, dict[str, Any]]:
    """Metrics of a fitted candidate on the whole test set and on its non-carved part."""
    from flawmap.data import MVTecDataset
    from flawmap.metrics import compute_metrics

    test = MVTecDataset(category, "test", detector.transform)
    pred = detector.predict(test, keep=("label", "mask"))
    labels = pred.targets["label"].astype(np.int64)
    masks = pred.targets["mask"][:, 0] > 0.5
    keep = np.array([str(Path(p).resolve()) not in carved for p in pred.paths])
    out = {}
    for name, sel in (("all", np.ones(len(labels), bool)), ("remaining", keep)):
        m = compute_metrics(labels[sel], pred.scores[sel], masks[sel], pred.maps[sel])
        out[name] = {
            **{k: m[k] for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")},
            "n_images": int(sel.sum()),
            "n_defective": int(labels[sel].sum()),
        }
    return out


def run_category(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from flawmap.tuning import DEFAULT_CANDIDATES, Candidate, objective, tune

    category = Path(args.datasets) / CATEGORIES[name]
    candidates = list(DEFAULT_CANDIDATES) + [
        Candidate(c["model"], dict(c["params"])) for c in EXTRA_CANDIDATES
    ]
    with tempfile.TemporaryDirectory(prefix="flawmap-tune-") as tmp:
        derived, val, carved_list = carve(category, Path(tmp), args.carve, args.seed)
        carved = set(carved_list)
        tests: dict[str, dict[str, Any]] = {}

        def on_candidate(row: Any, detector: Any) -> None:
            tests[row.candidate.label] = test_metrics(detector, category, carved)
            record = {"candidate": row.candidate.label, "test": tests[row.candidate.label]}
            print(json.dumps(record), flush=True)

        result = tune(
            derived,
            candidates=candidates,
            val_dir=val,
            score_synthetic=True,
            budget_seconds=60 * args.budget,
            max_latency_ms=args.max_latency_ms,
            seed=args.seed,
            on_candidate=on_candidate,
        )
    rows = [r.to_json() | {"test": tests.get(r.candidate.label)} for r in result.rows]
    done = [r for r in rows if r["test"] is not None]
    eligible = [
        r for r in done if args.max_latency_ms is None or r["latency_ms"] <= args.max_latency_ms
    ]
    summary: dict[str, Any] = {}
    for criterion, validation, part in (("a", "synthetic", "all"), ("b", "folder", "remaining")):
        scored = [r for r in eligible if r["objective"].get(validation) is not None]
        chosen = max(scored, key=lambda r: r["objective"][validation]) if scored else None
        val_scores = [r["objective"][validation] for r in scored]
        test_scores = [objective(r["test"][part]) for r in scored]
        summary[criterion] = {
            "validation": validation,
            "test_part": part,
            "chosen": None if chosen is None else chosen["label"],
            "chosen_test": None if chosen is None else chosen["test"][part],
            "chosen_latency_ms": None if chosen is None else chosen["latency_ms"],
            "spearman": spearman(val_scores, test_scores),
            "n_ranked": len(scored),
            "oracle": max(scored, key=lambda r: objective(r["test"][part]))["label"]
            if scored
            else None,
        }
    default = next((r for r in done if r["label"] == "patchcore"), None)
    return {
        "category": name,
        "seed": args.seed,
        "carve": args.carve,
        "n_carved": len(carved_list),
        "tune_seconds": result.seconds,
        "n_fit": result.n_fit,
        "threads": args.threads,
        "max_latency_ms": args.max_latency_ms,
        "validations": result.validations,
        "default_patchcore": None if default is None else default["test"],
        "summary": summary,
        "candidates": rows,
    }


def fmt(value: Any, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(records: list[dict[str, Any]]) -> str:
    lines = ["# `flawmap tune` on real categories (`benchmarks/tune.py`)", ""]
    for rec in records:
        lines += [
            f"## {rec['category']}",
            "",
            f"Fitted on {rec['n_fit']} training images; {rec['n_carved']} test images carved "
            f"out for criterion (b) (seed {rec['seed']}, share {rec['carve']}); tuning time "
            f"{rec['tune_seconds'] / 60:.1f} min at {rec['threads']} threads (test predictions "
            "excluded); latency limit "
            f"{'none' if rec['max_latency_ms'] is None else str(rec['max_latency_ms']) + ' ms'}.",
            f"Validation (a): {rec['validations'].get('synthetic')}; "
            f"(b): {rec['validations'].get('folder')}.",
            "",
            "| criterion | chosen | test images | image AUROC | pixel AUROC | AUPRO | "
            "latency (ms) | Spearman vs test | best on test (not selectable) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for key, s in rec["summary"].items():
            t = s["chosen_test"] or {}
            lines.append(
                f"| ({key}) {s['validation']} | {s['chosen']} | {t.get('n_images', '–')} "
                f"({s['test_part']}) | {fmt(t.get('image_auroc'))} | {fmt(t.get('pixel_auroc'))}"
                f" | {fmt(t.get('aupro'))} | {fmt(s['chosen_latency_ms'], '.0f')} | "
                f"{fmt(s['spearman'], '.2f')} (n={s['n_ranked']}) | {s['oracle']} |"
            )
        d = rec["default_patchcore"]
        if d is not None:
            lines.append(
                f"| default PatchCore | patchcore | {d['all']['n_images']} (all) | "
                f"{fmt(d['all']['image_auroc'])} | {fmt(d['all']['pixel_auroc'])} | "
                f"{fmt(d['all']['aupro'])} | – | – | – |"
            )
        lines += [
            "",
            "| candidate | input | val (a) | val (b) | test all: img / pix / AUPRO | "
            "test remaining: img / pix / AUPRO | fit (s) | latency (ms) | status |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rec["candidates"]:
            size = "–" if r["input_size"] is None else "×".join(map(str, r["input_size"]))
            if r["tiles"] and r["tiles"] != [1, 1]:
                size += f" ({r['tiles'][0]}×{r['tiles'][1]} tiles)"
            t = r["test"] or {}

            def trio(part: dict[str, Any] | None) -> str:
                if not part:
                    return "–"
                return " / ".join(fmt(part.get(k)) for k in ("image_auroc", "pixel_auroc", "aupro"))

            lines.append(
                f"| {r['label']} | {size} | {fmt(r['objective'].get('synthetic'))} | "
                f"{fmt(r['objective'].get('folder'))} | {trio(t.get('all'))} | "
                f"{trio(t.get('remaining'))} | {fmt(r['fit_seconds'], '.0f')} | "
                f"{fmt(r['latency_ms'], '.0f')} | {r['status']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    parser.add_argument("--carve", type=float, default=0.2, help="test share for criterion b")
    parser.add_argument("--budget", type=float, default=30.0, help="minutes per category")
    parser.add_argument("--max-latency-ms", type=float, default=None)
    args = parse_study_arguments(parser)
    out = Path(args.out)
    path = out / "tune.json"
    records = json.loads(path.read_text())["records"] if path.is_file() else []
    for name in args.categories:
        record = run_category(args, name)
        records = [r for r in records if r["category"] != name] + [record]
        path.write_text(json.dumps({"records": records}, indent=2) + "\n")
        (out / "tune.md").write_text(markdown(records))
        print(markdown([record]), flush=True)


if __name__ == "__main__":
    main()
