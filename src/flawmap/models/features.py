"""Feature-map steps shared by the feature-based models, and the frozen-feature cache.

:func:`collect_features` runs a frozen feature function once over a training set and keeps the
result (and, for models that damage their training images, the images) in a :class:`FeatureCache`;
:meth:`FeatureCache.extract` re-runs the same function on new (e.g. damaged) images in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from flawmap.errors import ConfigError

if TYPE_CHECKING:
    from flawmap.models.base import Detector

__all__ = [
    "FeatureCache",
    "FeatureFn",
    "check_patch_size",
    "collect_features",
    "concat_on_finest_grid",
    "local_patch_features",
]

FeatureFn = Callable[[torch.Tensor], torch.Tensor | Sequence[torch.Tensor]]
"""images (B, 3, H, W) -> one feature tensor (B, ...) or several (e.g. one per backbone stage)."""


def check_patch_size(patch_size: int) -> int:
    """The local-neighbourhood size p must be an odd integer >= 1 (centred window)."""
    if patch_size < 1 or patch_size % 2 == 0:
        raise ConfigError(f"patch_size must be an odd integer >= 1, got {patch_size}")
    return patch_size


def concat_on_finest_grid(maps: list[torch.Tensor], mode: str = "bilinear") -> torch.Tensor:
    """[(B, C_i, h_i, w_i)] -> (B, sum C_i, h_0, w_0): later maps resized to the first's grid."""
    size = maps[0].shape[-2:]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    resized = [maps[0]] + [F.interpolate(m, size=size, mode=mode, **kwargs) for m in maps[1:]]
    return torch.cat(resized, dim=1)


def local_patch_features(maps: list[torch.Tensor], patch_size: int) -> torch.Tensor:
    """Locally aware patch features (PatchCore eq. 2-3, SimpleNet/TrisimpleNet eq. 3.1-3.3).

    Each stage is averaged over a p x p neighbourhood (zero padding), then all are resized
    bilinearly to the finest grid and concatenated: (B, sum C_i, h_0, w_0).
    """
    p = patch_size
    return concat_on_finest_grid([F.avg_pool2d(m, p, stride=1, padding=p // 2) for m in maps])


def _as_list(out: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)


@dataclass
class FeatureCache:
    """Features of a whole training set, computed once by a frozen function ``fn``.

    ``features[s]`` is output ``s`` of ``fn`` concatenated over the images along dim 0 (for
    per-image outputs: (N, ...)); ``images`` holds the images (N, 3, H, W) when they were kept.
    """

    features: list[torch.Tensor]
    images: torch.Tensor | None
    fn: FeatureFn | None
    batch_size: int
    count: int = field(default=0)

    def __len__(self) -> int:
        """N, the number of images."""
        return self.count

    @torch.no_grad()
    def extract(self, images: torch.Tensor, chunk: int | None = None) -> list[torch.Tensor]:
        """images (K, 3, H, W) -> the outputs of ``fn``, each concatenated over the images.

        ``fn`` sees chunks of ``chunk`` images (default: the cache's batch size) cast to
        float32; the outputs are not cast to the cache's feature dtype.

        Raises:
            ConfigError: the cache was built without a feature function, or ``chunk < 1``.
        """
        if self.fn is None:
            raise ConfigError("this feature cache has no feature function to extract with")
        step = self.batch_size if chunk is None else chunk
        if step < 1:
            raise ConfigError(f"chunk must be >= 1, got {step}")
        fn = self.fn
        parts = [_as_list(fn(images[i : i + step].float())) for i in range(0, len(images), step)]
        return [torch.cat(outputs) for outputs in zip(*parts, strict=True)]


def collect_features(
    detector: Detector,
    data: Dataset,
    fn: FeatureFn | None,
    *,
    progress: bool = False,
    desc: str = "",
    keep_images: bool = False,
    image_dtype: torch.dtype = torch.float16,
    dtype: torch.dtype | None = None,
) -> FeatureCache:
    """Run ``fn`` once over ``data`` (``detector.batches``, without gradients) and cache it.

    Per batch, ``fn(images)`` is computed first and cast to ``dtype`` (if given), then the
    images are kept as ``image_dtype`` (if ``keep_images``; float16 halves the memory and is
    exact to ~2e-4 in [0, 1]). ``fn=None`` keeps only the images. An enclosing
    ``torch.inference_mode`` stays in force.
    """
    parts: list[list[torch.Tensor]] = []
    images: list[torch.Tensor] = []
    with torch.no_grad():
        for batch in detector.batches(data, progress, desc):
            x = batch["image"]
            if fn is not None:
                out = _as_list(fn(x))
                parts.append(out if dtype is None else [f.to(dtype) for f in out])
            if keep_images:
                images.append(x.to(image_dtype))
    features = [torch.cat(outputs) for outputs in zip(*parts, strict=True)]
    kept = torch.cat(images) if keep_images and images else None
    count = len(kept) if kept is not None else (len(features[0]) if features else 0)
    return FeatureCache(features, kept, fn, detector.batch_size, count)
