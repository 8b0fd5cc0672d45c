"""Confetti noise: FCDD's synthetic anomalies (Liznerski et al., ICLR 2021; seed paper 002, §4).

A few randomly sized, placed, rotated and coloured rectangles are painted into a good image, each
blended with its own opacity; the anomaly mask is the set of pixels they modify. FCDD's own
generator adds a coloured and a signed grey confetti image (squares of 8-54 px at 224 px, about
1-3 per image, rotated up to 45 degrees) to the image and smooths the blob borders; the seed paper
turns the border smoothing off. Ours is written from that description: rectangles (squares with
``squares=True``) whose sides are a fraction of the image's shorter side, a uniform random RGB
colour per rectangle, alpha-blending instead of addition, no border smoothing.

Every random choice goes through the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math

import torch

from flawmap.errors import ConfigError
from flawmap.synth.defects import PaintedDefect, _check_min_change, _check_range

__all__ = ["ConfettiNoise"]


class ConfettiNoise(PaintedDefect):
    """Paints FCDD-style confetti (random coloured rectangles) into good images.

    Each call draws ``n`` rectangles, ``n`` uniform in ``count_range`` (inclusive). Rectangle
    ``k`` has a centre uniform over the image, sides ``round(u * min(H, W))`` pixels (at least 2)
    with ``u`` uniform in ``size_range`` (independent per side, or one for both with
    ``squares``), a rotation uniform in ``[-max_rotation, max_rotation]`` degrees, an RGB colour
    ``c`` uniform in [0, 1]^3 and an opacity ``a`` uniform in ``blend_range``. Rectangles are
    painted in order, ``out = (1 - a) * out + a * c`` on the pixels they cover (later ones over
    earlier ones), so pixels may be partly outside the image.

    The mask is the set of covered pixels whose largest channel change ``|out - image|`` is at
    least ``min_change``; every other pixel of the result is exactly the input.

    Args:
        count_range: inclusive range of the number of rectangles per image.
        size_range: range of a side as a fraction of the shorter image side (FCDD: 8-54 px at
            224 px, i.e. about 0.036-0.24).
        blend_range: range of the opacity ``a`` (1 = opaque paint).
        max_rotation: largest rotation in degrees (FCDD: 45; 0 = axis-aligned).
        squares: square blobs (FCDD's default) instead of rectangles.
        min_change: a covered pixel changed by less than this in every channel is not anomalous
            and is restored (default: one 8-bit grey level).

    Raises:
        ConfigError: a bad range, rotation or threshold.
    """

    kind = "confetti"

    def __init__(
        self,
        count_range: tuple[int, int] = (1, 3),
        size_range: tuple[float, float] = (0.036, 0.24),
        blend_range: tuple[float, float] = (0.5, 1.0),
        max_rotation: float = 45.0,
        squares: bool = False,
        min_change: float = 1.0 / 255.0,
    ) -> None:
        try:
            lo, hi = count_range
        except (TypeError, ValueError):
            raise ConfigError(f"count_range must be a pair (lo, hi), got {count_range!r}") from None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not (
            1 <= lo <= hi
        ):
            raise ConfigError(f"count_range must be integers 1 <= lo <= hi, got {count_range!r}")
        self.count_range = (lo, hi)
        self.size_range = _check_range("size_range", size_range, 0.0, 1.0)
        self.blend_range = _check_range("blend_range", blend_range, 0.0, 1.0)
        if self.blend_range[0] <= 0:
            raise ConfigError(f"blend_range must be > 0 (a = 0 paints nothing), got {blend_range}")
        if not (isinstance(max_rotation, int | float) and 0.0 <= max_rotation <= 180.0):
            raise ConfigError(f"max_rotation must be a number in [0, 180], got {max_rotation!r}")
        self.max_rotation = float(max_rotation)
        self.squares = bool(squares)
        self.min_change = _check_min_change(min_change)

    def __repr__(self) -> str:
        return (
            f"ConfettiNoise(count_range={self.count_range}, size_range={self.size_range}, "
            f"blend_range={self.blend_range}, max_rotation={self.max_rotation}, "
            f"squares={self.squares}, min_change={self.min_change})"
        )

    def _draw(
        self, image: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One set of rectangles: (painted image (3, H, W), covered pixels (H, W) bool)."""
        _, h, w = image.shape
        gdev = generator.device
        lo, hi = self.count_range
        n = int(torch.randint(lo, hi + 1, (1,), generator=generator, device=gdev))
        # Per rectangle: centre y, centre x, side a, side b, angle, opacity, then the colour.
        u = torch.rand(n, 6, generator=generator, device=gdev).double().cpu()
        colours = torch.rand(n, 3, generator=generator, device=gdev).to(image.device, image.dtype)
        ys = torch.arange(h, device=image.device, dtype=torch.float64)[:, None] + 0.5
        xs = torch.arange(w, device=image.device, dtype=torch.float64)[None, :] + 0.5
        side = min(h, w)
        s_lo, s_hi = self.size_range
        b_lo, b_hi = self.blend_range
        out = image.clone()
        covered = torch.zeros(h, w, dtype=torch.bool, device=image.device)
        for k in range(n):
            cy, cx = float(u[k, 0]) * h, float(u[k, 1]) * w
            height = max(2.0, round((s_lo + (s_hi - s_lo) * float(u[k, 2])) * side))
            width = (
                height
                if self.squares
                else max(2.0, round((s_lo + (s_hi - s_lo) * float(u[k, 3])) * side))
            )
            angle = math.radians(self.max_rotation * (2.0 * float(u[k, 4]) - 1.0))
            alpha = b_lo + (b_hi - b_lo) * float(u[k, 5])
            dy, dx = ys - cy, xs - cx
            along = dx * math.cos(angle) + dy * math.sin(angle)
            across = -dx * math.sin(angle) + dy * math.cos(angle)
            inside = (along.abs() <= width / 2) & (across.abs() <= height / 2)
            painted = (1.0 - alpha) * out + alpha * colours[k].view(3, 1, 1)
            out = torch.where(inside, painted, out)
            covered |= inside
        return out, covered
