"""Scoring many image files where some may be unreadable: the readable ones are scored, each
unreadable one is reported with its error, none stops the others.

>>> for chunk in predict_readable(detector, PathsDataset(paths, transform=detector.transform)):
...     chunk.prediction   # Prediction of the chunk's readable images (None if there is none)
...     chunk.indices      # their positions in the dataset, one per prediction row
...     chunk.failures     # Failure(index, path, error) of each unreadable image

:func:`predict_to_folder` does the whole ``flawmap predict``: it scores files and folders into an
output folder (overlays, optional float maps, ``scores.csv``/``scores.json``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from flawmap.data import ImageDataset, PathsDataset, SampleRecord, load_image
from flawmap.errors import ConfigError, DataError
from flawmap.evaluation import display_range
from flawmap.outputs import (
    FolderLock,
    atomic_write,
    check_output_folder,
    output_paths,
    write_text_atomic,
)
from flawmap.report import heatmap_overlay, save_float_tiff, save_png

if TYPE_CHECKING:
    from flawmap.models.base import Detector, Prediction

__all__ = [
    "SCORE_COLUMNS",
    "ChunkResult",
    "Failure",
    "ItemsDataset",
    "PredictSummary",
    "predict_readable",
    "predict_to_folder",
    "read_items",
    "resize_map",
]

SCORE_COLUMNS = ("path", "score", "label", "threshold", "overlay", "map", "error")


@dataclass(frozen=True)
class Failure:
    """An input that could not be scored: its dataset position, path and error message."""

    index: int
    path: str
    error: str


@dataclass
class ChunkResult:
    """One chunk of :func:`predict_readable`.

    Attributes:
        prediction: the chunk's readable images scored (scores (n,), maps (n, H, W), ...), or
            None when none of them could be read.
        indices: dataset position of each prediction row (n,), increasing.
        failures: the chunk's unreadable images, in dataset order.
    """

    prediction: Prediction | None
    indices: list[int] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def _path_of(dataset: Dataset, index: int) -> str:
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return str(samples[index].path)
    return f"item {index}"


def read_items(
    dataset: Dataset, indices: Sequence[int]
) -> tuple[list[dict[str, Any]], list[int], list[Failure]]:
    """Read ``dataset[i]`` for each ``i``: (readable items, their indices, failures).

    Only :class:`~flawmap.errors.DataError` (a file that cannot be used) is recorded as a
    failure; any other exception, and Ctrl-C, propagates.
    """
    items: list[dict[str, Any]] = []
    good: list[int] = []
    failures: list[Failure] = []
    for i in indices:
        try:
            items.append(dataset[i])
        except DataError as exc:
            failures.append(Failure(i, _path_of(dataset, i), str(exc)))
        else:
            good.append(i)
    return items, good, failures


class ItemsDataset(Dataset):
    """Already read items seen as a map-style dataset (what ``Detector.predict`` takes)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def predict_readable(
    detector: Detector, dataset: Dataset, *, chunk_size: int = 64, progress: bool = False
) -> Iterator[ChunkResult]:
    """Score ``dataset`` chunk by chunk; unreadable items become :class:`Failure` records.

    Each item is read once. ``chunk_size`` items are held in memory at a time.

    Raises:
        ConfigError: ``chunk_size`` is not a positive int.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    n = len(dataset)
    for start in range(0, n, chunk_size):
        items, good, failures = read_items(dataset, range(start, min(start + chunk_size, n)))
        prediction = None
        if items:
            prediction = detector.predict(ItemsDataset(items), progress=progress)
        yield ChunkResult(prediction, good, failures)


# ------------------------------------------------------------------------------ into a folder
@dataclass(frozen=True)
class PredictSummary:
    """What :func:`predict_to_folder` wrote.

    Attributes:
        out: the output folder.
        rows: one dict per input, in input order, with the keys of :data:`SCORE_COLUMNS` (the
            rows of ``scores.csv``/``scores.json``); ``score`` is None and ``error`` set for an
            input that could not be scored.
    """

    out: Path
    rows: list[dict[str, Any]]

    @property
    def scored(self) -> int:
        """Number of inputs with a score."""
        return sum(r["score"] is not None for r in self.rows)

    @property
    def flagged(self) -> int:
        """Number of scored inputs labelled defective."""
        return sum(r["label"] == "defective" for r in self.rows if r["score"] is not None)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The rows with an error (unreadable, or scored but their outputs not written)."""
        return [r for r in self.rows if r["error"]]


def predict_to_folder(
    detector: Detector,
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    threshold: float | None = None,
    save_maps: bool = False,
    progress: bool = False,
) -> PredictSummary:
    """Score image files and folders (searched recursively) into the folder ``out``.

    Writes, per input, an overlay PNG (one colour range for all, from the first scored chunk)
    and with ``save_maps`` its (H, W) float32 map as TIFF at the image's original size; the
    paths come from :func:`flawmap.outputs.output_paths` (unique per input, the MVTec layout for
    a category's test files). Then ``scores.csv`` and ``scores.json``. Every file is written
    atomically, and ``out`` is locked (:class:`~flawmap.outputs.FolderLock`) while writing.
    Files already under ``out`` are not inputs. An unreadable input, or one whose outputs
    cannot be written, gets a row with its error; the others are still scored.

    ``threshold`` replaces the model's threshold for this call only (the detector is left as
    it was).

    Raises:
        NotFittedError: ``detector`` is not fitted.
        ConfigError: ``out`` cannot be used as a folder, another run holds its lock, or
            ``threshold`` is not a finite number.
        DataError: a path does not exist, or holds no image besides the outputs in ``out``.
    """
    folder = check_output_folder(out, "out")
    with detector.threshold_override(threshold):  # NotFittedError before any work
        samples, roots = _inputs(paths, folder)
        dataset = ImageDataset(samples, transform=detector.transform)
        with FolderLock(folder, "flawmap predict"):
            rows = _predict_rows(detector, dataset, roots, folder, save_maps, progress)
    return PredictSummary(folder, rows)


def _inputs(
    paths: Sequence[str | os.PathLike[str]], out: Path
) -> tuple[list[SampleRecord], list[Path]]:
    """The image samples under ``paths`` (outside ``out``) and the argument each came from."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise DataError("no input paths given")
    samples: list[SampleRecord] = []
    roots: list[Path] = []
    own = out.absolute().resolve()
    for path in paths:  # one at a time, to know which argument each file came from
        # files of an earlier run into out (out inside an input folder) are not inputs
        found = [
            s
            for s in PathsDataset([path]).samples
            if not s.path.absolute().resolve().is_relative_to(own)
        ]
        if not found:
            raise DataError(
                f"{path} holds no images besides the outputs in the output folder {out}"
            )
        samples += found
        roots += [Path(path)] * len(found)
    return samples, roots


def _predict_rows(
    detector: Detector,
    dataset: ImageDataset,
    roots: list[Path],
    out: Path,
    save_maps: bool,
    progress: bool,
) -> list[dict[str, Any]]:
    """Score ``dataset`` into ``out`` (overlays, optional maps, scores.csv/json); the rows."""
    files = [s.path for s in dataset.samples]
    overlay_paths, map_paths = output_paths(files, roots)
    threshold = detector.threshold
    rows: list[dict[str, Any]] = [
        {
            "path": str(f),
            "score": None,
            "label": None,
            "threshold": threshold,
            "overlay": None,
            "map": None,
            "error": None,
        }
        for f in files
    ]
    vmin = vmax = None
    for chunk in predict_readable(detector, dataset, progress=progress):
        for failure in chunk.failures:
            rows[failure.index]["error"] = failure.error
        pred = chunk.prediction
        if pred is None:
            continue
        if vmin is None:  # one colour range for all overlays, from the first scored chunk
            vmin, vmax = display_range(pred)
        for j, i in enumerate(chunk.indices):
            row = rows[i]
            row["score"] = float(pred.scores[j])
            if pred.labels is not None:
                row["label"] = "defective" if pred.labels[j] else "good"
            try:
                _write_image_outputs(
                    files[i],
                    pred.maps[j],
                    (vmin, vmax),
                    pred.threshold,
                    out / overlay_paths[i],
                    out / map_paths[i] if save_maps else None,
                )
            except DataError as exc:
                row["error"] = f"scored, but its outputs could not be written: {exc}"
                continue
            row["overlay"] = overlay_paths[i].as_posix()
            row["map"] = map_paths[i].as_posix() if save_maps else None
    _write_scores(rows, out)
    return rows


def _write_image_outputs(
    source: Path,
    amap: np.ndarray,
    display: tuple[float, float],
    threshold: float | None,
    overlay_path: Path,
    map_path: Path | None,
) -> None:
    """The overlay PNG of ``source`` with its (h, w) map and, with ``map_path``, the map as a
    float32 TIFF at the image's size; each file is written atomically."""
    image = np.asarray(load_image(source))
    overlay = heatmap_overlay(image, amap, *display, threshold=threshold)
    atomic_write(overlay_path, lambda tmp: save_png(overlay, tmp))
    if map_path is not None:
        full = resize_map(amap, (image.shape[1], image.shape[0]))
        atomic_write(map_path, lambda tmp: save_float_tiff(full, tmp))


def _write_scores(rows: list[dict[str, Any]], out: Path) -> None:
    """``scores.csv`` and ``scores.json`` (one row per input, in input order), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SCORE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "scores.csv", buffer.getvalue())
    write_text_atomic(out / "scores.json", json.dumps(rows, indent=2) + "\n")


def resize_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float map -> (H, W) float32, bilinear; ``size`` is PIL's (W, H)."""
    return np.asarray(
        Image.fromarray(amap.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    )
