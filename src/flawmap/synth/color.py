"""Colour jitter of (3, H, W) images in [0, 1], torchvision's ``ColorJitter`` operations.

Shared by CutPaste's patch jitter (:mod:`flawmap.synth.cutpaste`) and FCDD's training
augmentation. Every operation clamps its result to [0, 1].
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "color_jitter",
    "luma",
    "rotate_hue",
]

_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def luma(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (1, H, W) grey level (torchvision's weights)."""
    r, g, b = image.unbind(0)
    return (_GREY[0] * r + _GREY[1] * g + _GREY[2] * b)[None]


def adjust_brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    """(3, H, W) -> (3, H, W): ``image * factor``, clamped."""
    return (image * factor).clamp(0.0, 1.0)


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """(3, H, W) -> (3, H, W): blend with the image's mean grey level, clamped."""
    return (factor * image + (1.0 - factor) * luma(image).mean()).clamp(0.0, 1.0)


def adjust_saturation(image: torch.Tensor, factor: float) -> torch.Tensor:
    """(3, H, W) -> (3, H, W): blend with the per-pixel grey level, clamped."""
    return (factor * image + (1.0 - factor) * luma(image)).clamp(0.0, 1.0)


def rotate_hue(image: torch.Tensor, turn: float) -> torch.Tensor:
    """(3, H, W) -> (3, H, W): hue shift by ``turn`` of a full turn as a rotation of the YIQ
    chroma plane (cheap, unlike a round trip through HSV), clamped."""
    angle = 2.0 * math.pi * turn
    cos, sin = math.cos(angle), math.sin(angle)
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
        dtype=image.dtype,
    )
    rotate = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]], dtype=image.dtype)
    matrix = torch.linalg.inv(to_yiq) @ rotate @ to_yiq
    return torch.einsum("ij,jhw->ihw", matrix, image).clamp(0.0, 1.0)


def color_jitter(image: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (3, H, W): torchvision's ``ColorJitter(s, s, s, s)``.

    Brightness, contrast and saturation factors uniform in [1 - s, 1 + s] and a hue shift
    uniform in [-s, s] turns (:func:`rotate_hue`), applied in a random order. Draws from
    ``generator``: 4 uniforms, then a permutation of 4.
    """
    u = torch.rand(4, generator=generator).tolist()
    order = torch.randperm(4, generator=generator).tolist()
    factors = [1.0 + strength * (2.0 * v - 1.0) for v in u[:3]]
    out = image
    for op in order:
        if op == 0:
            out = adjust_brightness(out, factors[0])
        elif op == 1:
            out = adjust_contrast(out, factors[1])
        elif op == 2:
            out = adjust_saturation(out, factors[2])
        else:
            out = rotate_hue(out, strength * (2.0 * u[3] - 1.0))
    return out
