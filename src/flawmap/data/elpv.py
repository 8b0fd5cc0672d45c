"""The ELPV solar-cell electroluminescence data set (PyPI package ``elpv-dataset``), image-level.

Reads the package's ``data/labels.csv`` (lines ``images/cellNNNN.png <probability> <mono|poly>``)
and its 300x300 grayscale PNGs lazily, one image per item; the package's own ``load_dataset``
(which loads every image into memory) is never called.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np

from flawmap.data.datasets import ImageDataset, SampleRecord
from flawmap.data.transforms import ImageTransform
from flawmap.errors import ConfigError, DataError

__all__ = ["ElpvDataset", "elpv_data_dir"]

_EPS = 1e-6


def elpv_data_dir() -> Path:
    """The ``data`` folder of the installed ``elpv_dataset`` package (holds ``labels.csv``).

    Raises:
        DataError: the package is not installed.
    """
    try:
        spec = importlib.util.find_spec("elpv_dataset")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the ELPV data set needs the 'elpv-dataset' package: pip install elpv-dataset"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_labels(csv: Path) -> list[tuple[str, float, str]]:
    """Rows ``(relative image path, defect probability, cell type)`` of ``labels.csv``."""
    try:
        text = csv.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read ELPV labels file {csv}: {exc}") from exc
    rows: list[tuple[str, float, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 3:
                raise ValueError("expected 3 columns")
            prob = float(parts[1])
            if not (0.0 <= prob <= 1.0):
                raise ValueError("probability outside [0, 1]")
        except ValueError as exc:
            raise DataError(
                f"{csv}:{lineno}: expected '<image path> <probability> <mono|poly>', got "
                f"{line.strip()!r} ({exc})"
            ) from None
        rows.append((parts[0], prob, parts[2].lower()))
    if not rows:
        raise DataError(f"ELPV labels file {csv} lists no images")
    return rows


def _subsample(indices: list[int], k: int, rng: np.random.Generator) -> list[int]:
    """``k`` of ``indices`` chosen by ``rng`` (all of them when ``k >= len``), in input order."""
    if k >= len(indices):
        return list(indices)
    keep = np.sort(rng.choice(len(indices), size=k, replace=False))
    return [indices[i] for i in keep]


class ElpvDataset(ImageDataset):
    """Image-level anomaly detection split of ELPV solar cells (no masks, ``has_mask`` False).

    Functional cells (probability 0) are normal (label 0, ``defect_type`` "good"); cells with
    probability >= ``defect_min_probability`` are defective (label 1, "defective"); cells in
    between are left out. ``train`` is a seeded random ``train_fraction`` of the normal cells of
    ``cell_type`` (None: both types); ``test`` holds the other normal cells and all defective ones.
    ``max_images`` caps the split by a seeded subsample (test keeps both classes in proportion).
    Samples are in file-name order.

    Items: see :class:`flawmap.data.datasets.ImageDataset` -- ``image`` (3, H, W) (the grayscale
    cell replicated to 3 channels), ``mask`` (1, H, W) of zeros, ...

    Args:
        data_dir: folder holding ``labels.csv`` and ``images/``; defaults to the installed
            package's data (used by tests to point at a synthetic copy).

    Raises:
        DataError: ``elpv-dataset`` is not installed (install with ``pip install elpv-dataset``),
            or its files are missing/malformed.
        ConfigError: invalid options.
    """

    def __init__(
        self,
        split: Literal["train", "test"],
        cell_type: Literal["mono", "poly"] | None = "mono",
        train_fraction: float = 0.7,
        seed: int = 0,
        defect_min_probability: float = 1 / 3,
        max_images: int | None = None,
        transform: ImageTransform | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
    ):
        if split not in ("train", "test"):
            raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
        if cell_type not in ("mono", "poly", None):
            raise ConfigError(f"cell_type must be 'mono', 'poly' or None, got {cell_type!r}")
        if not (0.0 < float(train_fraction) < 1.0):
            raise ConfigError(f"train_fraction must be in (0, 1), got {train_fraction}")
        if not (0.0 < float(defect_min_probability) <= 1.0):
            raise ConfigError(
                f"defect_min_probability must be in (0, 1], got {defect_min_probability}"
            )
        if max_images is not None and (
            isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1
        ):
            raise ConfigError(f"max_images must be a positive int or None, got {max_images!r}")

        self.data_dir = Path(data_dir) if data_dir is not None else elpv_data_dir()
        self.split: str = split
        self.cell_type = cell_type
        csv = self.data_dir / "labels.csv"
        if not csv.is_file():
            raise DataError(f"ELPV labels file {csv} does not exist")
        rows = _read_labels(csv)

        normal: list[int] = []
        defective: list[int] = []
        for i, (_, prob, kind) in enumerate(rows):
            if cell_type is not None and kind != cell_type:
                continue
            if prob <= _EPS:
                normal.append(i)
            elif prob >= defect_min_probability - _EPS:
                defective.append(i)
        if not normal:
            raise DataError(f"no functional cells of type {cell_type!r} listed in {csv}")

        order = np.random.default_rng(seed).permutation(len(normal))
        n_train = min(max(math.floor(train_fraction * len(normal) + 0.5), 1), len(normal))
        train = sorted(normal[i] for i in order[:n_train])
        test_normal = sorted(normal[i] for i in order[n_train:])

        cap_rng = np.random.default_rng([int(seed), 1])
        if split == "train":
            chosen = train if max_images is None else _subsample(train, max_images, cap_rng)
        else:
            chosen_normal, chosen_defective = test_normal, defective
            total = len(test_normal) + len(defective)
            if max_images is not None and total > max_images:
                k_def = math.floor(max_images * len(defective) / total + 0.5)
                if max_images >= 2 and test_normal and defective:
                    k_def = min(max(k_def, 1), max_images - 1)
                chosen_defective = _subsample(defective, k_def, cap_rng)
                chosen_normal = _subsample(test_normal, max_images - k_def, cap_rng)
            chosen = sorted(chosen_normal + chosen_defective)
        if not chosen:
            raise DataError(f"the ELPV {split} split of {csv} is empty with these options")

        defective_set = set(defective)
        samples: list[SampleRecord] = []
        probabilities: list[float] = []
        for i in chosen:
            rel, prob, _ = rows[i]
            path = self.data_dir / rel
            if not path.is_file():
                raise DataError(f"ELPV image {path} listed in {csv} does not exist")
            is_defective = i in defective_set
            samples.append(
                SampleRecord(
                    path, int(is_defective), "defective" if is_defective else "good", None, False
                )
            )
            probabilities.append(prob)
        self.probabilities: np.ndarray = np.asarray(probabilities, dtype=np.float64)
        """Annotated defect probability of each sample, float64 (N,)."""
        super().__init__(samples, transform)
