"""Multi-stage feature extractor over timm (``features_only``), frozen or partly fine-tuned."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from flawmap.backbones.registry import BackboneSpec, get_backbone_spec
from flawmap.backbones.weights import (
    load_into,
    offline,
    offline_options,
    pip_weights_file,
    read_state_dict,
)
from flawmap.errors import ConfigError, WeightsError

LayerRef = int | str


@dataclass(frozen=True)
class StageInfo:
    """Static metadata of one backbone stage: timm index, module name, channels, stride."""

    index: int
    module: str
    channels: int
    stride: int


def describe_stages(name: str) -> list[StageInfo]:
    """Every feature stage timm exposes for backbone ``name`` (no weights are loaded)."""
    return list(_stages(name))


@functools.cache
def _stages(name: str) -> tuple[StageInfo, ...]:
    """:func:`describe_stages`, built once per backbone (a meta-device timm model)."""
    spec = get_backbone_spec(name)
    with torch.device("meta"):
        model = timm.create_model(spec.timm_name, pretrained=False, features_only=True)
    info = model.feature_info
    return tuple(
        StageInfo(i, info.module_name()[i], info.channels()[i], info.reduction()[i])
        for i in range(len(info.channels()))
    )


def resolve_layers(
    name: str, layers: Sequence[LayerRef] | None = None, strides: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Stage indices for ``layers`` (indices or timm module names) or for output ``strides``.

    Exactly one of ``layers`` and ``strides`` is used; ``layers`` wins when both are given. For
    ``strides`` the first stage with that stride is taken.
    """
    stages = describe_stages(name)
    by_name = {s.module: s.index for s in stages}
    if layers:
        out = []
        for ref in layers:
            if isinstance(ref, str) and ref.isdigit():
                ref = int(ref)
            if isinstance(ref, int):
                if not 0 <= ref < len(stages):
                    raise ConfigError(
                        f"backbone {name} has stages 0..{len(stages) - 1}, not {ref}; "
                        f"stages: {_stage_table(stages)}"
                    )
                out.append(ref)
            elif ref in by_name:
                out.append(by_name[ref])
            else:
                raise ConfigError(
                    f"backbone {name} has no stage {ref!r}; stages: {_stage_table(stages)}"
                )
        return tuple(out)
    if not strides:
        raise ConfigError("give either layers or strides")
    out = []
    for stride in strides:
        match = [s.index for s in stages if s.stride == stride]
        if not match:
            raise ConfigError(
                f"backbone {name} has no stage of stride {stride}; stages: {_stage_table(stages)}"
            )
        out.append(match[0])
    return tuple(out)


def _truncate_unused_blocks(net: nn.Module) -> None:
    """Drop the blocks an EfficientNet-style features net runs after its last output stage.

    timm's ``EfficientNetFeatures`` runs every block whatever ``out_indices`` asks for (its
    ``forward`` appends the output after block ``i`` when ``i + 1`` is an output stage); other
    timm feature nets are already cut after their last output, and are left as they are.
    """
    out_idx = getattr(net, "_stage_out_idx", None)
    blocks = getattr(net, "blocks", None)
    if out_idx and isinstance(blocks, nn.Sequential) and getattr(net, "feature_hooks", 1) is None:
        net.blocks = blocks[: max(out_idx)]


def _stage_table(stages: list[StageInfo]) -> str:
    return ", ".join(f"{s.index}={s.module}(C={s.channels}, stride={s.stride})" for s in stages)


class FeatureExtractor(nn.Module):
    """A CNN that returns feature maps of the chosen stages; frozen and in eval mode unless
    ``trainable_stages`` fine-tunes its last stages.

    Input: images (B, 3, H, W) in [0, 1] (the extractor normalises them itself).
    Output: list of (B, C_i, H / s_i, W / s_i) maps, one per chosen stage, with
    ``channels[i] = C_i`` and ``strides[i] = s_i`` known before any image is seen.

    Args:
        name: a registered backbone (see :func:`flawmap.backbones.list_backbones`).
        layers: stage indices or timm module names (``describe_stages`` lists them).
        weights: ``"pretrained"`` (resolved offline-first, see :mod:`flawmap.backbones.weights`),
            ``"random"`` (untrained, for tests), or the path of a local weights file.
        trainable_stages: fine-tuning: only the modules that run after the output of stage
            ``max(layers) - trainable_stages`` (the last ``trainable_stages`` backbone stages up
            to the last chosen one; all of them when it exceeds ``max(layers)``) get gradients
            and follow ``train()``; everything before stays frozen and in eval mode (BatchNorm
            statistics fixed). ``0`` (default; ``None`` reads the same) = all frozen.
        truncate: drop backbone blocks after the last chosen stage that timm would still run
            (EfficientNet-style backbones); same outputs, less compute, fewer state-dict keys.
        tiles: ``(rows, cols)``: the backbone runs on each of ``rows x cols`` equal tiles of the
            image and every stage's tile maps are stitched back into one map of the whole image,
            so heads (and per-position statistics) see one grid; ``(1, 1)`` (default) = no
            tiling. ``H`` and ``W`` must then be multiples of ``rows`` and ``cols``.
    """

    def __init__(
        self,
        name: str,
        layers: Sequence[LayerRef],
        weights: str = "pretrained",
        *,
        trainable_stages: int | None = 0,
        truncate: bool = False,
        tiles: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        #: Inference copy of ``net`` with its BatchNorms folded (see :meth:`inference_net`).
        self._folded: tuple[tuple[int, ...], nn.Module] | None = None
        if len(tiles) != 2 or min(tiles) < 1:
            raise ConfigError(f"tiles must be (rows, cols) >= 1, got {tiles!r}")
        self.tiles: tuple[int, int] = (int(tiles[0]), int(tiles[1]))
        self.spec: BackboneSpec = get_backbone_spec(name)
        self.layers = resolve_layers(name, layers)
        self.weights_source = weights
        self.net = self._create(weights)
        if truncate:
            _truncate_unused_blocks(self.net)
        info = self.net.feature_info
        self.channels: tuple[int, ...] = tuple(info.channels())
        self.strides: tuple[int, ...] = tuple(info.reduction())
        mean = self.spec.mean or self.net.pretrained_cfg.get("mean", (0.485, 0.456, 0.406))
        std = self.spec.std or self.net.pretrained_cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        if trainable_stages is None:
            trainable_stages = 0
        if isinstance(trainable_stages, bool) or not isinstance(trainable_stages, int):
            raise ConfigError(f"trainable_stages must be an int >= 0, got {trainable_stages!r}")
        if trainable_stages < 0:
            raise ConfigError(f"trainable_stages must be >= 0, got {trainable_stages}")
        #: Names (inside ``net``) of the modules fine-tuned with ``trainable_stages``.
        self.trainable_modules: tuple[str, ...] = ()
        if trainable_stages > 0:
            self.trainable_modules = self._modules_after_stage(max(self.layers) - trainable_stages)
        self.net.requires_grad_(False)
        for module_name in self.trainable_modules:
            self.net.get_submodule(module_name).requires_grad_(True)
        self.eval()

    def _modules_after_stage(self, boundary: int) -> tuple[str, ...]:
        """Names of the parameterised modules of ``net`` that run after stage ``boundary``'s
        output (from the start when ``boundary < 0``) up to the last chosen stage's output, in
        execution order (found with one probe forward pass)."""
        boundary_module = self._stage_module(boundary) if boundary >= 0 else None
        last_module = self._stage_module(max(self.layers))
        recording = [boundary_module is None]
        order: list[str] = []
        hooks = []
        for module_name, module in self.net.named_modules():
            if module_name and any(True for _ in module.parameters(recurse=False)):

                def record(_m: nn.Module, _i: object, name: str = module_name) -> None:
                    if recording[0] and name not in order:
                        order.append(name)

                hooks.append(module.register_forward_pre_hook(record))

        def switch(on: bool) -> Callable[..., None]:
            def hook(_m: nn.Module, _i: object, _o: object) -> None:
                recording[0] = on

            return hook

        if boundary_module is not None:
            hooks.append(boundary_module.register_forward_hook(switch(True)))
        hooks.append(last_module.register_forward_hook(switch(False)))
        size = max(32, 2 * max(self.strides))
        try:
            self.net.eval()
            with torch.no_grad():
                self.net(torch.zeros(1, 3, size, size))
        finally:
            for hook in hooks:
                hook.remove()
        return tuple(order)

    def _stage_module(self, index: int) -> nn.Module:
        """The module of ``net`` whose output is stage ``index`` (timm names, dots or
        underscores for the flattened feature nets)."""
        wanted = describe_stages(self.spec.name)[index].module
        for candidate in (wanted, wanted.replace(".", "_")):
            try:
                return self.net.get_submodule(candidate)
            except AttributeError:
                continue
        raise ConfigError(
            f"cannot locate stage {index} ({wanted}) inside backbone {self.spec.name}"
        )

    def _create(self, weights: str) -> nn.Module:
        spec = self.spec
        kwargs = {"features_only": True, "out_indices": self.layers}
        if weights == "random":
            return timm.create_model(spec.timm_name, pretrained=False, **kwargs)
        if weights != "pretrained":
            net = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
            path = Path(weights).expanduser()
            load_into(net, read_state_dict(path), source=str(path))
            return net
        pip_file = pip_weights_file(spec)
        if pip_file is not None:
            net = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
            load_into(net, read_state_dict(pip_file), source=str(pip_file))
            return net
        if not offline():
            try:
                return timm.create_model(spec.timm_name, pretrained=True, **kwargs)
            except Exception as exc:  # any download failure means: offline
                raise WeightsError(
                    f"no pretrained weights for {spec.name}: the download failed ({exc}).\n"
                    f"Offline options:\n{offline_options(spec)}"
                ) from exc
        raise WeightsError(
            f"no pretrained weights for {spec.name} and downloads are disabled "
            f"(FLAWMAP_OFFLINE/HF_HUB_OFFLINE).\nOffline options:\n{offline_options(spec)}"
        )

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Frozen extractors stay in eval mode (BatchNorm statistics never change); with
        ``trainable_stages`` only the fine-tuned modules follow ``mode``."""
        if not self.trainable_modules:
            return super().train(False)
        super().train(False)
        for module_name in self.trainable_modules:
            self.net.get_submodule(module_name).train(mode)
        self.training = mode
        return self

    def inference_net(self) -> nn.Module:
        """``net`` with every BatchNorm that directly follows a convolution folded into that
        convolution's weights (same outputs up to float rounding, fewer passes over memory);
        used when nothing needs gradients. Rebuilt when a weight or statistic was replaced or
        updated in place (``load_state_dict``, an optimiser step); edits through ``.data``,
        which bypass the tensors' version counters, are not seen."""
        state = self.net.state_dict()
        key = tuple(t._version for t in state.values()) + tuple(
            t.data_ptr() for t in state.values()
        )
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, fold_batch_norms(self.net))
        return self._folded[1]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, H, W) in [0, 1] -> list of (B, C_i, H/s_i, W/s_i)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = (images - self.mean) / self.std
        inference = not self.training and not torch.is_grad_enabled()
        net = self.inference_net() if inference else self.net
        rows, cols = self.tiles
        if (rows, cols) == (1, 1):
            x = x.contiguous(memory_format=torch.channels_last)
            return [f.contiguous() for f in net(x)]
        b, c, h, w = x.shape
        if h % rows or w % cols:
            raise ConfigError(
                f"images of {h}x{w} cannot be split into {rows}x{cols} equal tiles; resize them "
                "with the model's transform"
            )
        tiles = x.reshape(b, c, rows, h // rows, cols, w // cols).permute(0, 2, 4, 1, 3, 5)
        tiles = tiles.reshape(b * rows * cols, c, h // rows, w // cols)
        return [
            stitch_tiles(f, rows, cols)
            for f in net(tiles.contiguous(memory_format=torch.channels_last))
        ]


def fold_batch_norms(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` in which every ``BatchNorm2d`` whose input is the output of
    a ``Conv2d`` is folded into it: ``w' = w * g / s``, ``b' = (b - m) * g / s + beta`` with
    ``s = sqrt(var + eps)``; the norm is replaced by what it applies after normalising (timm's
    ``BatchNormAct2d``: dropout and activation) or removed. Pairs are found by one probe
    forward pass, so only convolution outputs that feed nothing but the norm are folded."""
    folded = copy.deepcopy(net).eval()
    produced: dict[int, tuple[str, int]] = {}  # id(conv output) -> (conv name, its users)
    pairs: list[tuple[str, str]] = []
    hooks = []
    for name, module in folded.named_modules():
        if isinstance(module, nn.Conv2d):

            def after_conv(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
                produced[id(out)] = (name, 0)

            hooks.append(module.register_forward_hook(after_conv))
        elif isinstance(module, nn.BatchNorm2d) and module.track_running_stats:

            def before_norm(
                _m: nn.Module, args: tuple[torch.Tensor, ...], name: str = name
            ) -> None:
                source = produced.get(id(args[0]))
                if source is not None:
                    pairs.append((source[0], name))

            hooks.append(module.register_forward_pre_hook(before_norm))
    try:
        with torch.no_grad():
            folded(torch.zeros(1, 3, 64, 64))
    finally:
        for hook in hooks:
            hook.remove()
    convs = [c for c, _ in pairs]
    for conv_name, norm_name in pairs:
        if convs.count(conv_name) != 1:  # a convolution read by two norms: leave it
            continue
        conv = folded.get_submodule(conv_name)
        norm = folded.get_submodule(norm_name)
        weight, bias = torch.nn.utils.fusion.fuse_conv_bn_weights(
            conv.weight,
            conv.bias,
            norm.running_mean,
            norm.running_var,
            norm.eps,
            norm.weight,
            norm.bias,
        )
        conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
        conv.bias = nn.Parameter(bias.detach(), requires_grad=False)
        rest = [
            m for m in (getattr(norm, "drop", None), getattr(norm, "act", None)) if m is not None
        ]
        parent_name, _, attr = norm_name.rpartition(".")
        parent = folded.get_submodule(parent_name) if parent_name else folded
        setattr(parent, attr, nn.Sequential(*rest) if rest else nn.Identity())
    return folded.requires_grad_(False)


def stitch_tiles(features: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Tile maps ``(B * rows * cols, C, h, w)`` (row-major tiles per image) -> one map per image
    ``(B, C, rows * h, cols * w)``."""
    n, c, h, w = features.shape
    b = n // (rows * cols)
    grid = features.reshape(b, rows, cols, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(b, c, rows * h, cols * w).contiguous()
