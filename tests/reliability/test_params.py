"""Parameters: one ``param(default, constraint)`` declaration each, checked before any heavy work.

Covers the declarations (``param``/``merge_params``, the derived keyword-only constructor and
signature, re-declared defaults), the constraint table (every parameter declared, bad values
named with the allowed range), ``get_params`` / ``set_params`` / ``sklearn.base.clone`` over
every registered model, the check at the start of ``fit``, ``set_threshold``'s input and the
command line's exit status.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch.utils.data import Dataset

from flawmap.cli import main
from flawmap.errors import ConfigError
from flawmap.models import Detector, create_model, list_models, load_model, model_class
from flawmap.models.base import TrainedDetector
from flawmap.models.params import Int, Param, Real, merge_params, param

FAST: dict[str, Any] = {"weights": "random", "image_size": 64, "threshold_holdout": 0.25}
TRAINED = [n for n in list_models() if "epochs" in model_class(n).param_types()]


def toy_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fitted() -> Detector:
    return create_model("patchcore", **FAST, coreset_ratio=0.25, batch_size=4).fit(toy_images(4))


# ------------------------------------------------------------------------------ declarations
def test_param_declares_default_constraint_and_doc() -> None:
    rule = Int(1)
    assert param(3, rule, doc="d") == Param(3, rule, "d")


def test_merge_params_keeps_order_moves_redeclared_and_inherits_the_rule() -> None:
    base = {"a": Param(1, Int(0), "a doc"), "b": Param(2.0, Real())}
    merged = merge_params([base], {"a": Param(5), "c": Param("x", Int(0))}, "Owner")
    assert list(merged) == ["b", "a", "c"]
    assert merged["a"] == Param(5, base["a"].constraint, "a doc")


def test_a_new_parameter_needs_a_constraint() -> None:
    with pytest.raises(TypeError, match=r"Owner\.z: param"):
        merge_params([], {"z": Param(1)}, "Owner")


def test_subclass_declarations_derive_init_signature_and_defaults() -> None:
    class Toy(TrainedDetector):
        name = "toy-params"
        default_strides = (8,)
        epochs: int = param(7)
        width: int = param(16, Int(1), doc="channels")

        def _build_module(self, weights: str) -> Any:
            raise NotImplementedError

        def _fit_module(self, module: Any, data: Any, progress: bool) -> None:
            raise NotImplementedError

    toy = Toy(width=4)
    assert toy.width == 4 and toy.epochs == 7 and toy.train_batch_size == 1
    assert list(Toy.param_types())[-3:] == ["train_batch_size", "epochs", "width"]
    assert Toy.param_types()["width"] is int
    signature = inspect.signature(Toy)
    assert signature.parameters["width"].kind is inspect.Parameter.KEYWORD_ONLY
    assert signature.parameters["epochs"].default == 7
    with pytest.raises(ConfigError, match="has no parameter depth"):
        Toy(depth=1)
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1"):
        Toy(epochs=0)._validate_params()


def test_a_parameter_needs_an_annotation() -> None:
    with pytest.raises(TypeError, match="needs a type annotation"):

        class Bad(Detector):
            width = param(1, Int(1))


# ------------------------------------------------------------------------------ the tables
@pytest.mark.parametrize("name", list_models())
def test_every_parameter_has_exactly_one_declared_constraint(name: str) -> None:
    cls = model_class(name)
    assert set(cls.constraints()) == set(cls.param_types())


@pytest.mark.parametrize("name", list_models())
def test_defaults_are_valid_and_clone_works(name: str) -> None:
    detector = create_model(name, **FAST)
    copy = clone(detector)
    assert type(copy) is type(detector) and copy is not detector
    assert copy.get_params() == detector.get_params()
    assert not copy.is_fitted


@pytest.mark.parametrize("name", list_models())
def test_get_params_returns_the_real_values_and_set_params_round_trips(name: str) -> None:
    detector = create_model(name, **{**FAST, "image_size": (64, 64)})
    params = detector.get_params()
    assert params["image_size"] == (64, 64)  # a tuple stays a tuple (JSON only when saving)
    for value in params.values():
        assert not isinstance(value, list)
    again = create_model(name).set_params(**params)
    assert again.get_params() == params
    json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in params.items()})


def test_clone_of_a_fitted_detector_is_unfitted_with_equal_params(fitted: Detector) -> None:
    copy = clone(fitted)
    assert not copy.is_fitted and copy.get_params() == fitted.get_params()


# Every kind of bad value: (model, parameter, value, words the message must hold).
BAD: list[tuple[str, str, Any, str]] = [
    ("patchcore", "seed", -1, "seed must be an integer in [0, 4294967295], got -1"),
    ("patchcore", "seed", 1.5, "seed must be an integer"),
    ("patchcore", "seed", True, "seed must be an integer"),  # bools are not ints
    ("patchcore", "batch_size", 0, "batch_size must be an integer >= 1, got 0"),
    ("patchcore", "threshold_holdout", 1.0, "threshold_holdout must be a finite number in [0.0"),
    ("patchcore", "threshold_holdout", -0.1, "threshold_holdout"),
    ("patchcore", "threshold_quantile", 0.0, "threshold_quantile must be a finite number in (0.0"),
    ("patchcore", "threshold_quantile", 1.5, "threshold_quantile"),
    ("patchcore", "smoothing_sigma", -1.0, "smoothing_sigma must be a finite number >= 0.0"),
    ("patchcore", "smoothing_sigma", math.nan, "smoothing_sigma"),
    ("patchcore", "smoothing_sigma", "4", "smoothing_sigma"),  # a string is not a number
    ("patchcore", "image_size", 0, "image_size"),
    ("patchcore", "image_size", "64", "image_size"),
    ("patchcore", "image_size", True, "image_size"),
    ("patchcore", "image_size", 100_000, "100000"),  # the bound of flawmap.data.transforms
    ("patchcore", "center_crop", 0, "center_crop"),
    ("patchcore", "backbone", "resnet1000", "resnet1000"),
    ("patchcore", "weights", "", "weights must be 'pretrained', 'random' or a weights file path"),
    ("patchcore", "layers", "2,3", "layers must be None or a tuple"),
    ("patchcore", "layers", (-1,), "layers"),
    ("patchcore", "coreset_ratio", 0.0, "coreset_ratio must be a finite number in (0.0, 1.0]"),
    ("patchcore", "coreset_sampler", "kmeans", "coreset_sampler must be one of 'greedy', 'random'"),
    ("patchcore", "projection_dim", 0, "projection_dim must be None or an integer >= 1, got 0"),
    ("patchcore", "patch_size", 4, "patch_size must be an odd integer >= 1, got 4"),
    ("patchcore", "search", "fast", "search must be one of 'pruned', 'brute_force'"),
    ("padim", "n_features", 0, "n_features must be an integer >= 1"),
    ("padim", "covariance_eps", -0.01, "covariance_eps"),
    ("simplenet", "feature_scaling", 1, "feature_scaling must be True or False, got 1"),
    ("simplenet", "noise_sigma", 0.0, "noise_sigma must be a finite number > 0.0"),
    ("trisimplenet", "fake_noise_sigma", -1.0, "fake_noise_sigma"),
    ("fcdd", "loss", "hinge", "loss must be one of 'fcdd', 'hsc_pixel'"),
    ("fcdd", "lr_decay", 0.0, "lr_decay must be a finite number in (0.0, 1.0]"),
    ("fcdd", "augment", "yes", "augment must be True or False"),
    ("fcdd", "anomaly_dir", Path("x"), "must be None or a folder path (str), got PosixPath"),
    ("cse", "betas", (0.5, 1.0), "betas must be a tuple of 2 values, each a finite number in"),
    ("cse", "betas", (0.5,), "betas must be a tuple of 2 values"),
    ("cse", "validation_fraction", 1.0, "validation_fraction"),
    ("cse", "image_score", "median", "image_score must be one of 'mean', 'max'"),
    ("mlff", "ptfem_scales", (), "ptfem_scales must be a tuple of 1+ values"),
    ("mlff", "ptfem_scales", (0, 2), "ptfem_scales"),
    ("mlff", "tem_levels", 1, "tem_levels must be an integer >= 2"),
    ("mlff", "variant", "+all", "variant must be one of 'baseline'"),
    ("mlff", "xi", -1.0, "xi must be a finite number >= 0.0"),
] + [(name, "epochs", 0, "epochs must be an integer >= 1, got 0") for name in TRAINED]


@pytest.mark.parametrize(("name", "param", "value", "words"), BAD)
def test_a_bad_value_is_refused_naming_the_parameter(
    name: str, param: str, value: Any, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        create_model(name, **{**FAST, param: value})
    message = str(info.value)
    assert words in message and param in message


def test_center_crop_larger_than_the_image_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"center_crop .* is larger than image_size"):
        create_model("padim", **FAST, center_crop=96)


def test_numpy_numbers_are_numbers() -> None:
    detector = create_model("patchcore", **FAST, seed=np.int64(3), coreset_ratio=np.float32(0.5))
    assert detector.seed == 3


# ------------------------------------------------------------------------------ set_params
def test_set_params_refuses_a_bad_value_and_changes_nothing() -> None:
    detector = create_model("patchcore", **FAST)
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1, got 0"):
        detector.set_params(seed=5, batch_size=0)
    assert detector.seed == 0 and detector.batch_size == 8


def test_set_params_refuses_an_unknown_name() -> None:
    with pytest.raises(ConfigError, match="has no parameter coreset_rate"):
        create_model("patchcore", **FAST).set_params(coreset_rate=0.1)


# ------------------------------------------------------------------------------ before the work
class Untouchable(Dataset):
    """A dataset that fails the test if anything reads it."""

    def __len__(self) -> int:
        raise AssertionError("the data was read before the parameters were checked")

    def __getitem__(self, index: int) -> dict[str, Any]:
        raise AssertionError("the data was read before the parameters were checked")


@pytest.mark.parametrize(
    ("param", "value"),
    [("threshold_quantile", 1.5), ("batch_size", 0), ("seed", -1), ("coreset_ratio", 2.0)],
)
def test_fit_checks_parameters_before_reading_data_or_building(
    param: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = create_model("patchcore", **FAST)
    setattr(detector, param, value)  # bypassing create_model / set_params

    def no_build(*_args: Any) -> None:
        raise AssertionError("the module was built before the parameters were checked")

    monkeypatch.setattr(type(detector), "_build_module", no_build)
    with pytest.raises(ConfigError, match=param):
        detector.fit(Untouchable())


@pytest.mark.parametrize("name", TRAINED)
def test_trained_models_check_their_schedule_before_fitting(name: str) -> None:
    detector = create_model(name, **FAST)
    detector.train_batch_size = 0
    with pytest.raises(ConfigError, match="train_batch_size must be an integer >= 1"):
        detector.fit(Untouchable())


# ------------------------------------------------------------------------------ threshold
@pytest.mark.parametrize("value", ["0.5", True, None, math.nan, math.inf, -math.inf, [0.5]])
def test_set_threshold_needs_a_finite_number(fitted: Detector, value: Any) -> None:
    before = fitted.threshold
    with pytest.raises(ConfigError, match="threshold must be a finite number") as info:
        fitted.set_threshold(value)
    assert repr(value) in str(info.value)
    assert fitted.threshold == before


def test_set_threshold_takes_ints_and_numpy_floats(fitted: Detector) -> None:
    before = fitted.threshold
    try:
        fitted.set_threshold(np.float32(2.5))
        assert fitted.threshold == 2.5
        fitted.set_threshold(3)
        assert fitted.threshold == 3.0
    finally:
        fitted.set_threshold(before)


# ------------------------------------------------------------------------------ JSON round trip
def test_lists_become_tuples_only_where_the_annotation_is_a_tuple(tmp_path: Path) -> None:
    params = {**FAST, "coreset_ratio": 0.25, "layers": (2, 3), "image_size": (64, 64)}
    detector = create_model("patchcore", **params).fit(toy_images(4))
    folder = detector.save(tmp_path / "m")
    params = json.loads((folder / "config.json").read_text())["params"]
    assert params["layers"] == [2, 3] and params["image_size"] == [64, 64]  # JSON lists
    loaded = load_model(folder)
    assert loaded.layers == (2, 3) and loaded.image_size == (64, 64)
    assert loaded.weights == "random" and loaded.get_params() == detector.get_params()


# ------------------------------------------------------------------------------ command line
@pytest.mark.parametrize(
    ("param", "words"),
    [
        ("batch_size=0", "batch_size must be an integer >= 1, got 0"),
        ("threshold_quantile=1.5", "threshold_quantile must be a finite number in (0.0, 1.0]"),
        ("coreset_ratio=0", "coreset_ratio must be a finite number in (0.0, 1.0], got 0"),
    ],
)
def test_cli_refuses_a_bad_param_before_fitting(
    mvtec_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture, param: str, words: str
) -> None:
    code = main(["fit", "--data", str(mvtec_category), "--model", "patchcore", "--quiet",
                 "--weights", "random", "--image-size", "64", "--param", param,
                 "--out", str(tmp_path / "model")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    assert words in captured.err
    assert "fitting" not in captured.out and "Traceback" not in captured.err
    assert not (tmp_path / "model").exists()
