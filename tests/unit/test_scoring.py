"""flawmap.scoring.predict_to_folder (what ``flawmap predict`` runs) and ``Detector.module``
(also as the latency helpers use it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flawmap.data import MVTecDataset
from flawmap.errors import ConfigError, DataError, NotFittedError
from flawmap.models import create_model
from flawmap.models.base import AnomalyModule, Detector
from flawmap.scoring import SCORE_COLUMNS, PredictSummary, predict_to_folder, resize_map


@pytest.fixture(scope="module")
def detector(mvtec_category: Path) -> Detector:
    model = create_model(
        "patchcore", image_size=64, weights="random", coreset_ratio=0.2, threshold_holdout=0.25
    )
    return model.fit(MVTecDataset(mvtec_category, "train", transform=model.transform))


def test_module_is_the_fitted_network_and_read_only(detector: Detector) -> None:
    assert isinstance(detector.module, AnomalyModule)
    assert detector.module is detector.module_
    with pytest.raises(AttributeError):
        detector.module = detector.module  # type: ignore[misc]
    unfitted = create_model("patchcore", image_size=64, weights="random")
    with pytest.raises(NotFittedError, match="not fitted"):
        _ = unfitted.module
    with pytest.raises(NotFittedError):
        predict_to_folder(unfitted, [Path("x.png")], Path("unused"))


def test_predict_to_folder_writes_rows_overlays_and_maps(
    detector: Detector, mvtec_category: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    summary = predict_to_folder(detector, [mvtec_category / "test"], out, save_maps=True)
    assert isinstance(summary, PredictSummary) and summary.out == out
    assert len(summary.rows) == 8 and summary.scored == 8 and summary.failed == []
    assert all(list(r) == list(SCORE_COLUMNS) for r in summary.rows)
    assert summary.flagged == sum(r["label"] == "defective" for r in summary.rows)
    assert json.loads((out / "scores.json").read_text()) == summary.rows
    for row in summary.rows:
        assert row["threshold"] == detector.threshold
        assert (out / row["overlay"]).is_file() and (out / row["map"]).is_file()
    # maps at the original size, in the MVTec layout
    amap = np.asarray(Image.open(out / "widget" / "test" / "spot" / "000.tiff"))
    assert amap.dtype == np.float32 and amap.shape == (64, 64)
    # the scores are the detector's own
    test = MVTecDataset(mvtec_category, "test", transform=detector.transform)
    expected = detector.predict(test).scores
    np.testing.assert_array_equal([r["score"] for r in summary.rows], expected)


def test_threshold_applies_to_the_call_only(
    detector: Detector, mvtec_category: Path, tmp_path: Path
) -> None:
    learned = detector.threshold
    summary = predict_to_folder(detector, [mvtec_category / "test"], tmp_path, threshold=-1e30)
    stored = float(np.float32(-1e30))  # the threshold buffer is float32
    assert all(r["label"] == "defective" and r["threshold"] == stored for r in summary.rows)
    assert summary.flagged == 8 and detector.threshold == learned
    assert not any(r["map"] for r in summary.rows)  # no maps without save_maps
    with pytest.raises(ConfigError, match="threshold"):
        predict_to_folder(detector, [mvtec_category / "test"], tmp_path, threshold=float("nan"))
    assert detector.threshold == learned


def test_unreadable_and_missing_inputs(detector: Detector, tmp_path: Path) -> None:
    bad = tmp_path / "in" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image")
    summary = predict_to_folder(detector, [bad], tmp_path / "out")
    assert (
        summary.scored == 0 and len(summary.failed) == 1 and "bad.png" in summary.failed[0]["error"]
    )
    with pytest.raises(DataError):
        predict_to_folder(detector, [tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(DataError, match="no input paths"):
        predict_to_folder(detector, [], tmp_path / "out")


def test_resize_map_is_bilinear_float32_at_pil_size() -> None:
    amap = np.arange(4, dtype=np.float64).reshape(2, 2)
    full = resize_map(amap, (6, 4))
    assert full.dtype == np.float32 and full.shape == (4, 6)
    assert full.min() >= 0.0 and full.max() <= 3.0


def test_latency_helpers_go_through_the_public_module(detector: Detector) -> None:
    from flawmap.evaluation.timing import measure_backbone_latency, measure_latency

    assert measure_latency(detector, runs=1, warmup=0) > 0.0
    assert measure_backbone_latency(detector, runs=1, warmup=0, batch_size=2) > 0.0
    unfitted = create_model("patchcore", image_size=64, weights="random")
    with pytest.raises(NotFittedError):
        measure_latency(unfitted, runs=1, warmup=0)
