"""Synthetic defect generators for training defect-aware models.

One module per generator family:

- :mod:`flawmap.synth.perlin`: Perlin-noise masks (DRAEM).
- :mod:`flawmap.synth.defects`: :class:`DefectSynthesizer`, texture (DRAEM), structural (MemSeg)
  and blur (CSE) defects pasted through Perlin masks.
"""

from __future__ import annotations

from flawmap.synth.defects import DEFECT_KINDS, DefectSynthesizer, SyntheticDefect
from flawmap.synth.perlin import perlin_mask, perlin_noise

__all__ = ["DEFECT_KINDS", "DefectSynthesizer", "SyntheticDefect", "perlin_mask", "perlin_noise"]
