"""Sampled Gaussian kernels shared by post-processing, FCDD's upsampling and synthetic blur."""

from __future__ import annotations

import torch

__all__ = ["gaussian_kernel1d"]


def gaussian_kernel1d(
    size: int,
    std: float,
    *,
    normalize: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(size,) samples of exp(-d^2 / (2 std^2)) at the offsets d = k - (size - 1) / 2.

    Computed in ``dtype``; divided by its sum when ``normalize`` (otherwise the peak is 1 for
    odd sizes, as FCDD's unnormalised ``gkern``).
    """
    d = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    kernel = torch.exp(-0.5 * (d / std) ** 2)
    return kernel / kernel.sum() if normalize else kernel
