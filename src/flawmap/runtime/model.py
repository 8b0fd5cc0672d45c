"""Score images with an exported model: numpy, Pillow and ONNX Runtime or OpenVINO, no torch."""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from flawmap.errors import ConfigError, DataError
from flawmap.runtime.backends import Graph, open_graph
from flawmap.runtime.format import THRESHOLD_FILE, ExportInfo, read_export
from flawmap.runtime.preprocess import Preprocessor
from flawmap.runtime.search import BankSearch, make_search
from flawmap.runtime.threads import ThreadSettings

#: The search a PatchCore export uses unless told otherwise: the trained model's own (cluster
#: pruning, faiss's flat scan for the queries pruning cannot help); fastest on both measured
#: banks (benchmarks/nn_search.py).
DEFAULT_SEARCH = "pruned"


@dataclass
class RuntimePrediction:
    """What :meth:`ExportedModel.predict` returns; fields as :class:`flawmap.models.Prediction`.

    Attributes:
        scores: (N,) float32 image scores, higher = more anomalous.
        maps: (N, H, W) float32 anomaly maps at the model's input size.
        labels: (N,) bool, ``scores >= threshold``; ``None`` without a threshold.
        threshold: the threshold used (``None`` if none).
    """

    scores: np.ndarray
    maps: np.ndarray
    labels: np.ndarray | None
    threshold: float | None
    paths: list[str] = field(default_factory=list)


class ExportedModel:
    """An exported model folder, ready to score images.

    Args:
        folder: a folder written by ``flawmap export``.
        threads: intra-op threads (default: the cores this process may use).
        spin: let idle worker threads spin-wait (default no: see :mod:`flawmap.runtime.threads`).
        search: PatchCore exports only: ``"pruned"`` (default) or ``"faiss"``; both exact.
        verify: check every file's SHA-256 against ``model.json`` before loading.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        threads: int | None = None,
        spin: bool | None = None,
        search: str | None = None,
        verify: bool = True,
    ) -> None:
        self.info: ExportInfo = read_export(folder, verify=verify)
        self.folder = self.info.folder
        self.name = self.info.model
        self.threads = ThreadSettings.default(threads, spin)
        self.preprocessor = Preprocessor(self.info.image_size, self.info.center_crop)
        self.threshold: float | None = self.info.threshold
        self.batch_size = int(self.info.params.get("batch_size", 8))
        self.graphs: dict[str, Graph] = {
            name: open_graph(
                self.folder / spec["file"],
                self.info.backend,
                spec.get("precision", "fp32"),
                self.threads,
            )
            for name, spec in self.info.graphs.items()
        }
        self.search: BankSearch | None = None
        if self.info.head == "nearest_neighbour":
            bank = np.load(self.folder / self.info.arrays["memory_bank"], allow_pickle=False)
            self.search = make_search(
                search or DEFAULT_SEARCH,
                bank,
                self.threads.count,
                int(self.info.params.get("seed", 0)),
            )
        elif search is not None:
            raise ConfigError(f"search applies to PatchCore exports only, not to {self.name}")

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the (pre-processed) images the model scores."""
        return self.info.input_size

    def get_params(self) -> dict[str, Any]:
        """The trained model's parameters, as exported."""
        return dict(self.info.params)

    def preprocess(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """A decoded image (PIL, or (H, W, 3) uint8) -> (3, H, W) float32 in [0, 1]."""
        return self.preprocessor(image)

    def predict(self, images: np.ndarray, *, batch_size: int | None = None) -> RuntimePrediction:
        """Score pre-processed images (N, 3, H, W): float32 in [0, 1] or uint8."""
        x = self._checked(images)
        size = batch_size or self.batch_size
        scores, maps = [], []
        for start in range(0, len(x), size):
            s, m = self._forward(x[start : start + size])
            scores.append(s)
            maps.append(m)
        score_arr = np.concatenate(scores).astype(np.float32)
        labels = None if self.threshold is None else score_arr >= self.threshold
        return RuntimePrediction(
            score_arr, np.concatenate(maps).astype(np.float32), labels, self.threshold
        )

    def predict_images(
        self, images: Iterable[Image.Image | np.ndarray | str | os.PathLike[str]]
    ) -> RuntimePrediction:
        """Decode (paths, via :func:`flawmap.data.io.load_image`), pre-process and score."""
        from flawmap.data.io import load_image

        batch, paths = [], []
        for item in images:
            if isinstance(item, str | os.PathLike):
                paths.append(str(item))
                item = load_image(item)
            batch.append(self.preprocess(item))
        if not batch:
            raise DataError("no images to predict")
        prediction = self.predict(np.stack(batch))
        prediction.paths = paths
        return prediction

    def save_threshold(self, value: float | None) -> None:
        """Set the threshold and write it to ``threshold.json`` (atomically)."""
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float | np.floating)
            or not math.isfinite(float(value))
        ):
            raise ConfigError(f"threshold must be a finite number or None, got {value!r}")
        self.threshold = None if value is None else float(value)
        target = self.folder / THRESHOLD_FILE
        payload = json.loads(target.read_text(encoding="utf-8"))
        payload["threshold"] = self.threshold
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
        temporary.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, target)

    # ------------------------------------------------------------------ internals
    def _checked(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images)
        expected = self.input_size
        if x.ndim != 4 or x.shape[1] != 3:
            raise DataError(f"expected images of shape (N, 3, H, W), got {x.shape}")
        if tuple(x.shape[-2:]) != expected:
            raise DataError(
                f"images are {x.shape[2]}x{x.shape[3]} but this model expects "
                f"{expected[0]}x{expected[1]}; pre-process them with model.preprocess"
            )
        if len(x) == 0:
            raise DataError("no images to predict")
        if x.dtype == np.uint8:
            return x.astype(np.float32) / np.float32(255.0)
        if x.dtype.kind != "f":
            raise DataError(f"expected float images in [0, 1] or uint8, got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise DataError("the images contain NaN/inf values; they cannot be scored")
        if x.min() < -1e-3 or x.max() > 1.0 + 1e-3:
            raise DataError(
                f"float images must lie in [0, 1], got values in [{x.min():.4g}, {x.max():.4g}]"
            )
        return x

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the graphs in order, passing values by name; the memory-bank search turns
        ``patches`` (B, h, w, D) into ``patch_scores`` (B, 1, h, w) where a graph needs them."""
        values: dict[str, np.ndarray] = {"images": x}
        for graph in self.graphs.values():
            if "patch_scores" in graph.input_names and "patch_scores" not in values:
                values["patch_scores"] = self._patch_scores(values["patches"])
            values.update(graph.run({key: values[key] for key in graph.input_names}))
        return values["scores"], values["maps"]

    def _patch_scores(self, patches: np.ndarray) -> np.ndarray:
        if self.search is None:
            raise ConfigError(f"{self.folder}: a graph needs patch_scores, the export has no bank")
        b, h, w, d = patches.shape
        return self.search.distances(patches.reshape(-1, d)).reshape(b, 1, h, w)


def load_exported(folder: str | os.PathLike[str], **options: Any) -> ExportedModel:
    """:class:`ExportedModel` of ``folder`` (options: ``threads``, ``spin``, ``search``,
    ``verify``)."""
    return ExportedModel(folder, **options)
