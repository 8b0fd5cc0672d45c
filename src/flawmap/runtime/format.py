"""The exported-model folder: file names and the checked reading of its three JSON files.

An export folder (written by :func:`flawmap.export.export_model`) holds:

- ``model.json``: the model's name, parameters and fit id, the backend (``onnx`` or
  ``openvino``) and precision, the head (how the graphs combine, see
  :class:`flawmap.models.base.ExportPlan`), each graph's file and input/output names, the arrays
  the runtime needs (PatchCore's memory bank, ``.npy``), and a SHA-256 of every file;
- ``preprocess.json``: the input size, the optional centre crop and the resize rule;
- ``threshold.json``: the image-score threshold, a plain number a user may edit (``null``:
  no threshold); it is never part of a graph.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flawmap.errors import ConfigError

EXPORT_FORMAT = "flawmap-export"
EXPORT_VERSION = 1
MODEL_FILE = "model.json"
PREPROCESS_FILE = "preprocess.json"
THRESHOLD_FILE = "threshold.json"
#: The last ``flawmap evaluate``'s metrics (optional; see flawmap.evaluation.record_evaluation).
EVALUATION_FILE = "evaluation.json"
#: The resize rule of ``preprocess.json``; equal to :class:`flawmap.data.ImageTransform`.
RESIZE_RULE = "bilinear, antialiased, half-pixel centres, on [0, 1] floats; then centre crop"
BACKENDS = ("onnx", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
HEADS = ("graph", "nearest_neighbour")
#: Suffixes of the files an export writes (besides its JSON files).
DATA_SUFFIXES = (".onnx", ".xml", ".bin", ".npy")


def is_export_file(name: str) -> bool:
    """Whether ``name`` is a file an export writes (for overwrite checks)."""
    return name in (MODEL_FILE, PREPROCESS_FILE, THRESHOLD_FILE, EVALUATION_FILE) or name.endswith(
        DATA_SUFFIXES
    )


def is_export_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with an export's ``model.json`` (not checked further)."""
    folder = Path(path)
    if not (folder / MODEL_FILE).is_file():
        return False
    try:
        return json.loads((folder / MODEL_FILE).read_text()).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ExportInfo:
    """The checked contents of an export folder's JSON files."""

    folder: Path
    model: str
    params: dict[str, Any]
    backend: str
    precision: str
    head: str
    graphs: dict[str, dict[str, Any]]
    arrays: dict[str, str]
    image_size: tuple[int, int]
    center_crop: tuple[int, int] | None
    threshold: float | None
    meta: dict[str, Any]

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images the graphs take (after the optional crop)."""
        return self.center_crop or self.image_size


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"{path.parent} is not a complete flawmap export: {path.name} is missing "
            "(export the model again with flawmap export)"
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); export the model again") from exc
    if not isinstance(payload, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return payload


def _field(payload: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in payload or not isinstance(payload[key], kind):
        raise ConfigError(f"{path}: field {key!r} is missing or has the wrong type")
    return payload[key]


def _pair(value: Any, key: str, path: Path) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(f"{path}: {key} must be [height, width] in pixels, got {value!r}")
    return (value[0], value[1])


def read_threshold(folder: Path) -> float | None:
    """The threshold of ``threshold.json``: a finite number, or ``null`` for none."""
    path = folder / THRESHOLD_FILE
    payload = _read_json(path)
    if "threshold" not in payload:
        raise ConfigError(f"{path}: field 'threshold' is missing")
    value = payload["threshold"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{path}: threshold must be a finite number or null, got {value!r}")
    return float(value)


def read_export(folder: str | Path, *, verify: bool = True) -> ExportInfo:
    """Read and check an export folder's JSON files; with ``verify``, every file's SHA-256.

    Raises:
        ConfigError: a missing or malformed file, a format version newer than this flawmap,
            or a file whose checksum differs (naming the file).
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{folder} is not a folder (expected an exported model)")
    model_path = root / MODEL_FILE
    meta = _read_json(model_path)
    if meta.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{model_path} is not a flawmap export (format {meta.get('format')!r})")
    version = _field(meta, "format_version", int, model_path)
    if version > EXPORT_VERSION:
        raise ConfigError(
            f"{model_path} has export format {version}; this flawmap reads up to "
            f"{EXPORT_VERSION}: upgrade flawmap"
        )
    backend = _field(meta, "backend", str, model_path)
    precision = _field(meta, "precision", str, model_path)
    head = _field(meta, "head", str, model_path)
    for key, value, allowed in (
        ("backend", backend, BACKENDS),
        ("precision", precision, PRECISIONS),
        ("head", head, HEADS),
    ):
        if value not in allowed:
            raise ConfigError(f"{model_path}: {key} must be one of {allowed}, got {value!r}")
    graphs = _field(meta, "graphs", dict, model_path)
    arrays = _field(meta, "arrays", dict, model_path)
    files = _field(meta, "files", dict, model_path)
    for name, graph in graphs.items():
        if (
            not isinstance(graph, dict)
            or not isinstance(graph.get("file"), str)
            or not isinstance(graph.get("inputs"), list)
            or not isinstance(graph.get("outputs"), list)
        ):
            raise ConfigError(f"{model_path}: graph {name!r} needs a file, inputs and outputs")
        if graph.get("precision", "fp32") not in PRECISIONS:
            raise ConfigError(f"{model_path}: graph {name!r} has an unknown precision")
    if verify:
        for name, expected in files.items():
            path = root / name
            if not path.is_file():
                raise ConfigError(f"{path} is missing: export the model again")
            if file_sha256(path) != expected:
                raise ConfigError(
                    f"{path} does not match its checksum in {MODEL_FILE} (changed or truncated "
                    "after export): export the model again"
                )
    pre_path = root / PREPROCESS_FILE
    pre = _read_json(pre_path)
    image_size = _pair(pre.get("image_size"), "image_size", pre_path)
    crop = pre.get("center_crop")
    center_crop = None if crop is None else _pair(crop, "center_crop", pre_path)
    return ExportInfo(
        folder=root,
        model=_field(meta, "model", str, model_path),
        params=_field(meta, "params", dict, model_path),
        backend=backend,
        precision=precision,
        head=head,
        graphs=graphs,
        arrays={str(k): str(v) for k, v in arrays.items()},
        image_size=image_size,
        center_crop=center_crop,
        threshold=read_threshold(root),
        meta=meta,
    )
