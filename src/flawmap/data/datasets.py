"""Datasets of images (and optional ground-truth masks) for fitting and evaluating detectors.

Every dataset is a :class:`torch.utils.data.Dataset` of dicts that the default DataLoader collation
batches::

    image          float32 (3, H, W) in [0, 1]
    mask           float32 (1, H, W) of {0, 1}; all zeros for good images or without a mask
    label          int: 0 good, 1 defective, -1 unknown
    has_mask       bool: pixel ground truth exists for this image
    path           str
    defect_type    str: "good", a defect folder name, or "" when unknown
    original_size  int64 (2,) = [H0, W0] of the file before resizing
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from flawmap.data.io import (
    IMAGE_EXTENSIONS,
    image_shape,
    is_image_file,
    list_images,
    load_image,
    load_mask,
)
from flawmap.data.transforms import ImageTransform
from flawmap.errors import ConfigError, DataError, FlawmapWarning

__all__ = [
    "FolderDataset",
    "ImageDataset",
    "MVTecDataset",
    "PathsDataset",
    "SampleRecord",
    "load_sample",
    "original_shapes",
    "split_holdout",
    "with_transform",
]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class SampleRecord:
    """One image of a dataset.

    Attributes:
        path: the image file.
        label: 0 good, 1 defective, -1 unknown.
        defect_type: "good", a defect folder name, or "" when unknown.
        mask_path: the mask file, or None when there is none (e.g. good images).
        has_mask: whether pixel ground truth exists; defaults to ``mask_path is not None``. Good
            images of a split that has masks set it to True (their ground truth is all zeros).
    """

    path: Path
    label: int
    defect_type: str
    mask_path: Path | None = None
    has_mask: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.mask_path is not None:
            object.__setattr__(self, "mask_path", Path(self.mask_path))
        if self.has_mask is None:
            object.__setattr__(self, "has_mask", self.mask_path is not None)
        elif not self.has_mask and self.mask_path is not None:
            raise DataError(f"record for {self.path} has mask {self.mask_path} but has_mask=False")
        if isinstance(self.label, bool) or self.label not in (-1, 0, 1):
            raise DataError(f"record for {self.path} has label {self.label!r}; use 0, 1 or -1")
        object.__setattr__(self, "label", int(self.label))


def _warn_empty_mask(record: SampleRecord, pixels: int, size: tuple[int, int]) -> None:
    """FlawmapWarning: a defective image's ground truth has no defect pixel at ``size``."""
    if pixels == 0:
        why = "marks no defect pixel (see flawmap.data.load_mask for the accepted encodings)"
    else:
        why = (
            f"marks {pixels} defect pixel(s) but none is left after resizing/cropping to "
            f"{size[0]}x{size[1]} (a larger image_size keeps them)"
        )
    warnings.warn(
        f"mask {record.mask_path} of defective image {record.path} {why}; the image still "
        "counts as defective, and all its pixels count as normal in the pixel metrics",
        FlawmapWarning,
        stacklevel=3,
    )


def load_sample(
    record: SampleRecord, transform: ImageTransform, *, warned: set[Path] | None = None
) -> dict[str, Any]:
    """Read and transform one record into the item dict described in the module docstring.

    A defective image whose mask has no defect pixel (in the file, or left after resizing) gets a
    :class:`~flawmap.errors.FlawmapWarning` naming both files; with ``warned``, only once per
    image path (the set is updated).

    Raises:
        DataError: unreadable image/mask, or a mask whose size differs from its image.
    """
    pil = load_image(record.path)
    h0, w0 = pil.height, pil.width
    image = transform.image(pil)
    if record.mask_path is not None:
        m = load_mask(record.mask_path)
        if m.shape != (h0, w0):
            raise DataError(
                f"mask {record.mask_path} has size (H, W) = {m.shape} but its image "
                f"{record.path} has size (H, W) = {(h0, w0)}"
            )
        mask = transform.mask(m)
        empty = record.label == 1 and not bool(mask.any())
        if empty and (warned is None or record.path not in warned):
            _warn_empty_mask(record, int(np.count_nonzero(m)), transform.output_size)
            if warned is not None:
                warned.add(record.path)
    else:
        mask = torch.zeros((1, *transform.output_size), dtype=torch.float32)
    return {
        "image": image,
        "mask": mask,
        "label": int(record.label),
        "has_mask": bool(record.has_mask),
        "path": str(record.path),
        "defect_type": record.defect_type,
        "original_size": torch.tensor([h0, w0], dtype=torch.long),
    }


class ImageDataset(Dataset):
    """Base class: a list of :class:`SampleRecord` read lazily through an :class:`ImageTransform`.

    Items are dicts: ``image`` (3, H, W), ``mask`` (1, H, W), ``label``, ``has_mask``, ``path``,
    ``defect_type``, ``original_size`` (2,) -- see the module docstring.
    """

    def __init__(self, samples: Iterable[SampleRecord], transform: ImageTransform | None = None):
        self.samples: list[SampleRecord] = list(samples)
        self.transform: ImageTransform = transform if transform is not None else ImageTransform()
        self._warned_empty_masks: set[Path] = set()
        #: Where the images come from, in words (recorded with a model fitted on them).
        self.description: str | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return load_sample(self.samples[index], self.transform, warned=self._warned_empty_masks)

    @property
    def labels(self) -> np.ndarray:
        """Image labels, int64 array of shape (N,): 0 good, 1 defective, -1 unknown."""
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def has_pixel_labels(self) -> bool:
        """True when at least one sample has pixel ground truth (a mask, or an all-zero one)."""
        return any(s.has_mask for s in self.samples)

    def with_transform(self, transform: ImageTransform) -> ImageDataset:
        """A copy of this dataset that reads its images through ``transform``."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.transform = transform
        copy._warned_empty_masks = set()
        return copy

    def original_shapes(self) -> np.ndarray:
        """``(N, 2)`` int64 ``(H, W)`` of every image file, read from the file headers."""
        return np.array([image_shape(s.path) for s in self.samples], dtype=np.int64).reshape(-1, 2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, transform={self.transform})"


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(
        (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )


class _MaskMatcher:
    """Matches images to masks named ``<stem>_mask.<ext>`` or ``<stem>.<ext>`` in one folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.masks = list_images(folder)
        self.by_stem: dict[str, list[Path]] = {}
        for m in self.masks:
            self.by_stem.setdefault(m.stem, []).append(m)
        self.used: dict[Path, Path] = {}

    def find(self, image: Path) -> Path | None:
        """The mask of ``image`` or None; DataError when the match is ambiguous."""
        found = self.by_stem.get(f"{image.stem}_mask", []) + self.by_stem.get(image.stem, [])
        if len(found) > 1:
            names = ", ".join(str(f) for f in found)
            raise DataError(f"ambiguous masks for image {image}: {names}")
        if not found:
            return None
        mask = found[0]
        other = self.used.get(mask)
        if other is not None and other != image:
            raise DataError(f"mask {mask} matches two images: {other} and {image}")
        self.used[mask] = image
        return mask

    def expected(self, image: Path) -> Path:
        """The conventional mask path for ``image`` (for error messages)."""
        return self.folder / f"{image.stem}_mask.png"

    def unused(self) -> list[Path]:
        return [m for m in self.masks if m not in self.used]


class MVTecDataset(ImageDataset):
    """One category of a dataset in the MVTec AD layout.

    ``root`` holds ``train/good/*``, ``test/<good|defect>/*`` and optionally
    ``ground_truth/<defect>/<stem>_mask.<ext>`` (a mask named ``<stem>.<ext>`` is accepted too).
    Without ``ground_truth/`` the test split is image-level only (``has_mask`` False). With it,
    good test images have ``has_mask`` True (all-zero ground truth), and every defective image of a
    defect type that has a ``ground_truth/<defect>/`` folder must have a mask.

    Items: see :class:`ImageDataset` -- ``image`` (3, H, W), ``mask`` (1, H, W), ...

    Raises:
        DataError: missing folders, no images, a defective image without its mask, a mask without
            an image (at construction), or a mask whose size differs from its image (at load time).
    """

    def __init__(
        self,
        root: PathLike,
        split: Literal["train", "test"],
        transform: ImageTransform | None = None,
    ):
        if split not in ("train", "test"):
            raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
        self.root = Path(root)
        self.split: str = split
        if not self.root.is_dir():
            what = "is not a directory" if self.root.exists() else "does not exist"
            raise DataError(f"MVTec category folder {self.root} {what}")
        samples = self._scan_train() if split == "train" else self._scan_test()
        super().__init__(samples, transform)
        self.description = f"{split} split of {self.root}"

    @property
    def category(self) -> str:
        """Name of the category folder (e.g. "bottle")."""
        return self.root.name

    def _layout_hint(self) -> str:
        subdirs = _visible_subdirs(self.root)
        if any((d / "train").is_dir() or (d / "test").is_dir() for d in subdirs):
            return " (this looks like a dataset root: pass one category folder inside it)"
        return ""

    def _scan_train(self) -> list[SampleRecord]:
        train = self.root / "train"
        if not train.is_dir():
            raise DataError(f"MVTec category {self.root} has no train/ folder{self._layout_hint()}")
        good = train / "good"
        if not good.is_dir():
            raise DataError(f"MVTec category {self.root} has no train/good/ folder ({good})")
        images = list_images(good)
        if not images:
            exts = " ".join(sorted(IMAGE_EXTENSIONS))
            raise DataError(f"no training images ({exts}) in {good}")
        return [SampleRecord(p, 0, "good", None, has_mask=False) for p in images]

    def _scan_test(self) -> list[SampleRecord]:
        test = self.root / "test"
        if not test.is_dir():
            raise DataError(f"MVTec category {self.root} has no test/ folder{self._layout_hint()}")
        gt_root = self.root / "ground_truth"
        has_gt = gt_root.is_dir()
        samples: list[SampleRecord] = []
        for folder in _visible_subdirs(test):
            label = 0 if folder.name == "good" else 1
            images = list_images(folder)
            gt_dir = gt_root / folder.name
            if not (has_gt and gt_dir.is_dir()):
                # Good images of a split with ground truth have an (implicit) all-zero mask.
                has_mask = has_gt and label == 0
                samples += [SampleRecord(p, label, folder.name, None, has_mask) for p in images]
                continue
            matcher = _MaskMatcher(gt_dir)
            for p in images:
                mask = matcher.find(p)
                if mask is None and label == 1:
                    raise DataError(
                        f"defective test image {p} has no mask: expected {matcher.expected(p)} "
                        f"(or {p.stem}.<ext> / {p.stem}_mask.<ext>) in {gt_dir}"
                    )
                samples.append(SampleRecord(p, label, folder.name, mask, has_mask=True))
            unused = matcher.unused()
            if unused:
                raise DataError(
                    f"mask without image: {unused[0]} has no image {folder / unused[0].stem}.*"
                    + (f" ({len(unused) - 1} more in {gt_dir})" if len(unused) > 1 else "")
                )
        if has_gt:
            for gt_dir in _visible_subdirs(gt_root):
                masks = list_images(gt_dir)
                if masks and not (test / gt_dir.name).is_dir():
                    raise DataError(
                        f"mask without image: {masks[0]} ({len(masks)} masks in {gt_dir}) but "
                        f"there is no test folder {test / gt_dir.name}"
                    )
        if not samples:
            raise DataError(f"empty test split: no images in the subfolders of {test}")
        return samples


class FolderDataset(ImageDataset):
    """Images from plain folders: good images (label 0) and defect folders (label 1).

    ``defect_type`` is the defect folder's name. With ``mask_dir``, each defective image must have
    a mask named ``<stem>.<ext>`` or ``<stem>_mask.<ext>``, looked up in ``mask_dir/<defect folder
    name>/`` when that subfolder exists, else in ``mask_dir`` itself; good images then have an
    all-zero ground truth (``has_mask`` True). Without ``mask_dir`` nothing has ``has_mask``.

    Items: see :class:`ImageDataset` -- ``image`` (3, H, W), ``mask`` (1, H, W), ...

    Raises:
        DataError: a folder is missing, no images at all, a defective image without a mask, an
            ambiguous mask, or a mask whose size differs from its image (at load time).
    """

    def __init__(
        self,
        good_dir: PathLike | None,
        defect_dirs: Sequence[PathLike] = (),
        mask_dir: PathLike | None = None,
        transform: ImageTransform | None = None,
    ):
        if isinstance(defect_dirs, str | os.PathLike):
            defect_dirs = [defect_dirs]
        self.good_dir = Path(good_dir) if good_dir is not None else None
        self.defect_dirs = [Path(d) for d in defect_dirs]
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        if self.mask_dir is not None and not self.mask_dir.is_dir():
            what = "is not a directory" if self.mask_dir.exists() else "does not exist"
            raise DataError(f"mask folder {self.mask_dir} {what}")
        has_gt = self.mask_dir is not None
        samples: list[SampleRecord] = []
        if self.good_dir is not None:
            samples += [
                SampleRecord(p, 0, "good", None, has_mask=has_gt)
                for p in list_images(self.good_dir)
            ]
        matchers: dict[Path, _MaskMatcher] = {}
        for folder in self.defect_dirs:
            images = list_images(folder)
            if self.mask_dir is None:
                samples += [SampleRecord(p, 1, folder.name, None) for p in images]
                continue
            sub = self.mask_dir / folder.name
            search = sub if sub.is_dir() else self.mask_dir
            matcher = matchers.setdefault(search, _MaskMatcher(search))
            for p in images:
                mask = matcher.find(p)
                if mask is None:
                    raise DataError(
                        f"defective image {p} has no mask: expected {search / p.stem}.<ext> or "
                        f"{search / p.stem}_mask.<ext>"
                    )
                samples.append(SampleRecord(p, 1, folder.name, mask))
        if not samples:
            where = [str(d) for d in ([self.good_dir] if self.good_dir else []) + self.defect_dirs]
            raise DataError(f"no images found in {', '.join(where) or '(no folders given)'}")
        super().__init__(samples, transform)


def _list_images_recursive(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder`` (hidden files and folders skipped), sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath)
        found += [base / f for f in filenames if is_image_file(base / f)]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


class PathsDataset(ImageDataset):
    """Arbitrary inputs for prediction: image files and/or folders (searched recursively).

    Order: the given order of ``paths``, each folder's images sorted. Labels are -1 (unknown),
    ``defect_type`` is the image's parent folder name, ``has_mask`` False.

    Items: see :class:`ImageDataset` -- ``image`` (3, H, W), ``mask`` (1, H, W) of zeros, ...

    Raises:
        DataError: no paths, a path that does not exist, a file without an image extension, or a
            folder without images.
    """

    def __init__(self, paths: Sequence[PathLike], transform: ImageTransform | None = None):
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        paths = [Path(p) for p in paths]
        if not paths:
            raise DataError("no input paths given")
        samples: list[SampleRecord] = []
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        for p in paths:
            if p.is_dir():
                files = _list_images_recursive(p)
                if not files:
                    raise DataError(f"no image files ({exts}) found under {p}")
            elif p.is_file():
                if p.suffix.lower() not in IMAGE_EXTENSIONS:
                    raise DataError(f"{p} is not an image file (supported: {exts})")
                files = [p]
            else:
                raise DataError(f"input path {p} does not exist")
            samples += [SampleRecord(f, -1, f.parent.name, None) for f in files]
        super().__init__(samples, transform)


def split_holdout(
    n: int, fraction: float, seed: int, min_holdout: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministically split ``range(n)`` into ``(fit_indices, holdout_indices)``.

    The holdout gets ``max(min_holdout, round(fraction * n))`` random indices (none when
    ``fraction == 0``), drawn with ``np.random.default_rng(seed)``. Both arrays are sorted int64.

    Raises:
        ConfigError: ``fraction`` not in [0, 1), negative ``n``/``min_holdout``, or no index left
            for fitting.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ConfigError(f"n must be a non-negative int, got {n!r}")
    if isinstance(min_holdout, bool) or not isinstance(min_holdout, int | np.integer):
        raise ConfigError(f"min_holdout must be an int, got {min_holdout!r}")
    if min_holdout < 0:
        raise ConfigError(f"min_holdout must be >= 0, got {min_holdout}")
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise ConfigError(f"holdout fraction must be a number, got {fraction!r}") from None
    if not (0.0 <= fraction < 1.0):
        raise ConfigError(f"holdout fraction must be in [0, 1), got {fraction}")
    n = int(n)
    n_holdout = 0 if fraction == 0.0 else max(int(min_holdout), math.floor(fraction * n + 0.5))
    if n - n_holdout < 1:
        raise ConfigError(
            f"holdout fraction {fraction} (min_holdout {min_holdout}) of {n} images leaves no "
            "images to fit on"
        )
    order = np.random.default_rng(seed).permutation(n)
    holdout = np.sort(order[:n_holdout]).astype(np.int64)
    fit = np.sort(order[n_holdout:]).astype(np.int64)
    return fit, holdout


def original_shapes(dataset: Dataset) -> np.ndarray:
    """``(N, 2)`` ``(H, W)`` of a dataset's images before any resizing.

    A dataset's own ``original_shapes()`` answers (an :class:`ImageDataset` reads its file
    headers), also through a ``Subset``; other datasets are read item by item (their
    ``original_size`` field, else the image's shape).
    """
    own = getattr(dataset, "original_shapes", None)
    if callable(own):
        return np.asarray(own(), dtype=np.int64).reshape(-1, 2)
    if isinstance(dataset, Subset):
        return original_shapes(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    shapes = []
    for i in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[i]
        if "original_size" in item:
            shapes.append([int(v) for v in item["original_size"]])
        else:
            shapes.append(list(item["image"].shape[-2:]))
    return np.array(shapes, dtype=np.int64).reshape(-1, 2)


def with_transform(dataset: Dataset, transform: ImageTransform) -> Dataset:
    """``dataset`` reading its images through ``transform``: an :class:`ImageDataset` (or a
    ``Subset`` of one) is re-wrapped when its transform differs; other datasets are returned
    as they are (their images must already have the size the model expects)."""
    if isinstance(dataset, ImageDataset):
        return dataset if dataset.transform == transform else dataset.with_transform(transform)
    if isinstance(dataset, Subset):
        inner = with_transform(dataset.dataset, transform)
        return dataset if inner is dataset.dataset else Subset(inner, dataset.indices)
    return dataset
