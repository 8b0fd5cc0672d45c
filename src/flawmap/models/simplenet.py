"""SimpleNet (Liu et al., CVPR 2023) and TrisimpleNet (seed paper 000), one implementation.

Data path (paper §3.1-3.6):

- features o = F_phi(x): two mid-level backbone stages (stride 8 and 16), each averaged over a
  p x p neighbourhood (eq. 3.1-3.2, p = 3), resized to the stride-8 grid and concatenated
  (eq. 3.3), then projected to ``embed_dim`` channels by adaptive average pooling over the
  channel axis (SimpleNet's aggregator; the paper uses 1536);
- feature adaptor G: one bias-free linear layer, q = G(o) (eq. 3.5);
- anomalous features q- = q + eps, eps ~ N(0, sigma^2 I), sigma = 0.015 (eq. 3.6); fake-normal
  features (TrisimpleNet only) q' = q + eps', eps' ~ N(0, sigma'^2 I), sigma' = 0.00015 (eq. 3.7);
- discriminator D: Linear -> BatchNorm -> LeakyReLU(0.2) -> Linear, one score per position;
- loss: see :func:`simplenet_loss` (eq. 3.10-3.13);
- inference: s = -D(G(o)) per position (eq. 3.14), upsampled and smoothed into the map
  (eq. 3.15), image score = max of the map (eq. 3.16).

Model selection never looks at test data: the weights of the last epoch are kept (the original
SimpleNet code keeps the epoch with the best test-set score; we do not).

Noise scale (deviation). The paper's sigma = 0.015 is in the units of WideResNet-50 features
embedded in 1536 dimensions; with the default backbone it is below the smallest principal std
of the normal features, and the discriminator cannot tell q from q-. We therefore divide the
features by one fitted scalar, their RMS per-channel std on the training set
(``feature_scaling``, a stored buffer), and express ``noise_sigma`` in those units. Its
default was chosen on training data only (``benchmarks/select_on_training.py``: a training-only
split plus synthetically damaged copies; results in ``benchmarks/results/``). The fake-normal
noise of TrisimpleNet keeps the paper's ratio sigma' = sigma / 100 unless given.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from flawmap.backbones import FeatureExtractor
from flawmap.errors import DataError
from flawmap.models.base import AnomalyModule, TrainedDetector, register_model
from flawmap.models.features import check_patch_size, collect_features, local_patch_features
from flawmap.models.params import Bool, Int, NoneOr, Real, param


def simplenet_loss(
    normal: torch.Tensor,
    anomalous: torch.Tensor,
    fake_normal: torch.Tensor | None = None,
    th_pos: float = 0.5,
    th_neg: float = 0.5,
    alpha: float = 1.0,
) -> torch.Tensor:
    """Mean per-position loss of discriminator scores (each (P,)), eq. 3.10-3.13.

    SimpleNet's truncated L1 loss (eq. 3.10), read as in the original SimpleNet code (normal
    scores pushed above ``th_pos``, anomalous scores below ``-th_neg``)::

        l1 = max(0, th_pos - D(q)) + max(0, th_neg + D(q-))

    TrisimpleNet adds (``fake_normal`` given) the triplet-style terms of eq. 3.11. The paper's
    eq. 3.11 and its pseudo-code disagree in signs and in which scores the absolute difference
    compares; we implement the stated intent — normal scores above anomalous ones by at least
    ``alpha``, and normal and fake-normal scores pulled together::

        l2 = max(0, alpha - (D(q) - D(q-))) + |D(q) - D(q')|

    The loss is zero exactly when every margin holds: D(q) >= th_pos, D(q-) <= -th_neg,
    D(q) - D(q-) >= alpha and D(q') = D(q). Returns the mean over positions (eq. 3.13).
    """
    loss = F.relu(th_pos - normal) + F.relu(th_neg + anomalous)
    if fake_normal is not None:
        loss = loss + F.relu(alpha - (normal - anomalous)) + (normal - fake_normal).abs()
    return loss.mean()


def feature_rms_std(features: torch.Tensor) -> float:
    """(P, C) features -> sqrt of the mean per-channel variance (one scalar feature scale)."""
    if len(features) < 2:
        raise DataError("need at least two feature positions to estimate the feature scale")
    scale = float(features.double().var(dim=0).mean().sqrt())
    if not scale > 0:
        raise DataError("the training features are constant: are all training images identical?")
    return scale


def add_gaussian_noise(
    features: torch.Tensor, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """features + eps, eps ~ N(0, sigma^2 I) i.i.d. per element (eq. 3.6 / 3.7)."""
    noise = torch.randn(features.shape, generator=generator, dtype=features.dtype)
    return features + sigma * noise


class SimpleNetModule(AnomalyModule):
    """Frozen backbone + aggregation/projection + adaptor G + discriminator D."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        smoothing_sigma: float,
        embed_dim: int | None,
        patch_size: int,
        hidden_dim: int | None,
    ) -> None:
        super().__init__(extractor, smoothing_sigma)
        check_patch_size(patch_size)
        dim = embed_dim or sum(extractor.channels)
        self.embed_dim = dim
        self.patch_size = patch_size
        hidden = hidden_dim or dim
        # Features are divided by this scalar (fitted: their RMS per-channel std on the training
        # set, or 1 with feature_scaling=False), so noise_sigma is relative to the feature scale.
        self.register_buffer("feature_scale", torch.ones(()))
        self.adaptor = nn.Linear(dim, dim, bias=False)  # G, eq. 3.5
        self.discriminator = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> projected local features o (B, embed_dim, h, w)."""
        out = local_patch_features(self.extractor(images), self.patch_size)
        b, c, h, w = out.shape
        if c != self.embed_dim:
            flat = out.permute(0, 2, 3, 1).reshape(-1, 1, c)
            flat = F.adaptive_avg_pool1d(flat, self.embed_dim)
            out = flat.reshape(b, h, w, self.embed_dim).permute(0, 3, 1, 2)
        return (out / self.feature_scale).contiguous()

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """(P, embed_dim) features o -> (P,) discriminator scores D(G(o))."""
        return self.discriminator(self.adaptor(features))[:, 0]

    def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.features(images)
        b, c, h, w = feats.shape
        scores = -self.score_features(feats.permute(0, 2, 3, 1).reshape(-1, c))  # eq. 3.14
        return scores.view(b, 1, h, w)


@register_model
class SimpleNet(TrainedDetector):
    """SimpleNet: adaptor + discriminator on Gaussian-noise defect features; score = -D(G(o)).

    Args:
        embed_dim: projected feature size (``None`` = the stages' channel sum; paper 1536).
        hidden_dim: discriminator hidden size (``None`` = ``embed_dim``).
        patch_size: neighbourhood of the local average (paper p = 3).
        noise_sigma: std of the anomalous-feature noise, in units of the feature scale when
            ``feature_scaling`` (the default; chosen on training data only, see BENCHMARKS.md),
            absolute otherwise (the paper's 0.015 with WideResNet-50 features).
        feature_scaling: divide features by their RMS per-channel std on the training set
            (a stored buffer), making ``noise_sigma`` independent of the backbone's scale.
        th_pos, th_neg: truncation thresholds of eq. 3.10 (paper 0.5, 0.5).
        epochs: training epochs (CPU default; the paper trains 160, see ``PAPER_SCHEDULE``).
        train_batch_size: images per optimisation step (paper 4).
        lr, weight_decay: Adam settings of G and D (paper 1e-4, 1e-5).
        **common: see :class:`~flawmap.models.base.Detector`.
    """

    name = "simplenet"
    default_strides = (8, 16)
    embed_dim: int | None = param(None, NoneOr(Int(1)))
    hidden_dim: int | None = param(None, NoneOr(Int(1)))
    patch_size: int = param(3, Int(1, odd=True))
    noise_sigma: float = param(0.8, Real(0.0, low_open=True))
    feature_scaling: bool = param(True, Bool())
    th_pos: float = param(0.5, Real())
    th_neg: float = param(0.5, Real())
    epochs: int = param(40)
    train_batch_size: int = param(4)
    lr: float = param(1e-4, Real(0.0, low_open=True))
    weight_decay: float = param(1e-5, Real(0.0))
    #: The seed paper's schedule (§4.3), for ``--param epochs=160`` style reproduction.
    PAPER_SCHEDULE: ClassVar[dict[str, float]] = {
        "epochs": 160,
        "train_batch_size": 4,
        "lr": 1e-4,
        "weight_decay": 1e-5,
    }

    def _build_module(self, weights: str) -> SimpleNetModule:
        return SimpleNetModule(
            self.make_extractor(weights),
            self.smoothing_sigma,
            self.embed_dim,
            self.patch_size,
            self.hidden_dim,
        )

    def synthesize(self, q: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """Adapted features q (P, C) -> the feature sets the discriminator scores: [q, q-]."""
        return [q, add_gaussian_noise(q, self.noise_sigma, generator)]

    def loss_from_scores(self, scores: list[torch.Tensor]) -> torch.Tensor:
        normal, anomalous = scores
        return simplenet_loss(normal, anomalous, None, self.th_pos, self.th_neg)

    def loss(
        self, module: SimpleNetModule, features: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Loss of one batch of cached features o (P, embed_dim)."""
        parts = self.synthesize(module.adaptor(features), generator)
        # One discriminator pass over all kinds, so BatchNorm sees them together (as SimpleNet).
        scores = module.discriminator(torch.cat(parts))[:, 0]
        return self.loss_from_scores(list(scores.split(len(features))))

    def _fit_module(self, module: AnomalyModule, data: Dataset, progress: bool) -> None:
        if not isinstance(module, SimpleNetModule):
            raise TypeError(f"{self.name} fits a SimpleNetModule")
        if len(data) < 1:
            raise DataError("no training images")
        with torch.inference_mode():
            cached = collect_features(
                self, data, module.features, progress=progress, desc="features"
            ).features[0]
        # (N, h*w, C): the frozen backbone runs once per image; epochs cost only G and D.
        cached = cached.flatten(2).transpose(1, 2).contiguous().clone()
        if self.feature_scaling:
            scale = feature_rms_std(cached.reshape(-1, cached.shape[-1]))
            module.feature_scale.fill_(scale)
            cached /= scale
        params = [*module.adaptor.parameters(), *module.discriminator.parameters()]
        optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

        def step(indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return self.loss(module, cached[indices].reshape(-1, cached.shape[-1]), generator)

        self.history_ = self._train(module, step, [optimizer], len(cached), progress)


@register_model
class TrisimpleNet(SimpleNet):
    """TrisimpleNet: SimpleNet + fake-normal features and the triplet-style loss (seed 000).

    Args:
        fake_noise_sigma: std of the fake-normal noise sigma' (``None`` = ``noise_sigma / 100``,
            the paper's ratio 0.00015 / 0.015).
        alpha: the normal-vs-anomalous score margin of eq. 3.11 (paper 1).
        **kwargs: see :class:`SimpleNet`.
    """

    name = "trisimplenet"
    fake_noise_sigma: float | None = param(None, NoneOr(Real(0.0)))
    alpha: float = param(1.0, Real(0.0))

    @property
    def effective_fake_noise_sigma(self) -> float:
        """sigma' : ``fake_noise_sigma``, or the paper's ratio sigma / 100 (0.00015 / 0.015)."""
        if self.fake_noise_sigma is not None:
            return self.fake_noise_sigma
        return self.noise_sigma / 100

    def synthesize(self, q: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """[q, q- (sigma), q' (sigma')] for the triplet-style loss (eq. 3.6-3.7)."""
        return [
            *super().synthesize(q, generator),
            add_gaussian_noise(q, self.effective_fake_noise_sigma, generator),
        ]

    def loss_from_scores(self, scores: list[torch.Tensor]) -> torch.Tensor:
        normal, anomalous, fake_normal = scores
        return simplenet_loss(normal, anomalous, fake_normal, self.th_pos, self.th_neg, self.alpha)
