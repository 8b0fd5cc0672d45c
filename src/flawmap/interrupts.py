"""Ctrl-C that is never lost inside compiled kernels.

A numba kernel's first call compiles it (or loads it from numba's on-disk cache) through
llvmlite, which calls back into Python through ctypes. A ``KeyboardInterrupt`` raised inside such
a callback cannot propagate: Python prints "Exception ignored on calling ctypes callback function"
and carries on, so a Ctrl-C during compilation was either lost (the fit went on) or surfaced
later as an unrelated numba error ("no compiled object yet"). The compiled loop itself cannot be
interrupted at all.

:func:`interrupt_safe` wraps the kernels that Python calls: while such a call runs, the first
Ctrl-C is held and raised as ``KeyboardInterrupt`` the moment the call returns (or fails); a
second Ctrl-C is delivered at once, for a user who does not want to wait.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, TypeVar

__all__ = ["HeldInterrupts", "interrupt_safe"]

F = TypeVar("F", bound=Callable[..., Any])


def _deliver(handler: Any, frame: FrameType | None) -> None:
    """Act on SIGINT as ``handler`` (the handler that was installed before) would have."""
    if callable(handler):
        handler(signal.SIGINT, frame)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signal.SIGINT)  # the default action: end the process
    # SIG_IGN: the interrupt is ignored, as it would have been


class HeldInterrupts:
    """Context manager: hold the first SIGINT until the block ends, then deliver it.

    Inside the block the first Ctrl-C is recorded; on leaving, the previous handler gets it (by
    default: ``KeyboardInterrupt``). An exception other than ``KeyboardInterrupt`` that ends the
    block after a Ctrl-C becomes ``KeyboardInterrupt`` (chained), so an interrupt that broke
    something on its way is still reported as the interrupt. A second Ctrl-C inside the block is
    delivered at once. Outside the main thread, or when SIGINT is ignored or handled outside
    Python, the block runs unchanged.
    """

    def __init__(self) -> None:
        self.pending = 0
        self._previous: Any = None
        self._active = False

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        self.pending += 1
        if self.pending > 1:
            _deliver(self._previous, frame)

    def __enter__(self) -> HeldInterrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(signal.SIGINT)
        if previous is None or previous == signal.SIG_IGN:
            return self
        self._previous = previous
        signal.signal(signal.SIGINT, self._hold)
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._active:
            return
        signal.signal(signal.SIGINT, self._previous)
        self._active = False
        if not self.pending:
            return
        if exc is None:
            _deliver(self._previous, None)
        elif not isinstance(exc, KeyboardInterrupt) and isinstance(exc, Exception):
            raise KeyboardInterrupt from exc


def interrupt_safe(kernel: F) -> F:
    """Decorate a compiled kernel called from Python so Ctrl-C during its call is never lost.

    Put it above ``@numba.njit``; kernels called only from other kernels stay undecorated (they
    must remain numba dispatchers). The dispatcher is kept as ``wrapper.dispatcher``.
    """

    @functools.wraps(kernel, updated=())
    def call(*args: Any, **kwargs: Any) -> Any:
        with HeldInterrupts():
            return kernel(*args, **kwargs)

    call.dispatcher = kernel  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]
