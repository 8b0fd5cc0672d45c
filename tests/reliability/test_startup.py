"""Start-up: what the fast commands must not import, the static model catalogue's contract, and
numba's kernel cache across processes.

These tests check structure (which modules a command imports, whether a cache is hit), never
timings; ``benchmarks/startup.py`` measures the times.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from flawmap.models.catalogue import BUILTIN_MODELS, summary_of

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "timm", "torchvision", "numba", "scipy", "flawmap.models.base")
MODEL_MODULES = sorted({entry.module for entry in BUILTIN_MODELS})


def _modules_after(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it must leave its result in ``result``. Returns
    ``{"modules": [...], "result": ...}``."""
    script = (
        "import json, sys, io, contextlib\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "print(json.dumps({'modules': sorted(sys.modules), 'result': result}))\n"
    )
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m in HEAVY or m.startswith(tuple(f"{h}." for h in HEAVY))]


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"], ["predict", "--help"]])
def test_help_imports_no_heavy_module(argv: list[str]) -> None:
    run = _modules_after(f"from flawmap.cli import main\nresult = main({argv!r})")
    assert run["result"] == 0
    assert _heavy(run["modules"]) == [] and "numpy" not in run["modules"]


def test_models_command_imports_no_torch_and_no_model_module() -> None:
    run = _modules_after("from flawmap.cli import main\nresult = main(['models'])")
    assert run["result"] == 0
    assert _heavy(run["modules"]) == []
    assert [m for m in MODEL_MODULES if m in run["modules"]] == []


def test_models_command_lists_every_model_with_its_summary(
    capsys: pytest.CaptureFixture,
) -> None:
    from flawmap.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for entry in BUILTIN_MODELS:
        assert f"  {entry.name:<12} {entry.summary}\n" in out
    assert "tf_efficientnet_lite0 (default)" in out


def test_static_catalogue_matches_the_real_classes() -> None:
    """The summaries `flawmap models` prints without importing a model are the classes' own."""
    from flawmap.models import list_models, model_class

    for entry in BUILTIN_MODELS:
        cls = model_class(entry.name)
        assert cls.name == entry.name
        assert (cls.__module__, cls.__name__) == (entry.module, entry.class_name)
        assert summary_of(cls.__doc__) == entry.summary, entry.name
    for module in MODEL_MODULES:  # every built-in model module is in the catalogue
        importlib.import_module(module)
    assert list_models() == sorted(e.name for e in BUILTIN_MODELS)


def test_one_model_imports_only_its_own_module() -> None:
    run = _modules_after(
        "from flawmap.models import model_class\nresult = model_class('padim').__name__"
    )
    assert run["result"] == "Padim"
    others = [m for m in MODEL_MODULES if m != "flawmap.models.padim"]
    assert [m for m in others if m in run["modules"]] == []


def test_lazy_package_names_resolve() -> None:
    import flawmap.backbones as backbones
    import flawmap.models as models

    assert models.PatchCore.name == "patchcore" and callable(models.load_model)
    assert backbones.FeatureExtractor.__name__ == "FeatureExtractor"
    with pytest.raises(AttributeError):
        _ = models.NoSuchModel


def test_console_script_is_the_cli_main() -> None:
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("flawmap") == "flawmap.cli:main"


def test_every_python_called_kernel_is_cached_and_interrupt_safe() -> None:
    from flawmap.models import padim
    from flawmap.models.patchcore import sampler, search

    kernels = [
        padim._mahalanobis_squared,
        search._row_distances,
        search._cluster_sums,
        search._first_pass,
        search._second_pass,
        sampler._lazy_greedy,
    ]
    for kernel in kernels:
        dispatcher = kernel.dispatcher  # set by flawmap.interrupts.interrupt_safe
        assert type(dispatcher._cache).__name__ == "FunctionCache", kernel.__name__


def test_compiled_kernels_are_reused_by_the_next_process(tmp_path: Path) -> None:
    code = (
        "import numpy as np\n"
        "from flawmap.models.patchcore.search import _cluster_sums\n"
        "x = np.ones((6, 3), np.float32); labels = np.array([0, 1, 0, 1, 1, 0], np.int64)\n"
        "assert _cluster_sums(x, labels, 2).sum() == 18\n"
        "stats = _cluster_sums.dispatcher.stats\n"
        "result = [sum(stats.cache_hits.values()), sum(stats.cache_misses.values())]"
    )
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    first = _modules_after(code, env)["result"]
    second = _modules_after(code, env)["result"]
    assert first == [0, 1]  # compiled and written to the cache
    assert second == [1, 0]  # loaded from it, not compiled again
