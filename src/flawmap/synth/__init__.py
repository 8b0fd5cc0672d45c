"""Synthetic defect generators for training defect-aware models.

One module per generator family:

- :mod:`flawmap.synth.perlin`: Perlin-noise masks (DRAEM).
- :mod:`flawmap.synth.defects`: :class:`DefectSynthesizer`, texture (DRAEM), structural (MemSeg)
  and blur (CSE) defects pasted through Perlin masks.
- :mod:`flawmap.synth.confetti`: :class:`ConfettiNoise`, FCDD's random coloured rectangles.
- :mod:`flawmap.synth.cutpaste`: :class:`CutPaste`, a patch of the image pasted elsewhere.
"""

from __future__ import annotations

from flawmap.synth.confetti import ConfettiNoise
from flawmap.synth.cutpaste import CutPaste
from flawmap.synth.defects import (
    DEFECT_KINDS,
    DefectGenerator,
    DefectSynthesizer,
    SyntheticDefect,
)
from flawmap.synth.perlin import perlin_mask, perlin_noise

__all__ = [
    "DEFECT_KINDS",
    "ConfettiNoise",
    "CutPaste",
    "DefectGenerator",
    "DefectSynthesizer",
    "SyntheticDefect",
    "perlin_mask",
    "perlin_noise",
]
