"""The one detector interface every flawmap model implements, and the model registry.

Conventions (scikit-learn / PyOD style):

- ``__init__`` only stores its arguments; ``get_params()`` returns them as given and
  ``set_params(**params)`` changes them (``sklearn.base.clone`` works); each parameter is
  declared once in the class body, ``name: type = param(default, constraint)``
  (:mod:`flawmap.models.params`), and checked by ``create_model``, ``set_params`` and at the
  start of ``fit``, before any heavy work;
- ``fit(good_images) -> self`` learns from defect-free images only; a held-out slice of them
  (``threshold_holdout``) is never fitted on and sets the decision threshold;
- ``predict(images) -> Prediction``: image scores, anomaly maps and labels; **higher = more
  anomalous**; ``label = score >= threshold``;
- ``save(dir, overwrite=False)`` writes ``config.json`` (parameters) and ``model.safetensors``
  (the fitted module's state dict: backbone weights, memory banks, statistics, threshold; no
  pickles) into a temporary sibling folder and renames it into place, so a folder always holds
  one complete model; replacing a model needs ``overwrite=True``. The weights file's metadata
  records the model, the format version, a random fit id shared with ``config.json``, the
  parameters that shape the fitted state and a checksum of the tensors; ``load_model(dir)``
  rebuilds the detector offline and refuses a folder whose two files disagree;
- using a detector before ``fit`` raises :class:`~flawmap.errors.NotFittedError`.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import inspect
import math
import numbers
import random
import time
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from flawmap.backbones import DEFAULT_BACKBONE, FeatureExtractor, resolve_layers
from flawmap.data import (
    ASPECT_MODES,
    ImageTransform,
    InputGeometry,
    original_shapes,
    parse_tiling,
    plan_geometry,
    split_holdout,
    with_transform,
)
from flawmap.errors import ConfigError, DataError, FlawmapError, NotFittedError
from flawmap.models.catalogue import builtin_entry, builtin_names
from flawmap.models.params import (
    AnyOf,
    Backbone,
    Constraint,
    Int,
    NoneOr,
    OneOf,
    Param,
    Real,
    Seq,
    Size,
    Text,
    check_all,
    merge_params,
    param,
)
from flawmap.models.postprocess import AnomalyMapPostprocessor, ImageScore, learn_threshold
from flawmap.registry import Registry
from flawmap.training import CheckpointPolicy, Schedule, TrainingHistory, run_epochs

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "flawmap-model"
#: Version 2 added the weights metadata (fit id, state-shaping parameters, checksum).
FORMAT_VERSION = 2


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
        """(N, H, W) bool predicted defect regions: map >= threshold.

        Consistent with ``labels`` when the image score is the map's maximum (the default).
        With a ``"mean"`` (or a model's own) image score, the threshold is on that score, so
        the masks over-segment (see ``AnomalyMapPostprocessor``).
        """
        if self.threshold is None:
            raise NotFittedError("this model has no threshold; fit with threshold_holdout > 0")
        return self.maps >= self.threshold


class AnomalyModule(nn.Module, abc.ABC):
    """The fitted network of a detector: backbone + head + post-processing, all state in buffers.

    ``forward(images (B, 3, H, W) in [0, 1]) -> (scores (B,), maps (B, H, W))``: the raw patch
    scores go through the shared :class:`~flawmap.models.postprocess.AnomalyMapPostprocessor`
    (upsampling, smoothing, image score). A model chooses its post-processing by arguments, not
    by overriding ``forward``: ``upsample`` (a module ``(B, 1, h, w), (H, W) -> (B, 1, H, W)``,
    registered as the submodule ``upsample``; default bilinear) and ``image_score`` (``"max"``
    of the smoothed map, ``"mean"`` of the raw patch scores, or a callable; see the
    post-processor).
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        smoothing_sigma: float,
        *,
        upsample: nn.Module | None = None,
        image_score: str | ImageScore = "max",
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.postprocess = AnomalyMapPostprocessor(smoothing_sigma, image_score=image_score)
        self.upsample = upsample
        self.register_buffer("threshold", torch.tensor(float("nan")))

    @abc.abstractmethod
    def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> raw anomaly scores (B, 1, h, w) on the feature grid."""

    def backbone_input(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> what the module gives its extractor (default: the images;
        a model with its own input normalisation overrides this and uses it in
        ``patch_scores``, so an export's backbone graph includes it)."""
        return images

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = images.shape[-2:]
        return self.postprocess(self.patch_scores(images), (int(h), int(w)), upsample=self.upsample)

    def export_plan(self, image_size: tuple[int, int]) -> ExportPlan:
        """How this module runs outside torch (:mod:`flawmap.export`): by default two graphs,
        the backbone (images (B, 3, H, W) -> its stages' maps) and the head (those maps ->
        scores (B,), maps (B, H, W)), so that a reduced precision can be applied to the
        backbone alone.

        A module whose scoring cannot be graphs alone (a memory-bank search) overrides this.
        """
        backbone = backbone_graph(self, image_size)
        head = GraphPart(
            HeadGraph(self, image_size),
            backbone.output_examples(),
            ("scores", "maps"),
            backbone.outputs,
        )
        return ExportPlan("graph", {"backbone": backbone, "head": head})


@dataclass(frozen=True)
class GraphPart:
    """One graph of an export: ``module(*examples)`` is traced; ``inputs`` and ``outputs``
    name its arguments and results (the runtime passes values between graphs by name)."""

    module: nn.Module
    examples: tuple[torch.Tensor, ...]
    outputs: tuple[str, ...]
    inputs: tuple[str, ...] = ("images",)

    def __post_init__(self) -> None:
        # A new wrapper module starts in training mode, and the exporter restores that mode
        # on everything inside it when it is done: a fitted module must stay in eval mode.
        self.module.eval()

    def output_examples(self) -> tuple[torch.Tensor, ...]:
        """The module's outputs on its examples (the next graph's examples)."""
        with torch.no_grad():
            out = self.module(*self.examples)
        return tuple(out) if isinstance(out, tuple | list) else (out,)


@dataclass
class ExportPlan:
    """The graphs (and arrays) that reproduce a fitted module outside torch, in run order.

    The first graph whose name is ``"backbone"`` takes ``"images"`` (B, 3, H, W) in [0, 1];
    the last returns ``"scores"`` (B,) and ``"maps"`` (B, H, W). ``head``:

    - ``"graph"``: graphs only;
    - ``"nearest_neighbour"``: a graph returns ``"patches"`` (B, h, w, D); the runtime finds
      each patch's Euclidean distance to its nearest row of ``arrays["memory_bank"]`` (M, D)
      (PatchCore eq. 6) as ``"patch_scores"`` (B, 1, h, w), the next graph's input.
    """

    head: str
    graphs: dict[str, GraphPart]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class _Stages(nn.Module):
    """images -> the module's extractor's stage maps as a tuple (a graph's outputs)."""

    def __init__(self, module: AnomalyModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.module.extractor(self.module.backbone_input(images)))


def backbone_graph(module: AnomalyModule, image_size: tuple[int, int]) -> GraphPart:
    """The graph of ``module``'s extractor: images (B, 3, H, W) -> stage maps ``stage0``, ..."""
    stages = _Stages(module)
    example = torch.zeros(1, 3, *image_size)
    with torch.no_grad():
        n = len(stages(example))
    return GraphPart(stages, (example,), tuple(f"stage{i}" for i in range(n)))


class _GivenFeatures(nn.Module):
    """Stands in for an extractor: returns the stage maps it was given, whatever the images."""

    def __init__(self, features: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.features = features

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.features)


@contextlib.contextmanager
def given_features(module: AnomalyModule, features: tuple[torch.Tensor, ...]) -> Iterator[None]:
    """Inside the block, ``module.extractor(images)`` returns ``features``."""
    extractor = module.extractor
    module.extractor = _GivenFeatures(features)  # type: ignore[assignment]
    try:
        yield
    finally:
        module.extractor = extractor


class HeadGraph(nn.Module):
    """A module's head and post-processing as a graph: the extractor's stage maps ->
    (scores (B,), maps (B, H, W)) at the fixed output size ``(H, W)``."""

    def __init__(self, module: AnomalyModule, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.module = module
        self.output_size = output_size

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = features[0].new_zeros(features[0].shape[0], 3, *self.output_size)
        with given_features(self.module, features):
            return self.module(images)


class PostprocessGraph(nn.Module):
    """A module's post-processing alone, as a graph: patch scores (B, 1, h, w) -> (scores,
    maps (B, H, W)) at the fixed output size ``(H, W)``."""

    def __init__(self, module: AnomalyModule, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.postprocess = module.postprocess
        self.upsample = module.upsample
        self.output_size = output_size

    def forward(self, patch_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.postprocess(patch_scores, self.output_size, upsample=self.upsample)


def is_tracing() -> bool:
    """True while torch traces a module for export (TorchScript or ``torch.export``): code
    that leaves torch (numpy, numba) must then take its pure-torch path."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_exporting())


class _TensorImages(Dataset):
    """(N, 3, H, W) images in [0, 1] seen as a flawmap dataset; see :func:`as_dataset`."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = _checked_images(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "path": ""}

    def original_shapes(self) -> np.ndarray:
        """``(N, 2)``: every image is ``(H, W)`` of the batch."""
        return np.tile(np.array(self.images.shape[-2:], dtype=np.int64), (len(self.images), 1))


def _shape_hint(shape: tuple[int, ...]) -> str:
    """How to turn an image array of ``shape`` into (N, 3, H, W), for error messages."""
    if len(shape) == 4 and shape[-1] in (1, 3, 4) and shape[1] not in (1, 3):
        return (
            "; channel-last data: reorder it with x.permute(0, 3, 1, 2) "
            "(numpy: x.transpose(0, 3, 1, 2))"
        )
    if len(shape) == 4 and shape[1] == 1:
        return "; grayscale images: repeat the channel with x.expand(-1, 3, -1, -1)"
    if len(shape) == 3 and shape[0] == 3:
        return "; one image: add the batch axis with x[None]"
    if len(shape) == 3:
        return "; grayscale batch: x[:, None].expand(-1, 3, -1, -1)"
    return ""


def _checked_images(images: torch.Tensor) -> torch.Tensor:
    """Validate an image batch and return it as float32 in [0, 1] (uint8 is divided by 255).

    Raises:
        DataError: wrong shape, dtype, NaN/inf, or float values outside [0, 1].
    """
    shape = tuple(images.shape)
    if images.ndim != 4 or shape[1] != 3:
        raise DataError(f"expected images of shape (N, 3, H, W), got {shape}{_shape_hint(shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if images.dtype == torch.bool or not (images.dtype.is_floating_point):
        raise DataError(
            f"expected float images in [0, 1] or uint8 images in [0, 255], got dtype "
            f"{images.dtype}; convert them to float and divide by the type's largest value"
        )
    x = images.float()
    if x.numel() == 0:
        return x
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise DataError(f"the images contain {bad} NaN/inf value(s); they cannot be scored")
    lo, hi = float(x.min()), float(x.max())
    tol = 1e-3
    if lo < -tol or hi > 1.0 + tol:
        if lo < -tol:
            hint = "; pass them without mean/std normalisation (the backbone normalises)"
        elif hi <= 255.0 + tol:
            hint = "; they look like 0..255 data: divide by 255 (or pass uint8)"
        else:
            hint = ""
        raise DataError(
            f"float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]{hint}"
        )
    return x


def as_dataset(data: Dataset | torch.Tensor | np.ndarray) -> Dataset:
    """Accept a flawmap dataset (items are dicts with an ``"image"``) or an image batch.

    An image batch is a tensor or numpy array of shape (N, 3, H, W): float values in [0, 1]
    (within 1e-3), or uint8 values, which are divided by 255. Other dtypes, NaN/inf, float
    values outside [0, 1] (such as 0..255 data or mean/std-normalised data) and other shapes
    (channel-last, grayscale, a single image) raise DataError with a hint.
    """
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "biuf":
            raise DataError(f"expected a numeric image array, got dtype {data.dtype}")
        if not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
        data = torch.from_numpy(np.ascontiguousarray(data))
    if isinstance(data, torch.Tensor):
        return _TensorImages(data)
    if isinstance(data, Dataset):
        return data
    raise DataError(
        f"expected a flawmap dataset or an (N, 3, H, W) tensor, got {type(data).__name__}"
    )


def describe_data(dataset: Dataset) -> str | None:
    """A flawmap dataset's ``description`` (of a ``Subset``: "N of ..."); None if unknown."""
    if isinstance(dataset, Subset):
        inner = describe_data(dataset.dataset)
        return None if inner is None else f"a {len(dataset)}-image subset of the {inner}"
    text = getattr(dataset, "description", None)
    return text if isinstance(text, str) else None


def checked_threshold(value: Any) -> float:
    """``value`` as a float; ConfigError unless it is a finite real number (bools refused)."""
    if (
        isinstance(value, bool | np.bool_)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
    ):
        raise ConfigError(
            f"threshold must be a finite number (int or float), got {value!r} "
            f"({type(value).__name__})"
        )
    return float(value)


def collect_prediction(
    batches: Iterable[dict[str, Any]],
    score: Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]],
    threshold: float | None,
    keep: tuple[str, ...] = (),
) -> Prediction:
    """Score every batch (``score(images) -> (scores (B,), maps (B, H, W))``) into one
    :class:`Prediction`, labelled at ``threshold``, with the batch fields named in ``keep``."""
    scores, maps, paths = [], [], []
    kept: dict[str, list[np.ndarray]] = {k: [] for k in keep}
    for batch in batches:
        s, m = score(batch["image"])
        scores.append(np.asarray(s))
        maps.append(np.asarray(m))
        paths.extend(str(p) for p in batch.get("path", [""] * len(s)))
        for key in keep:
            if key not in batch:
                raise DataError(f"the dataset items have no field {key!r}")
            kept[key].append(np.asarray(batch[key]))
    if not scores:
        raise DataError("no images to predict")
    score_arr = np.concatenate(scores).astype(np.float32)
    return Prediction(
        scores=score_arr,
        maps=np.concatenate(maps).astype(np.float32),
        labels=None if threshold is None else score_arr >= threshold,
        threshold=threshold,
        paths=paths,
        targets={k: np.concatenate(v) for k, v in kept.items()},
    )


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (every random step also takes its own seeded generator)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _declare_params(cls: type[Detector]) -> None:
    """Set ``cls.declared_params`` from the ``param(...)`` declarations of ``cls`` and its
    bases, and ``cls.__signature__`` (keyword-only) for ``help()`` and ``inspect.signature``."""
    own = {name: value for name, value in vars(cls).items() if isinstance(value, Param)}
    annotations = vars(cls).get("__annotations__", {})
    for name in own:
        if name not in annotations:
            raise TypeError(f"{cls.__name__}.{name}: a parameter needs a type annotation")
    bases = [vars(b).get("declared_params", {}) for b in reversed(cls.__mro__[1:])]
    cls.declared_params = merge_params(bases, own, cls.__name__)
    cls.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=spec.default)
            for name, spec in cls.declared_params.items()
        ]
    )


class Detector(abc.ABC):
    """Base class of every flawmap model; see the module docstring for the contract.

    Args (shared by every model):
        backbone: a registered backbone name (``flawmap.backbones.list_backbones()``).
        layers: backbone stages (indices or timm module names); ``None`` = the model's default
            stages, chosen by stride (``default_strides``).
        weights: ``"pretrained"`` (offline-first), ``"random"`` (tests), or a weights file path.
        image_size: input size: an ``(H, W)`` pair, or an int ``S`` whose meaning ``aspect`` sets.
        aspect: ``"keep"``: an int ``image_size`` is a budget of ``S * S`` pixels shaped like the
            training images' typical aspect ratio (sides rounded to the backbone's deepest
            stride; exactly ``S x S`` for square images); ``"squeeze"``: every image is resized
            to ``S x S`` whatever its shape.
        tiling: ``"off"``; ``"RxC"``: the backbone sees ``R x C`` tiles of ``image_size`` each,
            stitched into one feature map (so the model works at ``R``/``C`` times the
            resolution); ``"auto"``: as many tiles per side as the typical training image holds
            (at most 4), for images much larger than ``image_size``.
            See :func:`flawmap.data.plan_geometry`; the fitted result is ``geometry_``.
        center_crop: optional centre crop applied after resizing (off by default; not with
            tiling).
        seed: seed of every random step (channel subsets, coreset start, holdout split, ...).
        threshold_holdout: fraction of the good training images held out of fitting; their
            scores set the threshold. 0 disables the threshold (labels are then ``None``).
        threshold_quantile: the quantile of held-out good scores used as threshold.
        smoothing_sigma: Gaussian smoothing of the upsampled map, in pixels (0 = none).
        batch_size: images per forward pass.
    """

    name: ClassVar[str]
    default_strides: ClassVar[tuple[int, ...]]
    #: Every declared parameter (this class and its bases, in order); set for each class from
    #: the ``param(...)`` declarations of its body (:func:`flawmap.models.params.param`).
    declared_params: ClassVar[dict[str, Param]] = {}
    #: Parameters that do not shape the fitted state: they may change between fit and use.
    runtime_params: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    backbone: str = param(DEFAULT_BACKBONE, Backbone())
    layers: tuple[int | str, ...] | None = param(
        None, NoneOr(Seq(AnyOf(Int(0), Text("a stage name"))))
    )
    weights: str = param("pretrained", Text("'pretrained', 'random' or a weights file path (str)"))
    image_size: int | tuple[int, int] = param(256, Size())
    aspect: str = param("keep", OneOf(*ASPECT_MODES))
    tiling: str = param("off", Text("'off', 'auto' or 'RxC' (e.g. '2x2')"))
    center_crop: int | tuple[int, int] | None = param(None, NoneOr(Size()))
    seed: int = param(0, Int(0, 2**32 - 1))
    threshold_holdout: float = param(0.1, Real(0.0, 1.0, high_open=True))
    threshold_quantile: float = param(0.99, Real(0.0, 1.0, low_open=True))
    smoothing_sigma: float = param(4.0, Real(0.0))
    batch_size: int = param(8, Int(1))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _declare_params(cls)

    def __init__(self, **params: Any) -> None:
        """Keyword-only: every declared parameter (see :meth:`param_types`), default if absent."""
        _check_known(type(self), params)
        for name, spec in self.declared_params.items():
            setattr(self, name, params.get(name, spec.default))
        self.module_: AnomalyModule | None = None
        self.train_seconds_: float | None = None
        self.n_train_: int | None = None
        #: The training images in words (a flawmap dataset's ``description``), if known.
        self.train_data_: str | None = None
        #: Image scores of the held-out good training images the threshold was learned from.
        self.holdout_scores_: list[float] | None = None
        #: Random id of the fit (shared by config.json and model.safetensors when saved).
        self.fit_id_: str | None = None
        #: JSON form of the state-shaping parameters the fitted module was built with.
        self.fitted_params_: dict[str, Any] | None = None
        #: Input size and tile grid the fitted module was built for (from the training images).
        self.geometry_: InputGeometry | None = None

    # ----------------------------------------------------------------- parameters
    @classmethod
    def param_types(cls) -> dict[str, Any]:
        """Every declared parameter (this class and its bases) with its type annotation."""
        hints = typing.get_type_hints(cls)
        return {name: hints.get(name, Any) for name in cls.declared_params}

    @classmethod
    def constraints(cls) -> dict[str, Constraint]:
        """The allowed values of every declared parameter."""
        return {
            name: spec.constraint for name, spec in cls.declared_params.items() if spec.constraint
        }

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments as given (tuples stay tuples; ``deep`` is accepted for
        scikit-learn compatibility: a detector holds no nested estimators)."""
        return {name: getattr(self, name) for name in self.declared_params}

    def set_params(self, **params: Any) -> Self:
        """Change parameters (checked; nothing changes when one is invalid); returns ``self``.

        A fitted detector keeps its fitted state: fit again before saving when a parameter
        that shapes it (anything but ``runtime_params``) changed.
        """
        _check_known(type(self), params)
        previous = {name: getattr(self, name) for name in params}
        for name, value in params.items():
            setattr(self, name, value)
        try:
            self._validate_params()
        except FlawmapError:
            for name, value in previous.items():
                setattr(self, name, value)
            raise
        return self

    def _validate_params(self) -> None:
        """Check every parameter against :meth:`constraints`, then :meth:`_check_relations`."""
        check_all(self.get_params(), self.constraints())
        self._check_relations()

    def _check_relations(self) -> None:
        """Checks between parameters (subclasses extend): the tiling option, the image
        transform's own rules."""
        if parse_tiling(self.tiling) != "off" and self.center_crop is not None:
            raise ConfigError(
                f"tiling={self.tiling!r} works on the whole resized image: drop center_crop "
                f"({self.center_crop!r}) or set tiling='off'"
            )
        _ = self.transform

    def _state_params(self) -> dict[str, Any]:
        """JSON form of the parameters that shape the fitted state (all but runtime ones)."""
        return {
            name: _jsonable(value)
            for name, value in self.get_params().items()
            if name not in self.runtime_params
        }

    @property
    def transform(self) -> ImageTransform:
        """The image transform this model expects its inputs to have been through: the fitted
        ``geometry_``, or before ``fit`` :meth:`input_geometry` without training images (an int
        ``image_size`` is then square; ``fit`` re-reads flawmap datasets at the planned size)."""
        return ImageTransform(image_size=self.geometry.size, center_crop=self.center_crop)

    @property
    def geometry(self) -> InputGeometry:
        """The fitted ``geometry_``, or before ``fit`` :meth:`input_geometry` without images."""
        return self.geometry_ if self.geometry_ is not None else self.input_geometry()

    def input_geometry(self, data: Dataset | torch.Tensor | None = None) -> InputGeometry:
        """The input size and tile grid these parameters give for training images ``data``
        (their original shapes, from the file headers; see :func:`flawmap.data.plan_geometry`).
        Without ``data``, a square for an int ``image_size`` and one tile for ``"auto"``."""
        shapes = None if data is None else original_shapes(as_dataset(data))
        return plan_geometry(
            self.image_size,
            self.aspect,
            parse_tiling(self.tiling),
            shapes,
            self.deepest_stride(),
        )

    def deepest_stride(self) -> int:
        """Output stride of the deepest backbone stage this model uses (static metadata)."""
        from flawmap.backbones.extractor import describe_stages

        wanted = set(self.stage_indices())
        return max(s.stride for s in describe_stages(self.backbone) if s.index in wanted)

    def stage_indices(self) -> tuple[int, ...]:
        """Backbone stages used: ``layers`` if given, else the model's default strides."""
        return resolve_layers(self.backbone, self.layers, self.default_strides)

    def make_extractor(
        self, weights: str, *, trainable_stages: int = 0, truncate: bool = False
    ) -> FeatureExtractor:
        """The extractor of ``stage_indices()``; the options are ``FeatureExtractor``'s."""
        return FeatureExtractor(
            self.backbone,
            self.stage_indices(),
            weights,
            trainable_stages=trainable_stages,
            truncate=truncate,
            tiles=self.geometry.tiles,
        )

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
    def module(self) -> AnomalyModule:
        """The fitted network (an ``AnomalyModule``), read-only.

        Raises:
            NotFittedError: before ``fit`` (or ``load_model``).
        """
        return self._fitted_module()

    @property
    def threshold(self) -> float | None:
        module = self._fitted_module()
        value = float(module.threshold)
        return None if math.isnan(value) else value

    def fit(self, data: Dataset | torch.Tensor, *, progress: bool = False) -> Self:
        """Learn from defect-free images (a flawmap dataset or an (N, 3, H, W) tensor).

        The input geometry is planned from the training images first (:meth:`input_geometry`);
        a flawmap dataset built with another transform is re-read at the planned size.
        """
        self._validate_params()
        fitted_params = self._state_params()
        dataset = as_dataset(data)
        n = len(dataset)
        if n == 0:
            raise DataError("no training images")
        geometry = self.input_geometry(dataset)
        previous = self.geometry_
        self.geometry_ = geometry
        try:
            dataset = with_transform(dataset, self.transform)
            fit_idx, holdout_idx = split_holdout(n, self.threshold_holdout, self.seed)
            seed_everything(self.seed)
            start = time.perf_counter()
            module = self._build_module(self.weights)
            self._fit_module(module, Subset(dataset, fit_idx.tolist()), progress)
            module.eval()
        except BaseException:
            self.geometry_ = previous
            raise
        self.module_ = module
        self.fit_id_ = uuid.uuid4().hex
        self.fitted_params_ = fitted_params
        self.holdout_scores_ = None
        if len(holdout_idx):
            held = self.predict(Subset(dataset, holdout_idx.tolist()), progress=progress)
            module.threshold.fill_(learn_threshold(held.scores, self.threshold_quantile))
            self.holdout_scores_ = [float(v) for v in held.scores]
        self.train_seconds_ = time.perf_counter() - start
        self.n_train_ = len(fit_idx)
        self.train_data_ = describe_data(as_dataset(data))
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
        threshold = float(module.threshold)

        def score(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
            scores, maps = module(images)
            return scores.float().numpy(), maps.float().numpy()

        return collect_prediction(
            self.batches(with_transform(as_dataset(data), self.transform), progress, "predict"),
            score,
            None if math.isnan(threshold) else threshold,
            keep,
        )

    def set_threshold(self, value: float) -> None:
        """Replace the learned threshold (e.g. one chosen on a validation set of your own)."""
        self._fitted_module().threshold.fill_(checked_threshold(value))

    @contextlib.contextmanager
    def threshold_override(self, value: float | None) -> Iterator[None]:
        """Use ``value`` (checked as by :meth:`set_threshold`; ``None``: keep the learned one)
        inside the ``with`` block, then restore the learned threshold."""
        learned = self._fitted_module().threshold.clone()  # NotFittedError before any work
        try:
            if value is not None:
                self.set_threshold(value)
            yield
        finally:
            self._fitted_module().threshold.copy_(learned)

    def _fitted_module(self) -> AnomalyModule:
        if self.module_ is None:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(good_images) first "
                "(or load a saved model with flawmap.models.load_model)"
            )
        return self.module_

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory``, atomically.

        Both files are written into a temporary sibling folder, flushed to disk, and the folder
        is renamed into place; an existing model there is replaced only with ``overwrite=True``
        (see :func:`flawmap.models.folder.check_save_target`). An interrupted save leaves the
        previous folder as it was.
        """
        from flawmap.models.folder import save_detector

        return save_detector(self, directory, overwrite=overwrite)

    def fit_summary(self) -> dict[str, Any]:
        """What the fit learned besides the weights, as saved with the model (``config.json``
        ``fit``) and its exports: time, image count, data, geometry, held-out scores.

        Raises:
            NotFittedError: before ``fit``.
        """
        self._fitted_module()
        return {
            "train_seconds": self.train_seconds_,
            "n_train": self.n_train_,
            "data": self.train_data_,
            "geometry": self.geometry.to_json(),
            "holdout_scores": self.holdout_scores_,
        }

    def _restore(
        self, state: dict[str, torch.Tensor], fit_info: dict[str, Any], fit_id: str | None
    ) -> None:
        geometry = fit_info.get("geometry")
        self.geometry_ = (
            InputGeometry.from_json(geometry) if geometry is not None else self.input_geometry()
        )
        module = self._build_module("random")
        load_state_resizing(module, state)
        module.eval()
        self.module_ = module
        self.train_seconds_ = fit_info.get("train_seconds")
        self.n_train_ = fit_info.get("n_train")
        self.train_data_ = fit_info.get("data")
        self.holdout_scores_ = fit_info.get("holdout_scores")
        self.fit_id_ = fit_id
        self.fitted_params_ = self._state_params()


_declare_params(Detector)


class TrainedDetector(Detector):
    """A detector whose head is trained by gradient descent (:func:`flawmap.training.run_epochs`).

    Subclasses re-declare ``epochs`` and ``train_batch_size`` with their own defaults
    (``epochs: int = param(40)``) and train through :meth:`_train`, which fills in the shared
    loop's settings; ``history_`` holds the last fit's :class:`~flawmap.training.TrainingHistory`.
    """

    epochs: int = param(1, Int(1))
    train_batch_size: int = param(1, Int(1))
    history_: TrainingHistory | None = None

    def _train(
        self,
        module: nn.Module,
        step: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
        optimizers: list[torch.optim.Optimizer],
        n_items: int,
        progress: bool,
        *,
        schedules: Sequence[Schedule] = (),
        checkpoint: CheckpointPolicy | None = None,
    ) -> TrainingHistory:
        """:func:`~flawmap.training.run_epochs` over ``n_items`` items with this detector's
        epochs, batch size and seed; ``module`` is in train mode during the loop only;
        ``schedules`` and ``checkpoint`` are passed through (default: keep the last epoch)."""
        return run_epochs(
            step,
            optimizers,
            n_items=n_items,
            batch_size=self.train_batch_size,
            epochs=self.epochs,
            seed=self.seed,
            schedules=schedules,
            checkpoint=checkpoint,
            module=module,
            progress=progress,
            desc=f"{self.name}: train",
        )


def _jsonable(value: Any) -> Any:
    """A parameter value as JSON stores it (tuples become lists, numpy scalars Python ones)."""
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_known(cls: type[Detector], params: dict[str, Any]) -> None:
    """ConfigError listing the parameters ``cls`` does not have."""
    known = cls.param_types()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"model {cls.name!r} has no parameter {', '.join(unknown)}; its parameters: "
            f"{', '.join(sorted(known))}"
        )


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
    """Names of every built-in and registered model, sorted (imports no model module)."""
    return sorted(set(builtin_names()) | set(_MODELS.names()))


def model_class(name: str) -> type[Detector]:
    """The detector class registered under ``name``; a built-in one is imported on first use."""
    entry = builtin_entry(name) if isinstance(name, str) else None
    if entry is not None and name not in _MODELS:
        importlib.import_module(entry.module)
    if name not in _MODELS and entry is None:
        raise ConfigError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _MODELS.get(name)


def create_model(name: str, **params: Any) -> Detector:
    """A new, unfitted detector of the registered model ``name``; every parameter is checked."""
    cls = model_class(name)
    _check_known(cls, params)
    detector = cls(**params)
    detector._validate_params()
    return detector
