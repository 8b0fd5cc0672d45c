"""Procedural textures: a built-in texture source for DRAEM-style texture defects.

DRAEM (Zavrtanik et al., ICCV 2021) pastes images of the Describable Textures Dataset (DTD)
into good images. :func:`procedural_texture` stands in for that download: a scalar pattern field
in [0, 1] (fractal Perlin noise, stripes, checks, dots, Voronoi cells or scratches, optionally
warped by noise and blended with a second pattern) mapped through a random colour ramp, so the
texture differs from the image in both structure and colour. Every random choice goes through
the ``torch.Generator`` passed in; the computation runs on that generator's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from flawmap.synth.perlin import _check_generator, _check_positive_int, perlin_noise

__all__ = ["PATTERNS", "procedural_texture"]

PATTERNS: tuple[str, ...] = ("fractal", "stripes", "checks", "dots", "cells", "scratches")
"""The pattern primitives :func:`procedural_texture` draws from, uniformly."""

_MAX_SIDE = 128
"""Textures are drawn with the longer side at most this many pixels, then resized (bilinear)."""

_Grid = tuple[torch.Tensor, torch.Tensor]  # pixel-centre coordinates y, x: (H, 1), (1, W)


def _rand(generator: torch.Generator, n: int = 1) -> list[float]:
    """``n`` draws from U(0, 1) as Python floats."""
    return torch.rand(n, generator=generator, device=generator.device).tolist()


def _normalise(field: torch.Tensor) -> torch.Tensor:
    """(H, W) -> (H, W): min-max scaled to [0, 1] (a constant field becomes 0.5)."""
    lo, hi = field.amin(), field.amax()
    span = hi - lo
    if float(span) <= 1e-12:
        return torch.full_like(field, 0.5)
    return (field - lo) / span


def _fractal(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """fBm: 3 to 5 octaves of Perlin noise, base resolution 1 to 8 cells, gain 0.5 -> (H, W)."""
    u = _rand(generator, 2)
    octaves, base = 3 + int(u[0] * 3), 2 ** int(u[1] * 4)
    field = torch.zeros(height, width, device=generator.device)
    for k in range(octaves):
        res = base * 2**k
        field += 0.5**k * perlin_noise(height, width, res, res, generator)
    return _normalise(field)


def _rotated(grid: _Grid, theta: float, size: int) -> torch.Tensor:
    """(H, W): the coordinate along direction ``theta``, in units of ``size`` pixels."""
    ys, xs = grid
    return (xs * math.cos(theta) + ys * math.sin(theta)) / size


def _stripes(grid: _Grid, generator: torch.Generator, size: int) -> torch.Tensor:
    """Sine stripes, 2 to 24 periods per side, random angle, phase and sharpness -> (H, W)."""
    u = _rand(generator, 4)
    periods = 2 + 22 * u[0]
    t = _rotated(grid, math.pi * u[1], size) * periods + u[2]
    wave = torch.sin(2 * math.pi * t)
    sharp = 1.0 + 7.0 * u[3]  # 1: smooth sine, 8: nearly square
    return 0.5 + 0.5 * torch.tanh(sharp * wave) / math.tanh(sharp)


def _checks(grid: _Grid, generator: torch.Generator, size: int) -> torch.Tensor:
    """A rotated checkerboard, 2 to 16 squares per side -> (H, W) in {0, 1}."""
    u = _rand(generator, 2)
    squares = 2 + 14 * u[0]
    a = _rotated(grid, math.pi * u[1], size) * squares
    b = _rotated(grid, math.pi * u[1] + math.pi / 2, size) * squares
    return ((a.floor() + b.floor()).remainder(2.0)).float()


def _dots(grid: _Grid, generator: torch.Generator, size: int) -> torch.Tensor:
    """A rotated lattice of soft discs, 3 to 20 per side, radius 0.15 to 0.45 cell -> (H, W)."""
    u = _rand(generator, 3)
    cells = 3 + 17 * u[0]
    radius = 0.15 + 0.3 * u[1]
    a = _rotated(grid, math.pi * u[2], size) * cells
    b = _rotated(grid, math.pi * u[2] + math.pi / 2, size) * cells
    dist = torch.hypot(a - a.floor() - 0.5, b - b.floor() - 0.5)
    return (1.0 - (dist - radius) / 0.08).clamp(0.0, 1.0)


def _cells(grid: _Grid, generator: torch.Generator, size: int) -> torch.Tensor:
    """Voronoi (Worley) noise of 8 to 48 random seeds: F1 distance or F2 - F1 edges -> (H, W)."""
    u = _rand(generator, 2)
    n = 8 + int(40 * u[0])
    ys, xs = grid
    points = torch.rand(n, 2, generator=generator, device=generator.device)
    py, px = points[:, 0:1, None] * ys.shape[0], points[:, 1:2, None] * xs.shape[1]
    dist = torch.hypot(ys[None] - py, xs[None] - px)  # (n, H, W)
    first, index = dist.min(dim=0)
    if u[1] < 0.5:
        return _normalise(first)
    second = dist.scatter(0, index[None], math.inf).amin(dim=0)
    field = second - first
    return _normalise(field)


def _scratches(grid: _Grid, generator: torch.Generator, size: int) -> torch.Tensor:
    """4 to 24 straight scratches, 1 to 4 px wide, random ends -> (H, W) in [0, 1]."""
    ys, xs = grid
    n = 4 + int(20 * _rand(generator)[0])
    ends = torch.rand(n, 5, generator=generator, device=generator.device).tolist()
    field = torch.zeros(ys.shape[0], xs.shape[1], device=generator.device)
    h, w = ys.shape[0], xs.shape[1]
    for y0, x0, y1, x1, wid in ends:
        ay, ax, by, bx = y0 * h, x0 * w, y1 * h, x1 * w
        dy, dx = by - ay, bx - ax
        t = (((ys - ay) * dy + (xs - ax) * dx) / max(dy * dy + dx * dx, 1e-6)).clamp(0.0, 1.0)
        dist = torch.hypot(ys - (ay + t * dy), xs - (ax + t * dx))
        field = torch.maximum(field, (1.0 - dist / (0.5 + 1.5 * wid)).clamp(0.0, 1.0))
    return field


_PRIMITIVES: dict[str, Callable[[_Grid, torch.Generator, int], torch.Tensor]] = {
    "stripes": _stripes,
    "checks": _checks,
    "dots": _dots,
    "cells": _cells,
    "scratches": _scratches,
}


def _pattern(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """One randomly chosen primitive of :data:`PATTERNS` -> (H, W) in [0, 1]."""
    device = generator.device
    name = PATTERNS[int(torch.randint(len(PATTERNS), (1,), generator=generator, device=device))]
    if name == "fractal":
        return _fractal(height, width, generator)
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32)[None, :] + 0.5
    if _rand(generator)[0] < 0.5:  # domain warp by low-frequency noise, up to 1/16 of the side
        amp = max(height, width) / 16 * _rand(generator)[0]
        ys = ys + amp * perlin_noise(height, width, 4, 4, generator)
        xs = xs + amp * perlin_noise(height, width, 4, 4, generator)
    return _PRIMITIVES[name]((ys, xs), generator, max(height, width))


def _colour_ramp(field: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(H, W) in [0, 1] -> (3, H, W): piecewise-linear ramp through 2 to 4 random RGB colours."""
    stops = 2 + int(3 * _rand(generator)[0])
    colours = torch.rand(stops, 3, generator=generator, device=generator.device)
    pos = field.clamp(0.0, 1.0) * (stops - 1)
    low = pos.floor().long().clamp_(max=stops - 2)
    frac = (pos - low)[None]
    return torch.lerp(colours[low].permute(2, 0, 1), colours[low + 1].permute(2, 0, 1), frac)


def procedural_texture(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A random texture (3, H, W) float32 in [0, 1], on ``generator``'s device.

    The texture is drawn with its longer side at most 128 pixels and resized (bilinear) to
    (H, W). A pattern field (one of :data:`PATTERNS`; half the non-fractal ones warped by
    Perlin noise) goes through a random colour ramp of 2 to 4 colours; with probability 1/2 a
    second coloured pattern is blended in through a fractal-noise weight, and with probability
    1/2 fractal luminance grain (up to +-15 %) is multiplied in. Deterministic for a given
    generator state.

    Raises:
        ConfigError: ``height`` or ``width`` is not an integer >= 1, or ``generator`` is not a
            ``torch.Generator``.
    """
    height = _check_positive_int("height", height)
    width = _check_positive_int("width", width)
    _check_generator(generator)
    scale = min(1.0, _MAX_SIDE / max(height, width))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    texture = _colour_ramp(_pattern(h, w, generator), generator)
    u = _rand(generator, 2)
    if u[0] < 0.5:
        second = _colour_ramp(_pattern(h, w, generator), generator)
        weight = _fractal(h, w, generator)[None]
        texture = torch.lerp(texture, second, weight)
    if u[1] < 0.5:
        strength = 0.3 * _rand(generator)[0]
        grain = _fractal(h, w, generator)[None] - 0.5
        texture = texture * (1.0 + strength * grain)
    if (h, w) != (height, width):
        texture = F.interpolate(
            texture[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
    return texture.clamp(0.0, 1.0).float()
