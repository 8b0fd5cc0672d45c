"""Backbones: registry, offline weight resolution and the frozen feature extractor.

The registry (names, specs) imports no torch; the extractor names (``FeatureExtractor``,
``describe_stages``, ...) import torch and timm on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flawmap.backbones.registry import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    get_backbone_spec,
    list_backbones,
    register_backbone,
)
from flawmap.lazy import lazy_attributes

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


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
