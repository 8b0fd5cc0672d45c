"""Synthetic defects pasted into good images through Perlin-noise masks.

Three kinds, each composed as ``out = image * (1 - m) + defect * m`` with a binary Perlin mask
``m`` (:func:`flawmap.synth.perlin.perlin_mask`), so pixels outside the mask are exactly the input:

- ``"texture"`` (DRAEM, Zavrtanik et al., ICCV 2021): a random image from a texture folder such as
  the Describable Textures Dataset (DTD), or without a folder a procedural texture
  (:func:`flawmap.synth.procedural.procedural_texture`), blended into the image with a random
  weight.
- ``"structural"`` (MemSeg, Yang et al., 2023): the image itself cut into a grid of patches that
  are shuffled, flipped and rotated, blended in the same way.
- ``"blur"`` (CSE): the image blurred with a random Gaussian.

Every random choice goes through the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flawmap.data.io import is_image_file, load_image
from flawmap.errors import ConfigError, DataError
from flawmap.kernels import gaussian_kernel1d
from flawmap.synth.perlin import _check_generator, perlin_mask
from flawmap.synth.procedural import procedural_texture

__all__ = [
    "DEFECT_KINDS",
    "DefectGenerator",
    "DefectSynthesizer",
    "PaintedDefect",
    "RandomChoice",
    "SyntheticDefect",
]

DEFECT_KINDS: tuple[str, ...] = ("texture", "structural", "blur")
"""Every defect kind :class:`DefectSynthesizer` knows."""

_MIN_CHANGE = 1e-3
"""A defect whose mean absolute change inside the mask is below this is redrawn."""

_MAX_ATTEMPTS = 5
"""Draws per call before giving up on changing the pixels (only flat images get there)."""


@dataclass(frozen=True, repr=False)
class SyntheticDefect:
    """One defective image: ``image`` (3, H, W) in [0, 1], ``mask`` (1, H, W) float32 in {0, 1}."""

    image: torch.Tensor
    mask: torch.Tensor
    kind: str

    def __repr__(self) -> str:
        shape, area = tuple(self.image.shape), float(self.mask.mean())
        return f"SyntheticDefect(kind={self.kind!r}, shape={shape}, area={area:.3f})"


def _check_range(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    """A ``(lo, hi)`` pair with ``low <= lo <= hi <= high`` (``hi > 0``) as floats."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair of numbers (lo, hi), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and low <= lo <= hi <= high and hi > 0):
        raise ConfigError(
            f"{name} must satisfy {low:g} <= lo <= hi <= {high:g} with hi > 0, got {value!r}"
        )
    return lo, hi


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    """One draw from U(lo, hi)."""
    u = float(torch.rand(1, generator=generator, device=generator.device))
    return lo + (hi - lo) * u


def _randint(generator: torch.Generator, n: int) -> int:
    """One draw from {0, ..., n - 1}."""
    return int(torch.randint(n, (1,), generator=generator, device=generator.device))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, H, W) -> (C, H, W): separable Gaussian blur, reflect padding, radius ceil(3 sigma).

    The radius is capped at each side's length - 1 (the most reflect padding allows).
    """
    c, h, w = image.shape
    x = image[None]
    for axis, size in ((2, h), (3, w)):
        radius = min(math.ceil(3 * sigma), size - 1)
        if radius < 1:
            continue
        kernel = gaussian_kernel1d(2 * radius + 1, sigma, dtype=image.dtype, device=image.device)
        if axis == 2:
            x = F.pad(x, (0, 0, radius, radius), mode="reflect")
            weight = kernel.view(1, 1, -1, 1)
        else:
            x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
            weight = kernel.view(1, 1, 1, -1)
        x = F.conv2d(x, weight.expand(c, 1, *weight.shape[2:]), groups=c)
    return x[0]


def shuffle_patches(image: torch.Tensor, grid: int, generator: torch.Generator) -> torch.Tensor:
    """(C, H, W) -> (C, H, W): MemSeg-style structural rearrangement.

    The image is cut into ``grid`` x ``grid`` patches that are randomly permuted and each
    randomly flipped horizontally and/or vertically and, when patches are square, rotated by a
    random multiple of 90 degrees. Sides not divisible by ``grid`` are resized (bilinear) up to
    the next multiple and back afterwards.
    """
    c, h, w = image.shape
    hr, wr = math.ceil(h / grid) * grid, math.ceil(w / grid) * grid
    resized = (hr, wr) != (h, w)
    x = image
    if resized:
        x = F.interpolate(x[None], size=(hr, wr), mode="bilinear", align_corners=False)[0]
    ph, pw = hr // grid, wr // grid
    n = grid * grid
    patches = x.reshape(c, grid, ph, grid, pw).permute(1, 3, 0, 2, 4).reshape(n, c, ph, pw)
    gdev = generator.device
    perm = torch.randperm(n, generator=generator, device=gdev).to(image.device)
    flips = torch.randint(2, (2, n), generator=generator, device=gdev).bool().to(image.device)
    patches = patches[perm].clone()
    patches[flips[0]] = patches[flips[0]].flip(-1)
    patches[flips[1]] = patches[flips[1]].flip(-2)
    if ph == pw:
        turns = torch.randint(4, (n,), generator=generator, device=gdev).to(image.device)
        for k in (1, 2, 3):
            sel = turns == k
            patches[sel] = torch.rot90(patches[sel], k, dims=(-2, -1))
    x = patches.reshape(grid, grid, c, ph, pw).permute(2, 0, 3, 1, 4).reshape(c, hr, wr)
    if resized:
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return x


def _check_image(image: torch.Tensor) -> None:
    """A (3, H, W) floating tensor with finite values in [0, 1]; DataError otherwise."""
    if not isinstance(image, torch.Tensor):
        raise DataError(f"image must be a torch.Tensor of shape (3, H, W), got {type(image)}")
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] < 1 or image.shape[2] < 1:
        raise DataError(f"image must have shape (3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise DataError(f"image must be a float tensor with values in [0, 1], got {image.dtype}")
    if not bool(torch.isfinite(image).all()):
        raise DataError("image contains NaN or infinite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(
            f"image values must lie in [0, 1] (synthesize before normalisation), "
            f"got range [{lo:.4g}, {hi:.4g}]"
        )


def _check_batch(images: torch.Tensor) -> None:
    """A (B, 3, H, W) tensor; DataError otherwise."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise DataError(f"images must be a tensor of shape (B, 3, H, W), got {shape}")


class DefectGenerator(abc.ABC):
    """A synthetic-defect generator: ``gen(image (3, H, W), generator) -> SyntheticDefect``."""

    @abc.abstractmethod
    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> SyntheticDefect:
        """One defective copy of ``image`` (3, H, W) in [0, 1]; random draws from ``generator``."""

    def apply(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, 3, H, W) -> (images (K, 3, H, W), masks (K, 1, H, W) float32): a defect in
        every image, ``self(images[k], generator)`` for k = 0, 1, ... in order."""
        _check_batch(images)
        _check_generator(generator)
        return self._apply(images, generator, [self] * len(images))

    @staticmethod
    def _apply(
        images: torch.Tensor, generator: torch.Generator, generators: Sequence[DefectGenerator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``generators[k]`` applied to ``images[k]`` in order; unchecked."""
        k, _, h, w = images.shape
        out = images.clone()
        masks = torch.zeros(k, 1, h, w, dtype=torch.float32, device=images.device)
        for i, gen in enumerate(generators):
            result = gen(images[i], generator)
            out[i], masks[i] = result.image, result.mask
        return out, masks

    def synthesize_batch(
        self, images: torch.Tensor, generator: torch.Generator, probability: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (images (B, 3, H, W), masks (B, 1, H, W) float32).

        Draws ``torch.rand(B) < probability`` first, then gives each chosen image a defect
        (:meth:`apply`, in index order); the others are returned unchanged with an all-zero mask.
        """
        _check_batch(images)
        if not (isinstance(probability, int | float) and 0.0 <= probability <= 1.0):
            raise ConfigError(f"probability must be a number in [0, 1], got {probability!r}")
        _check_generator(generator)
        out = images.clone()
        masks = torch.zeros(len(images), 1, *images.shape[-2:], device=images.device)
        chosen = torch.rand(len(images), generator=generator, device=generator.device) < probability
        picked = chosen.nonzero().flatten().to(images.device)
        if len(picked):
            out[picked], masks[picked] = self.apply(images[picked], generator)
        return out, masks


def _check_min_change(min_change: float) -> float:
    """A change threshold in [0, 1) as a float; ConfigError otherwise."""
    if not (isinstance(min_change, int | float) and 0.0 <= min_change < 1.0):
        raise ConfigError(f"min_change must be a number in [0, 1), got {min_change!r}")
    return float(min_change)


class PaintedDefect(DefectGenerator):
    """A generator that paints a region of the image (:meth:`_draw`) and keeps what changed.

    The mask is the set of painted pixels whose largest channel change ``|out - image|`` is at
    least ``min_change``; every other pixel of the result is exactly the input. The region is
    redrawn (a few times at most) while no painted pixel changes by ``min_change``, so the mask
    is non-empty unless every draw failed (flat images).
    """

    kind = "painted"
    min_change: float

    @abc.abstractmethod
    def _draw(
        self, image: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One draw: (painted image (3, H, W), painted pixels (H, W) bool)."""

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> SyntheticDefect:
        """A defect in ``image`` (3, H, W) float in [0, 1] -> ``SyntheticDefect`` with ``mask``
        (1, H, W) float32 in {0, 1} (the changed painted pixels) and ``kind=self.kind``.

        Raises:
            DataError: ``image`` is not a (3, H, W) float tensor with finite values in [0, 1].
            ConfigError: ``generator`` is not a ``torch.Generator``.
        """
        _check_image(image)
        _check_generator(generator)
        for _ in range(_MAX_ATTEMPTS):
            painted, covered = self._draw(image, generator)
            change = (painted - image).abs().amax(dim=0)
            mask = covered & (change >= self.min_change) & (change > 0)
            if bool(mask.any()):
                break
        out = torch.where(mask, painted, image)  # outside the mask: exactly the input
        return SyntheticDefect(image=out, mask=mask[None].float(), kind=self.kind)


class RandomChoice(DefectGenerator):
    """One of ``generators`` per image, chosen uniformly.

    With u uniform in [0, 1) the image gets ``generators[floor(n u)]`` (n generators; for two,
    ``u < 0.5`` picks the first). :meth:`apply` draws the K choices first (``torch.rand(K)``),
    then applies them in order; a single call draws one u, then the chosen generator's defect.

    Raises:
        ConfigError: ``generators`` is empty or holds something other than DefectGenerators.
    """

    def __init__(self, generators: Sequence[DefectGenerator]) -> None:
        gens = tuple(generators)
        if not gens or not all(isinstance(g, DefectGenerator) for g in gens):
            raise ConfigError(
                f"generators must be a non-empty sequence of DefectGenerators, got {generators!r}"
            )
        self.generators = gens

    def __repr__(self) -> str:
        return f"RandomChoice({list(self.generators)!r})"

    def _choose(self, count: int, generator: torch.Generator) -> list[DefectGenerator]:
        u = torch.rand(count, generator=generator, device=generator.device)
        n = len(self.generators)
        picks = (u * n).long().clamp_max(n - 1).tolist()
        return [self.generators[i] for i in picks]

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> SyntheticDefect:
        """A defect from one randomly chosen generator in ``image`` (3, H, W)."""
        _check_generator(generator)
        return self._choose(1, generator)[0](image, generator)

    def apply(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, 3, H, W) -> (images (K, 3, H, W), masks (K, 1, H, W) float32): K choices drawn
        first, then each image's defect in order."""
        _check_batch(images)
        _check_generator(generator)
        return self._apply(images, generator, self._choose(len(images), generator))


class DefectSynthesizer(DefectGenerator):
    """Pastes random synthetic defects (texture, structural, blur) into good images.

    Args:
        texture_dir: folder of texture images, searched recursively (e.g. DTD's ``dtd/images``).
            ``None`` (the default) uses procedural textures instead, which need no download.
        kinds: defect kinds to draw from, uniformly; a subset of :data:`DEFECT_KINDS`. Leave
            out ``"texture"`` for structural and blur defects only (no textures at all).
        blend_range: range of the weight beta of the texture / shuffled patches in the blend
            ``(1 - beta) * image + beta * source``.
        blur_sigma_range: range of the Gaussian sigma (pixels) of blur defects.
        structural_grid: the image is cut into ``structural_grid`` x ``structural_grid`` patches.
        mask_threshold: threshold of the Perlin noise (higher = smaller defects).

    Raises:
        ConfigError: an unknown or empty ``kinds``, a bad range, grid or threshold.
        DataError: ``texture_dir`` does not exist or is not a folder (a folder without images is
            reported on first use, when the files are listed).
    """

    def __init__(
        self,
        texture_dir: str | os.PathLike[str] | None = None,
        kinds: Sequence[str] = DEFECT_KINDS,
        blend_range: tuple[float, float] = (0.2, 0.8),
        blur_sigma_range: tuple[float, float] = (2.0, 6.0),
        structural_grid: int = 8,
        mask_threshold: float = 0.5,
    ) -> None:
        if isinstance(kinds, str) or not isinstance(kinds, Sequence):
            raise ConfigError(
                f"kinds must be a sequence of defect kinds such as ('blur',), got {kinds!r}"
            )
        unknown = [k for k in kinds if k not in DEFECT_KINDS]
        if unknown:
            raise ConfigError(
                f"unknown defect kind(s) {unknown}; choose from {', '.join(DEFECT_KINDS)}"
            )
        active = list(dict.fromkeys(kinds))  # de-duplicated, order kept
        if not active:
            raise ConfigError(f"kinds must name at least one of {', '.join(DEFECT_KINDS)}")
        self.blend_range = _check_range("blend_range", blend_range, 0.0, 1.0)
        self.blur_sigma_range = _check_range("blur_sigma_range", blur_sigma_range, 0.0, math.inf)
        if self.blur_sigma_range[0] <= 0:
            raise ConfigError(f"blur_sigma_range must be > 0, got {blur_sigma_range!r}")
        if (
            isinstance(structural_grid, bool)
            or not isinstance(structural_grid, int)
            or structural_grid < 1
        ):
            raise ConfigError(f"structural_grid must be an integer >= 1, got {structural_grid!r}")
        self.structural_grid = structural_grid
        if not (isinstance(mask_threshold, int | float) and -1.0 < mask_threshold < 1.0):
            raise ConfigError(f"mask_threshold must be a number in (-1, 1), got {mask_threshold!r}")
        self.mask_threshold = float(mask_threshold)

        self.texture_dir = None if texture_dir is None else Path(texture_dir)
        if self.texture_dir is not None and not self.texture_dir.is_dir():
            what = "is not a directory" if self.texture_dir.exists() else "does not exist"
            raise DataError(f"texture folder {self.texture_dir} {what}")
        self.kinds: tuple[str, ...] = tuple(active)
        self._texture_files: list[Path] | None = None

    def __repr__(self) -> str:
        return (
            f"DefectSynthesizer(texture_dir={self.texture_dir!r}, kinds={self.kinds!r}, "
            f"blend_range={self.blend_range!r}, blur_sigma_range={self.blur_sigma_range!r}, "
            f"structural_grid={self.structural_grid}, mask_threshold={self.mask_threshold})"
        )

    @property
    def texture_files(self) -> list[Path]:
        """The texture images, listed recursively on first use and sorted by relative path.

        Raises:
            DataError: the texture folder holds no image files.
        """
        if self._texture_files is None:
            if self.texture_dir is None:
                return []
            root = self.texture_dir
            files = sorted(
                (p for p in root.rglob("*") if is_image_file(p)),
                key=lambda p: p.relative_to(root).as_posix(),
            )
            if not files:
                raise DataError(
                    f"texture folder {root} contains no image files "
                    f"(searched recursively for .png, .jpg, ...)"
                )
            self._texture_files = files
        return self._texture_files

    def _texture(self, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """A random texture image resized (bilinear) to (3, H, W) float32 in [0, 1]; a
        procedural texture (on the generator's device) when there is no texture folder."""
        if self.texture_dir is None:
            return procedural_texture(height, width, generator)
        files = self.texture_files
        pil = load_image(files[_randint(generator, len(files))])
        tex = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return F.interpolate(
            tex[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
        )[0]

    def _defect(self, image: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
        """The full-size defect source (3, H, W) for ``kind``, before masking."""
        _, h, w = image.shape
        if kind == "blur":
            return gaussian_blur(image, _uniform(generator, *self.blur_sigma_range))
        if kind == "texture":
            source = self._texture(h, w, generator).to(image.device, image.dtype)
        else:
            source = shuffle_patches(image, self.structural_grid, generator)
        beta = _uniform(generator, *self.blend_range)
        return (1.0 - beta) * image + beta * source

    def __call__(
        self, image: torch.Tensor, generator: torch.Generator, *, kind: str | None = None
    ) -> SyntheticDefect:
        """One defect in ``image`` (3, H, W) float in [0, 1]; ``kind`` forces the defect kind.

        The kind, mask and parameters are redrawn (kind only when not forced) up to a few times
        while the mean absolute change inside the mask is below 1e-3. On a perfectly flat image
        (or a flat masked region) blur and structural defects cannot change any pixel; after the
        last try the unchanged result is returned as is.

        Raises:
            DataError: ``image`` is not a (3, H, W) float tensor with finite values in [0, 1].
            ConfigError: ``kind`` is not one of :attr:`kinds`, or ``generator`` is not a
                ``torch.Generator``.
        """
        _check_image(image)
        _check_generator(generator)
        if kind is not None and kind not in self.kinds:
            raise ConfigError(f"kind {kind!r} is not active; choose from {', '.join(self.kinds)}")
        _, h, w = image.shape
        work = image if image.dtype in (torch.float32, torch.float64) else image.float()
        for _ in range(_MAX_ATTEMPTS):
            chosen = kind if kind is not None else self.kinds[_randint(generator, len(self.kinds))]
            mask = perlin_mask(h, w, generator, threshold=self.mask_threshold).to(image.device)
            defect = self._defect(work, chosen, generator).clamp(0.0, 1.0).to(image.dtype)
            out = torch.where(mask, defect, image)  # outside the mask: exactly the input
            change = float((out - image).abs()[:, mask].float().mean())
            if change >= _MIN_CHANGE:
                break
        return SyntheticDefect(image=out, mask=mask[None].float(), kind=chosen)
