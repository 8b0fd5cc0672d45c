"""Backbones: registry, offline weight resolution and the frozen feature extractor.

The registry (names, specs) imports no torch; the extractor names (``FeatureExtractor``,
``describe_stages``, ...) import torch and timm on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flawmap.backbones.registry import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    get_backbone_spec,
    list_backbones,
    register_backbone,
)

if TYPE_CHECKING:
    from flawmap.backbones.extractor import (
        FeatureExtractor,
        StageInfo,
        describe_stages,
        resolve_layers,
    )

_LAZY = {
    "FeatureExtractor": "flawmap.backbones.extractor",
    "StageInfo": "flawmap.backbones.extractor",
    "describe_stages": "flawmap.backbones.extractor",
    "resolve_layers": "flawmap.backbones.extractor",
}

__all__ = [
    "DEFAULT_BACKBONE",
    "BackboneSpec",
    "FeatureExtractor",
    "StageInfo",
    "describe_stages",
    "get_backbone_spec",
    "list_backbones",
    "register_backbone",
    "resolve_layers",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
