"""Inference timing: latency at batch size 1 (after warm-up) and end-to-end throughput."""

from __future__ import annotations

import statistics
import time

import torch

from flawmap.models.base import Detector


@torch.inference_mode()
def measure_latency(
    detector: Detector,
    image: torch.Tensor | None = None,
    runs: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> float:
    """Median milliseconds of one forward pass (backbone + head + post-processing), batch 1.

    ``image`` (3, H, W) should be a real image of the kind inspected: search costs can depend on
    the content (PatchCore's pruned search is fastest for in-distribution patches, slowest for
    pure noise). Without one, a fixed random image is used. Data loading is excluded.
    """
    module = detector._fitted_module()
    h, w = detector.transform.output_size
    if image is None:
        image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))
    image = image[None]
    for _ in range(warmup):
        module(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        module(image)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)
