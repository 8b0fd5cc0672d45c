"""Synthetic defect generators for training defect-aware models.

One module per generator family:

- :mod:`flawmap.synth.perlin`: Perlin-noise masks (DRAEM).
- :mod:`flawmap.synth.defects`: :class:`DefectSynthesizer`, texture (DRAEM), structural (MemSeg)
  and blur (CSE) defects pasted through Perlin masks.
- :mod:`flawmap.synth.procedural`: :func:`procedural_texture`, the built-in texture source of
  texture defects when no texture folder is given.
- :mod:`flawmap.synth.confetti`: :class:`ConfettiNoise`, FCDD's random coloured rectangles.
- :mod:`flawmap.synth.cutpaste`: :class:`CutPaste`, a patch of the image pasted elsewhere.
- :mod:`flawmap.synth.real`: :class:`RealDefects`, real defective images with masks from a folder.
- :mod:`flawmap.synth.color`: colour jitter shared by CutPaste and FCDD's augmentation.

Every generator is a :class:`DefectGenerator`: ``gen(image, generator)`` for one image,
``gen.apply(images, generator)`` for a batch and ``gen.synthesize_batch(images, generator, p)``
for a random subset of a batch; :class:`RandomChoice` picks one generator per image.
"""

from __future__ import annotations

from flawmap.synth.confetti import ConfettiNoise
from flawmap.synth.cutpaste import CutPaste
from flawmap.synth.defects import (
    DEFECT_KINDS,
    DefectGenerator,
    DefectSynthesizer,
    PaintedDefect,
    RandomChoice,
    SyntheticDefect,
)
from flawmap.synth.perlin import perlin_mask, perlin_noise
from flawmap.synth.procedural import procedural_texture
from flawmap.synth.real import RealDefects, load_anomaly_folder

__all__ = [
    "DEFECT_KINDS",
    "ConfettiNoise",
    "CutPaste",
    "DefectGenerator",
    "DefectSynthesizer",
    "PaintedDefect",
    "RandomChoice",
    "RealDefects",
    "SyntheticDefect",
    "load_anomaly_folder",
    "perlin_mask",
    "perlin_noise",
    "procedural_texture",
]
