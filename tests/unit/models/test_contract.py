"""Contract tests run over every registered model: shapes, save/load, determinism, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flawmap.data import MVTecDataset
from flawmap.errors import ConfigError, DataError, NotFittedError
from flawmap.models import Detector, create_model, list_models, load_model

# Small settings so every model fits in seconds on 2 CPU cores; a new model adds its own.
FAST_PARAMS: dict[str, dict[str, Any]] = {
    "padim": {"n_features": 32},
    "patchcore": {"coreset_ratio": 0.25},
    "simplenet": {"epochs": 2},
    "trisimplenet": {"epochs": 2},
    "fcdd": {"epochs": 1, "passes_per_epoch": 1},
    "mlff": {"epochs": 1, "repeats": 1},
    "cse": {"epochs": 1},
}
COMMON = {"weights": "random", "image_size": 64, "batch_size": 4, "threshold_holdout": 0.25}


def make(name: str, **overrides: Any) -> Detector:
    return create_model(name, **{**COMMON, **FAST_PARAMS.get(name, {}), **overrides})


@pytest.fixture(scope="module")
def data(mvtec_category: Path) -> tuple[MVTecDataset, MVTecDataset]:
    transform = make("padim").transform
    return (
        MVTecDataset(mvtec_category, "train", transform=transform),
        MVTecDataset(mvtec_category, "test", transform=transform),
    )


@pytest.fixture(scope="module", params=list_models())
def fitted(request: pytest.FixtureRequest, data: tuple[MVTecDataset, MVTecDataset]) -> Detector:
    return make(request.param).fit(data[0])


def test_registry_has_the_foundation_models() -> None:
    assert {"padim", "patchcore"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_predict_before_fit_raises(name: str) -> None:
    detector = make(name)
    with pytest.raises(NotFittedError, match="not fitted"):
        detector.predict(torch.rand(1, 3, 64, 64))
    with pytest.raises(NotFittedError):
        detector.save("unused")


@pytest.mark.parametrize("name", list_models())
def test_init_only_stores_arguments(name: str) -> None:
    detector = make(name, seed=7)
    assert detector.module_ is None
    params = detector.get_params()
    assert params["seed"] == 7
    json.dumps(params)  # JSON-able


def test_fit_returns_self_and_prediction_shapes(
    fitted: Detector, data: tuple[MVTecDataset, MVTecDataset]
) -> None:
    test = data[1]
    pred = fitted.predict(test)
    n = len(test)
    assert pred.scores.shape == (n,) and pred.scores.dtype == np.float32
    assert pred.maps.shape == (n, 64, 64) and pred.maps.dtype == np.float32
    assert np.isfinite(pred.maps).all()
    assert pred.threshold is not None and np.isfinite(pred.threshold)
    assert pred.labels is not None and pred.labels.dtype == bool
    np.testing.assert_array_equal(pred.labels, pred.scores >= pred.threshold)
    # the image score is the maximum of the map, unless the model documents another reduction
    # (CSE's paper score is the mean distance: tested in test_cse.py)
    if getattr(fitted, "image_score", "max") == "max":
        np.testing.assert_allclose(pred.scores, pred.maps.reshape(n, -1).max(1), rtol=1e-6)
    assert pred.paths == [str(s.path) for s in test.samples]


def test_save_load_gives_identical_scores(
    fitted: Detector, data: tuple[MVTecDataset, MVTecDataset], tmp_path: Path
) -> None:
    fitted.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = load_model(tmp_path / "model")
    assert type(loaded) is type(fitted)
    assert loaded.get_params() == fitted.get_params()
    a, b = fitted.predict(data[1]), loaded.predict(data[1])
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.maps, b.maps)
    assert a.threshold == b.threshold


def test_same_seed_same_result(fitted: Detector, data: tuple[MVTecDataset, MVTecDataset]) -> None:
    again = make(fitted.name).fit(data[0])
    np.testing.assert_array_equal(fitted.predict(data[1]).scores, again.predict(data[1]).scores)


@pytest.mark.parametrize("threads", [1, 2])
def test_predict_keeps_torch_thread_count(
    fitted: Detector, data: tuple[MVTecDataset, MVTecDataset], threads: int
) -> None:
    # a model must not change the thread count the user chose (`--threads`); the first-call
    # case of PaDiM's numba kernel is checked in a fresh process in test_padim.py
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fitted.predict(data[1])
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_tensor_input_matches_dataset_input(
    fitted: Detector, data: tuple[MVTecDataset, MVTecDataset]
) -> None:
    images = torch.stack([data[1][i]["image"] for i in range(3)])
    np.testing.assert_allclose(
        fitted.predict(images).scores, fitted.predict(data[1]).scores[:3], rtol=1e-5
    )


def test_wrong_image_size_is_a_clear_error(fitted: Detector) -> None:
    with pytest.raises(DataError, match="expects 64x64"):
        fitted.predict(torch.rand(2, 3, 32, 32))


def test_set_threshold_changes_labels(
    fitted: Detector, data: tuple[MVTecDataset, MVTecDataset]
) -> None:
    original = fitted.threshold
    try:
        fitted.set_threshold(-1e9)
        assert fitted.predict(data[1]).labels.all()
    finally:
        fitted.set_threshold(original)


@pytest.mark.parametrize("name", list_models())
def test_no_holdout_means_no_threshold(name: str, data: tuple[MVTecDataset, MVTecDataset]) -> None:
    pred = make(name, threshold_holdout=0.0).fit(data[0]).predict(data[1])
    assert pred.threshold is None and pred.labels is None


def test_unknown_parameter_is_rejected() -> None:
    with pytest.raises(ConfigError, match="no parameter"):
        create_model("patchcore", coreset_rate=0.1)
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("nope")


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"config\.json not found"):
        load_model(tmp_path)
