"""An exported model seen as a detector, so ``evaluate`` and ``predict`` measure an export with
the same code as the model it came from (the scoring itself is :mod:`flawmap.runtime`'s)."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from flawmap.data import ImageTransform
from flawmap.errors import ConfigError, DataError
from flawmap.models.base import Prediction, as_dataset
from flawmap.runtime import ExportedModel, load_exported


class _RuntimeForward:
    """``module(images (B, 3, H, W) tensor) -> (scores, maps)`` tensors, through the runtime."""

    def __init__(self, runtime: ExportedModel) -> None:
        self.runtime = runtime

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.runtime.predict(images.numpy(), batch_size=len(images))
        return torch.from_numpy(out.scores), torch.from_numpy(out.maps)


class ExportedDetector:
    """A read-only detector over an export folder: ``name``, ``transform``, ``get_params``,
    ``threshold``, ``predict(dataset, keep=...) -> Prediction``, ``module(images)``.

    Args:
        folder: an export folder (``flawmap export``).
        **options: passed to :func:`flawmap.runtime.load_exported` (``threads``, ``search``).
    """

    def __init__(self, folder: str | Path, **options: Any) -> None:
        self.runtime = load_exported(folder, **options)
        info = self.runtime.info
        self.name = info.model
        self.batch_size = self.runtime.batch_size
        self.train_seconds_ = None
        self.module = _RuntimeForward(self.runtime)
        self.transform = ImageTransform(image_size=info.image_size, center_crop=info.center_crop)
        #: What was exported and how it runs, for reports.
        self.export_info = {
            "export": str(info.folder),
            "backend": info.backend,
            "precision": info.precision,
            "threads": self.runtime.threads.count,
        }

    def get_params(self) -> dict[str, Any]:
        return self.runtime.get_params()

    @property
    def threshold(self) -> float | None:
        return self.runtime.threshold

    @contextlib.contextmanager
    def threshold_override(self, value: float | None) -> Iterator[None]:
        """Use ``value`` (a finite number; ``None``: keep the export's) inside the block."""
        if value is not None and (
            isinstance(value, bool | np.bool_)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(float(value))
        ):
            raise ConfigError(f"threshold must be a finite number, got {value!r}")
        learned = self.runtime.threshold
        try:
            if value is not None:
                self.runtime.threshold = float(value)
            yield
        finally:
            self.runtime.threshold = learned

    def predict(
        self,
        data: Dataset | torch.Tensor,
        *,
        progress: bool = False,
        keep: tuple[str, ...] = (),
    ) -> Prediction:
        """As :meth:`flawmap.models.Detector.predict`, scored by the runtime."""
        dataset = as_dataset(data)
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=0)
        scores, maps, paths = [], [], []
        kept: dict[str, list[np.ndarray]] = {k: [] for k in keep}
        for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
            out = self.runtime.predict(batch["image"].numpy(), batch_size=self.batch_size)
            scores.append(out.scores)
            maps.append(out.maps)
            paths.extend(str(p) for p in batch.get("path", [""] * len(out.scores)))
            for key in keep:
                if key not in batch:
                    raise DataError(f"the dataset items have no field {key!r}")
                kept[key].append(np.asarray(batch[key]))
        if not scores:
            raise DataError("no images to predict")
        score_arr = np.concatenate(scores).astype(np.float32)
        threshold = self.runtime.threshold
        return Prediction(
            scores=score_arr,
            maps=np.concatenate(maps).astype(np.float32),
            labels=None if threshold is None else score_arr >= threshold,
            threshold=threshold,
            paths=paths,
            targets={k: np.concatenate(v) for k, v in kept.items()},
        )


def load_any(folder: str | Path, *, threads: int | None = None) -> Any:
    """A model folder (:func:`flawmap.models.load_model`) or an export folder
    (:class:`ExportedDetector`), told apart by their files."""
    from flawmap.runtime import is_export_folder

    if is_export_folder(folder):
        return ExportedDetector(folder, threads=threads)
    from flawmap.models.folder import load_model

    return load_model(folder)
