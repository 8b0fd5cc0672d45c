"""Models: the Detector interface, the registry, and one module per method."""

from __future__ import annotations

from flawmap.models.base import (
    AnomalyModule,
    Detector,
    Prediction,
    create_model,
    list_models,
    load_model,
    model_class,
    register_model,
)
from flawmap.models.cse import CSE
from flawmap.models.fcdd import FCDD
from flawmap.models.mlff import MLFF
from flawmap.models.padim import Padim
from flawmap.models.patchcore.model import PatchCore
from flawmap.models.simplenet import SimpleNet, TrisimpleNet

__all__ = [
    "CSE",
    "FCDD",
    "MLFF",
    "AnomalyModule",
    "Detector",
    "Padim",
    "PatchCore",
    "Prediction",
    "SimpleNet",
    "TrisimpleNet",
    "create_model",
    "list_models",
    "load_model",
    "model_class",
    "register_model",
]
