"""The ``flawmap`` command: thin, it only parses arguments and calls the library.

Exit status: 0 success; 2 a user error (a bad option or input, with ``flawmap: error: ...`` on
stderr, no traceback); 3 ``predict`` finished but some inputs could not be scored; 130
interrupted (Ctrl-C); 1 anything else (a one-line message; ``FLAWMAP_DEBUG=1`` shows the
traceback). Every option is checked by its argparse type before any work starts, and every output
folder before a fit or evaluation starts. Heavy imports (torch, timm, the models) happen inside
the commands, so ``flawmap --help`` and ``flawmap models`` start fast.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import traceback
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flawmap.errors import ConfigError, FlawmapError, FlawmapWarning

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_SOME_FAILED = 3
EXIT_INTERRUPTED = 130
EXIT_INTERNAL_ERROR = 1


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
        sides = raw.lower().split("x")
        if len(sides) == 2 and all(side.strip().isdigit() for side in sides):
            return (int(sides[0]), int(sides[1]))  # HxW
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


# ------------------------------------------------------------------------------ option types
def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def finite_float(text: str) -> float:
    """argparse type: a finite number (negative and scientific notation welcome)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0.0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def open_unit_interval(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = finite_float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}")
    return value


def _max_image_size() -> int | None:
    """The largest supported side (``flawmap.data.transforms.MAX_IMAGE_SIZE``; imports torch)."""
    try:
        from flawmap.data import transforms
    except ImportError:  # pragma: no cover - broken installation; the library checks again
        return None
    return getattr(transforms, "MAX_IMAGE_SIZE", None)


def image_size(text: str) -> int | tuple[int, int]:
    """argparse type: ``N`` or ``HxW``, positive and at most ``MAX_IMAGE_SIZE``."""
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.strip().lstrip("+").isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected N or HxW with positive integers (e.g. 256 or 256x320), got {text!r}"
        )
    sides = [int(p) for p in parts]
    if min(sides) < 1:
        raise argparse.ArgumentTypeError(f"sides must be >= 1, got {text!r}")
    largest = _max_image_size()
    if largest is not None and max(sides) > largest:
        raise argparse.ArgumentTypeError(
            f"sides must be at most {largest} pixels, got {text!r}; images are resized to this "
            "size, so a larger one only costs memory"
        )
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def _looks_like_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings (of the parser and its sub-commands) that take exactly one value."""
    found: set[str] = set()
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.option_strings and action.nargs is None:
                found.update(action.option_strings)
    return found


def attach_negative_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--opt -1e30`` -> ``--opt=-1e30`` for options that take a value.

    argparse reads a token that starts with ``-`` and is not a plain negative number
    (``-1e30``, ``-inf``) as an option, so ``--threshold -1e30`` failed with "expected one
    argument"; attached, the value reaches the option's type, which accepts or refuses it.
    """
    options = _value_options(parser)
    out: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            out.extend(tokens[i:])
            break
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if (
            token in options
            and following is not None
            and following.startswith("-")
            and _looks_like_number(following)
        ):
            out.append(f"{token}={following}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def _set_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


# ------------------------------------------------------------------------------ commands
def cmd_models(args: argparse.Namespace) -> int:
    """List models and backbones from the static registries (imports no torch)."""
    from flawmap.backbones import DEFAULT_BACKBONE, list_backbones
    from flawmap.models import list_models
    from flawmap.models.catalogue import builtin_entry

    print("models:")
    for name in list_models():
        entry = builtin_entry(name)
        if entry is not None:
            summary = entry.summary
        else:  # registered by a plugin: its class is imported already
            from flawmap.models import model_class
            from flawmap.models.catalogue import summary_of

            summary = summary_of(model_class(name).__doc__)
        print(f"  {name:<12} {summary}")
    print("backbones:")
    for name in list_backbones():
        print(f"  {name}{' (default)' if name == DEFAULT_BACKBONE else ''}")
    return EXIT_OK


def cmd_fit(args: argparse.Namespace) -> int:
    from flawmap.outputs import check_output_folder

    check_output_folder(args.out)
    from flawmap.models.folder import check_save_target

    check_save_target(args.out, args.overwrite)
    _set_threads(args.threads)
    from flawmap.data import MVTecDataset
    from flawmap.models import create_model, model_class

    cls = model_class(args.model)
    params: dict[str, Any] = dict(parse_param(p, cls.param_types()) for p in args.param)
    for key, value in (
        ("backbone", args.backbone),
        ("image_size", args.image_size),
        ("aspect", args.aspect),
        ("tiling", args.tiling),
        ("seed", args.seed),
        ("weights", args.weights),
    ):
        if value is not None:
            params[key] = value
    detector = create_model(args.model, **params)
    train = MVTecDataset(args.data, "train", transform=detector.transform)
    if args.add_good:
        train = _with_reviewed_good(train, args.add_good)
    print(f"fitting {args.model} on {len(train)} good images of {args.data.name} ...")
    detector.fit(train, progress=not args.quiet)
    out = detector.save(args.out, overwrite=args.overwrite)
    (h, w), (rows, cols) = detector.geometry_.size, detector.geometry_.tiles
    tiles = f" in {rows}x{cols} tiles" if (rows, cols) != (1, 1) else ""
    print(
        f"fitted in {detector.train_seconds_:.1f} s at {h}x{w} px{tiles}; threshold "
        f"{detector.threshold}; saved to {out}"
    )
    return EXIT_OK


def _with_reviewed_good(train: Any, exports: list[Path]) -> Any:
    """``train`` plus the images marked good in ``flawmap serve`` review exports."""
    from flawmap.data import ImageDataset, SampleRecord
    from flawmap.serve.store import reviewed_good_images

    extra = reviewed_good_images(exports)
    print(f"adding {len(extra)} images reviewers marked good ({', '.join(map(str, exports))})")
    combined = ImageDataset(
        [*train.samples, *(SampleRecord(p, 0, "good", None, has_mask=False) for p in extra)],
        transform=train.transform,
    )
    combined.description = f"{train.description} and {len(extra)} reviewed-good images"
    return combined


def cmd_evaluate(args: argparse.Namespace) -> int:
    from flawmap.outputs import check_output_folder

    check_output_folder(args.out)
    _set_threads(args.threads)
    from flawmap.data import MVTecDataset
    from flawmap.evaluation import evaluate, record_evaluation, write_evaluation
    from flawmap.models.exported import load_any
    from flawmap.report import markdown

    detector = load_any(args.model_dir, threads=args.threads)
    test = MVTecDataset(args.data, "test", transform=detector.transform)
    result = evaluate(detector, test, progress=not args.quiet, latency_runs=args.latency_runs)
    out = write_evaluation(result, detector, args.out, title=f"{detector.name} on {test.category}")
    record_evaluation(result, args.model_dir, args.data)
    rows = [{"metric": markdown.metric_label(k), "value": v} for k, v in result.metrics.items()]
    print(markdown.metrics_table(rows))
    print(f"wrote {out / 'metrics.json'}, {out / 'report.html'} and {out / 'report.md'}")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from flawmap.outputs import check_output_folder

    out = check_output_folder(args.out)
    _set_threads(args.threads)
    from flawmap.models.exported import load_any
    from flawmap.scoring import predict_to_folder

    detector = load_any(args.model_dir, threads=args.threads)
    summary = predict_to_folder(
        detector,
        args.paths,
        out,
        threshold=args.threshold,
        save_maps=args.save_maps,
        progress=not args.quiet,
    )
    failed = summary.failed
    print(
        f"{summary.scored} images scored, {summary.flagged} flagged defective, {len(failed)} "
        f"failed; results in {out}"
    )
    for row in failed[:10]:
        print(f"flawmap: failed: {row['path']}: {row['error']}", file=sys.stderr)
    if len(failed) > 10:
        print(f"flawmap: ... and {len(failed) - 10} more (see scores.csv)", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from flawmap.export import check_export_options
    from flawmap.outputs import check_folder_target
    from flawmap.runtime.format import is_export_file

    check_export_options(args.format, args.precision)
    if args.precision == "int8" and args.data is None:
        raise ConfigError(
            "--precision int8 needs --data CATEGORY: its train/good images calibrate the "
            "quantisation (no test image is used)"
        )
    check_folder_target(args.out, args.overwrite, is_export_file, "export")
    _set_threads(args.threads)
    from flawmap.export import export_model
    from flawmap.models import load_model

    detector = load_model(args.model_dir)
    calibration = None
    if args.data is not None:
        from flawmap.data import MVTecDataset

        calibration = MVTecDataset(args.data, "train", transform=detector.transform)
    out = export_model(
        detector,
        args.out,
        format=args.format,
        precision=args.precision,
        calibration=calibration,
        overwrite=args.overwrite,
    )
    print(
        f"exported {detector.name} ({args.format}, {args.precision}) to {out}; change the "
        f"decision threshold in {out / 'threshold.json'}"
    )
    return EXIT_OK


def parse_candidate(text: str) -> Any:
    """``MODEL`` or ``MODEL:KEY=VALUE:KEY=VALUE`` -> a :class:`flawmap.tuning.Candidate`
    (values converted to each parameter's annotated type)."""
    from flawmap.models import model_class
    from flawmap.tuning import Candidate

    name, *pairs = (part.strip() for part in text.split(":"))
    types_by_name = model_class(name).param_types()
    return Candidate(name, dict(parse_param(p, types_by_name) for p in pairs if p))


def read_candidates(entries: Sequence[str]) -> list[Any]:
    """``--candidates``: specs (see :func:`parse_candidate`) and/or JSON files holding a list of
    ``{"model": ..., "params": {...}}``."""
    from flawmap.tuning import Candidate

    out: list[Any] = []
    for entry in entries:
        if entry.endswith(".json"):
            path = Path(entry)
            try:
                items = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"cannot read candidates file {path}: {exc}") from exc
            if not isinstance(items, list) or not all(
                isinstance(i, dict) and isinstance(i.get("model"), str) for i in items
            ):
                raise ConfigError(
                    f'{path} must hold a JSON list of {{"model": NAME, "params": {{...}}}}'
                )
            out += [Candidate(i["model"], dict(i.get("params") or {})) for i in items]
        else:
            out.append(parse_candidate(entry))
    return out


def cmd_tune(args: argparse.Namespace) -> int:
    from flawmap.models.folder import check_save_target

    check_save_target(args.out, args.overwrite)
    _set_threads(args.threads)
    from flawmap.tuning import DEFAULT_CANDIDATES, tune, write_tuned

    candidates = read_candidates(args.candidates) if args.candidates else DEFAULT_CANDIDATES
    result = tune(
        args.data,
        candidates=candidates,
        val_dir=args.val,
        budget_seconds=60.0 * args.budget,
        val_fraction=args.val_fraction,
        max_latency_ms=args.max_latency_ms,
        seed=args.seed,
        log=(lambda _message: None) if args.quiet else print,
    )
    out = write_tuned(result, args.out, overwrite=args.overwrite)
    print(result.markdown())
    print(f"chose {result.chosen.candidate.label if result.chosen else '-'}; saved to {out}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    from flawmap.serve import ServeConfig, read_token, run_server

    token = read_token(args.token_file) if args.token_file is not None else None
    config = ServeConfig(
        model_dirs=args.model_dirs,
        data_dir=args.data_dir,
        token=token,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_files=args.max_files,
        queue_size=args.queue,
        threads=args.threads,
    )
    run_server(config, host=args.host, port=args.port, quiet=args.quiet)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from flawmap.outputs import check_output_folder

    check_output_folder(args.out)
    from flawmap.models.folder import check_save_target

    check_save_target(Path(args.out) / "model", args.overwrite)
    from flawmap.outputs import check_folder_target
    from flawmap.runtime.format import is_export_file

    check_folder_target(Path(args.out) / "export", args.overwrite, is_export_file, "export")
    _set_threads(args.threads)
    from flawmap.demo import run_demo

    report = run_demo(
        out_dir=args.out,
        cell_type=args.cell_type,
        image_size=args.image_size,
        seed=args.seed,
        max_train=args.max_train,
        max_test=args.max_test,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    print(f"demo report: {report}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from flawmap.outputs import check_output_folder

    out = check_output_folder(args.out)
    from flawmap.stats import (
        compare,
        comparison_markdown,
        load_records,
        parse_method_key,
        score_table,
        write_comparison,
        write_comparison_report,
    )

    records = load_records(args.results)
    method_key = parse_method_key(args.method_key)
    better = {"auto": None, "higher": True, "lower": False}[args.better]
    tables = [
        score_table(records, m, method_key=method_key, average_seeds=args.average_seeds)
        for m in dict.fromkeys(args.metric)
    ]
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for table in tables:
        result = compare(
            table, alpha=args.alpha, higher_is_better=better, zero_method=args.zero_method
        )
        results.append(result)
        written = write_comparison(result, out)
        if not args.quiet:
            print(comparison_markdown(result, per_block=False))
        print(f"wrote {', '.join(p.name for p in written)} in {out}")
    reports = write_comparison_report(results, out, sources=args.results)
    print(f"wrote {', '.join(p.name for p in reports)} (every metric) in {out}")
    return EXIT_OK


# ------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flawmap",
        description="Unsupervised visual anomaly detection: train on good images only, then "
        "score, map and label new images (higher score = more anomalous).",
        epilog="Exit status: 0 success, 2 user error, 3 predict finished but some inputs could "
        "not be scored, 130 interrupted, 1 internal error (FLAWMAP_DEBUG=1 shows the traceback).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    seed_type, threads_type = int_at_least(0), int_at_least(1)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--threads",
            type=threads_type,
            default=None,
            help="CPU threads, >= 1 (default: torch's)",
        )
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
    p.add_argument("--image-size", type=image_size, default=None, help="N or HxW (default 256)")
    p.add_argument(
        "--aspect",
        choices=("keep", "squeeze"),
        default=None,
        help="keep (default): N is a pixel budget of N*N shaped like the training images; "
        "squeeze: resize every image to NxN",
    )
    p.add_argument(
        "--tiling",
        default=None,
        metavar="off|auto|RxC",
        help="run the backbone on tiles of the image size (default off; auto: as many per side "
        "as the training images hold, at most 4)",
    )
    p.add_argument("--seed", type=seed_type, default=None, help="random seed, >= 0 (default 0)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any model constructor argument, repeatable (e.g. coreset_ratio=0.01)",
    )
    p.add_argument(
        "--add-good",
        action="append",
        default=[],
        type=Path,
        metavar="REVIEW_EXPORT",
        help="also train on the images reviewers marked good in a flawmap serve review export "
        "(/v1/export.csv), repeatable",
    )
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the model already in --out, if any"
    )
    common(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("evaluate", help="evaluate a fitted model on a category's test split")
    p.add_argument("model_dir", type=Path, help="model folder or exported folder")
    p.add_argument("--data", required=True, type=Path, help="category folder with test/")
    p.add_argument("--out", required=True, type=Path, help="report folder to write")
    p.add_argument(
        "--latency-runs", type=int_at_least(0), default=20, help="timed batch-1 passes (0: none)"
    )
    common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="score images or folders with a fitted model",
        description="Score images; an unreadable image is recorded with its error in "
        "scores.csv/scores.json and the others are still scored (exit status 3 when any "
        "failed). Every input gets its own overlay and map file, even when names repeat.",
    )
    p.add_argument("model_dir", type=Path, help="model folder or exported folder")
    p.add_argument("paths", nargs="+", type=Path, help="image files or folders (recursive)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--save-maps",
        action="store_true",
        help="also write raw float maps as TIFF at each image's original size",
    )
    p.add_argument(
        "--threshold",
        type=finite_float,
        default=None,
        help="override the model's learned threshold (any finite number, e.g. -1e30)",
    )
    common(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export",
        help="export a fitted model to ONNX or OpenVINO for the torch-free runtime",
        description="Write the model's graphs, its pre-processing, threshold and parameters "
        "(plain JSON, never baked into a graph) to --out. `flawmap predict` and `flawmap "
        "evaluate` accept the exported folder like a model folder; flawmap.runtime scores "
        "with it without torch.",
    )
    p.add_argument("model_dir", type=Path)
    p.add_argument("--format", choices=("onnx", "openvino"), default="onnx")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="fp32 (exact), bf16 (OpenVINO only), int8 (needs --data)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="int8: category folder whose train/good images calibrate the quantisation",
    )
    p.add_argument("--out", required=True, type=Path, help="export folder to write")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the export already in --out, if any"
    )
    common(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "tune",
        help="choose a model and settings on training data (or a validation folder), never test",
        description="Fit every candidate on the category's train/good images (less a held-out "
        "slice), score it on a validation set, and save the best with a table of all. "
        "Criterion (a), the default: the held-out good images plus synthetic defects. "
        "Criterion (b), with --val: your labelled images (VAL/<defect>/*, optional VAL/good/* "
        "and VAL/ground_truth/<defect>/<stem>_mask.png), which must not be test images. "
        "Criterion (a) never opens the test/ folder; with --val its files are only hashed, to "
        "refuse validation images that are test images.",
    )
    p.add_argument("--data", required=True, type=Path, help="category folder with train/good/")
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument(
        "--val", type=Path, default=None, help="validation folder of real defects (criterion b)"
    )
    p.add_argument(
        "--budget", type=positive_float, default=30.0, help="minutes to spend (default 30)"
    )
    p.add_argument(
        "--candidates",
        nargs="+",
        default=None,
        metavar="SPEC",
        help="MODEL or MODEL:KEY=VALUE:KEY=VALUE, or a JSON file of "
        '[{"model": ..., "params": {...}}] (default: the built-in search)',
    )
    p.add_argument(
        "--max-latency-ms",
        type=positive_float,
        default=None,
        help="only choose candidates at most this slow per image (batch 1)",
    )
    p.add_argument(
        "--val-fraction",
        type=open_unit_interval,
        default=0.2,
        help="share of train/good held out of fitting for validation (default 0.2)",
    )
    p.add_argument("--seed", type=seed_type, default=0, help="random seed, >= 0")
    p.add_argument("--overwrite", action="store_true", help="replace the model in --out, if any")
    common(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "serve",
        help="serve models over HTTP: REST API, web page, review database",
        description="An inspection service: POST images to /v1/models/NAME/predict, inspect and "
        "review results in the web page at /, API description at /docs. Results and reviews "
        "are kept in SQLite under --data-dir.",
    )
    p.add_argument("model_dirs", nargs="+", type=Path, help="model or export folders to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int_at_least(0), default=8000, help="port (default 8000)")
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="file holding the bearer token every call must send (default: no token)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("flawmap-serve-data"),
        help="folder for the result database and uploaded images (default ./flawmap-serve-data)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=20.0,
        help="largest request body in MiB (default 20)",
    )
    p.add_argument(
        "--max-files", type=int_at_least(1), default=16, help="most images per request (16)"
    )
    p.add_argument(
        "--queue",
        type=int_at_least(1),
        default=32,
        help="predict requests admitted at once; more are refused with 503 (default 32)",
    )
    common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="fit and evaluate PatchCore on ELPV solar cells (offline)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--cell-type", choices=("mono", "poly"), default="mono")
    p.add_argument("--image-size", type=image_size, default=256, help="N or HxW")
    p.add_argument("--seed", type=seed_type, default=0, help="random seed, >= 0")
    p.add_argument("--max-train", type=int_at_least(1), default=None, help="cap on training cells")
    p.add_argument("--max-test", type=int_at_least(1), default=None, help="cap on test cells")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the model of an earlier demo in --out"
    )
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
    p.add_argument(
        "--alpha", type=open_unit_interval, default=0.05, help="family-wise significance level"
    )
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


def _debug() -> bool:
    return os.environ.get("FLAWMAP_DEBUG", "").strip() not in ("", "0")


def _format_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """``flawmap: warning: ...`` for flawmap's own warnings, Python's format for the others."""
    if issubclass(category, FlawmapWarning):
        return f"flawmap: warning: {message}\n"
    return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)


_PYTHON_FORMATWARNING = warnings.formatwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    from flawmap.runtime.threads import set_passive_wait_policy

    set_passive_wait_policy()  # before torch starts its OpenMP runtime
    previous_format = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    finally:
        warnings.formatwarning = previous_format


def _run(tokens: list[str]) -> int:
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(attach_negative_values(parser, tokens))
        except SystemExit as exc:  # --help, or argparse's own error message (already printed)
            return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
        return int(args.func(args))
    except FlawmapError as exc:
        if _debug():
            traceback.print_exc()
        print(f"flawmap: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if _debug():
            traceback.print_exc()
        print("flawmap: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        if _debug():
            traceback.print_exc()
        print(
            "flawmap: error: out of memory; try a smaller --image-size or batch_size, or fewer "
            "images at a time",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR
    except OSError as exc:  # the system refused something (disk full, permissions): not a bug
        if _debug():
            traceback.print_exc()
        print(f"flawmap: error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except Exception as exc:
        if _debug():
            traceback.print_exc()
        what = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(
            f"flawmap: internal error: {what[:300]} -- this is a bug in flawmap, please report it "
            "with the command you ran (FLAWMAP_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
