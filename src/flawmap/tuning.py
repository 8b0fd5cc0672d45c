"""Choose a model and its settings for one category without ever looking at its test images.

:func:`tune` fits every :class:`Candidate` (a model name and parameters) on the same part of
``train/good`` and scores it on a validation set by one of two criteria:

- **training data only** (:func:`synthetic_validation`): a seeded, held-out slice of the good
  training images plus one synthetically damaged copy of each (:mod:`flawmap.synth`, CutPaste
  and procedural-texture defects, none of which any candidate trains on);
- **a validation folder** (:func:`folder_validation`): a few real defective images the user
  names (``VAL/<defect>/*``, optional ``VAL/good/*`` and ``VAL/ground_truth/<defect>/*``),
  completed with the held-out good training images; refused when an image is also in the
  category's ``test/`` folder or its training images.

Every validation image is stored once at a reference size (the largest candidate's); each
candidate sees it resized to its own input size and its map is resized back, so all candidates
are measured on the same pixels. The score is the mean of image AUROC, pixel AUROC and AUPRO
(those defined). Candidates run in the given order while the time budget allows; the best one
(optionally among those under a latency limit, timed at batch size 1 on the first validation
image) is the result.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from flawmap.data import (
    FolderDataset,
    ImageTransform,
    MVTecDataset,
    list_images,
    plan_geometry,
    split_holdout,
)
from flawmap.data.datasets import _list_images_recursive
from flawmap.errors import ConfigError, DataError
from flawmap.metrics import compute_metrics
from flawmap.models import create_model
from flawmap.models.base import Detector, _jsonable
from flawmap.runtime.format import file_sha256

__all__ = [
    "DEFAULT_CANDIDATES",
    "Candidate",
    "CandidateResult",
    "TuneResult",
    "ValidationImages",
    "folder_validation",
    "objective",
    "synthetic_validation",
    "tune",
    "validation_metrics",
]

OBJECTIVE_METRICS = ("image_auroc", "pixel_auroc", "aupro")
"""The validation metrics whose mean ranks candidates."""

MAX_REFERENCE_SIDE = 512
"""Validation images are stored at most at a budget of this many pixels squared."""


@dataclass(frozen=True)
class Candidate:
    """One configuration to try: a registered model name and constructor parameters."""

    model: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``model key=value ...`` (the defaults when no parameter is given)."""
        shown = " ".join(f"{k}={_show(v)}" for k, v in self.params.items())
        return f"{self.model} {shown}".strip()

    def build(self, seed: int) -> Detector:
        """A new detector of this configuration (``seed`` unless the parameters name one)."""
        if "center_crop" in self.params:
            raise ConfigError(
                f"candidate {self.label!r}: tuning compares whole images, drop center_crop"
            )
        return create_model(self.model, **{"seed": seed, **self.params})

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "params": {k: _jsonable(v) for k, v in self.params.items()}}


def _show(value: Any) -> str:
    if isinstance(value, str) and value.startswith("tf_efficientnet_"):
        return value.removeprefix("tf_efficientnet_")
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


#: The default search, cheapest first: the two baselines at the default size, PaDiM with every
#: channel of its two stages, larger backbones, then higher resolutions (with a smaller coreset so
#: that PatchCore's search stays fast) and tiling for images larger than the budget.
DEFAULT_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("patchcore"),
    Candidate("padim"),
    Candidate("padim", {"n_features": 152}),
    Candidate("patchcore", {"image_size": 320, "coreset_ratio": 0.05}),
    Candidate("padim", {"image_size": 320, "n_features": 152}),
    Candidate("patchcore", {"backbone": "tf_efficientnet_lite2"}),
    Candidate("padim", {"backbone": "tf_efficientnet_lite2", "n_features": 168}),
    Candidate("patchcore", {"image_size": 448, "coreset_ratio": 0.01}),
    Candidate("padim", {"image_size": 448, "n_features": 152}),
    Candidate("patchcore", {"tiling": "auto", "coreset_ratio": 0.01}),
)


@dataclass
class ValidationImages:
    """Labelled validation images at one reference size.

    Attributes:
        images: (N, 3, H, W) uint8.
        labels: (N,) int64, 1 = defective.
        masks: (N, H, W) bool ground truth, or None (image-level only).
        source: what the defective images are (``"synthetic"`` or the folder).
    """

    images: torch.Tensor
    labels: np.ndarray
    masks: np.ndarray | None
    source: str

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def describe(self) -> str:
        n_bad = int(self.labels.sum())
        masks = "with masks" if self.masks is not None else "image labels only"
        return f"{len(self.labels) - n_bad} good + {n_bad} defective ({self.source}, {masks})"


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _stack(dataset: Dataset, fields: Sequence[str]) -> dict[str, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    return {f: torch.stack([torch.as_tensor(item[f]) for item in items]) for f in fields}


def synthetic_validation(
    good: Dataset, *, seed: int = 0, generator: Any | None = None
) -> ValidationImages:
    """Criterion (a): every good image of ``good`` (items with an ``"image"``) and one damaged
    copy of it (the defect's mask as ground truth).

    ``generator`` makes the defects (default: CutPaste and the procedural-texture synthesizer,
    alternating); defect ``i`` is drawn from seed ``seed + i``.
    """
    from flawmap.evaluation.synthetic import SyntheticValidationSet

    if generator is None:
        generator = _AlternatingDefects()
    validation = SyntheticValidationSet(good, generator, seed=seed)
    stacked = _stack(validation, ("image", "mask", "label"))
    return ValidationImages(
        images=_to_uint8(stacked["image"]),
        labels=stacked["label"].numpy().astype(np.int64),
        masks=stacked["mask"][:, 0].numpy() > 0.5,
        source="synthetic",
    )


class _AlternatingDefects:
    """CutPaste for even seeds' images, procedural-texture/structural defects for the rest."""

    def __init__(self) -> None:
        from flawmap.synth import CutPaste, DefectSynthesizer

        self.sources = (CutPaste(), DefectSynthesizer())
        self.calls = 0

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> Any:
        source = self.sources[self.calls % len(self.sources)]
        self.calls += 1
        return source(image, generator)


def check_no_overlap(val_images: Sequence[Path], category: Path) -> None:
    """Refuse validation images that are also test or training images of ``category``: the
    same file, or a file with the same bytes (the test folder is hashed, never decoded).

    Raises:
        DataError: naming the first overlapping pair and how to fix it.
    """
    val = [Path(p).resolve() for p in val_images]
    test_dir = (category / "test").resolve()
    for p in val:
        if test_dir in p.parents:
            raise DataError(
                f"validation image {p} is inside the test folder {test_dir}: a validation "
                "folder must hold images that are never used for reporting"
            )
    digests = {file_sha256(p): p for p in val}
    for split in ("test", "train"):
        folder = category / split
        if not folder.is_dir():
            continue
        for other in _list_images_recursive(folder):
            match = digests.get(file_sha256(other))
            if match is not None:
                what = "test" if split == "test" else "training"
                raise DataError(
                    f"validation image {match} is the same file as the {what} image {other}: "
                    f"remove it from the validation folder (validation images must be neither "
                    "test images nor training images)"
                )


def folder_validation(
    folder: str | os.PathLike[str],
    category: str | os.PathLike[str],
    transform: ImageTransform,
    good: Dataset | None = None,
) -> ValidationImages:
    """Criterion (b): the user's labelled images in ``folder`` at ``transform``'s size.

    Layout: ``folder/good/*`` (optional), ``folder/<defect>/*`` (at least one defective image),
    optional masks ``folder/ground_truth/<defect>/<stem>_mask.png`` (all defect folders or
    none). Good items of ``good`` (held-out training images) are added as normal images.

    Raises:
        DataError: a missing or empty folder, no defective image, no good image at all, or an
            image that is also in ``category``'s test or training folders.
    """
    root = Path(folder)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"validation folder {root} {what}")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    defect_dirs = [d for d in subdirs if d.name not in ("good", "ground_truth")]
    if not defect_dirs or not any(list_images(d) for d in defect_dirs):
        raise DataError(
            f"validation folder {root} has no defective images: put them in "
            f"{root}/<defect name>/ (and good ones, optionally, in {root}/good/)"
        )
    gt = root / "ground_truth"
    dataset = FolderDataset(
        root / "good" if (root / "good").is_dir() else None,
        defect_dirs,
        mask_dir=gt if gt.is_dir() else None,
        transform=transform,
    )
    check_no_overlap([s.path for s in dataset.samples], Path(category))
    stacked = _stack(dataset, ("image", "mask", "label"))
    images, labels = stacked["image"], stacked["label"].numpy().astype(np.int64)
    masks = stacked["mask"][:, 0].numpy() > 0.5 if dataset.has_pixel_labels else None
    if good is not None and len(good) > 0:  # type: ignore[arg-type]
        extra = _stack(good, ("image",))["image"]
        images = torch.cat([images, extra])
        labels = np.concatenate([labels, np.zeros(len(extra), dtype=np.int64)])
        if masks is not None:
            masks = np.concatenate([masks, np.zeros((len(extra), *masks.shape[1:]), bool)])
    if not (labels == 0).any():
        raise DataError(f"validation folder {root} gives no good image to compare with")
    return ValidationImages(_to_uint8(images), labels, masks, str(root))


def resized(images: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
    """uint8 images (N, 3, h, w) -> float (N, 3, H, W) in [0, 1] at ``transform``'s size."""
    x = images.float().div_(255.0)
    size = transform.output_size
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp_(0.0, 1.0)
    return x


@torch.inference_mode()
def validation_metrics(
    detector: Detector, validation: ValidationImages, batch_size: int = 16
) -> dict[str, float | None]:
    """A fitted detector's metrics on ``validation``: images resized to its input size, maps
    resized back to the validation size (so every candidate is measured on the same pixels)."""
    scores, maps = [], []
    for start in range(0, len(validation.labels), batch_size):
        x = resized(validation.images[start : start + batch_size], detector.transform)
        pred = detector.predict(x)
        scores.append(pred.scores)
        if validation.masks is not None:
            m = torch.from_numpy(pred.maps)[:, None]
            if tuple(m.shape[-2:]) != validation.size:
                m = F.interpolate(m, size=validation.size, mode="bilinear", align_corners=False)
            maps.append(m[:, 0].numpy())
    return compute_metrics(
        validation.labels,
        np.concatenate(scores),
        validation.masks,
        np.concatenate(maps) if validation.masks is not None else None,
    )


def objective(metrics: dict[str, float | None]) -> float | None:
    """Mean of the defined :data:`OBJECTIVE_METRICS` (None when none is defined)."""
    values = [metrics[k] for k in OBJECTIVE_METRICS if metrics.get(k) is not None]
    return float(np.mean(values)) if values else None


@dataclass
class CandidateResult:
    """One row of the tuning table."""

    candidate: Candidate
    status: str  # "done", "skipped (budget)", "failed: ..."
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    fit_seconds: float | None = None
    latency_ms: float | None = None
    input_size: tuple[int, int] | None = None
    tiles: tuple[int, int] | None = None

    def score(self, validation: str) -> float | None:
        return objective(self.metrics[validation]) if validation in self.metrics else None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.candidate.to_json(),
            "label": self.candidate.label,
            "status": self.status,
            "validation": self.metrics,
            "objective": {name: objective(m) for name, m in self.metrics.items()},
            "fit_seconds": self.fit_seconds,
            "latency_ms": self.latency_ms,
            "input_size": None if self.input_size is None else list(self.input_size),
            "tiles": None if self.tiles is None else list(self.tiles),
        }


@dataclass
class TuneResult:
    """What :func:`tune` found: the chosen (fitted) detector and every candidate's row."""

    detector: Detector | None
    chosen: CandidateResult | None
    rows: list[CandidateResult]
    criterion: str
    validations: dict[str, str]
    seconds: float
    n_fit: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "objective": "mean of " + ", ".join(OBJECTIVE_METRICS) + " on the validation set",
            "validations": self.validations,
            "chosen": None if self.chosen is None else self.chosen.candidate.label,
            "seconds": self.seconds,
            "n_fit": self.n_fit,
            "settings": self.settings,
            "candidates": [r.to_json() for r in self.rows],
        }

    def markdown(self) -> str:
        """The table of every candidate, ranked by the criterion's validation score."""
        lines = [
            "# flawmap tune",
            "",
            f"Criterion: {self.criterion} ({self.validations[self.criterion]}); score = mean of "
            f"{', '.join(OBJECTIVE_METRICS)} on it. Fitted on {self.n_fit} training images; "
            f"{self.seconds / 60:.1f} min in all.",
            "",
            f"Chosen: **{self.chosen.candidate.label if self.chosen else 'none'}**",
            "",
            "| candidate | input (H×W, tiles) | score | image AUROC | pixel AUROC | AUPRO "
            "| fit (s) | latency (ms) | status |",
            "|---|---|---|---|---|---|---|---|---|",
        ]

        def fmt(value: float | None, spec: str = ".3f") -> str:
            return "–" if value is None else format(value, spec)

        ranked = sorted(self.rows, key=lambda r: -(r.score(self.criterion) or -math.inf))
        for r in ranked:
            m = r.metrics.get(self.criterion, {})
            size = "–" if r.input_size is None else f"{r.input_size[0]}×{r.input_size[1]}"
            if r.tiles and r.tiles != (1, 1):
                size += f", {r.tiles[0]}×{r.tiles[1]}"
            lines.append(
                f"| {r.candidate.label} | {size} | {fmt(r.score(self.criterion))} | "
                f"{fmt(m.get('image_auroc'))} | {fmt(m.get('pixel_auroc'))} | "
                f"{fmt(m.get('aupro'))} | {fmt(r.fit_seconds, '.0f')} | "
                f"{fmt(r.latency_ms, '.0f')} | {r.status} |"
            )
        return "\n".join(lines) + "\n"


def _reference_size(
    candidates: Sequence[Candidate], shapes: np.ndarray, seed: int
) -> tuple[int, int]:
    """The validation size: the largest candidate's pixel budget (at most
    ``MAX_REFERENCE_SIDE`` squared and the typical image's), shaped like the typical image."""
    budget = 0.0
    for c in candidates:
        h, w = c.build(seed).input_geometry(_Shapes(shapes)).size
        budget = max(budget, math.sqrt(h * w))
    typical = math.sqrt(float(np.median(shapes[:, 0] * shapes[:, 1].astype(np.float64))))
    side = int(min(budget, MAX_REFERENCE_SIDE, max(typical, 64)))
    return plan_geometry(side, "keep", "off", shapes, 8).size


class _Shapes(Dataset):
    """A stand-in dataset that only answers ``original_shapes``."""

    def __init__(self, shapes: np.ndarray) -> None:
        self.shapes = shapes

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        raise DataError("this stand-in dataset has no images")

    def original_shapes(self) -> np.ndarray:
        return self.shapes


def tune(
    category: str | os.PathLike[str],
    *,
    candidates: Sequence[Candidate] = DEFAULT_CANDIDATES,
    val_dir: str | os.PathLike[str] | None = None,
    score_synthetic: bool = False,
    budget_seconds: float = 30 * 60,
    val_fraction: float = 0.2,
    max_latency_ms: float | None = None,
    seed: int = 0,
    latency_runs: int = 10,
    on_candidate: Callable[[CandidateResult, Detector], None] | None = None,
    log: Callable[[str], None] = print,
) -> TuneResult:
    """Fit and score ``candidates`` on ``category/train/good`` (never its ``test/``).

    A seeded ``val_fraction`` of the good training images is held out of every fit. Without
    ``val_dir`` they are the synthetic validation set (criterion ``"synthetic"``); with it, the
    folder's images plus these good images are (criterion ``"folder"``), and
    ``score_synthetic`` also scores the synthetic set, without letting it decide. A candidate
    starts only when the time spent plus its estimated time fits in ``budget_seconds`` (the
    first one always runs); the rest are listed as skipped. Candidates slower than
    ``max_latency_ms`` (batch 1) are listed but not chosen. ``on_candidate(row, detector)``
    sees every fitted candidate; its time counts neither against the budget nor in
    ``seconds``.

    Raises:
        ConfigError: no candidate, a bad option or candidate parameter.
        DataError: the category or validation folder is unusable, or overlaps the test images.
    """
    if not candidates:
        raise ConfigError("give at least one candidate")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if budget_seconds <= 0:
        raise ConfigError(f"the time budget must be positive, got {budget_seconds} s")
    for c in candidates:
        c.build(seed)  # every candidate's parameters are checked before any work
    start = time.perf_counter()
    root = Path(category)
    train = MVTecDataset(root, "train")
    shapes = train.original_shapes()
    fit_idx, val_idx = split_holdout(len(train), val_fraction, seed)
    reference = ImageTransform(image_size=_reference_size(candidates, shapes, seed))
    held_out = Subset(train.with_transform(reference), val_idx.tolist())
    validations: dict[str, ValidationImages] = {}
    criterion = "synthetic" if val_dir is None else "folder"
    if val_dir is not None:
        validations["folder"] = folder_validation(val_dir, root, reference, good=held_out)
    if val_dir is None or score_synthetic:
        validations["synthetic"] = synthetic_validation(held_out, seed=seed)
    for name, v in validations.items():
        log(f"validation {name}: {v.describe()} at {v.size[0]}x{v.size[1]}")
    fit_data = Subset(train, fit_idx.tolist())
    rows: list[CandidateResult] = []
    best: tuple[float, CandidateResult, Detector] | None = None
    per_pixel: list[float] = []  # seconds per input pixel of the candidates run so far
    outside = 0.0  # seconds spent in on_candidate
    for candidate in candidates:
        detector = candidate.build(seed)
        geometry = detector.input_geometry(_Shapes(shapes[fit_idx]))
        pixels = geometry.size[0] * geometry.size[1]
        elapsed = time.perf_counter() - start - outside
        estimate = max(per_pixel) * pixels if per_pixel else 0.0
        if rows and elapsed + estimate > budget_seconds:
            rows.append(CandidateResult(candidate, "skipped (budget)"))
            log(
                f"skip {candidate.label}: it would take about {estimate:.0f} s and "
                f"{budget_seconds - elapsed:.0f} s of the budget are left"
            )
            continue
        row = CandidateResult(candidate, "done", input_size=geometry.size, tiles=geometry.tiles)
        t0 = time.perf_counter()
        try:
            detector.fit(fit_data)
            row.fit_seconds = time.perf_counter() - t0
            for name, v in validations.items():
                row.metrics[name] = validation_metrics(detector, v)
            if latency_runs:
                from flawmap.evaluation.timing import measure_latency

                image = resized(validations[criterion].images[:1], detector.transform)[0]
                row.latency_ms = measure_latency(detector, image, runs=latency_runs)
        except (DataError, ConfigError, MemoryError, RuntimeError) as exc:
            row.status = "failed: " + " ".join(str(exc).split())[:200]
            rows.append(row)
            log(f"{candidate.label}: {row.status}")
            continue
        per_pixel.append((time.perf_counter() - t0) / pixels)
        rows.append(row)
        score = row.score(criterion)
        log(
            f"{candidate.label}: score {'–' if score is None else f'{score:.4f}'} "
            f"(fit {row.fit_seconds:.0f} s, {row.latency_ms or 0:.0f} ms/image)"
        )
        if on_candidate is not None:
            t1 = time.perf_counter()
            on_candidate(row, detector)
            outside += time.perf_counter() - t1
        eligible = max_latency_ms is None or (row.latency_ms or 0.0) <= max_latency_ms
        if not eligible:
            row.status = f"done, over {max_latency_ms:g} ms"
        if score is not None and eligible and (best is None or score > best[0]):
            best = (score, row, detector)
    return TuneResult(
        detector=None if best is None else best[2],
        chosen=None if best is None else best[1],
        rows=rows,
        criterion=criterion,
        validations={name: v.describe() for name, v in validations.items()},
        seconds=time.perf_counter() - start - outside,
        n_fit=len(fit_idx),
        settings={
            "val_fraction": val_fraction,
            "seed": seed,
            "budget_seconds": budget_seconds,
            "max_latency_ms": max_latency_ms,
            "threads": torch.get_num_threads(),
        },
    )


def write_tuned(result: TuneResult, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Save the chosen detector to ``out`` with ``tuning.json`` and ``tuning.md`` beside it.

    Raises:
        DataError: no candidate could be scored.
    """
    from flawmap.models.folder import save_detector

    if result.detector is None:
        raise DataError(
            "no candidate finished with a validation score: raise the budget, relax the "
            "latency limit, or check the failures in the table"
        )
    extras = {
        "tuning.json": json.dumps(result.to_json(), indent=2) + "\n",
        "tuning.md": result.markdown(),
    }
    return save_detector(result.detector, out, overwrite=overwrite, extras=extras)
