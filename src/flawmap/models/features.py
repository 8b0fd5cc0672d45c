"""Feature-map steps shared by the feature-based models (PaDiM, PatchCore, SimpleNet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flawmap.errors import ConfigError


def check_patch_size(patch_size: int) -> int:
    """The local-neighbourhood size p must be an odd integer >= 1 (centred window)."""
    if patch_size < 1 or patch_size % 2 == 0:
        raise ConfigError(f"patch_size must be an odd integer >= 1, got {patch_size}")
    return patch_size


def concat_on_finest_grid(maps: list[torch.Tensor], mode: str = "bilinear") -> torch.Tensor:
    """[(B, C_i, h_i, w_i)] -> (B, sum C_i, h_0, w_0): later maps resized to the first's grid."""
    size = maps[0].shape[-2:]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    resized = [maps[0]] + [F.interpolate(m, size=size, mode=mode, **kwargs) for m in maps[1:]]
    return torch.cat(resized, dim=1)


def local_patch_features(maps: list[torch.Tensor], patch_size: int) -> torch.Tensor:
    """Locally aware patch features (PatchCore eq. 2-3, SimpleNet/TrisimpleNet eq. 3.1-3.3).

    Each stage is averaged over a p x p neighbourhood (zero padding), then all are resized
    bilinearly to the finest grid and concatenated: (B, sum C_i, h_0, w_0).
    """
    p = patch_size
    return concat_on_finest_grid([F.avg_pool2d(m, p, stride=1, padding=p // 2) for m in maps])
