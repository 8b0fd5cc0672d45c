"""The losses of the multi-level feature fusion network (seed paper 004, §2.2-2.5).

Pixel labels live on psi's grid (B, h, w) as int64: ``NORMAL`` (0), ``ANOMALOUS`` (1) or
``IGNORED`` (-1); :func:`downsample_mask` makes them from full-size pseudo-anomaly masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flawmap.errors import ConfigError, DataError
from flawmap.models.losses import push

__all__ = [
    "ANOMALOUS",
    "IGNORED",
    "NORMAL",
    "consistency_kl",
    "consistency_loss",
    "downsample_mask",
    "feature_constraint_loss",
    "hypersphere_distance",
    "score_constraint_loss",
]

NORMAL, ANOMALOUS, IGNORED = 0, 1, -1


def downsample_mask(
    masks: torch.Tensor, size: tuple[int, int], min_fraction: float = 0.5
) -> torch.Tensor:
    """Full-size masks (B, 1, H, W) in {0, 1} -> pixel labels (B, h, w) int64 on psi's grid.

    Each cell of the (h, w) grid gets the fraction f of anomalous pixels it covers (adaptive
    average pooling, i.e. an 8 x 8 box per cell at stride 8): ``NORMAL`` when f = 0,
    ``ANOMALOUS`` when f >= ``min_fraction``, ``IGNORED`` in between (border cells that are
    mostly normal take part in no loss).
    """
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise DataError(f"masks must have shape (B, 1, H, W), got {tuple(masks.shape)}")
    if not 0.0 < min_fraction <= 1.0:
        raise ConfigError(f"mask_fraction must be in (0, 1], got {min_fraction}")
    fraction = F.adaptive_avg_pool2d(masks.float(), size)[:, 0]
    labels = torch.full(fraction.shape, IGNORED, dtype=torch.int64, device=masks.device)
    labels[fraction <= 0] = NORMAL
    labels[fraction >= min_fraction] = ANOMALOUS
    return labels


def _check_labels(values: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if labels.shape != values.shape:
        raise DataError(
            f"labels must have the shape of the {what} (B, h, w), got {tuple(labels.shape)} "
            f"and {tuple(values.shape)}"
        )
    if not bool(((labels == NORMAL) | (labels == ANOMALOUS) | (labels == IGNORED)).all()):
        raise DataError("labels must contain only 0 (normal), 1 (anomalous) and -1 (ignored)")


def hypersphere_distance(psi: torch.Tensor) -> torch.Tensor:
    """psi (B, C, h, w) -> A (B, h, w) = sqrt(||psi||^2 + 1) - 1 (eq. 3), per pixel.

    Evaluated as ||psi||^2 / (sqrt(||psi||^2 + 1) + 1): no cancellation near the centre and a
    finite gradient at psi = 0 (the norm itself is never taken).
    """
    square = (psi * psi).sum(dim=1)
    return square / (torch.sqrt(square + 1.0) + 1.0)


def feature_constraint_loss(psi: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Feature-constraint loss, eq. 4, of features psi (B, C, h, w) and labels (B, h, w)::

        L_f = 1/N1 sum_{normal} A  -  1/N2 sum_{anomalous} log(1 - exp(-A))

    with A = :func:`hypersphere_distance` (eq. 3) and N1, N2 the numbers of normal and
    anomalous pixels of the whole batch (ignored pixels count in neither). -log(1 - exp(-A))
    is FCDD's push function, evaluated stably (:func:`flawmap.models.losses.push`, clamped at
    A >= 1e-6). A term without pixels is 0.
    """
    a = hypersphere_distance(psi)
    _check_labels(a, labels, "features")
    normal, anomalous = labels == NORMAL, labels == ANOMALOUS
    loss = a.new_zeros(())
    if bool(normal.any()):
        loss = loss + a[normal].mean()
    if bool(anomalous.any()):
        loss = loss + push(a[anomalous]).mean()
    return loss


def score_constraint_loss(
    scores: torch.Tensor, labels: torch.Tensor, gamma: float = 2.5, margin: float = 5.0
) -> torch.Tensor:
    """Score-constraint loss, eq. 5, of scores S (B, h, w) and labels (B, h, w)::

        L_s = 1/N_n sum_{normal} max(0, S - gamma)
            + 1/N_a sum_{anomalous} max(0, lambda - (S_a - mean_n))

    (``margin`` = lambda): normal scores are held below gamma, and every anomalous score must
    exceed mean_n, the mean normal score *of its own image*, by lambda. N_n, N_a count normal /
    anomalous pixels over the batch. mean_n keeps its gradient (the margin term also pulls the
    image's normal scores down). An image without normal pixels uses the batch's mean normal
    score, and a batch without any uses gamma. A term without pixels is 0.
    """
    _check_labels(scores, labels, "scores")
    normal, anomalous = labels == NORMAL, labels == ANOMALOUS
    loss = scores.new_zeros(())
    if bool(normal.any()):
        loss = loss + F.relu(scores[normal] - gamma).mean()
    if bool(anomalous.any()):
        weights = normal.to(scores.dtype).flatten(1)
        per_image = weights.sum(dim=1)
        sums = (scores.flatten(1) * weights).sum(dim=1)
        total = per_image.sum()
        fallback = sums.sum() / total if bool(total > 0) else scores.new_tensor(gamma)
        mean_n = torch.where(per_image > 0, sums / per_image.clamp_min(1.0), fallback)
        gap = scores - mean_n[:, None, None]
        loss = loss + F.relu(margin - gap[anomalous]).mean()
    return loss


def consistency_kl(features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Consistency of one image, eq. 6, from K samples: features (K, C), scores (K, D)::

        L_fs = 1/K sum_i KL(softmax(Q_i) || softmax(P_i))

    P (K, K) and Q (K, K) are the pairwise Euclidean distances of the features and of the
    scores, softmax runs along each row (of the distances themselves, as the paper writes),
    and KL(q || p) = sum_j q_j (log q_j - log p_j). Zero exactly when the rows' softmaxes agree,
    e.g. when Q = P. Gradients reach both features and scores.
    """
    if features.ndim != 2 or scores.ndim != 2 or len(features) != len(scores):
        raise DataError(
            f"features (K, C) and scores (K, D) must have K rows each, got "
            f"{tuple(features.shape)} and {tuple(scores.shape)}"
        )
    p = _pairwise_distances(features)
    q = _pairwise_distances(scores)
    log_p, log_q = F.log_softmax(p, dim=1), F.log_softmax(q, dim=1)
    return (log_q.exp() * (log_q - log_p)).sum(dim=1).mean()


def _pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """(K, C) -> (K, K) Euclidean distances, with a finite gradient wherever two rows coincide.

    sqrt has an infinite derivative at 0, and 0 x inf = NaN in the backward pass: every zero
    distance (the diagonal, and two identical rows, e.g. the features of two patches of a flat,
    saturated image region) is taken as sqrt(1) and then zeroed, so its gradient is 0.
    """
    diff = x[:, None, :] - x[None, :, :]
    square = (diff * diff).sum(dim=-1)
    zero = square <= 0
    return torch.where(zero, torch.zeros_like(square), torch.sqrt(torch.where(zero, 1.0, square)))


def consistency_loss(
    psi: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    patch_size: int = 2,
    positions: int = 64,
) -> torch.Tensor:
    """Batch consistency loss, eq. 7: the mean of :func:`consistency_kl` over the images.

    psi (B, C, h, w), scores (B, h, w), labels (B, h, w). Pixels are packed into patches
    (§2.4): psi and S are average-pooled over non-overlapping ``patch_size`` x ``patch_size``
    cells; a patch is normal when every pixel in it is ``NORMAL``. Per image, up to
    ``positions`` normal patches (K) are drawn uniformly without replacement from
    ``generator``; images with fewer than two normal patches are skipped, and a batch with no
    usable image gives 0.
    """
    if scores.shape != psi.shape[:1] + psi.shape[2:]:
        raise DataError(
            f"scores must be (B, h, w) on psi's grid, got {tuple(scores.shape)} for psi "
            f"{tuple(psi.shape)}"
        )
    _check_labels(scores, labels, "scores")
    k = patch_size
    pooled_f = F.avg_pool2d(psi, k, ceil_mode=True).flatten(2)  # (B, C, P)
    pooled_s = F.avg_pool2d(scores[:, None], k, ceil_mode=True).flatten(2)  # (B, 1, P)
    not_normal = (labels != NORMAL).to(psi.dtype)[:, None]
    normal = F.max_pool2d(not_normal, k, ceil_mode=True).flatten(1) == 0  # (B, P)
    losses = []
    for b in range(len(psi)):
        candidates = normal[b].nonzero().flatten()
        if len(candidates) < 2:
            continue
        order = torch.randperm(len(candidates), generator=generator, device=generator.device)
        chosen = candidates[order[:positions].to(candidates.device)]
        losses.append(consistency_kl(pooled_f[b, :, chosen].T, pooled_s[b, :, chosen].T))
    if not losses:
        return psi.new_zeros(())
    return torch.stack(losses).mean()
