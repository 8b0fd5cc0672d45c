"""Inference timing: latency at batch size 1 (after warm-up) and end-to-end throughput."""

from __future__ import annotations

import statistics
import time

import torch

from flawmap.models.base import Detector


@torch.inference_mode()
def measure_latency(detector: Detector, runs: int = 20, warmup: int = 3, seed: int = 0) -> float:
    """Median milliseconds of one forward pass (backbone + head + post-processing), batch 1.

    The image is a fixed random tensor of the model's input size; data loading is excluded.
    """
    module = detector._fitted_module()
    h, w = detector.transform.output_size
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    for _ in range(warmup):
        module(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        module(image)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)
