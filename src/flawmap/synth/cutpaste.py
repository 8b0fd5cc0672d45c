"""CutPaste: a patch of the image pasted elsewhere in it (Li et al., CVPR 2021; seed paper 004).

A rectangle is cut from a random place of a good image, optionally flipped and colour-jittered,
and pasted at another random place; the anomaly mask is the set of pasted pixels that differ
from the original. CutPaste's own recipe: patch area 2-15 % of the image, aspect ratio drawn
log-uniformly from [0.3, 3.3], colour jitter 0.1 (brightness, contrast, saturation, hue). Ours
follows it, with the hue part left out (brightness, contrast and saturation only) and an
optional random horizontal / vertical flip of the patch.

Every random choice goes through the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math

import torch

from flawmap.errors import ConfigError
from flawmap.synth.color import adjust_brightness, adjust_contrast, adjust_saturation
from flawmap.synth.defects import PaintedDefect, _check_min_change, _check_range

__all__ = ["CutPaste"]


class CutPaste(PaintedDefect):
    """Cuts a random rectangle out of a good image and pastes it elsewhere in the same image.

    Each call draws the patch area ``u * H * W`` with ``u`` uniform in ``area_range``, an aspect
    ratio (width / height) log-uniform in ``aspect_range``, sides rounded and clipped to the
    image (at least 1 pixel), a source and a destination top-left corner uniform over the
    positions where the patch fits, with probability 1/2 each a horizontal and a vertical flip
    of the patch (``flip``), and colour-jitter factors for brightness, contrast and saturation
    uniform in ``[1 - jitter, 1 + jitter]`` (applied to the patch in that order, clamped to
    [0, 1]).

    The mask is the set of pasted pixels whose largest channel change ``|out - image|`` is at
    least ``min_change``; every other pixel of the result is exactly the input.

    Args:
        area_range: range of the patch area as a fraction of the image area (CutPaste:
            0.02-0.15).
        aspect_range: range of the patch aspect ratio width / height, drawn log-uniformly
            (CutPaste: 0.3-3.3).
        flip: randomly flip the patch horizontally and vertically (1/2 each).
        jitter: colour-jitter strength (0 = none; CutPaste: 0.1).
        min_change: a pasted pixel changed by less than this in every channel is not anomalous
            and is restored (default: one 8-bit grey level).

    Raises:
        ConfigError: a bad range, jitter or threshold.
    """

    kind = "cutpaste"

    def __init__(
        self,
        area_range: tuple[float, float] = (0.02, 0.15),
        aspect_range: tuple[float, float] = (0.3, 3.3),
        flip: bool = True,
        jitter: float = 0.1,
        min_change: float = 1.0 / 255.0,
    ) -> None:
        self.area_range = _check_range("area_range", area_range, 0.0, 1.0)
        self.aspect_range = _check_range("aspect_range", aspect_range, 0.0, math.inf)
        if self.aspect_range[0] <= 0:
            raise ConfigError(f"aspect_range must be > 0 (width / height), got {aspect_range!r}")
        self.flip = bool(flip)
        if not (isinstance(jitter, int | float) and 0.0 <= jitter < 1.0):
            raise ConfigError(f"jitter must be a number in [0, 1), got {jitter!r}")
        self.jitter = float(jitter)
        self.min_change = _check_min_change(min_change)

    def __repr__(self) -> str:
        return (
            f"CutPaste(area_range={self.area_range}, aspect_range={self.aspect_range}, "
            f"flip={self.flip}, jitter={self.jitter}, min_change={self.min_change})"
        )

    def _jitter(self, patch: torch.Tensor, factors: list[float]) -> torch.Tensor:
        """Brightness, contrast, saturation of ``patch`` (3, h, w) by ``factors``, clamped."""
        out = adjust_brightness(patch, factors[0])
        return adjust_saturation(adjust_contrast(out, factors[1]), factors[2])

    def _draw(
        self, image: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One cut and paste: (pasted image (3, H, W), pasted pixels (H, W) bool)."""
        _, h, w = image.shape
        gdev = generator.device
        # area, log-aspect, source y, source x, target y, target x, 2 flips, 3 jitter factors
        u = torch.rand(11, generator=generator, device=gdev).double().cpu().tolist()
        a_lo, a_hi = self.area_range
        area = (a_lo + (a_hi - a_lo) * u[0]) * h * w
        r_lo, r_hi = (math.log(v) for v in self.aspect_range)
        aspect = math.exp(r_lo + (r_hi - r_lo) * u[1])
        ph = min(h, max(1, round(math.sqrt(area / aspect))))
        pw = min(w, max(1, round(math.sqrt(area * aspect))))
        sy, sx = int(u[2] * (h - ph + 1)), int(u[3] * (w - pw + 1))
        ty, tx = int(u[4] * (h - ph + 1)), int(u[5] * (w - pw + 1))
        patch = image[:, sy : sy + ph, sx : sx + pw]
        if self.flip and u[6] < 0.5:
            patch = patch.flip(-1)
        if self.flip and u[7] < 0.5:
            patch = patch.flip(-2)
        if self.jitter > 0:
            factors = [1.0 + self.jitter * (2.0 * v - 1.0) for v in u[8:11]]
            patch = self._jitter(patch, factors)
        out = image.clone()
        out[:, ty : ty + ph, tx : tx + pw] = patch.to(image.dtype)
        covered = torch.zeros(h, w, dtype=torch.bool, device=image.device)
        covered[ty : ty + ph, tx : tx + pw] = True
        return out, covered
