"""FCDD (Liznerski et al., ICLR 2021) with the seed paper's pixel-wise hypersphere-classifier loss.

Data path (seed paper §3-4):

- pre-processing (part of the module): local contrast normalisation per image (FCDD's L1
  variant), then min-max normalisation with per-channel constants fitted on the training images
  (buffers); the backbone applies its own ImageNet normalisation;
- phi: a pretrained CNN cut at one stage, earlier stages frozen, the last ``finetune_stages``
  fine-tuned; a 1x1 convolution gives one value per position; A_low = h(phi(X)) with the
  pseudo-Huber function h (:func:`pseudo_huber`);
- A = upsample(A_low): FCDD's receptive-field upsampling (:class:`ReceptiveUpsample`, the field
  measured by :func:`receptive_field`), then the shared smoothing; the image score is the map's
  maximum (project convention; FCDD scores by the mean of A_low);
- losses: :func:`fcdd_loss` (eq. 4) and :func:`hsc_pixel_loss` (eq. 5, default);
- training (§4): each image is replaced with probability 0.5 by confetti noise
  (:class:`~flawmap.synth.ConfettiNoise`) or, semi-supervised, by a real defect
  (:class:`~flawmap.synth.RealDefects`), then augmented (:func:`augment`); SGD with Nesterov
  momentum, lr decayed per epoch; one epoch = ``passes_per_epoch`` passes; the last epoch is kept.

Deviations: a CPU schedule by default (``FCDD.PAPER_SCHEDULE`` is the paper's); any registered
backbone (default EfficientNet-Lite0 at stride 16, chosen on training data only, see
``benchmarks/results/fcdd_layers_selection.md``; the paper's VGG-11 at stride 8 via ``layers``);
images arrive resized, so "resize to 240, crop 224" is "enlarge by 240/224, crop back"; the hue
jitter is a YIQ chroma rotation; confetti is alpha-blended, not added; an even receptive field's
Gaussian is sampled at half-integer offsets.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from flawmap.backbones import FeatureExtractor
from flawmap.errors import ConfigError, DataError
from flawmap.kernels import gaussian_kernel1d
from flawmap.models.base import AnomalyModule, TrainedDetector, register_model
from flawmap.models.features import collect_features
from flawmap.models.losses import push
from flawmap.models.params import Bool, Int, NoneOr, OneOf, Real, Text, param
from flawmap.synth import ConfettiNoise, DefectGenerator, RealDefects
from flawmap.synth.color import color_jitter
from flawmap.training import Schedule

__all__ = [
    "FCDD",
    "LOSSES",
    "FCDDModule",
    "ReceptiveField",
    "ReceptiveUpsample",
    "fcdd_loss",
    "gaussian_kernel",
    "hsc_pixel_loss",
    "local_contrast_normalization",
    "pseudo_huber",
    "push",
    "receptive_field",
]


# --------------------------------------------------------------------------- losses
def pseudo_huber(x: torch.Tensor) -> torch.Tensor:
    """h(x) = sqrt(x^2 + 1) - 1, element-wise (>= 0, ~x^2 / 2 near 0, ~|x| far from it),
    evaluated as x^2 / (sqrt(x^2 + 1) + 1) (no cancellation near 0)."""
    square = x * x
    return square / (torch.sqrt(square + 1.0) + 1.0)


def _check_maps(scores: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, ...) scores and {0, 1} masks of the same shape -> both flattened to (B, m)."""
    if scores.shape != masks.shape or scores.ndim < 2:
        raise DataError(
            f"scores and masks must have the same shape (B, H, W), got {tuple(scores.shape)} "
            f"and {tuple(masks.shape)}"
        )
    y = masks.to(scores.dtype)
    if not bool(((y == 0) | (y == 1)).all()):
        raise DataError("masks must contain only 0 (normal) and 1 (anomalous)")
    return scores.flatten(1), y.flatten(1)


def fcdd_loss(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """FCDD's loss, eq. 4 of the seed paper, of A = ``scores`` (B, H, W) >= 0 and Y = ``masks``
    (B, H, W) in {0, 1}; n = B images of m = H * W pixels::

        L = 1/n sum_i [ 1/m sum_j (1 - Y_ij) A_ij  +  p( 1/m sum_j Y_ij A_ij ) ]

    Both inner averages divide by m (all pixels), as in eq. 4. Edge case: an image without
    anomalous pixels gets no push term (eq. 4 would give p(0) = inf; FCDD's code skips such
    images the same way), so a batch of good images only costs the mean of A.
    """
    a, y = _check_maps(scores, masks)
    normal = ((1.0 - y) * a).mean(dim=1)
    has_anomaly = y.sum(dim=1) > 0
    anomalous = torch.where(has_anomaly, push((y * a).mean(dim=1)), torch.zeros_like(normal))
    return (normal + anomalous).mean()


def hsc_pixel_loss(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The seed paper's pixel-wise HSC loss, eq. 5, of A = ``scores`` (B, H, W) >= 0 and Y =
    ``masks`` (B, H, W) in {0, 1}; n = B images of m = H * W pixels::

        L = 1/(n m) sum_ij [ (1 - Y_ij) A_ij  +  |J0| / |J1| * Y_ij p(A_ij) ]

    with J^y = {(i, j) : Y_ij = y} over the whole batch: p is applied to every anomalous pixel,
    one average over all pixels of the batch, the anomalous term weighted by |J0| / |J1|
    (equivalently L = |J0| / (n m) * [mean_J0 A + mean_J1 p(A)]). Edge cases: |J1| = 0 (no
    anomalous pixel in the batch) -> the anomalous term is 0 and L = mean of A; |J0| = 0 (every
    pixel anomalous) -> the weight and hence L are 0, as eq. 5 reads.
    """
    a, y = _check_maps(scores, masks)
    n_anomalous = y.sum()
    total = ((1.0 - y) * a).sum()
    if bool(n_anomalous > 0):
        n_normal = y.numel() - n_anomalous
        total = total + (n_normal / n_anomalous) * push(a[y > 0]).sum()
    return total / y.numel()


LOSSES = {"fcdd": fcdd_loss, "hsc_pixel": hsc_pixel_loss}
"""Loss name (the ``loss`` parameter) -> loss function (scores, masks) -> scalar."""


# --------------------------------------------------------------------------- receptive field
@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one feature cell: ``size`` r pixels (square), ``stride`` j, and the
    input pixel ``start`` where the field of cell (0, 0) begins (its centre is at
    ``start + (size - 1) / 2``, that of cell p at ``p * stride`` further)."""

    size: int
    stride: int
    start: int

    @property
    def center(self) -> float:
        """Input pixel of the centre of cell 0's field."""
        return self.start + (self.size - 1) / 2


def _linear_proxy(net: nn.Module, global_convs: set[int]) -> None:
    """Make ``net`` a positive linear network with the same connectivity (in place): constant
    positive conv weights, identity BatchNorm, average instead of max pooling, and the
    squeeze-excitation convolutions (``global_convs``, fed by 1x1 maps) zeroed so that their
    global gate is a constant."""
    for module in list(net.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.MaxPool2d):
                pool = nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode)
                setattr(module, child_name, pool)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                if id(module) in global_convs:
                    module.weight.zero_()
                else:
                    module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
                if module.weight is not None:
                    module.weight.fill_(1.0)
                    module.bias.zero_()


def receptive_field(extractor: FeatureExtractor, max_width: int = 16384) -> ReceptiveField:
    """The theoretical receptive field of the extractor's last stage, measured.

    A copy of the network is made positive and linear (:func:`_linear_proxy`), so the input
    gradient of one feature cell is non-zero exactly on the pixels connected to it: its support
    along a row is the field (size and position). The input is a wide strip (widened until the
    field of the middle cell lies inside it); the field is taken as square, as for every
    registered backbone. Examples: ``tf_efficientnet_lite0`` stride 8 -> (67, 8, -26);
    ``vgg11`` stride 8 -> (62, 8, -27); ``resnet18`` stride 8 -> (99, 8, -49).
    """
    stride = int(extractor.strides[-1])
    proxy = copy.deepcopy(extractor.net).double().eval()
    height = max(32, 2 * stride)
    with torch.inference_mode(False), torch.enable_grad():
        global_convs: set[int] = set()

        def spot(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if inputs[0].shape[-2:].numel() == 1:
                global_convs.add(id(module))

        hooks = [
            m.register_forward_pre_hook(spot) for m in proxy.modules() if isinstance(m, nn.Conv2d)
        ]
        with torch.no_grad():
            proxy(torch.zeros(1, 3, height, 8 * stride, dtype=torch.float64))
        for hook in hooks:
            hook.remove()
        _linear_proxy(proxy, global_convs)
        width = 8 * stride
        while width <= max_width:
            x = torch.full((1, 3, height, width), 1e-3, dtype=torch.float64, requires_grad=True)
            out = proxy(x)[-1]
            col = out.shape[-1] // 2
            out[..., col].sum().backward()
            support = (x.grad.abs().sum(dim=(0, 1, 2)) > 0).nonzero()[:, 0]
            lo, hi = int(support.min()), int(support.max())
            if lo > 0 and hi < width - 1:
                return ReceptiveField(size=hi - lo + 1, stride=stride, start=lo - col * stride)
            width *= 2
    raise ConfigError(
        f"the receptive field of backbone {extractor.spec.name} stage {extractor.layers[-1]} is "
        f"wider than {max_width} pixels; choose an earlier stage"
    )


def kernel_size_to_std(size: int) -> float:
    """FCDD's default Gaussian std for a kernel of ``size`` pixels (10 from 32 px on)."""
    return math.log10(0.45 * size + 1) + 0.25 if size < 32 else 10.0


def gaussian_kernel(size: int, std: float) -> torch.Tensor:
    """(size, size) float32: FCDD's ``gkern``, the outer product of the unnormalised 1-D
    Gaussian (peak 1 for odd sizes) sampled in float64."""
    g = gaussian_kernel1d(size, std, normalize=False, dtype=torch.float64).float()
    return torch.outer(g, g)


class ReceptiveUpsample(nn.Module):
    """FCDD's receptive-field upsampling: (B, 1, h, w) -> (B, 1, H, W).

    ``A(y, x) = sum_{p,q} A_low(p, q) K(y - start - p j, x - start - q j)``: each cell spreads
    its value with the Gaussian kernel K (size r = the receptive field, std ``std``, peak 1 as
    FCDD) over its receptive field, centred on the field's centre. This is FCDD's transposed
    convolution of stride j with K, shifted by ``start`` and cropped (or zero-padded) to
    (H, W); since K = g g^T is separable it is computed exactly as ``U_H A_low U_W^T`` with
    U_H[y, p] = g(y - start - p j) (two small matrix products instead of an r x r transposed
    convolution). The kernel is not normalised (FCDD's choice): a constant
    map c comes out as ~c * sum(K) / j^2 inside the image (9.8 c for r = 67, std = 10, j = 8)
    and fades towards the borders, where fewer cells reach. ``kernel1d`` and ``start`` are
    buffers (saved, never trained).
    """

    def __init__(self, field: ReceptiveField, std: float | None = None) -> None:
        super().__init__()
        std = kernel_size_to_std(field.size) if std is None else float(std)
        if not (math.isfinite(std) and std > 0):
            raise ConfigError(f"gauss_std must be a positive number, got {std}")
        self.stride = int(field.stride)
        kernel1d = gaussian_kernel1d(field.size, std, normalize=False, dtype=torch.float64)
        self.register_buffer("kernel1d", kernel1d.float())
        self.register_buffer("start", torch.tensor(int(field.start), dtype=torch.int64))

    @property
    def kernel(self) -> torch.Tensor:
        """(r, r) the 2-D Gaussian kernel K = g g^T."""
        return torch.outer(self.kernel1d, self.kernel1d)

    def matrix(self, cells: int, pixels: int) -> torch.Tensor:
        """(pixels, cells) U with U[y, p] = g(y - start - p * stride) (0 outside the kernel)."""
        offset = torch.arange(pixels)[:, None] - int(self.start) - self.stride * torch.arange(cells)
        inside = (offset >= 0) & (offset < len(self.kernel1d))
        values = self.kernel1d[offset.clamp(0, len(self.kernel1d) - 1)]
        return torch.where(inside, values, torch.zeros_like(values))

    def forward(self, low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """low (B, 1, h, w) -> (B, 1, H, W) with (H, W) = ``size``."""
        rows = self.matrix(low.shape[-2], size[0]).to(low.dtype)
        cols = self.matrix(low.shape[-1], size[1]).to(low.dtype)
        return rows @ low @ cols.T


# --------------------------------------------------------------------------- pre-processing
def local_contrast_normalization(images: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): per image, all channels confounded, subtract the mean and
    divide by the mean absolute deviation (FCDD's ``local_contrast_normalization(x, 'l1')``)."""
    centred = images - _image_mean(images)
    return centred / _image_mean(centred.abs()).clamp_min(eps)


def _image_mean(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, 1, 1) mean, taken per row first: one float32 reduction over a
    whole image (ONNX Runtime's ReduceMean) loses precision that row by row it keeps."""
    return x.mean(dim=3, keepdim=True).mean(dim=(1, 2), keepdim=True)


def augment(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    zoom: float = 240.0 / 224.0,
    jitter: tuple[float, float] = (0.04, 0.0005),
    noise: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FCDD's training augmentation (§4) of images (B, 3, H, W) in [0, 1] and masks (B, 1, H, W).

    Per image, every draw from ``generator``: with probability 1/2 a random H x W crop of the
    image enlarged by ``zoom`` (the paper: resize to 240, random 224 crop; the images arrive at
    H x W already, so the other branch, resize to 224, is the identity), masks cropped alike
    (nearest); colour jitter of strength ``jitter[0]`` or ``jitter[1]`` (1/2 each); Gaussian
    noise of std ``noise`` x the image's std (all channels confounded) on each value with
    probability 1/2 (not clamped: local contrast normalisation follows).
    """
    b, _, h, w = images.shape
    out, out_masks = images.clone(), masks.clone()
    big = (round(h * zoom), round(w * zoom))
    crop = (torch.rand(b, generator=generator) < 0.5).tolist()
    strong = (torch.rand(b, generator=generator) < 0.5).tolist()
    for i in range(b):
        if crop[i] and big != (h, w):
            top = int(torch.randint(big[0] - h + 1, (1,), generator=generator))
            left = int(torch.randint(big[1] - w + 1, (1,), generator=generator))
            image = F.interpolate(images[i : i + 1], size=big, mode="bilinear", align_corners=False)
            mask = F.interpolate(masks[i : i + 1], size=big, mode="nearest")
            out[i] = image[0, :, top : top + h, left : left + w]
            out_masks[i] = mask[0, :, top : top + h, left : left + w]
        out[i] = color_jitter(out[i], jitter[0] if strong[i] else jitter[1], generator)
    std = out.std(dim=(1, 2, 3), keepdim=True)
    gate = torch.rand(out.shape, generator=generator) < 0.5
    out = out + noise * std * torch.randn(out.shape, generator=generator) * gate
    return out, out_masks


# --------------------------------------------------------------------------- module
class FCDDModule(AnomalyModule):
    """LCN + min-max pre-processing, partly fine-tuned backbone stage, 1x1 conv, pseudo-Huber,
    receptive-field upsampling, shared smoothing.

    ``forward(images (B, 3, H, W) in [0, 1]) -> (scores (B,), maps (B, H, W))``.
    """

    def __init__(
        self, extractor: FeatureExtractor, smoothing_sigma: float, gauss_std: float | None
    ) -> None:
        super().__init__(extractor, smoothing_sigma)
        self.head = nn.Conv2d(extractor.channels[-1], 1, kernel_size=1, bias=True)
        self.upsample = ReceptiveUpsample(receptive_field(extractor), gauss_std)
        # Min-max normalisation after LCN: per-channel min / max over the training images.
        self.register_buffer("input_min", torch.zeros(1, 3, 1, 1))
        self.register_buffer("input_max", torch.ones(1, 3, 1, 1))

    @torch.no_grad()
    def fit_input_range(self, images: torch.Tensor, chunk: int = 64) -> None:
        """Set the min-max constants from training images (N, 3, H, W) in [0, 1]."""
        lo = torch.full((3,), math.inf)
        hi = torch.full((3,), -math.inf)
        for start in range(0, len(images), chunk):
            x = local_contrast_normalization(images[start : start + chunk].float())
            lo = torch.minimum(lo, x.amin(dim=(0, 2, 3)))
            hi = torch.maximum(hi, x.amax(dim=(0, 2, 3)))
        self.input_min.copy_(lo.view(1, 3, 1, 1))
        self.input_max.copy_(torch.maximum(hi, lo + 1e-6).view(1, 3, 1, 1))

    def backbone_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, H, W): LCN, then min-max with the fitted constants."""
        x = local_contrast_normalization(images)
        return (x - self.input_min) / (self.input_max - self.input_min)

    def patch_scores(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> A_low = h(phi(X)) (B, 1, h, w) on the feature grid."""
        features = self.extractor(self.backbone_input(images))[-1]
        return pseudo_huber(self.head(features))

    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> A = upsample(A_low) (B, H, W), the maps the losses see."""
        h, w = images.shape[-2:]
        return self.upsample(self.patch_scores(images), (int(h), int(w)))[:, 0]


# --------------------------------------------------------------------------- detector
@register_model
class FCDD(TrainedDetector):
    """FCDD with a selectable loss: eq. 4 (``"fcdd"``) or the pixel-wise HSC eq. 5
    (``"hsc_pixel"``, default), trained on confetti noise or on a few real anomalies.

    Args:
        loss: ``"hsc_pixel"`` (eq. 5, seed paper) or ``"fcdd"`` (eq. 4, FCDD).
        epochs: training epochs of ``passes_per_epoch`` passes each (CPU default, chosen on
            training-only validation; the paper's schedule is ``PAPER_SCHEDULE``).
        passes_per_epoch: passes over the training set per epoch (paper: 10).
        train_batch_size: images per SGD step (paper: 128).
        lr, momentum, weight_decay: SGD with Nesterov momentum (paper: 1e-3, 0.9, 1e-4).
        lr_decay: the learning rate is multiplied by this after every epoch (paper: 0.985).
        anomaly_probability: chance that a training image is replaced by an anomalous one.
        anomaly_dir: semi-supervised setting: a folder of real defective images with masks
            (layout: :func:`flawmap.synth.load_anomaly_folder`) used as the anomalous
            replacements instead of confetti noise; ``None`` (default) = unsupervised.
        finetune_stages: trailing backbone stages (up to the used one) that are fine-tuned;
            the earlier ones are frozen (paper: the VGG-11 block after the third max-pool = 1).
        gauss_std: std (pixels) of the upsampling Gaussian; ``None`` = FCDD's rule (10 for a
            receptive field of 32 px or more).
        augment: apply §4's training augmentation (crop/resize, colour jitter, noise).
        **common: see :class:`~flawmap.models.base.Detector` (``layers`` must name one stage).
    """

    name = "fcdd"
    default_strides = (16,)  # chosen on training data only, see the module docstring
    loss: str = param("hsc_pixel", OneOf(*sorted(LOSSES)))
    epochs: int = param(4)
    passes_per_epoch: int = param(10, Int(1))
    train_batch_size: int = param(16)
    lr: float = param(1e-3, Real(0.0, low_open=True))
    momentum: float = param(0.9, Real(0.0))
    weight_decay: float = param(1e-4, Real(0.0))
    lr_decay: float = param(0.985, Real(0.0, 1.0, low_open=True))
    anomaly_probability: float = param(0.5, Real(0.0, 1.0))
    anomaly_dir: str | None = param(None, NoneOr(Text("a folder path (str)")))
    finetune_stages: int = param(1, Int(0))
    gauss_std: float | None = param(None, NoneOr(Real(0.0, low_open=True)))
    augment: bool = param(True, Bool())
    #: The seed paper's schedule (§4), for ``--param epochs=50`` style reproduction.
    PAPER_SCHEDULE: ClassVar[dict[str, float]] = {
        "epochs": 50,
        "passes_per_epoch": 10,
        "train_batch_size": 128,
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "lr_decay": 0.985,
        "anomaly_probability": 0.5,
        "image_size": 224,
    }

    def _build_module(self, weights: str) -> FCDDModule:
        layers = self.stage_indices()
        if len(layers) != 1:
            raise ConfigError(f"fcdd uses exactly one backbone stage, got layers {layers}")
        extractor = self.make_extractor(
            weights, trainable_stages=self.finetune_stages, truncate=True
        )
        return FCDDModule(extractor, self.smoothing_sigma, self.gauss_std)

    def _fit_module(self, module: AnomalyModule, data: Dataset, progress: bool) -> None:
        if not isinstance(module, FCDDModule):
            raise TypeError(f"{self.name} fits an FCDDModule")
        if len(data) < 1:
            raise DataError("no training images")
        anomalies: DefectGenerator = (
            ConfettiNoise()
            if self.anomaly_dir is None
            else RealDefects.from_folder(self.anomaly_dir, self.transform)
        )
        # Training images stay in memory (float16: 2 bytes per value, exact to ~2e-4).
        cached = collect_features(
            self, data, None, progress=progress, desc="fcdd: load", keep_images=True
        ).images
        module.fit_input_range(cached)
        loss_fn = LOSSES[self.loss]
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(
            params,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            nesterov=self.momentum > 0,
        )
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.lr_decay)
        n = len(cached)

        def step(indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            images, masks = anomalies.synthesize_batch(
                cached[indices % n].float(), generator, self.anomaly_probability
            )
            if self.augment:
                images, masks = augment(images, masks, generator)
            return loss_fn(module.anomaly_maps(images), masks[:, 0])

        self.history_ = self._train(
            module,
            step,
            [optimizer],
            self.passes_per_epoch * n,
            progress,
            schedules=[Schedule(scheduler, every="epoch")],
        )
