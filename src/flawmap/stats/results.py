"""Result files → a paired score table (blocks × methods) for one metric.

A result file is what the benchmark scripts write (``benchmarks/common.py``): a JSON list of
records such as ``{"model": "padim", "category": "bottle", "seed": 0, "params": {...},
"pixel_ap": 0.66, ...}``, or a dict with such a list under ``"records"``, or a CSV with the same
columns (a ``params`` column may hold a JSON object; dotted columns such as ``params.loss`` work
too). A *method* is a record's label (see :func:`method_labels`), a *block* (the paired unit of
the tests) is a (category, seed) pair, or a category when seeds are averaged first.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from flawmap.errors import ConfigError, DataError

__all__ = [
    "SOURCE_KEY",
    "ScoreTable",
    "get_field",
    "higher_is_better",
    "load_records",
    "method_labels",
    "parse_method_key",
    "score_table",
]

#: Key added to every loaded record: ``"file:index"``, used in error messages.
SOURCE_KEY = "_source"

#: Metrics where lower is better (everything else, e.g. AUROC/AP/AUPRO/F1, is higher-is-better).
_LOWER_IS_BETTER = {
    "latency_ms",
    "train_seconds",
    "fit_seconds",
    "fit_peak_rss_mb",
    "peak_rss_mb",
    "final_train_loss",
    "memory_bank",
}
_LOWER_SUFFIXES = ("_ms", "_seconds", "_mb", "_loss")

_MISSING = object()


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (False for times, memory and losses)."""
    return not (metric in _LOWER_IS_BETTER or metric.endswith(_LOWER_SUFFIXES))


# ------------------------------------------------------------------------------ loading
def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read result records from JSON and CSV files (see the module docstring).

    Each returned record is a copy with ``SOURCE_KEY`` set to ``"file:index"``.
    """
    records: list[dict[str, Any]] = []
    paths = list(paths)
    if not paths:
        raise ConfigError("no result files given")
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"result file not found: {path}")
        suffix = path.suffix.lower()
        if suffix == ".json":
            rows = _read_json(path)
        elif suffix == ".csv":
            rows = _read_csv(path)
        else:
            raise DataError(f"{path}: unsupported result file type {suffix!r} (use .json or .csv)")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataError(f"{path}: record {i} is not an object: {row!r}")
            records.append({**row, SOURCE_KEY: f"{path}:{i}"})
    return records


def _read_json(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read JSON ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        return data["records"]
    if isinstance(data, list):
        return data
    raise DataError(f"{path}: expected a list of records or an object with a 'records' list")


def _read_csv(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from exc
    return [{key: _csv_value(key, value) for key, value in row.items() if key} for row in rows]


def _csv_value(key: str, text: str | None) -> Any:
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if key == "params" and text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


# ------------------------------------------------------------------------------ fields
def get_field(record: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """``record[name]``; a dotted name (``params.loss``) walks nested dicts, then tries the flat
    key (a CSV column named ``params.loss``). ``default`` when absent or None."""
    if name in record and record[name] is not None:
        return record[name]
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, Mapping) or value.get(part) is None:
            return default
        value = value[part]
    return value


def parse_method_key(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"model,params.loss"`` → ``("model", "params.loss")``; None stays None (the default)."""
    if text is None:
        return None
    fields = text.split(",") if isinstance(text, str) else list(text)
    fields = [f.strip() for f in fields if f.strip()]
    if not fields:
        raise ConfigError("the method key names no field (e.g. 'model' or 'model,params.loss')")
    return tuple(fields)


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _label(parts: list[tuple[str, Any]]) -> str:
    """[("model", "fcdd"), ("params.loss", "hsc")] → ``"fcdd (loss=hsc)"``."""
    head, rest = parts[0], parts[1:]
    label = _text(head[1]) if head[0] in ("model", "method") else f"{_short(head[0])}={head[1]}"
    if rest:
        label += " (" + ", ".join(f"{_short(k)}={_text(v)}" for k, v in rest) + ")"
    return label


def _short(field: str) -> str:
    return field.rsplit(".", 1)[-1]


def method_labels(
    records: Sequence[Mapping[str, Any]], method_key: str | Sequence[str] | None = None
) -> list[str]:
    """The method label of each record.

    With a key (``"model,params.loss"``) the label joins the values of those fields that the
    record has, e.g. ``"fcdd (loss=hsc_pixel)"``; a record with none of them is an error.
    Without one: the ``method`` field when every record has it, otherwise ``model`` plus each
    ``params`` entry whose value differs between that model's records (so ``fcdd`` runs with
    ``loss=fcdd`` and ``loss=hsc_pixel`` are two methods, and a plain benchmark file gives one
    method per model).
    """
    fields = parse_method_key(method_key)
    if fields is None:
        if records and all(get_field(r, "method") is not None for r in records):
            fields = ("method",)
        else:
            return _default_labels(records)
    labels = []
    for record in records:
        parts = [(f, get_field(record, f)) for f in fields]
        parts = [(f, v) for f, v in parts if v is not None]
        if not parts:
            raise DataError(
                f"record {_where(record)} has none of the method fields {', '.join(fields)}"
            )
        labels.append(_label(parts))
    return labels


def _default_labels(records: Sequence[Mapping[str, Any]]) -> list[str]:
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        model = get_field(record, "model")
        if model is None:
            raise DataError(
                f"record {_where(record)} has no 'model' field; name the method fields with "
                "--method-key (e.g. --method-key method)"
            )
        by_model.setdefault(_text(model), []).append(record)
    varying: dict[str, list[str]] = {}
    for model, rows in by_model.items():
        params = [r.get("params") if isinstance(r.get("params"), Mapping) else {} for r in rows]
        keys = sorted({k for p in params for k in p})
        varying[model] = [
            k for k in keys if len({_text(p.get(k)) if k in p else "\0" for p in params}) > 1
        ]
    labels = []
    for record in records:
        model = _text(get_field(record, "model"))
        params = record.get("params") if isinstance(record.get("params"), Mapping) else {}
        parts: list[tuple[str, Any]] = [("model", model)]
        parts += [(f"params.{k}", params.get(k)) for k in varying[model]]
        labels.append(_label(parts))
    return labels


def _where(record: Mapping[str, Any]) -> str:
    return str(record.get(SOURCE_KEY, "?"))


# ------------------------------------------------------------------------------ table
@dataclass(frozen=True)
class ScoreTable:
    """One metric's paired scores: ``scores[i, j]`` is method ``j`` on block ``i``.

    When seeds were averaged, ``n_seeds[i, j]`` counts the averaged runs and ``seed_std[i, j]`` is
    their sample standard deviation (NaN for a single run); otherwise both are 1 / NaN.
    """

    metric: str
    methods: tuple[str, ...]
    blocks: tuple[str, ...]
    scores: np.ndarray
    n_seeds: np.ndarray
    seed_std: np.ndarray
    seeds_averaged: bool

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{method: scores over blocks}``, the input of the tests and ranks."""
        return {m: self.scores[:, j].copy() for j, m in enumerate(self.methods)}


def score_table(
    records: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    method_key: str | Sequence[str] | None = None,
    average_seeds: bool = False,
    block_fields: Sequence[str] = ("category",),
) -> ScoreTable:
    """Pair the records' ``metric`` values by block; methods in order of first appearance.

    Blocks are ``block_fields`` (default the category) plus the seed (a missing seed counts as
    0), or just ``block_fields`` with ``average_seeds`` (the mean over each block's seeds). Every
    method must have every block, each (method, block, seed) once, and a finite ``metric``.
    """
    if not records:
        raise DataError("no result records")
    if not block_fields:
        raise ConfigError("block_fields must name at least one field (e.g. 'category')")
    labels = method_labels(records, method_key)
    values: dict[str, dict[str, dict[Any, float]]] = {}
    sources: dict[tuple[str, str, Any], str] = {}
    block_order: list[str] = []
    for record, method in zip(records, labels, strict=True):
        block = _block_label(record, block_fields)
        seed = get_field(record, "seed", 0)
        value = _metric_value(record, metric)
        key = (method, block, _text(seed))
        if key in sources:
            raise DataError(
                f"two results for method {method!r} on {block} (seed {_text(seed)}): "
                f"{sources[key]} and {_where(record)}; tell them apart with --method-key "
                "(e.g. model,params.loss) or remove one"
            )
        sources[key] = _where(record)
        values.setdefault(method, {}).setdefault(block, {})[_text(seed)] = value
        if block not in block_order:
            block_order.append(block)
    methods = list(values)
    if len(methods) < 2:
        found = methods[0] if methods else "none"
        raise DataError(
            f"need at least 2 methods to compare, found 1 ({found}); "
            "set --method-key to split runs into methods"
        )
    if average_seeds:
        units = [(b, None) for b in block_order]
    else:
        seen: list[tuple[str, Any]] = []
        for method in methods:
            for block, by_seed in values[method].items():
                seen += [(block, s) for s in by_seed if (block, s) not in seen]
        units = sorted(seen, key=lambda u: (block_order.index(u[0]), _seed_sort(u[1])))
    _check_matched(values, methods, units)
    n, k = len(units), len(methods)
    scores, n_seeds, seed_std = np.empty((n, k)), np.ones((n, k), int), np.full((n, k), np.nan)
    for i, (block, seed) in enumerate(units):
        for j, method in enumerate(methods):
            by_seed = values[method][block]
            runs = np.array(list(by_seed.values()) if seed is None else [by_seed[seed]])
            scores[i, j] = runs.mean()
            n_seeds[i, j] = runs.size
            if runs.size > 1:
                seed_std[i, j] = runs.std(ddof=1)
    names = tuple(b if s is None else f"{b} (seed {s})" for b, s in units)
    return ScoreTable(metric, tuple(methods), names, scores, n_seeds, seed_std, average_seeds)


def _seed_sort(seed: str | None) -> tuple[int, float, str]:
    try:
        return (0, float(seed), "") if seed is not None else (0, 0.0, "")
    except ValueError:
        return (1, 0.0, str(seed))


def _block_label(record: Mapping[str, Any], fields: Sequence[str]) -> str:
    parts = []
    for field in fields:
        value = get_field(record, field)
        if value is None:
            raise DataError(f"record {_where(record)} has no {field!r} field (needed for blocks)")
        parts.append(_text(value))
    return "/".join(parts)


def _metric_value(record: Mapping[str, Any], metric: str) -> float:
    value = get_field(record, metric)
    if value is None:
        available = sorted(
            k for k, v in record.items() if isinstance(v, Real) and not isinstance(v, bool)
        )
        raise DataError(
            f"record {_where(record)} has no metric {metric!r}; numeric fields there: "
            f"{', '.join(available) or 'none'}"
        )
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise DataError(f"record {_where(record)}: {metric} = {value!r} is not a finite number")
    return float(value)


def _check_matched(
    values: dict[str, dict[str, dict[Any, float]]],
    methods: list[str],
    units: list[tuple[str, Any]],
) -> None:
    problems = []
    for method in methods:
        missing = [
            b if s is None else f"{b} (seed {s})"
            for b, s in units
            if b not in values[method] or (s is not None and s not in values[method][b])
        ]
        if missing:
            shown = ", ".join(missing[:6]) + (
                f", … ({len(missing)} in all)" if len(missing) > 6 else ""
            )
            problems.append(f"{method!r} lacks {shown}")
    if problems:
        raise DataError(
            "the methods were not run on the same blocks, so the scores cannot be paired: "
            + "; ".join(problems)
            + " (give results for every method on every block, or use --average-seeds when "
            "only the seeds differ)"
        )
