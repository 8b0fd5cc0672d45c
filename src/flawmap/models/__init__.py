"""Models: the Detector interface, the registry, and one module per method.

Everything here is imported on first use (PEP 562), so ``import flawmap.models`` and
``list_models()`` stay cheap: torch, timm and a model's module are imported only when a class
or a function that needs them is first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flawmap.lazy import lazy_attributes

if TYPE_CHECKING:
    from flawmap.models.base import (
        AnomalyModule,
        Detector,
        Prediction,
        create_model,
        model_class,
        register_model,
    )
    from flawmap.models.cse import CSE
    from flawmap.models.fcdd import FCDD
    from flawmap.models.folder import load_model
    from flawmap.models.mlff import MLFF
    from flawmap.models.padim import Padim
    from flawmap.models.patchcore.model import PatchCore
    from flawmap.models.simplenet import SimpleNet, TrisimpleNet

_WHERE = {
    "AnomalyModule": "flawmap.models.base",
    "Detector": "flawmap.models.base",
    "Prediction": "flawmap.models.base",
    "create_model": "flawmap.models.base",
    "load_model": "flawmap.models.folder",
    "model_class": "flawmap.models.base",
    "register_model": "flawmap.models.base",
    "CSE": "flawmap.models.cse",
    "FCDD": "flawmap.models.fcdd",
    "MLFF": "flawmap.models.mlff",
    "Padim": "flawmap.models.padim",
    "PatchCore": "flawmap.models.patchcore.model",
    "SimpleNet": "flawmap.models.simplenet",
    "TrisimpleNet": "flawmap.models.simplenet",
}

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


def list_models() -> list[str]:
    """Names of every built-in and registered model, sorted (imports no model module)."""
    import sys

    from flawmap.models.catalogue import builtin_names

    base = sys.modules.get("flawmap.models.base")
    if base is not None:
        return base.list_models()
    return builtin_names()


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
