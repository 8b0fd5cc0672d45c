"""The shared sampled Gaussian (flawmap.kernels)."""

from __future__ import annotations

import math

import torch

from flawmap.kernels import gaussian_kernel1d
from flawmap.models.postprocess import AnomalyMapPostprocessor


def test_gaussian_kernel1d_values() -> None:
    k = gaussian_kernel1d(5, 1.0, normalize=False, dtype=torch.float64)
    expected = torch.tensor(
        [math.exp(-0.5 * d * d) for d in (-2, -1, 0, 1, 2)], dtype=torch.float64
    )
    torch.testing.assert_close(k, expected, rtol=0, atol=1e-15)
    even = gaussian_kernel1d(4, 2.0, normalize=False)
    assert torch.equal(even, even.flip(0)) and float(even.max()) < 1.0  # half-integer offsets
    norm = gaussian_kernel1d(9, 1.5)
    assert norm.dtype == torch.float32
    torch.testing.assert_close(norm.sum(), torch.tensor(1.0))


def test_postprocessing_kernel_is_the_shared_one() -> None:
    for sigma in (1.0, 4.0, 2.7):
        radius = int(4.0 * sigma + 0.5)
        shared = gaussian_kernel1d(2 * radius + 1, sigma)
        assert torch.equal(AnomalyMapPostprocessor(sigma).kernel, shared)
