"""Tests of flawmap.metrics against sklearn, brute force, hand-computed AUPRO values and a slow
reference implementation of the official MVTec AD PRO evaluation."""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
)

from flawmap.errors import ConfigError, DataError
from flawmap.metrics import (
    METRIC_NAMES,
    aupro,
    compute_metrics,
    f1_max,
    image_auroc,
    image_metrics,
    label_regions,
    pixel_ap,
    pixel_auroc,
    pixel_metrics,
)

STRUCTURE_8 = np.ones((3, 3), dtype=int)
STRUCTURE_4 = ndimage.generate_binary_structure(2, 1)


# ---------------------------------------------------------------------------------------------
# Helpers: random data with ties, brute-force F1, slow reference AUPRO
# ---------------------------------------------------------------------------------------------


def random_images(seed: int, n: int = 4, size: int = 12, decimals: int = 2):
    """Blob masks (image 0 defect-free) and maps rounded to ``decimals`` (many ties)."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((n, size, size)), sigma=(0, 1.2, 1.2))
    masks = noise > np.quantile(noise, 0.8)
    masks[0] = False
    maps = np.round(rng.random((n, size, size)) + 0.4 * masks, decimals)
    return masks, maps


def random_labels(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    scores = np.round(rng.random(n) + 0.3 * labels, 2)  # ties
    return labels.astype(int), scores


def brute_force_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """Loop over every distinct threshold with sklearn's f1_score (slow: few thresholds only)."""
    return max(f1_score(labels, scores >= t, zero_division=0.0) for t in np.unique(scores))


def pr_curve_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """Max of 2PR/(P+R) over sklearn's precision_recall_curve."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore"):
        return float(np.nan_to_num(2 * precision * recall / (precision + recall)).max())


def official_trapezoid(x, y, x_max):
    """``trapezoid`` of the official MVTec AD evaluation code (generic_util.py)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    correction = 0.0
    if x_max not in x:
        ins = bisect_right(x, x_max)
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def slow_aupro(masks, maps, fpr_limit=0.3, structure=STRUCTURE_8) -> float:
    """Definition, literally: one point per distinct threshold, FPR and PRO by masking."""
    masks = np.asarray(masks, dtype=bool)
    regions = []  # (image index, region mask)
    for i, mask in enumerate(masks):
        labels, n = ndimage.label(mask, structure=structure)
        regions += [(i, labels == r) for r in range(1, n + 1)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        fprs.append((above & normal).sum() / normal.sum())
        pros.append(np.mean([above[i][region].mean() for i, region in regions]))
    fprs.append(1.0)
    pros.append(1.0)
    return official_trapezoid(fprs, pros, fpr_limit) / fpr_limit


# ---------------------------------------------------------------------------------------------
# AUROC, AP, F1-max against sklearn / brute force
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_auroc_and_f1_match_sklearn(seed: int) -> None:
    labels, scores = random_labels(seed)
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    expected_f1 = brute_force_f1(labels, scores)
    assert f1_max(labels, scores) == pytest.approx(expected_f1, abs=1e-12)
    assert f1_max(labels, scores) == pytest.approx(pr_curve_f1(labels, scores), abs=1e-12)
    assert image_metrics(labels, scores) == pytest.approx(
        {"image_auroc": roc_auc_score(labels, scores), "image_f1": expected_f1}, abs=1e-12
    )


@pytest.mark.parametrize(("seed", "decimals"), [(0, 2), (1, 1), (2, 12)])
def test_pixel_auroc_ap_f1_match_sklearn(seed: int, decimals: int) -> None:
    masks, maps = random_images(seed, decimals=decimals)
    y, s = masks.ravel(), maps.ravel()
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert pixel_ap(masks, maps) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    result = pixel_metrics(masks, maps)
    assert set(result) == {"pixel_auroc", "pixel_ap", "pixel_f1", "aupro"}
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert result["pixel_f1"] == pytest.approx(pr_curve_f1(y, s), abs=1e-12)
    if decimals <= 2:  # few distinct thresholds: the brute-force loop stays fast
        assert result["pixel_f1"] == pytest.approx(brute_force_f1(y, s), abs=1e-12)
    assert f1_max(masks, maps) == pytest.approx(result["pixel_f1"], abs=1e-12)


def test_float64_scores_are_not_rounded_to_float32() -> None:
    # 1 + 1e-12 and 1 are equal in float32: ranking them equal would give AUROC 0.5.
    labels = np.array([0, 1])
    scores = np.array([1.0, 1.0 + 1e-12])
    assert image_auroc(labels, scores) == 1.0
    assert pixel_auroc(labels.reshape(1, 1, 2), scores.reshape(1, 1, 2)) == 1.0


def test_float32_maps_and_negative_zero() -> None:
    masks, maps = random_images(3)
    maps32 = (maps - 0.7).astype(np.float32)  # negative scores too
    expected = roc_auc_score(masks.ravel(), maps32.ravel())
    assert pixel_auroc(masks, maps32) == pytest.approx(expected, abs=1e-12)
    # -0.0 and +0.0 are the same score: a tie, counted half.
    assert image_auroc([0, 1], np.array([-0.0, 0.0])) == 0.5
    assert image_auroc([0, 1], [0, 1]) == 1.0  # integer scores


def test_torch_tensors_and_channel_axis() -> None:
    torch = pytest.importorskip("torch")
    masks, maps = random_images(4)
    expected = pixel_metrics(masks, maps)
    result = pixel_metrics(torch.from_numpy(masks[:, None]), torch.from_numpy(maps[:, None]))
    assert result == pytest.approx(expected, abs=1e-12)
    labels, scores = random_labels(5)
    t_scores = torch.tensor(scores, requires_grad=True)
    assert image_auroc(torch.tensor(labels), t_scores) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-12
    )


# ---------------------------------------------------------------------------------------------
# AUPRO: hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_aupro_perfect_separation() -> None:
    # 4x4 image, 2x2 defect scored 1, the 12 normal pixels scored 0.
    # Curve: (0,0) -> (0,1) [t=1] -> (1,1) [t=0]; area up to 0.3 = 0.3 -> 0.3 / 0.3 = 1.
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 1:3, 1:3] = True
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    assert aupro(masks, masks.astype(float), fpr_limit=1.0) == pytest.approx(1.0)


def test_aupro_region_partially_covered_at_the_limit() -> None:
    # One region of 4 pixels (row 0, cols 0-3) scored 0.9, 0.7, 0.5, 0.1; 10 normal pixels,
    # four scored 0.8, 0.6, 0.4, 0.3 and six 0.0. Thresholds, highest first:
    #   0.9 -> (FPR 0.0, PRO 0.25)   0.8 -> (0.1, 0.25)   0.7 -> (0.1, 0.50)
    #   0.6 -> (0.2, 0.50)           0.5 -> (0.2, 0.75)   0.4 -> (0.3, 0.75)
    #   0.3 -> (0.4, 0.75)           0.1 -> (0.4, 1.00)   0.0 -> (1.0, 1.00)
    # At FPR 0.3 the region is only 75 % covered. Area up to 0.3:
    #   0.1 * 0.25 + 0.1 * 0.5 + 0.1 * 0.75 = 0.15  ->  AUPRO = 0.15 / 0.3 = 0.5
    # Up to 1.0: 0.15 + 0.1 * 0.75 + 0.6 * 1 = 0.825.
    masks = np.zeros((1, 2, 7), dtype=bool)
    masks[0, 0, :4] = True
    maps = np.zeros((1, 2, 7))
    maps[0, 0] = [0.9, 0.7, 0.5, 0.1, 0.8, 0.6, 0.4]
    maps[0, 1, 0] = 0.3
    assert aupro(masks, maps) == pytest.approx(0.5)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.825)


def _two_regions():
    # 3x5 image. Region A = {(0,0), (1,1)} touches only diagonally; region B = column 4.
    #   A B      scores:  .9  0  0  0 .8
    #   . A B             0  .1  0  0 .8
    #   . . B             .5  0  0  0 .8
    masks = np.zeros((1, 3, 5), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True
    masks[0, :, 4] = True
    maps = np.zeros((1, 3, 5))
    maps[0, 0, 0], maps[0, 1, 1], maps[0, :, 4], maps[0, 2, 0] = 0.9, 0.1, 0.8, 0.5
    return masks, maps


def test_aupro_eight_connectivity_two_regions_of_different_sizes() -> None:
    masks, maps = _two_regions()
    # 8-connectivity: A is ONE region of 2 pixels, B one region of 3 pixels; 10 normal pixels.
    _, sizes = label_regions(masks)
    assert sizes.tolist() == [2, 3]
    assert ndimage.label(masks[0], structure=STRUCTURE_4)[1] == 3  # 4-connectivity: A splits
    # Thresholds:  0.9 -> PRO (1/2 + 0)/2 = 0.25, FPR 0     0.8 -> PRO (1/2 + 1)/2 = 0.75
    #              0.5 -> FPR 0.1                         0.1 -> PRO 1
    #              0.0 -> FPR 1
    # Area up to 0.3: 0.1 * 0.75 + 0.2 * 1 = 0.275  ->  0.275 / 0.3 = 11/12.
    assert aupro(masks, maps) == pytest.approx(11 / 12)
    # With 4-connectivity (3 regions of 1, 1, 3 pixels) it would be: PRO 1/3 at 0.9, 2/3 at
    # 0.8, 1 at 0.1; area 0.1 * 2/3 + 0.2 * 1 = 0.2667 -> 8/9.
    assert slow_aupro(masks, maps, structure=STRUCTURE_4) == pytest.approx(8 / 9)
    assert slow_aupro(masks, maps) == pytest.approx(11 / 12)


def test_aupro_interpolates_at_the_limit_with_tied_scores() -> None:
    # 1x6 image: region of 2 pixels scored 0.9, 0.5; 4 normal pixels scored 0.8, 0.5, 0.2, 0.2.
    #   0.9 -> (FPR 0.00, PRO 0.5)    0.8 -> (0.25, 0.5)
    #   0.5 -> one normal and one region pixel tie, both enter together: (0.50, 1.0)
    #   0.2 -> (1.00, 1.0)
    # 0.3 lies inside the sloped piece (0.25, 0.5) -> (0.5, 1): PRO(0.3) = 0.5 + 0.5*0.05/0.25 = 0.6
    # Area: 0.25 * 0.5 + 0.05 * (0.5 + 0.6) / 2 = 0.125 + 0.0275 = 0.1525 -> 0.1525/0.3 = 61/120.
    # (Breaking the tie region-first would give 0.175/0.3, normal-first 0.15/0.3.)
    masks = np.array([[[1, 1, 0, 0, 0, 0]]])
    maps = np.array([[[0.9, 0.5, 0.8, 0.5, 0.2, 0.2]]])
    assert aupro(masks, maps) == pytest.approx(61 / 120)
    assert slow_aupro(masks, maps) == pytest.approx(61 / 120)


def test_aupro_all_scores_tied() -> None:
    # One threshold only: the curve jumps straight from (0,0) to (1,1); area up to 0.3 is
    # 0.3 * 0.3 / 2 = 0.045 -> 0.045 / 0.3 = 0.15.
    masks, _ = random_images(6)
    assert aupro(masks, np.full(masks.shape, 0.5, dtype=np.float32)) == pytest.approx(0.15)


def test_aupro_counts_normal_pixels_of_defect_free_images() -> None:
    # Image 0: 2x2 defect scored 1, its 12 normal pixels 0. Image 1 (no defect): 4 pixels
    # scored 2, 12 scored 0. 28 normal pixels in all.
    #   2 -> (FPR 4/28 = 1/7, PRO 0)   1 -> (1/7, 1)   0 -> (1, 1)
    # Area up to 0.3: (0.3 - 1/7) * 1 = 1.1/7  ->  (1.1/7) / 0.3 = 11/21.
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :2, :2] = True
    maps = masks.astype(float)
    maps[1, 3, :] = 2.0
    assert aupro(masks, maps) == pytest.approx(11 / 21)


# ---------------------------------------------------------------------------------------------
# AUPRO against the slow reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_matches_slow_reference(seed: int, fpr_limit: float) -> None:
    masks, maps = random_images(seed, n=3, size=10, decimals=1 + seed % 2)
    expected = slow_aupro(masks, maps, fpr_limit)
    assert aupro(masks, maps, fpr_limit) == pytest.approx(expected, abs=1e-12)
    assert pixel_metrics(masks, maps, fpr_limit)["aupro"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int16])
def test_aupro_score_dtypes_signs_and_signed_zero(dtype: type) -> None:
    # float32-exact dtypes take the packed-integer sort, float64 the argsort path; negative
    # scores and -0.0 (anomalous) tied with +0.0 (normal) must rank like plain floats.
    masks, maps = random_images(9, n=3, size=10, decimals=1)
    maps = (maps - 0.7) * (10 if dtype is np.int16 else 1)
    i = np.arange(masks.sum())
    maps[masks] = np.where(i % 5 == 0, -0.0, np.where(i % 5 == 1, 0.0, maps[masks]))
    maps[~masks] = np.where(np.arange((~masks).sum()) % 7 == 0, 0.0, maps[~masks])
    maps = maps.astype(dtype)
    reference_maps = maps.astype(np.float64)
    y, s = masks.ravel(), reference_maps.ravel()
    result = pixel_metrics(masks, maps)
    assert result["aupro"] == pytest.approx(slow_aupro(masks, reference_maps), abs=1e-12)
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_label_regions_numbers_regions_over_images() -> None:
    masks, _ = _two_regions()
    region, sizes = label_regions(np.concatenate([masks, masks[:, ::-1]]))
    assert region.shape == (2, 3, 5)
    assert sorted(np.unique(region).tolist()) == [0, 1, 2, 3, 4]
    assert sizes.tolist() == [2, 3, 3, 2]


# ---------------------------------------------------------------------------------------------
# compute_metrics
# ---------------------------------------------------------------------------------------------


def test_compute_metrics_all_keys() -> None:
    masks, maps = random_images(7)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = maps.max(axis=(1, 2))
    result = compute_metrics(labels, scores, masks, maps)
    assert tuple(result) == METRIC_NAMES
    assert result == pytest.approx({**image_metrics(labels, scores), **pixel_metrics(masks, maps)})


def test_compute_metrics_none_when_undefined() -> None:
    labels, scores = random_labels(8, n=10)
    result = compute_metrics(labels, scores)
    assert result["image_auroc"] is not None
    assert all(result[k] is None for k in ("pixel_auroc", "pixel_ap", "pixel_f1", "aupro"))

    masks = np.zeros((10, 4, 4), dtype=bool)
    result = compute_metrics(np.zeros(10), scores, masks, np.ones((10, 4, 4)))
    assert all(v is None for v in result.values())  # one class of image, no anomalous pixel

    with pytest.raises(DataError, match="together"):
        compute_metrics(labels, scores, masks=masks)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_shape_mismatch_names_the_shapes() -> None:
    with pytest.raises(DataError, match=r"\(3, 4, 4\).*\(3, 4, 5\)"):
        pixel_metrics(np.zeros((3, 4, 4)), np.zeros((3, 4, 5)))
    with pytest.raises(DataError, match=r"\(5,\).*\(4,\)"):
        image_auroc(np.zeros(5), np.zeros(4))
    with pytest.raises(DataError, match="shape"):
        aupro(np.zeros((2, 2, 3, 3)), np.zeros((2, 2, 3, 3)))  # not (N, 1, H, W)


def test_nan_scores_rejected() -> None:
    with pytest.raises(DataError, match="NaN"):
        image_auroc([0, 1, 1], [0.1, np.nan, 0.3])
    maps = np.zeros((1, 3, 3), dtype=np.float32)
    maps[0, 1, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        pixel_auroc(np.eye(3)[None], maps)


def test_no_anomalous_or_no_normal_pixel() -> None:
    maps = np.random.default_rng(0).random((2, 4, 4))
    with pytest.raises(DataError, match="no anomalous"):
        aupro(np.zeros((2, 4, 4)), maps)
    with pytest.raises(ValueError, match="no anomalous"):  # DataError is a ValueError
        pixel_metrics(np.zeros((2, 4, 4)), maps)
    with pytest.raises(DataError, match="no normal"):
        aupro(np.ones((2, 4, 4)), maps)
    with pytest.raises(DataError, match="no normal"):
        image_auroc([1, 1], [0.2, 0.3])
    with pytest.raises(DataError, match="no anomalous"):
        f1_max([0, 0], [0.2, 0.3])


def test_bad_masks_and_options() -> None:
    with pytest.raises(DataError, match="255"):
        pixel_auroc(np.array([[[0, 255]]]), np.array([[[0.1, 0.9]]]))
    with pytest.raises(DataError, match="0 and 1"):
        image_auroc([0, 0.5], [0.1, 0.9])
    with pytest.raises(DataError, match="empty"):
        image_auroc([], [])
    with pytest.raises(ConfigError, match="fpr_limit"):
        aupro(np.eye(3)[None], np.eye(3)[None], fpr_limit=0.0)
    with pytest.raises(ConfigError, match="fpr_limit"):
        pixel_metrics(np.eye(3)[None], np.eye(3)[None], fpr_limit=1.5)
