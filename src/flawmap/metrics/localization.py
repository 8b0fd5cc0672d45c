"""Pixel-level (localisation) metrics of the MVTec AD protocol: pixel AUROC, pixel AP,
pixel F1-max and AUPRO.

Convention: a higher anomaly-map value means more anomalous; mask 1 = anomalous pixel.
All pixels of all test images (defect-free images included) are pooled, as in the official
MVTec AD evaluation. Each function ranks the pixels once (one sort of the normal pixels' scores,
one of the far fewer anomalous pixels' scores); :func:`pixel_metrics` computes all four metrics
from that single ranking. Scores keep their dtype (no float64 copy of float32 maps,
no precision loss for float64 maps); the extra memory is one copy of the normal pixels' scores
plus small per-anomalous-pixel arrays (about 0.2 GB for the 38 M float32 pixels of a
582-image 256x256 category).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from flawmap.metrics._curves import (
    aupro_from,
    auroc_from,
    average_precision_from,
    f1_max_from,
    pro_curve,
    require_classes,
)
from flawmap.metrics._ranking import (
    RankedCounts,
    as_binary,
    as_image_stack,
    as_numpy,
    as_scores,
    check_fpr_limit,
    check_same_shape,
    rank,
)

__all__ = ["aupro", "label_regions", "pixel_ap", "pixel_auroc", "pixel_metrics"]

# 8-connectivity, as ``structure = np.ones((3, 3))`` in the official MVTec AD evaluation.
_STRUCTURE_8 = np.ones((3, 3), dtype=bool)


def _prepare(masks: Any, maps: Any, *, images: bool) -> tuple[NDArray[np.bool_], np.ndarray]:
    """Validate masks/maps; with ``images=True`` return them as (N, H, W) stacks."""
    m = as_numpy(masks, "masks")
    a = as_numpy(maps, "maps")
    check_same_shape(m, a, "masks", "maps")
    if images:
        m, a = as_image_stack(m, "masks"), as_image_stack(a, "maps")
    return as_binary(m, "masks"), as_scores(a, "maps")


def _components(masks: NDArray[np.bool_]) -> Iterator[tuple[int, NDArray[np.int32], int]]:
    """Yield ``(image index, labels (H, W), n_regions)`` for every image with a defect."""
    for i in range(masks.shape[0]):
        if masks[i].any():
            labels, n_found = ndimage.label(masks[i], structure=_STRUCTURE_8)
            yield i, labels, int(n_found)


def label_regions(masks: Any) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """Ground-truth regions of the MVTec AD PRO metric.

    Regions are the 8-connected components of each image's mask (``scipy.ndimage.label`` with a
    3x3 ones structure), labelled per image and numbered consecutively over all images.

    Args:
        masks: (N, H, W), (H, W) or (N, 1, H, W) bool or {0, 1} ground-truth masks.

    Returns:
        ``(region, sizes)``: region (N, H, W) uint32, 0 for normal pixels and ``r >= 1`` for
        pixels of region ``r``; sizes (R,) int64 with ``sizes[r - 1] = |region r|``.
    """
    masks = as_binary(as_image_stack(as_numpy(masks, "masks"), "masks"), "masks")
    region = np.zeros(masks.shape, dtype=np.uint32)
    sizes: list[NDArray[np.int64]] = []
    offset = 0
    for i, labels, n_found in _components(masks):
        sizes.append(np.bincount(labels.ravel(), minlength=n_found + 1)[1:].astype(np.int64))
        np.add(labels, offset, out=region[i], where=masks[i], casting="unsafe")
        offset += n_found
    return region, _concat_sizes(sizes)


def _concat_sizes(sizes: list[NDArray[np.int64]]) -> NDArray[np.int64]:
    return np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)


def _rank_pixels(masks: Any, maps: Any, *, regions: bool) -> RankedCounts:
    mask, amap = _prepare(masks, maps, images=regions)
    if not regions:
        return rank(amap, mask)
    return _rank_regions(mask, amap)


def _rank_regions(mask: NDArray[np.bool_], amap: np.ndarray) -> RankedCounts:
    """Rank (N, H, W) pixels with the region index of every anomalous pixel."""
    sizes: list[NDArray[np.int64]] = []
    # Region index of each anomalous pixel, in C order (== the order of amap[mask]).
    region_ids = np.empty(int(np.count_nonzero(mask)), dtype=np.uint32)
    offset = start = 0
    for i, labels, n_found in _components(mask):
        sizes.append(np.bincount(labels.ravel(), minlength=n_found + 1)[1:].astype(np.int64))
        ids = labels[mask[i]]
        np.add(ids, offset, out=region_ids[start : start + ids.size], casting="unsafe")
        start += ids.size
        offset += n_found
    return rank(amap, mask, region_ids, _concat_sizes(sizes))


def pixel_auroc(masks: Any, maps: Any) -> float:
    """Pixel-level AUROC over all pixels of all images (MVTec AD "pixel AUROC").

    Args:
        masks: (N, H, W) bool or {0, 1} ground truth, 1 = anomalous pixel (any shape works).
        maps: same shape, float anomaly maps.

    Returns:
        Equals ``roc_auc_score(masks.ravel(), maps.ravel())`` without its float64 copies.

    Raises:
        DataError: shapes differ, NaN in maps, non-binary masks, or only one class of pixel.
    """
    return auroc_from(_rank_pixels(masks, maps, regions=False))


def pixel_ap(masks: Any, maps: Any) -> float:
    """Pixel-level average precision, exactly sklearn's ``average_precision_score`` definition
    ``AP = sum_k (R_k - R_{k-1}) P_k`` (step-wise, no interpolation).

    Args:
        masks: (N, H, W) bool or {0, 1} ground truth (any shape works).
        maps: same shape, float anomaly maps.

    Raises:
        DataError: shapes differ, NaN in maps, non-binary masks, or no anomalous pixel.
    """
    return average_precision_from(_rank_pixels(masks, maps, regions=False))


def aupro(masks: Any, maps: Any, fpr_limit: float = 0.3) -> float:
    """Normalised area under the Per-Region-Overlap curve up to ``fpr_limit`` (AUPRO).

    Definition of the official MVTec AD evaluation (Bergmann et al., "The MVTec Anomaly
    Detection Dataset", IJCV 2021): regions are the 8-connected components of each image's
    mask; at threshold ``t``, FPR(t) is the fraction of all normal pixels of all images with
    score >= t and PRO(t) the mean over all regions of the fraction of the region's pixels with
    score >= t. The exact curve (one point per distinct score, tied pixels entering together,
    starting at (0, 0)) is integrated with the trapezoidal rule up to ``fpr_limit`` (PRO
    linearly interpolated at ``fpr_limit``) and divided by ``fpr_limit``.

    Args:
        masks: (N, H, W), (H, W) or (N, 1, H, W) bool or {0, 1} ground-truth masks.
        maps: same shape, float anomaly maps.
        fpr_limit: upper FPR integration limit in (0, 1]; 0.3 in the MVTec AD protocol.

    Returns:
        AUPRO in [0, 1].

    Raises:
        DataError: shapes differ, NaN in maps, non-binary masks, no anomalous pixel (no region)
            or no normal pixel.
        ConfigError: ``fpr_limit`` outside (0, 1].
    """
    limit = check_fpr_limit(fpr_limit)
    return aupro_from(_rank_pixels(masks, maps, regions=True), limit)


def pro_curve_points(
    masks: Any, maps: Any, fpr_limit: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve of :func:`aupro` as (FPR, PRO) vertices from (0, 0), up to the first
    vertex beyond ``fpr_limit`` (for plotting; :func:`aupro` is its normalised area).

    Raises:
        DataError/ConfigError: as :func:`aupro`.
    """
    limit = check_fpr_limit(fpr_limit)
    return pro_curve(_rank_pixels(masks, maps, regions=True), limit)


def pixel_metrics(masks: Any, maps: Any, fpr_limit: float = 0.3) -> dict[str, float]:
    """All pixel-level metrics from one sort of the pixels.

    Args:
        masks: (N, H, W), (H, W) or (N, 1, H, W) bool or {0, 1} ground-truth masks.
        maps: same shape, float anomaly maps.
        fpr_limit: FPR integration limit of AUPRO.

    Returns:
        ``{"pixel_auroc", "pixel_ap", "pixel_f1", "aupro"}`` as in :func:`pixel_auroc`,
        :func:`pixel_ap`, :func:`~flawmap.metrics.f1_max` and :func:`aupro`.

    Raises:
        DataError / ConfigError: as :func:`aupro`.
    """
    limit = check_fpr_limit(fpr_limit)
    return _metrics_from(_rank_pixels(masks, maps, regions=True), limit)


def _metrics_from(counts: RankedCounts, fpr_limit: float) -> dict[str, float]:
    require_classes(counts, "pixel metrics")
    return {
        "pixel_auroc": auroc_from(counts),
        "pixel_ap": average_precision_from(counts),
        "pixel_f1": f1_max_from(counts),
        "aupro": aupro_from(counts, fpr_limit),
    }


def pixel_metrics_or_none(
    masks: Any, maps: Any, fpr_limit: float = 0.3
) -> dict[str, float] | dict[str, None]:
    """:func:`pixel_metrics`, or all ``None`` when the masks hold only one class of pixel."""
    limit = check_fpr_limit(fpr_limit)
    mask, amap = _prepare(masks, maps, images=True)
    if not mask.any() or mask.all():
        return {"pixel_auroc": None, "pixel_ap": None, "pixel_f1": None, "aupro": None}
    return _metrics_from(_rank_regions(mask, amap), limit)
