"""Backbones: registry, offline weight resolution and the frozen feature extractor."""

from __future__ import annotations

from flawmap.backbones.extractor import (
    FeatureExtractor,
    StageInfo,
    describe_stages,
    resolve_layers,
)
from flawmap.backbones.registry import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    get_backbone_spec,
    list_backbones,
    register_backbone,
)

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
