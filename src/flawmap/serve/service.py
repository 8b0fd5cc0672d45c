"""The inspection service without HTTP: served models, scoring uploads, stored results.

:class:`Inspector` owns the data folder::

    DATA_DIR/results.sqlite3          results, reviews, threshold changes (:mod:`.store`)
    DATA_DIR/images/<sha256><ext>      every scored upload, once per content
    DATA_DIR/maps/<result id>.npy      its anomaly map at the model's input size (float16)

An upload is written under ``images/`` by its content hash (the client's file name is only shown,
never used as a path) and scored by the same code as ``flawmap predict`` (an
:class:`~flawmap.data.ImageDataset` over the stored file, :func:`flawmap.scoring.read_items`,
``detector.predict``), so both give the same score for the same image and model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from flawmap.data import ImageDataset, SampleRecord, load_image
from flawmap.errors import ConfigError, DataError
from flawmap.evaluation import EVALUATION_FILE
from flawmap.models.base import Prediction, checked_threshold
from flawmap.outputs import atomic_write
from flawmap.report import decision_range, heatmap_overlay
from flawmap.scoring import ItemsDataset, read_items, resize_map
from flawmap.serve.store import ResultStore, StoredResult, now_iso

__all__ = [
    "Inspector",
    "PreparedImages",
    "ServeConfig",
    "ServedModel",
    "Upload",
    "defect_regions",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SUFFIX = re.compile(r"\.[a-z0-9]{1,10}")
_THUMBNAIL_SIDE = 256
_MAX_REGIONS = 100


@dataclass
class ServeConfig:
    """Settings of ``flawmap serve``.

    Attributes:
        model_dirs: model folders (``flawmap fit``) and/or export folders (``flawmap export``);
            each is served under its folder name.
        data_dir: where results, reviews and uploaded images are kept.
        token: the bearer token every API call must carry (None: no authentication).
        max_upload_bytes: the largest request body accepted (413 above it).
        max_files: the most images in one predict request.
        queue_size: predict requests admitted at once (running or waiting); more get 503.
        threads: intra-op threads of the models (None: all cores).
        warm_up: score one blank image per model before the service reports ready.
    """

    model_dirs: list[Path]
    data_dir: Path
    token: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_files: int = 16
    queue_size: int = 32
    threads: int | None = None
    warm_up: bool = True

    def __post_init__(self) -> None:
        self.model_dirs = [Path(p) for p in self.model_dirs]
        self.data_dir = Path(self.data_dir)
        if not self.model_dirs:
            raise ConfigError("give at least one model folder to serve")
        for name, low in (("max_upload_bytes", 1024), ("max_files", 1), ("queue_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.token is not None and (
            not self.token.isascii() or not self.token.isprintable() or " " in self.token
        ):
            raise ConfigError(
                "the token must be one word of printable ASCII characters (e.g. 40 hex digits)"
            )


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the client's name for it (shown only) and its bytes."""

    filename: str
    data: bytes


def defect_regions(
    amap: np.ndarray, threshold: float | None, size: tuple[int, int]
) -> list[dict[str, int]]:
    """Connected regions of ``amap >= threshold`` (8-connected) at the original image size.

    ``amap`` (h, w) is resized bilinearly to ``size`` = (H, W) first. Returns boxes ``x, y,
    width, height`` and ``area`` (pixels in the region), largest area first, at most 100.
    """
    if threshold is None:
        return []
    height, width = size
    full = resize_map(amap, (width, height)) >= threshold
    labels, count = ndimage.label(full, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    regions = []
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        ys, xs = box
        regions.append(
            {
                "x": int(xs.start),
                "y": int(ys.start),
                "width": int(xs.stop - xs.start),
                "height": int(ys.stop - ys.start),
                "area": int(areas[index]),
            }
        )
    regions.sort(key=lambda r: -r["area"])
    return regions[:_MAX_REGIONS]


def _display_name(filename: str) -> str:
    """A client's file name as text to show: printable, at most 200 characters."""
    text = "".join(c for c in str(filename) if c.isprintable())
    return text[-200:] or "upload"


def _suffix(filename: str) -> str:
    """The file name's extension, lower case, if it is 1-10 letters or digits (else none)."""
    suffix = Path(filename.replace("\\", "/")).suffix.lower()
    return suffix if _SUFFIX.fullmatch(suffix) else ""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


@dataclass
class PreparedImages:
    """Uploads read and resized for a model, waiting to be scored (see
    :meth:`Inspector.prepare`); ``items`` are dataset items (``image`` (3, H, W), ...)."""

    model: str
    uploads: list[Upload]
    paths: list[Path]
    created: list[bool]
    items: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _upload_error(error: str, path: Path) -> str:
    """A data-loading error about a stored upload, worded for the client who sent it: no
    server path, and no advice meant for the operator's command line."""
    text = error.replace(f"image file {path}", "the image").replace(str(path), "it")
    return text.split(" If the file is genuine")[0] + (
        " (a limit of this service)" if "above the limit" in text else ""
    )


@dataclass
class ServedModel:
    """One model of the service: its name, folder and detector (a fitted
    :class:`~flawmap.models.Detector` or an :class:`~flawmap.models.exported.ExportedDetector`)."""

    name: str
    folder: Path
    detector: Any
    kind: str

    @classmethod
    def load(cls, folder: Path, threads: int | None) -> ServedModel:
        from flawmap.models.exported import ExportedDetector, load_any

        name = folder.resolve().name
        if not _NAME.match(name):
            raise ConfigError(
                f"cannot serve {folder} under the name {name!r}: a served model's folder name "
                "must be 1-64 letters, digits, '.', '_' or '-' and start with a letter or digit"
            )
        detector = load_any(folder, threads=threads)
        kind = "export" if isinstance(detector, ExportedDetector) else "model"
        return cls(name, folder, detector, kind)

    def card(self, threshold: float | None, saved_at: str | None) -> dict[str, Any]:
        """The API's model CARD (see the service's OpenAPI page)."""
        detector = self.detector
        params = {k: _plain(v) for k, v in detector.get_params().items()}
        if self.kind == "export":
            info = detector.runtime.info
            size = list(info.image_size)
            geometry = detector.fit_info.get("geometry")
            training = {
                "n_train": detector.n_train_,
                "train_seconds": detector.train_seconds_,
                "data": detector.train_data_,
            }
            backend: str | None = f"{info.backend} {info.precision}"
        else:
            geometry = detector.geometry.to_json()
            size = list(detector.geometry.size)
            training = {
                "n_train": detector.n_train_,
                "train_seconds": detector.train_seconds_,
                "data": detector.train_data_,
            }
            backend = "torch"
        tiles = geometry.get("tiles", [1, 1]) if isinstance(geometry, dict) else [1, 1]
        evaluation = _read_json(self.folder / EVALUATION_FILE) or {}
        metrics = evaluation.get("metrics")
        return {
            "name": self.name,
            "kind": self.kind,
            "model": detector.name,
            "backbone": params.get("backbone"),
            "runtime": backend,
            "image_size": size,
            "tiles": list(tiles),
            "threshold": threshold,
            "model_threshold": detector.threshold,
            "threshold_saved_at": saved_at,
            "training": training,
            "metrics": metrics if isinstance(metrics, dict) else None,
            "metrics_data": evaluation.get("data") if isinstance(evaluation, dict) else None,
            "metrics_time": evaluation.get("time") if isinstance(evaluation, dict) else None,
            "params": params,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class Inspector:
    """Served models and their stored results (everything but HTTP).

    Raises:
        ConfigError/DataError: a model folder cannot be loaded, two share a name, or the data
            folder cannot be used.
    """

    config: ServeConfig
    models: dict[str, ServedModel] = field(init=False)
    store: ResultStore = field(init=False)

    def __post_init__(self) -> None:
        data = self.config.data_dir
        try:
            for sub in ("images", "maps"):
                (data / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use {data} as the data folder: {exc}") from exc
        self.models = {}
        for folder in self.config.model_dirs:
            served = ServedModel.load(folder, self.config.threads)
            if served.name in self.models:
                raise ConfigError(
                    f"two model folders are named {served.name!r} "
                    f"({self.models[served.name].folder} and {folder}): a served model is known "
                    "by its folder name, rename one"
                )
            self.models[served.name] = served
        self.store = ResultStore(data / "results.sqlite3")
        self._lock = threading.Lock()  # one scoring at a time: each uses all intra-op threads

    # ------------------------------------------------------------------ models
    def model(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(name) from None

    def threshold(self, name: str) -> tuple[float | None, str | None]:
        """The threshold ``name`` labels with (saved in the service, else the model's) and
        when it was saved (None: the model's own)."""
        saved = self.store.saved_threshold(name)
        if saved is not None:
            return saved
        return self.model(name).detector.threshold, None

    def card(self, name: str) -> dict[str, Any]:
        return self.model(name).card(*self.threshold(name))

    def save_threshold(self, name: str, value: float) -> dict[str, Any]:
        """Record ``value`` as the threshold of ``name`` from now on; the change."""
        new = checked_threshold(value)
        old, _ = self.threshold(name)
        return self.store.save_threshold(name, old, new)

    def warm_up(self) -> None:
        """Score a blank image with every model (first-call costs before the first user)."""
        for served in self.models.values():
            height, width = served.detector.transform.output_size
            blank = np.full((1, 3, height, width), 0.5, dtype=np.float32)
            import torch

            with self._lock:
                served.detector.predict(torch.from_numpy(blank))

    # ------------------------------------------------------------------ scoring
    def predict(self, name: str, uploads: list[Upload]) -> list[StoredResult]:
        """Score ``uploads`` with model ``name`` and store the results (upload order):
        :meth:`prepare`, then :meth:`score`.

        Raises:
            KeyError: no model ``name``.
            DataError: an upload is not a readable image (none of the request is stored).
        """
        return self.score(self.prepare(name, uploads))

    def prepare(self, name: str, uploads: list[Upload]) -> PreparedImages:
        """Store the uploads under ``images/`` and read them at the model's input size (the
        decoding half of :meth:`predict`; safe to run beside :meth:`score` of other requests).

        Raises:
            KeyError: no model ``name``.
            DataError: an upload is not a readable image (its file is removed again).
        """
        served = self.model(name)
        start = time.perf_counter()
        stored = [self._store_image(u) for u in uploads]
        prepared = PreparedImages(name, uploads, [p for p, _ in stored], [n for _, n in stored])
        try:
            dataset = ImageDataset(
                [SampleRecord(path, -1, "") for path in prepared.paths],
                transform=served.detector.transform,
            )
            prepared.items, _, failures = read_items(dataset, range(len(dataset)))
        except BaseException:
            self.discard(prepared)
            raise
        if failures:
            self.discard(prepared)
            bad = failures[0]
            raise DataError(
                f"{_display_name(uploads[bad.index].filename)}: "
                + _upload_error(bad.error, prepared.paths[bad.index])
            )
        prepared.seconds = time.perf_counter() - start
        return prepared

    def discard(self, prepared: PreparedImages) -> None:
        """Remove the image files :meth:`prepare` wrote that no stored result uses."""
        for path, new in zip(prepared.paths, prepared.created, strict=True):
            if new and self.store.files_in_use(self._relative(path)) == 0:
                path.unlink(missing_ok=True)

    def score(self, prepared: PreparedImages) -> list[StoredResult]:
        """Score prepared images with the threshold in use now and store the results
        (one scoring at a time)."""
        name = prepared.model
        served = self.model(name)
        threshold, _ = self.threshold(name)
        start = time.perf_counter()
        try:
            with self._lock, served.detector.threshold_override(threshold):
                prediction: Prediction = served.detector.predict(ItemsDataset(prepared.items))
        except BaseException:
            self.discard(prepared)
            raise
        seconds = prepared.seconds + time.perf_counter() - start
        per_image_ms = seconds * 1000.0 / len(prepared.items)
        results = []
        for j, (upload, path) in enumerate(zip(prepared.uploads, prepared.paths, strict=True)):
            height, width = (int(v) for v in prepared.items[j]["original_size"])
            amap = prediction.maps[j]
            result_id = uuid.uuid4().hex
            map_path = self.config.data_dir / "maps" / f"{result_id}.npy"
            atomic_write(map_path, lambda tmp, a=amap: _save_array(tmp, a.astype(np.float16)))
            label = None
            if prediction.labels is not None:
                label = "defective" if bool(prediction.labels[j]) else "good"
            result = StoredResult(
                id=result_id,
                created=now_iso(),
                model=name,
                filename=_display_name(upload.filename),
                image_sha256=path.name.split(".")[0],
                image_file=self._relative(path),
                map_file=self._relative(map_path),
                width=width,
                height=height,
                score=float(prediction.scores[j]),
                label=label,
                threshold=prediction.threshold,
                latency_ms=per_image_ms,
                regions=defect_regions(amap, prediction.threshold, (height, width)),
            )
            self.store.add(result)
            results.append(result)
        return results

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.config.data_dir).as_posix()

    def _store_image(self, upload: Upload) -> tuple[Path, bool]:
        """The upload's bytes under ``images/<sha256><ext>``; (path, whether newly written)."""
        digest = hashlib.sha256(upload.data).hexdigest()
        folder = self.config.data_dir / "images"
        for known in (folder / digest, *folder.glob(f"{digest}.*")):
            if known.is_file():  # the same bytes, sent before (under any name)
                return known, False
        path = folder / f"{digest}{_suffix(upload.filename)}"
        atomic_write(path, lambda tmp: tmp.write_bytes(upload.data))
        return path, True

    # ------------------------------------------------------------------ pictures
    def _image(self, result: StoredResult) -> np.ndarray:
        return np.asarray(load_image(self.config.data_dir / result.image_file))

    def overlay_png(self, result: StoredResult) -> bytes:
        """The result's heatmap overlay at the image's size, its threshold outlined (PNG)."""
        amap = np.load(self.config.data_dir / result.map_file).astype(np.float32)
        overlay = heatmap_overlay(
            self._image(result),
            amap,
            *decision_range(amap, result.threshold),
            threshold=result.threshold,
        )
        return _png(Image.fromarray(overlay))

    def thumbnail_png(self, result: StoredResult) -> bytes:
        """The uploaded image, its longer side at most 256 px (PNG)."""
        image = Image.fromarray(self._image(result))
        image.thumbnail((_THUMBNAIL_SIDE, _THUMBNAIL_SIDE))
        return _png(image)


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file object: np.save would append ".npy" to a path
        np.save(handle, array)


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def read_token(path: str | os.PathLike[str]) -> str:
    """The bearer token in a token file (surrounding whitespace removed).

    Raises:
        ConfigError: the file cannot be read or holds no token.
    """
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc}") from exc
    if not token:
        raise ConfigError(
            f"the token file {path} is empty: put a secret of a few dozen characters in it"
        )
    if any(c.isspace() for c in token):
        raise ConfigError(
            f"the token in {path} holds whitespace: use one word (e.g. 40 hex digits)"
        )
    return token
