"""An exported model seen as a detector, so ``evaluate`` and ``predict`` measure an export with
the same code as the model it came from (the scoring itself is :mod:`flawmap.runtime`'s)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from flawmap.data import ImageTransform
from flawmap.models.base import Prediction, as_dataset, checked_threshold, collect_prediction
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
        fit = info.meta.get("fit") if isinstance(info.meta.get("fit"), dict) else {}
        #: The model's fit summary as exported (``Detector.fit_summary``; empty for old exports).
        self.fit_info: dict[str, Any] = fit
        self.train_seconds_ = fit.get("train_seconds")
        self.n_train_ = fit.get("n_train")
        self.train_data_ = fit.get("data")
        self.holdout_scores_ = fit.get("holdout_scores")
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
        checked = None if value is None else checked_threshold(value)
        learned = self.runtime.threshold
        try:
            if checked is not None:
                self.runtime.threshold = checked
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
        loader = DataLoader(as_dataset(data), batch_size=self.batch_size, shuffle=False)
        batches = tqdm(loader, desc="predict", disable=not progress, leave=False)

        def score(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
            out = self.runtime.predict(images.numpy(), batch_size=len(images))
            return out.scores, out.maps

        return collect_prediction(batches, score, self.runtime.threshold, keep)


def load_any(folder: str | Path, *, threads: int | None = None) -> Any:
    """A model folder (:func:`flawmap.models.load_model`) or an export folder
    (:class:`ExportedDetector`), told apart by their files."""
    from flawmap.runtime import is_export_folder

    if is_export_folder(folder):
        return ExportedDetector(folder, threads=threads)
    from flawmap.models.folder import load_model

    return load_model(folder)
