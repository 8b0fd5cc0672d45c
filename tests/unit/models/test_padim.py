"""PaDiM specifics not covered by the model contract tests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

FIRST_CALL = """
import numpy as np, torch
from flawmap.models.padim import _mahalanobis_squared, _within_torch_threads
rng = np.random.default_rng(0)
delta = rng.random((64, 2, 8), dtype=np.float32)
inv = rng.random((64, 8, 8), dtype=np.float32)
out = {call}
expected = np.einsum("pbi,pij,pbj->pb", delta, inv, delta)
assert np.allclose(out, expected, rtol=1e-4), "wrong quadratic forms"
print(torch.get_num_threads())
"""


def _threads_after_first_call(call: str) -> int:
    """torch's thread count after the first parallel numba call of a fresh interpreter whose
    thread count comes from OMP_NUM_THREADS=1 (as in the benchmarks' subprocesses)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", FIRST_CALL.format(call=call)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return int(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores for numba to use 2 threads")
def test_mahalanobis_kernel_keeps_torch_thread_count() -> None:
    # numba's OpenMP threading layer shares the OpenMP runtime with torch and, on its first
    # parallel call, sets it to numba's thread count: OMP_NUM_THREADS=1 silently became 2, and
    # the same seed gave different scores in the last bits (torch reduces in another order)
    assert _threads_after_first_call("_mahalanobis_squared(delta, inv)") == 2  # the hazard
    assert _threads_after_first_call("_within_torch_threads(_mahalanobis_squared, delta, inv)") == 1
