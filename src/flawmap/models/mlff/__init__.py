"""Multi-level feature fusion network (seed paper 004): see :mod:`flawmap.models.mlff.model`."""

from __future__ import annotations

from flawmap.models.mlff.model import MLFF, VARIANTS, MLFFModule, MLFFNet, Variant

__all__ = ["MLFF", "VARIANTS", "MLFFModule", "MLFFNet", "Variant"]
