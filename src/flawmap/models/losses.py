"""Loss terms shared by several models."""

from __future__ import annotations

import math

import torch

__all__ = ["PUSH_EPS", "push"]

PUSH_EPS = 1e-6
"""Arguments of :func:`push` are clamped to at least this (p(1e-6) = 13.8, finite)."""

_LN2 = math.log(2.0)


def push(x: torch.Tensor) -> torch.Tensor:
    """The push function p(x) = -log(1 - exp(-x)) of FCDD's loss (Liznerski et al., ICLR 2021),
    element-wise, for x >= 0.

    Evaluated as -log(-expm1(-x)) for x <= log 2 and -log1p(-exp(-x)) above (accurate at both
    ends), with x clamped to at least ``PUSH_EPS``: p is finite everywhere, p(x) ~ -log(x)
    near 0 and p(x) ~ exp(-x) for large x; below the clamp the gradient is 0.
    """
    x = x.clamp_min(PUSH_EPS)
    small = torch.log(-torch.expm1(-x.clamp_max(_LN2)))
    large = torch.log1p(-torch.exp(-x.clamp_min(_LN2)))
    return -torch.where(x <= _LN2, small, large)
