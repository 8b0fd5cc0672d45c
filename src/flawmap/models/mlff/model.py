"""MLFF: image anomaly detection with a multi-level feature fusion network (seed paper 004,
"Image anomaly detection algorithm using multi-level feature fusion network").

Data path (§1-2; the paper's formulas are lost in the stored text, the definitions below are
the reference):

- backbone: three stages of strides 4, 8, 16 (the paper: ResNet-50 layer1-3), frozen by default
  (``finetune_stages=0``);
- shallow branch: the stride-4 stage folded onto the stride-8 grid by space-to-depth,
  concatenated with the stride-8 stage, 1x1 conv-BN-ReLU to ``texture_channels``; with STL,
  :class:`~flawmap.models.mlff.modules.STLNet` (TEM, then PTFEM over ``ptfem_scales``);
- deep branch: the stride-16 stage, 1x1 conv-BN-ReLU to ``semantic_channels``, with
  self-calibration :class:`~flawmap.models.mlff.modules.SelfCalibratedConv` + ReLU, upsampled
  bilinearly to the stride-8 grid;
- fusion: concatenation, 1x1 conv-BN-ReLU, 1x1 convolution to psi (B, ``feature_dim``, H/8,
  W/8); score head: a 1x1 convolution psi -> S (B, H/8, W/8) (eq. 9);
- loss (eq. 8, :mod:`flawmap.models.mlff.losses`): alpha L_f (eq. 3-4) + beta L_s (eq. 5) +
  xi L_fs (eq. 6-7);
- pseudo-anomalies (§2.1): each epoch repeats the training set ``repeats`` times and replaces a
  fixed, seeded ``anomaly_fraction`` of the items by fresh confetti noise or CutPaste defects
  (probability 1/2 each); masks go to psi's grid by
  :func:`~flawmap.models.mlff.losses.downsample_mask` (``mask_fraction``);
- scoring (§2.6): S (or, without the score head, the hypersphere distance A of eq. 3),
  upsampled and smoothed; the image score is the map's maximum.

Ablations (Table 4), cumulative, as ``variant``: ``"baseline"`` (L_f only, A as the map),
``"+sc"``, ``"+stl"``, ``"+score"`` (score head and L_s), ``"full"`` (+ L_fs, default).
Readings where the paper is silent are documented in :mod:`flawmap.models.mlff.losses`.

Deviations (§3.1 trains everything for 200 epochs with SGD): the backbone is frozen and the
features of the good training images are cached, so only pseudo-anomalies run the backbone
during training (``finetune_stages=1`` fine-tunes the last stage); psi is at stride 8, not 4,
with the stride-4 details kept by space-to-depth; SGD momentum 0.9 (unstated in the paper)
and the decay 3e-5 read as weight decay; the last epoch is kept; a CPU schedule by default
(the paper's is :attr:`MLFF.PAPER_SCHEDULE`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from flawmap.backbones import FeatureExtractor
from flawmap.errors import ConfigError, DataError
from flawmap.models.base import AnomalyModule, TrainedDetector, register_model
from flawmap.models.features import collect_features
from flawmap.models.mlff.losses import (
    NORMAL,
    consistency_loss,
    downsample_mask,
    feature_constraint_loss,
    hypersphere_distance,
    score_constraint_loss,
)
from flawmap.models.mlff.modules import SelfCalibratedConv, STLNet, conv_bn
from flawmap.models.params import Int, OneOf, Real, Seq, param
from flawmap.synth import ConfettiNoise, CutPaste, RandomChoice

__all__ = ["MLFF", "VARIANTS", "FusionWidths", "MLFFModule", "MLFFNet", "Variant"]


@dataclass(frozen=True)
class Variant:
    """Which parts of the network and loss an ablation uses (Table 4)."""

    self_calibration: bool
    stl: bool
    score: bool
    consistency: bool


VARIANTS: dict[str, Variant] = {
    "baseline": Variant(False, False, False, False),
    "+sc": Variant(True, False, False, False),
    "+stl": Variant(True, True, False, False),
    "+score": Variant(True, True, True, False),
    "full": Variant(True, True, True, True),
}
"""``variant`` name -> parts used; cumulative, as the columns of the paper's Table 4."""


@dataclass(frozen=True)
class FusionWidths:
    """Widths of :class:`MLFFNet`: the :class:`MLFF` parameters of the same names (declared,
    with their defaults and rules, there only)."""

    texture_channels: int
    semantic_channels: int
    feature_dim: int
    tem_levels: int
    ptfem_levels: int
    ptfem_scales: tuple[int, ...]
    sc_pool: int

    @classmethod
    def of(cls, params: Any) -> FusionWidths:
        """The widths read from the attributes of ``params`` (e.g. an :class:`MLFF`)."""
        values = {f.name: getattr(params, f.name) for f in fields(cls)}
        return cls(**{**values, "ptfem_scales": tuple(values["ptfem_scales"])})


class MLFFNet(nn.Module):
    """The fusion network: backbone stage features -> (psi (B, D, h, w), S (B, h, w) or None).

    Input: three maps [(B, C1, h1, w1), (B, C2, h, w), (B, C3, h3, w3)] of strides s1 < s2 < s3;
    psi and S are on the second stage's grid (h, w).
    """

    def __init__(
        self,
        channels: tuple[int, int, int],
        strides: tuple[int, int, int],
        variant: Variant,
        widths: FusionWidths,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        w = widths
        self.fold = strides[1] // strides[0]
        self.variant = variant
        self.low = conv_bn(c1 * self.fold**2 + c2, w.texture_channels)
        self.stl: STLNet | None = None
        if variant.stl:
            self.stl = STLNet(w.texture_channels, w.tem_levels, w.ptfem_levels, w.ptfem_scales)
        self.high = conv_bn(c3, w.semantic_channels)
        self.sc = (
            nn.Sequential(SelfCalibratedConv(w.semantic_channels, w.sc_pool), nn.ReLU(inplace=True))
            if variant.self_calibration
            else None
        )
        self.fuse = nn.Sequential(
            conv_bn(w.texture_channels + w.semantic_channels, w.semantic_channels),
            nn.Conv2d(w.semantic_channels, w.feature_dim, 1),
        )
        self.score = nn.Conv2d(w.feature_dim, 1, 1) if variant.score else None

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        f1, f2, f3 = features
        h, w = f2.shape[-2:]
        if self.fold > 1:
            size = (self.fold * h, self.fold * w)
            if f1.shape[-2:] != size:  # odd image sizes: align the grids first
                f1 = F.interpolate(f1, size=size, mode="bilinear", align_corners=False)
            f1 = F.pixel_unshuffle(f1, self.fold)  # (B, C1 fold^2, h, w)
        low = self.low(torch.cat([f1, f2], dim=1))
        if self.stl is not None:
            low = self.stl(low)
        high = self.high(f3)
        if self.sc is not None:
            high = self.sc(high)
        high = F.interpolate(high, size=(h, w), mode="bilinear", align_corners=False)
        psi = self.fuse(torch.cat([low, high], dim=1))
        scores = self.score(psi)[:, 0] if self.score is not None else None
        return psi, scores


class MLFFModule(AnomalyModule):
    """Backbone (three stages) + :class:`MLFFNet` + shared post-processing.

    ``patch_scores(images (B, 3, H, W)) -> (B, 1, H/8, W/8)``: S with the score head, else
    A = sqrt(||psi||^2 + 1) - 1.
    """

    def __init__(self, extractor: FeatureExtractor, smoothing_sigma: float, net: MLFFNet) -> None:
        super().__init__(extractor, smoothing_sigma)
        self.net = net

    def maps(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Backbone features -> raw maps (B, 1, h, w)."""
        psi, scores = self.net(features)
        return (scores if scores is not None else hypersphere_distance(psi))[:, None]

    def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.maps(self.extractor(images))


@register_model
class MLFF(TrainedDetector):
    """Multi-level feature fusion network trained on confetti / CutPaste pseudo-anomalies.

    Args:
        variant: ablation of Table 4, one of ``"baseline"``, ``"+sc"``, ``"+stl"``,
            ``"+score"``, ``"full"`` (default; see the module docstring).
        epochs: training epochs of ``repeats`` passes each (CPU default; the paper's schedule
            is ``PAPER_SCHEDULE``). An epoch costs one forward and backward pass of the fusion
            network per item plus one backbone pass per pseudo-anomaly; ``history_`` holds the
            loss and wall-clock seconds of every epoch after ``fit``.
        repeats: passes over the training set per epoch (paper: 10).
        anomaly_fraction: fraction of each epoch's items that are pseudo-anomalies (paper's best,
            Table 3: 0.5).
        train_batch_size: images per SGD step (paper 32).
        lr, momentum, weight_decay: SGD (paper: lr 1e-3, decay 3e-5; momentum our choice).
        finetune_stages: trailing backbone stages fine-tuned (0 = frozen, features cached).
        texture_channels, semantic_channels, feature_dim: widths of the shallow branch, of the
            deep branch and of psi.
        tem_levels, ptfem_levels: quantisation levels of the 1-D and 2-D QCO (STLNet: 128, 8).
        ptfem_scales: sub-regions per side of the PTFEM branches (paper: 1, 2, 4, 8).
        sc_pool: down-sampling rate of the self-calibration branch (SCNet: 4).
        gamma, lam: thresholds of the score-constraint loss (eq. 5; paper 2.5 and 5).
        alpha, beta, xi: weights of L_f, L_s and L_fs (eq. 8; paper 1, 1, 1).
        mask_fraction: a psi cell is anomalous when at least this fraction of its pixels are.
        consistency_patch: pixels per side of the patches of the consistency loss (psi cells).
        consistency_positions: normal patches K drawn per image for the consistency loss.
        **common: see :class:`~flawmap.models.base.Detector` (``layers``: three stages).
    """

    name = "mlff"
    default_strides = (4, 8, 16)
    variant: str = param("full", OneOf(*VARIANTS))
    epochs: int = param(4)
    repeats: int = param(10, Int(1))
    anomaly_fraction: float = param(0.5, Real(0.0, 1.0))
    train_batch_size: int = param(32)
    lr: float = param(1e-3, Real(0.0, low_open=True))
    momentum: float = param(0.9, Real(0.0))
    weight_decay: float = param(3e-5, Real(0.0))
    finetune_stages: int = param(0, Int(0))
    texture_channels: int = param(64, Int(1))
    semantic_channels: int = param(128, Int(1))
    feature_dim: int = param(64, Int(1))
    tem_levels: int = param(128, Int(2))
    ptfem_levels: int = param(8, Int(2))
    ptfem_scales: tuple[int, ...] = param((1, 2, 4, 8), Seq(Int(1)))
    sc_pool: int = param(4, Int(1))
    gamma: float = param(2.5, Real())
    lam: float = param(5.0, Real(0.0))
    alpha: float = param(1.0, Real(0.0))
    beta: float = param(1.0, Real(0.0))
    xi: float = param(1.0, Real(0.0))
    mask_fraction: float = param(0.5, Real(0.0, 1.0, low_open=True))
    consistency_patch: int = param(2, Int(1))
    consistency_positions: int = param(64, Int(2))
    #: The seed paper's schedule (§3, §3.1), for ``--param epochs=200`` style reproduction.
    PAPER_SCHEDULE: ClassVar[dict[str, float]] = {
        "epochs": 200,
        "repeats": 10,
        "anomaly_fraction": 0.5,
        "train_batch_size": 32,
        "lr": 1e-3,
        "weight_decay": 3e-5,
        "image_size": 256,
    }

    # ----------------------------------------------------------------- building
    def _build_module(self, weights: str) -> MLFFModule:
        layers = self.stage_indices()
        if len(layers) != 3:
            raise ConfigError(
                f"mlff uses three backbone stages (strides 4, 8, 16 by default), got layers "
                f"{layers}"
            )
        extractor = self.make_extractor(
            weights, trainable_stages=self.finetune_stages, truncate=True
        )
        s1, s2, s3 = extractor.strides
        if not (s1 <= s2 < s3 and s2 % s1 == 0):
            raise ConfigError(
                f"mlff needs three stages of increasing strides, the second a multiple of the "
                f"first (e.g. 4, 8, 16); got strides {extractor.strides} for layers {layers}"
            )
        c1, c2, c3 = extractor.channels
        net = MLFFNet((c1, c2, c3), (s1, s2, s3), VARIANTS[self.variant], FusionWidths.of(self))
        return MLFFModule(extractor, self.smoothing_sigma, net)

    # ----------------------------------------------------------------- training
    def loss(
        self,
        psi: torch.Tensor,
        scores: torch.Tensor | None,
        labels: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Total loss, eq. 8, of psi (B, D, h, w), S (B, h, w) or None and labels (B, h, w)."""
        variant = VARIANTS[self.variant]
        loss = self.alpha * feature_constraint_loss(psi, labels)
        if variant.score and scores is not None:
            loss = loss + self.beta * score_constraint_loss(scores, labels, self.gamma, self.lam)
            if variant.consistency:
                loss = loss + self.xi * consistency_loss(
                    psi,
                    scores,
                    labels,
                    generator,
                    self.consistency_patch,
                    self.consistency_positions,
                )
        return loss

    def _fit_module(self, module: AnomalyModule, data: Dataset, progress: bool) -> None:
        if not isinstance(module, MLFFModule):
            raise TypeError(f"{self.name} fits an MLFFModule")
        if len(data) < 1:
            raise DataError("no training images")
        frozen = self.finetune_stages == 0
        with torch.inference_mode():  # frozen: the backbone's features of good images, once
            cache = collect_features(
                self,
                data,
                module.extractor if frozen else None,
                progress=progress,
                desc="mlff: load",
                keep_images=True,
                dtype=torch.float16,
            )
        cached = cache.images
        if cached is None:
            raise DataError("no training images")
        n = len(cached)
        n_items = self.repeats * n
        # Which items of an epoch are pseudo-anomalies: a fixed, seeded anomaly_fraction.
        assignment = torch.zeros(n_items, dtype=torch.bool)
        order = torch.randperm(n_items, generator=torch.Generator().manual_seed(self.seed))
        assignment[order[: round(self.anomaly_fraction * n_items)]] = True
        # u < 0.5: CutPaste, else confetti noise (the K choices drawn first, then the defects).
        pseudo = RandomChoice((CutPaste(), ConfettiNoise()))
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

        def step(indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            which = indices % n
            anomalous = assignment[indices].nonzero().flatten()
            batch_images, masks = pseudo.apply(cached[which[anomalous]].float(), generator)
            if frozen:
                feats = [f[which].float() for f in cache.features]
                if len(anomalous):
                    fresh = cache.extract(batch_images, chunk=len(batch_images))
                    for f, new in zip(feats, fresh, strict=True):
                        f[anomalous] = new
            else:
                full = cached[which].float()
                full[anomalous] = batch_images
                feats = module.extractor(full)
            psi, scores = module.net(feats)
            labels = torch.full(
                (len(indices), *psi.shape[-2:]), NORMAL, dtype=torch.int64, device=psi.device
            )
            if len(anomalous):
                labels[anomalous] = downsample_mask(masks, psi.shape[-2:], self.mask_fraction)
            return self.loss(psi, scores, labels, generator)

        self.history_ = self._train(module, step, [optimizer], n_items, progress)
