"""Inference timing: latency at a batch size (1 by default, after warm-up) of the whole model
or of its backbone alone; end-to-end throughput is measured by ``evaluate``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from flawmap.errors import ConfigError, DataError
from flawmap.models.base import Detector


def _median_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    """Median wall-clock milliseconds of ``fn()`` over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _timing_batch(
    detector: Detector, image: torch.Tensor | None, batch_size: int, seed: int
) -> torch.Tensor:
    """(batch_size, 3, H, W): ``image`` repeated, or a fixed random image when ``None``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    h, w = detector.transform.output_size
    if image is None:
        image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))
    if tuple(image.shape) != (3, h, w):
        raise DataError(
            f"the timing image has shape {tuple(image.shape)} but this model expects (3, {h}, "
            f"{w}): read it through the model's transform (model.transform)"
        )
    return image[None].expand(batch_size, -1, -1, -1).contiguous()


@torch.inference_mode()
def measure_latency(
    detector: Detector,
    image: torch.Tensor | None = None,
    runs: int = 20,
    warmup: int = 3,
    seed: int = 0,
    batch_size: int = 1,
) -> float:
    """Median milliseconds of one forward pass (backbone + head + post-processing) of a batch
    of ``batch_size`` copies of ``image`` (default batch 1); throughput = batch_size / time.

    ``image`` (3, H, W) should be a real image of the kind inspected: search costs can depend on
    the content (PatchCore's pruned search is fastest for in-distribution patches, slowest for
    pure noise). Without one, a fixed random image is used. Data loading is excluded.
    """
    module = detector.module
    batch = _timing_batch(detector, image, batch_size, seed)
    return _median_ms(lambda: module(batch), runs, warmup)


@torch.inference_mode()
def measure_backbone_latency(
    detector: Detector,
    image: torch.Tensor | None = None,
    runs: int = 20,
    warmup: int = 3,
    seed: int = 0,
    batch_size: int = 1,
) -> float:
    """Median milliseconds of the fitted model's feature extractor alone (the stages it uses),
    same protocol as :func:`measure_latency`: the reference for "latency <= k x backbone"."""
    module = detector.module
    batch = _timing_batch(detector, image, batch_size, seed)
    return _median_ms(lambda: module.extractor(batch), runs, warmup)
