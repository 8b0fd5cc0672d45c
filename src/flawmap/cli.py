"""The ``flawmap`` command: thin, it only parses arguments and calls the library."""

from __future__ import annotations

import argparse
import ast
import csv
import json
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flawmap.errors import ConfigError, FlawmapError


def parse_param(text: str, types_by_name: dict[str, Any]) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value converted to the parameter's annotated type)."""
    if "=" not in text:
        raise ConfigError(f"--param expects KEY=VALUE, got {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    if key not in types_by_name:
        raise ConfigError(
            f"unknown parameter {key!r}; this model's parameters: "
            f"{', '.join(sorted(types_by_name))}"
        )
    return key, _convert(raw, types_by_name[key], key)


def _convert(raw: str, annotation: Any, key: str) -> Any:
    if raw.lower() in ("none", "null"):
        return None
    options = _flatten(annotation)
    for kind in (bool, int, float):
        if kind in options:
            try:
                if kind is bool:
                    if raw.lower() in ("true", "1", "yes"):
                        return True
                    if raw.lower() in ("false", "0", "no"):
                        return False
                    continue
                return kind(raw)
            except ValueError:
                continue
    if tuple in options or typing.get_origin(annotation) in (tuple, list):
        try:
            value = ast.literal_eval(raw if raw.startswith(("(", "[")) else f"({raw},)")
            return tuple(value)
        except (ValueError, SyntaxError):
            pass
    if str in options or any(typing.get_origin(o) is typing.Literal for o in options):
        return raw
    raise ConfigError(f"cannot read {raw!r} as a value of {key} ({annotation})")


def _flatten(annotation: Any) -> set[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: set[Any] = set()
        for arg in typing.get_args(annotation):
            out |= _flatten(arg)
        return out
    if origin is typing.Literal:
        return {annotation}
    if origin in (tuple, list):
        return {tuple}
    return {annotation}


def _image_size(text: str) -> int | tuple[int, int]:
    if "x" in text:
        h, w = text.lower().split("x", 1)
        return int(h), int(w)
    return int(text)


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


# ------------------------------------------------------------------------------ commands
def cmd_models(args: argparse.Namespace) -> int:
    from flawmap.backbones import DEFAULT_BACKBONE, list_backbones
    from flawmap.models import list_models, model_class

    print("models:")
    for name in list_models():
        doc = (model_class(name).__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<12} {doc}")
    print("backbones:")
    for name in list_backbones():
        print(f"  {name}{' (default)' if name == DEFAULT_BACKBONE else ''}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from flawmap.data import MVTecDataset
    from flawmap.models import create_model, model_class

    _set_threads(args.threads)
    cls = model_class(args.model)
    params: dict[str, Any] = dict(parse_param(p, cls.param_types()) for p in args.param)
    for key, value in (
        ("backbone", args.backbone),
        ("image_size", args.image_size),
        ("seed", args.seed),
        ("weights", args.weights),
    ):
        if value is not None:
            params[key] = value
    detector = create_model(args.model, **params)
    train = MVTecDataset(args.data, "train", transform=detector.transform)
    print(f"fitting {args.model} on {len(train)} good images of {train.category} ...")
    detector.fit(train, progress=not args.quiet)
    out = detector.save(args.out)
    print(
        f"fitted in {detector.train_seconds_:.1f} s; threshold {detector.threshold}; saved to {out}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from flawmap.data import MVTecDataset
    from flawmap.evaluation import evaluate, write_evaluation
    from flawmap.models import load_model
    from flawmap.report import markdown

    _set_threads(args.threads)
    detector = load_model(args.model_dir)
    test = MVTecDataset(args.data, "test", transform=detector.transform)
    result = evaluate(detector, test, progress=not args.quiet, latency_runs=args.latency_runs)
    out = write_evaluation(result, detector, args.out, title=f"{detector.name} on {test.category}")
    rows = [{"metric": markdown.metric_label(k), "value": v} for k, v in result.metrics.items()]
    print(markdown.metrics_table(rows))
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from torch.utils.data import Subset

    from flawmap.data import PathsDataset, load_image
    from flawmap.evaluation import display_range
    from flawmap.models import load_model
    from flawmap.report import heatmap_overlay, save_float_tiff, save_png

    _set_threads(args.threads)
    detector = load_model(args.model_dir)
    if args.threshold is not None:
        detector.set_threshold(args.threshold)
    dataset = PathsDataset(args.paths, transform=detector.transform)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    roots = [Path(p).resolve() for p in args.paths]
    rows: list[dict[str, Any]] = []
    chunk = 64
    vmin = vmax = None
    for start in range(0, len(dataset), chunk):
        part = Subset(dataset, range(start, min(start + chunk, len(dataset))))
        pred = detector.predict(part, progress=not args.quiet)
        if vmin is None:
            vmin, vmax = display_range(pred)
        for i, path_text in enumerate(pred.paths):
            path = Path(path_text)
            relative = _relative(path, roots)
            image = load_image(path)
            amap = _resize_map(pred.maps[i], image.size)
            overlay = heatmap_overlay(np.asarray(image), amap, vmin, vmax, threshold=pred.threshold)
            save_png(overlay, out / "overlays" / relative.with_suffix(".png"))
            if args.save_maps:
                save_float_tiff(amap, out / _map_path(path, roots, relative))
            rows.append(
                {
                    "path": str(path),
                    "score": float(pred.scores[i]),
                    "label": None
                    if pred.labels is None
                    else ("defective" if pred.labels[i] else "good"),
                    "threshold": pred.threshold,
                }
            )
    with (out / "scores.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "score", "label", "threshold"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "scores.json").write_text(json.dumps(rows, indent=2) + "\n")
    flagged = sum(r["label"] == "defective" for r in rows)
    print(f"{len(rows)} images scored, {flagged} flagged defective; results in {out}")
    return 0


def _resize_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float map -> (H, W) at the original image's size (PIL size = (W, H))."""
    from PIL import Image

    return np.asarray(
        Image.fromarray(amap.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    )


def _relative(path: Path, roots: list[Path]) -> Path:
    resolved = path.resolve()
    for root in roots:
        if root.is_dir() and resolved.is_relative_to(root):
            return resolved.relative_to(root)
    return Path(path.name)


def _map_path(path: Path, roots: list[Path], relative: Path) -> Path:
    """``<category>/test/<defect>/<stem>.tiff`` for a category's test folder (MVTec layout)."""
    resolved = path.resolve()
    for root in roots:
        if root.is_dir() and resolved.is_relative_to(root):
            if root.name == "test":
                return Path(root.parent.name, "test", relative).with_suffix(".tiff")
            if (root / "test").is_dir() and resolved.is_relative_to(root / "test"):
                return Path(root.name, relative).with_suffix(".tiff")
    return Path("maps", relative).with_suffix(".tiff")


def cmd_demo(args: argparse.Namespace) -> int:
    from flawmap.demo import run_demo

    _set_threads(args.threads)
    report = run_demo(
        out_dir=args.out,
        cell_type=args.cell_type,
        image_size=args.image_size,
        seed=args.seed,
        max_train=args.max_train,
        max_test=args.max_test,
        progress=not args.quiet,
    )
    print(f"demo report: {report}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import re

    from flawmap.report.markdown import metric_label
    from flawmap.stats import (
        compare,
        comparison_markdown,
        critical_difference_diagram,
        load_records,
        parse_method_key,
        score_table,
    )

    records = load_records(args.results)
    method_key = parse_method_key(args.method_key)
    better = {"auto": None, "higher": True, "lower": False}[args.better]
    tables = [
        score_table(records, m, method_key=method_key, average_seeds=args.average_seeds)
        for m in dict.fromkeys(args.metric)
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for table in tables:
        result = compare(
            table, alpha=args.alpha, higher_is_better=better, zero_method=args.zero_method
        )
        stem = re.sub(r"[^\w.-]", "_", table.metric)
        (out / f"compare_{stem}.md").write_text(comparison_markdown(result))
        (out / f"compare_{stem}.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        unit = "categories" if table.seeds_averaged else "blocks"
        title = f"{metric_label(table.metric)}: average rank over {len(table.blocks)} {unit}"
        for ext in ("png", "svg"):
            critical_difference_diagram(
                result.average_ranks, result.pairs, out / f"cd_{stem}.{ext}",
                alpha=args.alpha, title=title,
            )  # fmt: skip
        if not args.quiet:
            print(comparison_markdown(result, per_block=False))
        print(
            f"wrote compare_{stem}.md, compare_{stem}.json, cd_{stem}.png, cd_{stem}.svg in {out}"
        )
    return 0


# ------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flawmap",
        description="Unsupervised visual anomaly detection: train on good images only, then "
        "score, map and label new images (higher score = more anomalous).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("models", help="list registered models and backbones")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("fit", help="fit a model on the good training images of a category")
    p.add_argument("--data", required=True, type=Path, help="category folder with train/ test/")
    p.add_argument("--model", required=True, help="model name (see `flawmap models`)")
    p.add_argument("--backbone", default=None, help="backbone name (see `flawmap models`)")
    p.add_argument(
        "--weights", default=None, help="'pretrained' (default), 'random', or a local weights file"
    )
    p.add_argument("--image-size", type=_image_size, default=None, help="N or HxW (default 256)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any model constructor argument, repeatable (e.g. coreset_ratio=0.01)",
    )
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    common(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("evaluate", help="evaluate a fitted model on a category's test split")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--data", required=True, type=Path, help="category folder with test/")
    p.add_argument("--out", required=True, type=Path, help="report folder to write")
    p.add_argument("--latency-runs", type=int, default=20, help="timed batch-1 passes")
    common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="score images or folders with a fitted model")
    p.add_argument("model_dir", type=Path)
    p.add_argument("paths", nargs="+", type=Path, help="image files or folders (recursive)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--save-maps",
        action="store_true",
        help="also write raw float maps as TIFF at each image's original size",
    )
    p.add_argument(
        "--threshold", type=float, default=None, help="override the model's learned threshold"
    )
    common(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="fit and evaluate PatchCore on ELPV solar cells (offline)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--cell-type", choices=("mono", "poly"), default="mono")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train", type=int, default=None, help="cap on training cells")
    p.add_argument("--max-test", type=int, default=None, help="cap on test cells")
    common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "compare",
        help="compare methods over categories/seeds: Wilcoxon + Holm, ranks, CD diagram",
        description="Pairwise two-sided Wilcoxon signed-rank tests with Holm-Bonferroni "
        "correction, average ranks and a critical-difference diagram per metric, from "
        "benchmark result files (JSON list of records, or CSV with the same columns).",
    )
    p.add_argument("results", nargs="+", type=Path, help="result files (.json or .csv)")
    p.add_argument(
        "--metric", action="append", required=True, help="metric key, repeatable (e.g. pixel_ap)"
    )
    p.add_argument(
        "--method-key",
        default=None,
        help="comma-separated record fields naming a method, e.g. model,params.loss "
        "(default: model plus the params that differ between its runs)",
    )
    p.add_argument(
        "--average-seeds",
        action="store_true",
        help="average each method's seeds per category first (blocks = categories)",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level")
    p.add_argument(
        "--zero-method",
        choices=("wilcox", "pratt", "zsplit"),
        default="wilcox",
        help="how zero differences are handled (scipy.stats.wilcoxon)",
    )
    p.add_argument(
        "--better",
        choices=("auto", "higher", "lower"),
        default="auto",
        help="which direction is better (auto: lower for times, memory and losses)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    common(p)
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FlawmapError as exc:
        print(f"flawmap: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
