"""Helpers of ``benchmarks/speed.py``: a CPU load generator and the machine's peak GEMM rates.

``BusyLoad(n)`` starts ``n`` CPU-bound processes (pure-Python loops in fresh interpreters,
default priority, pinned to no core) and stops them again: the "other software" of an
inspection PC::

    with BusyLoad(2):
        ...  # measure latency under load

``peak_gemm(threads)`` measures the best matrix-multiply rate of this machine for fp32, bf16
(torch tensors: oneDNN, AMX where the CPU has it) and int8 (``torch._int_mm``, else an ONNX
Runtime ``MatMulInteger`` graph), in GFLOP/s (GOP/s for int8).
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

#: What each load process runs: say it is ready, then spin in pure Python until it is ended.
SPIN = (
    "import sys\n"
    "sys.stdout.write('ready\\n')\n"
    "sys.stdout.flush()\n"
    "x = 0\n"
    "while True:\n"
    "    x = (x * 31 + 7) & 0xFFFF\n"
)


class BusyLoad:
    """``processes`` CPU-bound processes, started by :meth:`start`, ended by :meth:`stop`."""

    def __init__(self, processes: int = 2, start_timeout_s: float = 30.0) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        self.processes = processes
        self.start_timeout_s = start_timeout_s
        self._workers: list[subprocess.Popen[str]] = []

    @property
    def pids(self) -> list[int]:
        """Process ids of the load processes started (running or not)."""
        return [w.pid for w in self._workers]

    @property
    def alive(self) -> int:
        """How many of the load processes are running now."""
        return sum(1 for w in self._workers if w.poll() is None)

    def start(self) -> BusyLoad:
        """Start the processes and return once every one of them is spinning."""
        if self._workers:
            raise RuntimeError("the load is already running")
        for _ in range(self.processes):
            self._workers.append(
                subprocess.Popen(
                    [sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True, bufsize=1
                )
            )
        deadline = time.monotonic() + self.start_timeout_s
        for worker in self._workers:
            assert worker.stdout is not None
            ready, _, _ = select.select([worker.stdout], [], [], deadline - time.monotonic())
            if not ready or worker.stdout.readline().strip() != "ready":
                self.stop()
                raise RuntimeError("the load processes did not start in time")
        return self

    def stop(self) -> None:
        """End the processes (killed if they do not end within 5 s)."""
        for worker in self._workers:
            worker.terminate()
        for worker in self._workers:
            try:
                worker.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            if worker.stdout is not None:
                worker.stdout.close()
        self._workers = []

    def __enter__(self) -> BusyLoad:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def best_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` (after ``warmup`` untimed ones)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _int8_onnx_matmul(size: int, threads: int) -> Callable[[], Any]:
    """An ONNX Runtime ``MatMulInteger`` of two (size, size) int8 matrices, ready to call."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
    graph = helper.make_graph(
        [node],
        "int8_gemm",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [size, size]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.SerializeToString(),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (size, size), dtype=np.uint8)
    b = rng.integers(-128, 127, (size, size), dtype=np.int8)
    return lambda: session.run(None, {"a": a, "b": b})


def peak_gemm(threads: int = 2, size: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """Best ``size``-square matrix-multiply rate on ``threads`` threads, per precision.

    Returns ``{"fp32": GFLOP/s, "bf16": GFLOP/s, "int8": GOP/s, "int8_kernel": name, ...}``;
    one multiply-add counts as 2 operations.
    """
    import torch

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    ops = 2.0 * size**3
    result: dict[str, Any] = {"size": size, "threads": threads, "repeats": repeats}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(size, size, generator=gen).to(dtype)
        b = torch.randn(size, size, generator=gen).to(dtype)
        result[name] = ops / best_seconds(lambda a=a, b=b: torch.matmul(a, b), repeats) / 1e9
    int_mm = getattr(torch, "_int_mm", None)
    if int_mm is not None:
        a8 = torch.randint(-128, 127, (size, size), generator=gen, dtype=torch.int8)
        b8 = torch.randint(-128, 127, (size, size), generator=gen, dtype=torch.int8)
        result["int8"] = ops / best_seconds(lambda: int_mm(a8, b8), repeats) / 1e9
        result["int8_kernel"] = "torch._int_mm"
    else:
        result["int8"] = ops / best_seconds(_int8_onnx_matmul(size, threads), repeats) / 1e9
        result["int8_kernel"] = "onnxruntime MatMulInteger"
    return result
