"""The one detector interface every flawmap model implements, and the model registry.

Conventions (scikit-learn / PyOD style):

- ``__init__`` only stores its arguments (``get_params()`` returns them, JSON-able);
- ``fit(good_images) -> self`` learns from defect-free images only; a held-out slice of them
  (``threshold_holdout``) is never fitted on and sets the decision threshold;
- ``predict(images) -> Prediction``: image scores, anomaly maps and labels; **higher = more
  anomalous**; ``label = score >= threshold``;
- ``save(dir)`` writes ``config.json`` (parameters) and ``model.safetensors`` (the fitted
  module's state dict: backbone weights, memory banks, statistics, threshold), no pickles;
  ``load_model(dir)`` rebuilds the detector from both, offline;
- using a detector before ``fit`` raises :class:`~flawmap.errors.NotFittedError`.
"""

from __future__ import annotations

import abc
import inspect
import json
import math
import random
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

import flawmap
from flawmap.backbones import DEFAULT_BACKBONE, FeatureExtractor, resolve_layers
from flawmap.data import ImageTransform, split_holdout
from flawmap.errors import ConfigError, DataError, NotFittedError
from flawmap.models.postprocess import AnomalyMapPostprocessor, learn_threshold
from flawmap.registry import Registry
from flawmap.training import TrainingHistory, run_epochs

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "flawmap-model"
FORMAT_VERSION = 1


@dataclass
class Prediction:
    """What ``Detector.predict`` returns. Higher scores = more anomalous.

    Attributes:
        scores: (N,) float32 image anomaly scores.
        maps: (N, H, W) float32 anomaly maps at the model's input size.
        labels: (N,) bool, ``scores >= threshold``; ``None`` when the model has no threshold.
        threshold: the image-score threshold used for ``labels`` (``None`` if none).
        paths: the image paths, when the input carried them.
        targets: batch fields asked for with ``predict(..., keep=(...))``, e.g. ground-truth
            ``"mask"`` (N, 1, H, W) and ``"label"`` (N,), concatenated along the first axis.
    """

    scores: np.ndarray
    maps: np.ndarray
    labels: np.ndarray | None
    threshold: float | None
    paths: list[str] = field(default_factory=list)
    targets: dict[str, np.ndarray] = field(default_factory=dict)

    def masks(self) -> np.ndarray:
        """(N, H, W) bool predicted defect regions: map >= threshold."""
        if self.threshold is None:
            raise NotFittedError("this model has no threshold; fit with threshold_holdout > 0")
        return self.maps >= self.threshold


class AnomalyModule(nn.Module, abc.ABC):
    """The fitted network of a detector: backbone + head + post-processing, all state in buffers.

    ``forward(images (B, 3, H, W) in [0, 1]) -> (scores (B,), maps (B, H, W))``.
    """

    def __init__(self, extractor: FeatureExtractor, smoothing_sigma: float) -> None:
        super().__init__()
        self.extractor = extractor
        self.postprocess = AnomalyMapPostprocessor(smoothing_sigma)
        self.register_buffer("threshold", torch.tensor(float("nan")))

    @abc.abstractmethod
    def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> raw anomaly scores (B, 1, h, w) on the feature grid."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = images.shape[-2:]
        return self.postprocess(self.patch_scores(images), (int(h), int(w)))


class _TensorImages(Dataset):
    """(N, 3, H, W) float tensor in [0, 1] seen as a flawmap dataset."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        self.images = images.float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "path": ""}


def as_dataset(data: Dataset | torch.Tensor | np.ndarray) -> Dataset:
    """Accept a flawmap dataset (items are dicts with an ``"image"``) or an image tensor."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor):
        return _TensorImages(data)
    if isinstance(data, Dataset):
        return data
    raise DataError(
        f"expected a flawmap dataset or an (N, 3, H, W) tensor, got {type(data).__name__}"
    )


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (every random step also takes its own seeded generator)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Detector(abc.ABC):
    """Base class of every flawmap model; see the module docstring for the contract.

    Args (shared by every model):
        backbone: a registered backbone name (``flawmap.backbones.list_backbones()``).
        layers: backbone stages (indices or timm module names); ``None`` = the model's default
            stages, chosen by stride (``default_strides``).
        weights: ``"pretrained"`` (offline-first), ``"random"`` (tests), or a weights file path.
        image_size: input size, int (square) or ``(H, W)``; images are resized to it.
        center_crop: optional centre crop applied after resizing (off by default).
        seed: seed of every random step (channel subsets, coreset start, holdout split, ...).
        threshold_holdout: fraction of the good training images held out of fitting; their
            scores set the threshold. 0 disables the threshold (labels are then ``None``).
        threshold_quantile: the quantile of held-out good scores used as threshold.
        smoothing_sigma: Gaussian smoothing of the upsampled map, in pixels (0 = none).
        batch_size: images per forward pass.
    """

    name: ClassVar[str]
    default_strides: ClassVar[tuple[int, ...]]

    def __init__(
        self,
        *,
        backbone: str = DEFAULT_BACKBONE,
        layers: tuple[int | str, ...] | None = None,
        weights: str = "pretrained",
        image_size: int | tuple[int, int] = 256,
        center_crop: int | tuple[int, int] | None = None,
        seed: int = 0,
        threshold_holdout: float = 0.1,
        threshold_quantile: float = 0.99,
        smoothing_sigma: float = 4.0,
        batch_size: int = 8,
    ) -> None:
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.image_size = image_size
        self.center_crop = center_crop
        self.seed = seed
        self.threshold_holdout = threshold_holdout
        self.threshold_quantile = threshold_quantile
        self.smoothing_sigma = smoothing_sigma
        self.batch_size = batch_size
        self.module_: AnomalyModule | None = None
        self.train_seconds_: float | None = None
        self.n_train_: int | None = None

    # ----------------------------------------------------------------- parameters
    @classmethod
    def param_types(cls) -> dict[str, Any]:
        """Every constructor argument (this class and its bases) with its type annotation."""
        types: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            hints = typing.get_type_hints(init)
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                    types[p.name] = hints.get(p.name, Any)
        return types

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able (tuples become lists)."""
        return {name: _jsonable(getattr(self, name)) for name in self.param_types()}

    @property
    def transform(self) -> ImageTransform:
        """The image transform this model expects its inputs to have been through."""
        return ImageTransform(image_size=self.image_size, center_crop=self.center_crop)

    def stage_indices(self) -> tuple[int, ...]:
        """Backbone stages used: ``layers`` if given, else the model's default strides."""
        return resolve_layers(self.backbone, self.layers, self.default_strides)

    def make_extractor(self, weights: str, trainable: bool = False) -> FeatureExtractor:
        return FeatureExtractor(self.backbone, self.stage_indices(), weights, trainable)

    # ----------------------------------------------------------------- model specific
    @abc.abstractmethod
    def _build_module(self, weights: str) -> AnomalyModule:
        """A new, unfitted module (buffers may have placeholder shapes)."""

    @abc.abstractmethod
    def _fit_module(self, module: AnomalyModule, data: Dataset, progress: bool) -> None:
        """Fit ``module`` on the good images of ``data`` (the holdout is already removed)."""

    # ----------------------------------------------------------------- public API
    @property
    def is_fitted(self) -> bool:
        return self.module_ is not None

    @property
    def threshold(self) -> float | None:
        module = self._fitted_module()
        value = float(module.threshold)
        return None if math.isnan(value) else value

    def fit(self, data: Dataset | torch.Tensor, *, progress: bool = False) -> Self:
        """Learn from defect-free images (a flawmap dataset or an (N, 3, H, W) tensor)."""
        dataset = as_dataset(data)
        n = len(dataset)
        if n == 0:
            raise DataError("no training images")
        fit_idx, holdout_idx = split_holdout(n, self.threshold_holdout, self.seed)
        seed_everything(self.seed)
        start = time.perf_counter()
        module = self._build_module(self.weights)
        self._fit_module(module, Subset(dataset, fit_idx.tolist()), progress)
        module.eval()
        self.module_ = module
        if len(holdout_idx):
            held = self.predict(Subset(dataset, holdout_idx.tolist()), progress=progress)
            module.threshold.fill_(learn_threshold(held.scores, self.threshold_quantile))
        self.train_seconds_ = time.perf_counter() - start
        self.n_train_ = len(fit_idx)
        return self

    def batches(
        self, data: Dataset, progress: bool = False, desc: str = ""
    ) -> Iterator[dict[str, Any]]:
        """Batches of ``data`` (dicts of collated tensors); checks the image size."""
        loader = DataLoader(data, batch_size=self.batch_size, shuffle=False, num_workers=0)
        expected = self.transform.output_size
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            shape = tuple(batch["image"].shape[-2:])
            if shape != tuple(expected):
                raise DataError(
                    f"images are {shape[0]}x{shape[1]} but this model expects "
                    f"{expected[0]}x{expected[1]}; build the dataset with model.transform"
                )
            yield batch

    @torch.inference_mode()
    def predict(
        self,
        data: Dataset | torch.Tensor,
        *,
        progress: bool = False,
        keep: tuple[str, ...] = (),
    ) -> Prediction:
        """Score images (a flawmap dataset or an (N, 3, H, W) tensor in [0, 1]).

        ``keep`` names dataset fields (e.g. ``"mask"``, ``"label"``) to return in
        ``Prediction.targets``, so evaluation reads every image once.
        """
        module = self._fitted_module()
        dataset = as_dataset(data)
        scores, maps, paths = [], [], []
        kept: dict[str, list[np.ndarray]] = {k: [] for k in keep}
        for batch in self.batches(dataset, progress, desc="predict"):
            s, m = module(batch["image"])
            scores.append(s.float().numpy())
            maps.append(m.float().numpy())
            paths.extend(str(p) for p in batch.get("path", [""] * len(s)))
            for key in keep:
                if key not in batch:
                    raise DataError(f"the dataset items have no field {key!r}")
                kept[key].append(np.asarray(batch[key]))
        if not scores:
            raise DataError("no images to predict")
        score_arr = np.concatenate(scores).astype(np.float32)
        threshold = float(module.threshold)
        has_threshold = not math.isnan(threshold)
        return Prediction(
            scores=score_arr,
            maps=np.concatenate(maps).astype(np.float32),
            labels=score_arr >= threshold if has_threshold else None,
            threshold=threshold if has_threshold else None,
            paths=paths,
            targets={k: np.concatenate(v) for k, v in kept.items()},
        )

    def set_threshold(self, value: float) -> None:
        """Replace the learned threshold (e.g. one chosen on a validation set of your own)."""
        if not math.isfinite(value):
            raise ConfigError(f"threshold must be a finite number, got {value}")
        self._fitted_module().threshold.fill_(value)

    def _fitted_module(self) -> AnomalyModule:
        if self.module_ is None:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(good_images) first "
                "(or load a saved model with flawmap.models.load_model)"
            )
        return self.module_

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory``."""
        from safetensors.torch import save_file

        module = self._fitted_module()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "flawmap_version": flawmap.__version__,
            "model": self.name,
            "params": self.get_params(),
            "fit": {"train_seconds": self.train_seconds_, "n_train": self.n_train_},
        }
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE))
        return out

    def _restore(self, state: dict[str, torch.Tensor], fit_info: dict[str, Any]) -> None:
        module = self._build_module("random")
        load_state_resizing(module, state)
        module.eval()
        self.module_ = module
        self.train_seconds_ = fit_info.get("train_seconds")
        self.n_train_ = fit_info.get("n_train")


class TrainedDetector(Detector):
    """A detector whose head is trained by gradient descent (:func:`flawmap.training.run_epochs`).

    Subclasses store ``epochs`` and ``train_batch_size`` (constructor arguments) and train
    through :meth:`_train`, which fills in the shared loop's settings.
    """

    epochs: int
    train_batch_size: int

    def _train(
        self,
        module: nn.Module,
        step: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
        optimizers: list[torch.optim.Optimizer],
        n_items: int,
        progress: bool,
        on_epoch_end: Callable[[int, float], None] | None = None,
    ) -> TrainingHistory:
        """:func:`~flawmap.training.run_epochs` over ``n_items`` items with this detector's
        epochs, batch size and seed; ``module`` is in train mode during the loop only."""
        return run_epochs(
            step,
            optimizers,
            n_items=n_items,
            batch_size=self.train_batch_size,
            epochs=self.epochs,
            seed=self.seed,
            progress=progress,
            desc=f"{self.name}: train",
            on_epoch_end=on_epoch_end,
            module=module,
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def load_state_resizing(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict, letting fitted buffers (memory banks, statistics) take saved shapes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(
            f"saved weights do not match the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    buffers = dict(module.named_buffers())
    for key, value in state.items():
        if key in buffers and buffers[key].shape != value.shape:
            owner_name, _, attr = key.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            setattr(owner, attr, torch.empty_like(value))
    module.load_state_dict(state)


# --------------------------------------------------------------------- registry
_MODELS: Registry[type[Detector]] = Registry("model")


def register_model(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    return _MODELS.add(cls.name, cls)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return _MODELS.names()


def model_class(name: str) -> type[Detector]:
    """The detector class registered under ``name``."""
    return _MODELS.get(name)


def create_model(name: str, **params: Any) -> Detector:
    """A new, unfitted detector of the registered model ``name``."""
    cls = model_class(name)
    known = cls.param_types()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no parameter {', '.join(unknown)}; its parameters: "
            f"{', '.join(sorted(known))}"
        )
    return cls(**params)


def load_model(directory: str | Path) -> Detector:
    """Rebuild a fitted detector from a folder written by ``Detector.save`` (offline)."""
    from safetensors.torch import load_file

    folder = Path(directory)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise DataError(f"{path} not found: is {folder} a model folder written by flawmap fit?")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{config_path} is not valid JSON: {exc}") from exc
    if config.get("format") != FORMAT:
        raise DataError(f"{config_path} is not a flawmap model config")
    params = {
        k: tuple(v) if isinstance(v, list) else v for k, v in config.get("params", {}).items()
    }
    detector = create_model(config["model"], **params)
    detector._restore(load_file(str(weights_path)), config.get("fit", {}))
    return detector
