"""Thread count and wait policy for inference on a shared inspection PC.

OpenMP-style runtimes keep idle worker threads spinning for a while to answer the next
parallel region fast. On a machine whose cores are busy with other software, spinning workers
take turns away from the ones doing work and latency grows many times over. The defaults here
(one thread per core this process may use, no spinning) were chosen by measurement, quiet and
loaded (``benchmarks/speed.py``; figures in BENCHMARKS.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: The environment variable the OpenMP runtimes (torch, numba, faiss) read for their wait policy.
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
DEFAULT_WAIT_POLICY = "PASSIVE"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadSettings:
    """``count`` intra-op threads; ``spin``: whether idle workers spin-wait."""

    count: int
    spin: bool = False

    @classmethod
    def default(cls, count: int | None = None, spin: bool | None = None) -> ThreadSettings:
        """``count`` (default: :func:`available_cores`) and ``spin`` (default: no)."""
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise TypeError(f"threads must be an int, got {count!r}")
        if count is not None and count < 1:
            from flawmap.errors import ConfigError

            raise ConfigError(f"threads must be >= 1, got {count}")
        return cls(count or available_cores(), bool(spin) if spin is not None else False)


def set_passive_wait_policy() -> None:
    """Make OpenMP workers sleep instead of spin when idle, unless the user chose a policy.

    Must run before torch (or numba, faiss) is imported: the OpenMP runtime reads the variable
    once, when it starts.
    """
    os.environ.setdefault(WAIT_POLICY_ENV, DEFAULT_WAIT_POLICY)
