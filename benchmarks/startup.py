"""Start-up time of the ``flawmap`` command: median of N cold process starts per measure.

Every run is a fresh interpreter (the OS file cache is warm after the first), started as the
console script does (``from flawmap.cli import main``), wall clock from spawn:

- ``help``: ``flawmap --help``;
- ``models``: ``flawmap models``;
- ``predict_first_read``: ``flawmap predict`` until it opens its first input image (imports,
  model loading, listing the inputs): the overhead a user waits before any image is read;
- ``predict_total``: the whole ``flawmap predict`` of 8 images (256 px) with a PatchCore model
  (EfficientNet-Lite0, 256 px, random weights: the loading cost does not depend on the weights),
  numba's kernel cache warm;
- ``predict_total_empty_numba_cache``: the same with an empty numba cache each time (what the
  first run after installing pays: the kernels are compiled).

The largest imports of one ``predict`` run (``python -X importtime``) are listed too. With
``--baseline REF`` the same measures run on the source of a git commit (``git archive``) first,
for a before/after table. Results: ``benchmarks/results/startup.{json,md}``::

    python benchmarks/startup.py [--runs 5] [--baseline HEAD]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"help": 0.5, "models": 1.5, "predict_first_read": 2.0}
N_IMAGES, IMAGE_SIZE = 8, 256

CLI = "import sys\nfrom flawmap.cli import main\nsys.exit(main(sys.argv[1:]))\n"
FIRST_READ = """
import os, sys, time
start = float(os.environ["FLAWMAP_BENCH_T0"])
prefix = os.environ["FLAWMAP_BENCH_INPUTS"] + os.sep
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].startswith(prefix):
        sys.stdout.write(f"FIRST_READ {time.time() - start:.4f}\\n")
        sys.stdout.flush()
        os._exit(0)
sys.addaudithook(hook)
from flawmap.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env(src: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FLAWMAP_DEBUG"}
    env["PYTHONPATH"] = str(src)
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra)
    return env


def _run(code: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"failed: flawmap {' '.join(argv)}")
    return proc


def wall(argv: Sequence[str], env: dict[str, str]) -> float:
    """Seconds from spawn to exit of ``flawmap argv``."""
    start = time.perf_counter()
    _run(CLI, argv, env)
    return time.perf_counter() - start


def first_read(argv: Sequence[str], inputs: Path, env: dict[str, str]) -> float:
    """Seconds from spawn until ``flawmap argv`` opens a file under ``inputs``."""
    env = {**env, "FLAWMAP_BENCH_INPUTS": str(inputs)}
    env["FLAWMAP_BENCH_T0"] = repr(time.time())
    proc = _run(FIRST_READ, argv, env)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("FIRST_READ ")]
    if not lines:
        raise SystemExit("predict ended without reading an input image")
    return float(lines[-1].split()[1])


def largest_imports(argv: Sequence[str], inputs: Path, env: dict[str, str]) -> list[list[Any]]:
    """(module, cumulative seconds) of the 8 slowest top-level imports of one predict run."""
    env = {**env, "FLAWMAP_BENCH_INPUTS": str(inputs), "FLAWMAP_BENCH_T0": repr(time.time())}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", FIRST_READ, *argv],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    found: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if not name.startswith("  ") and name.strip():  # top level: imported by the program
            found[name.strip()] = found.get(name.strip(), 0.0) + int(cumulative) / 1e6
    return [[k, round(v, 3)] for k, v in sorted(found.items(), key=lambda kv: -kv[1])[:8]]


def write_category(root: Path) -> None:
    """Good images (train/good, test/good) of a striped surface, IMAGE_SIZE px, for fitting."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE][1].astype(np.float32)
    for split, n in (("train/good", 12), ("test/good", N_IMAGES)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = 128 + 40 * np.sin(2 * np.pi * x / 32 + rng.uniform(0, 6.3))
            base = base + rng.normal(0, 4, base.shape)
            pixels = np.repeat(np.clip(base, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
            Image.fromarray(pixels).save(root / split / f"{i:03d}.png")


def measure(src: Path, work: Path, runs: int) -> dict[str, Any]:
    """Every measure for the flawmap source tree ``src``; ``work`` holds data and outputs."""
    cache = work / "numba-cache"
    env = _env(src, NUMBA_CACHE_DIR=str(cache))
    category = work / "widget"
    if not category.is_dir():
        write_category(category)
    model = work / "model"
    if not model.exists():
        fit = ["fit", "--data", str(category), "--model", "patchcore", "--weights", "random"]
        fit += ["--image-size", str(IMAGE_SIZE), "--quiet", "--out", str(model)]
        _run(CLI, fit, env)
    inputs = (category / "test" / "good").resolve()
    predict = ["predict", str(model), str(inputs), "--out", str(work / "pred"), "--quiet"]
    _run(CLI, predict, env)  # fills the numba cache and the OS file cache
    times: dict[str, list[float]] = {k: [] for k in ("help", "models", "predict_first_read")}
    times["predict_total"] = []
    times["predict_total_empty_numba_cache"] = []
    for _ in range(runs):  # interleaved, so a change in machine load touches every measure
        times["help"].append(wall(["--help"], env))
        times["models"].append(wall(["models"], env))
        times["predict_first_read"].append(first_read(predict, inputs, env))
        times["predict_total"].append(wall(predict, env))
        with tempfile.TemporaryDirectory(dir=work) as empty:
            times["predict_total_empty_numba_cache"].append(
                wall(predict, {**env, "NUMBA_CACHE_DIR": empty})
            )
    return {
        "medians_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "largest_imports_s": largest_imports(predict, inputs, env),
    }


def export_commit(ref: str, dest: Path) -> Path:
    """The ``src`` folder of git commit ``ref``, extracted under ``dest`` (read-only git use)."""
    archive = dest / "source.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def _cell(value: float, target: float | None) -> str:
    if target is None:
        return f"{value:.2f}"
    return f"{value:.2f} ({'meets' if value <= target else 'misses'} ≤ {target})"


def markdown(report: dict[str, Any], command: str) -> str:
    labels = {
        "help": "`flawmap --help`",
        "models": "`flawmap models`",
        "predict_first_read": "`flawmap predict`: start until the first image is read",
        "predict_total": f"`flawmap predict` of {N_IMAGES} images, whole run",
        "predict_total_empty_numba_cache": "the same, empty numba cache (kernels compiled)",
    }
    columns = [name for name in ("baseline", "current") if name in report["results"]]
    heads = [f"{c} ({report['results'][c]['source']})" for c in columns]
    lines = [
        f"Command: `{command}`",
        "",
        f"Median of {report['runs']} cold process starts each, seconds (wall clock from spawn); "
        f"{report['machine']['cpus']} CPUs, load average {report['machine']['load_before']} "
        f"before and {report['machine']['load_after']} after; Python "
        f"{report['machine']['python']}. PatchCore, EfficientNet-Lite0, {IMAGE_SIZE} px.",
        "",
        "| measure | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for key, label in labels.items():
        cells = [_cell(report["results"][c]["medians_s"][key], TARGETS.get(key)) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Largest imports of one `predict` run (`-X importtime`; cumulative seconds of the "
        "modules flawmap's command imported directly, each shared dependency counted where it "
        "was first imported: `flawmap.data` carries torch, `timm` carries torchvision and "
        "torch._dynamo):",
        "",
    ]
    for c, head in zip(columns, heads, strict=True):
        imports = ", ".join(f"{m} {s:.2f}" for m, s in report["results"][c]["largest_imports_s"])
        lines.append(f"- {head}: {imports}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts per measure")
    parser.add_argument("--baseline", default=None, help="git ref to measure first (e.g. HEAD)")
    parser.add_argument("--name", default="startup", help="results file stem")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="flawmap-startup-") as tmp:
        sources = [("current", ROOT / "src", "working tree")]
        if args.baseline:
            base = Path(tmp) / "baseline"
            base.mkdir()
            sources.insert(0, ("baseline", export_commit(args.baseline, base), args.baseline))
        for name, src, label in sources:
            work = Path(tmp) / f"work-{name}"
            work.mkdir()
            print(f"== {name}: {label}", flush=True)
            results[name] = {"source": label, **measure(src, work, args.runs)}
            print(json.dumps(results[name]["medians_s"]), flush=True)
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "runs": args.runs,
        "targets_s": TARGETS,
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "results": results,
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    command = f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:])
    text = markdown(report, command.strip())
    (out / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
