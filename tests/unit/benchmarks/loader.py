"""Load a benchmark script (``benchmarks/*.py``, not a package) as a module for its tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


def load_benchmark(file: str) -> ModuleType:
    """``benchmarks/FILE`` as a module named ``benchmarks_<stem>``; the folder is on
    ``sys.path`` while it loads, so a script can import its siblings (``common``, ``load``)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            f"benchmarks_{Path(file).stem}", BENCHMARKS / file
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module
