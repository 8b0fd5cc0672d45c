"""The command line under bad options, bad output folders, colliding and unreadable inputs,
concurrent runs, crashes and Ctrl-C.

Every test builds its own small inputs (64 px, ``--weights random``) and asserts one specific
outcome: the exit status and a message naming the offending option, value or path, or the
documented correct behaviour. Exit statuses: 0 ok, 2 user error, 3 some predict inputs failed,
130 interrupted, 1 internal error.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from flawmap import cli
from flawmap.cli import main
from flawmap.errors import ConfigError
from flawmap.interrupts import HeldInterrupts, interrupt_safe
from flawmap.outputs import (
    FolderLock,
    atomic_write,
    check_output_folder,
    output_paths,
    unique_paths,
)
from tests.synthetic import textured_image

FIT = ["--model", "patchcore", "--image-size", "64", "--weights", "random", "--quiet"]
FIT += ["--param", "coreset_ratio=0.2", "--param", "threshold_holdout=0.25"]
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return env


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(textured_image(np.random.default_rng(seed))).save(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, mvtec_category: Path) -> Path:
    out = tmp_path_factory.mktemp("cli") / "model"
    assert main(["fit", "--data", str(mvtec_category), *FIT, "--out", str(out)]) == 0
    return out


def _read_rows(out: Path) -> list[dict[str, str]]:
    with (out / "scores.csv").open() as f:
        return list(csv.DictReader(f))


def _unwritable_folder(tmp_path: Path) -> Path:
    """A path whose folder cannot be written (chmod for users, a read-only mount for root)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked / "out"
    for candidate in (Path("/sys/flawmap-test-out"), Path("/proc/flawmap-test-out")):
        try:
            check_output_folder(candidate)
        except ConfigError:
            return candidate
    pytest.skip("running as root without a read-only folder to write to")


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--threads", "0"], ["--threads", "0"]),
        (["--threads", "-1"], ["--threads", "-1"]),
        (["--seed", "-1"], ["--seed", "-1"]),
        (["--image-size", "0"], ["--image-size", "0"]),
        (["--image-size", "64x-3"], ["--image-size", "64x-3"]),
        (["--image-size", "big"], ["--image-size", "big"]),
        (["--image-size", "100000"], ["--image-size", "100000"]),
    ],
    ids=["threads-0", "threads-neg", "seed-neg", "size-0", "size-neg-w", "size-text", "size-huge"],
)
def test_fit_options_are_checked_before_any_work(
    argv: list[str], names: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "m"
    code = main(["fit", "--data", str(tmp_path / "nowhere"), "--model", "padim", *argv,
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert all(name in err for name in names), err
    assert "Traceback" not in err and not out.exists()


def test_image_size_limit_comes_from_the_library(capsys: pytest.CaptureFixture) -> None:
    from flawmap.data.transforms import MAX_IMAGE_SIZE

    assert cli.image_size(f"{MAX_IMAGE_SIZE}x16") == (MAX_IMAGE_SIZE, 16)
    code = main(["demo", "--image-size", str(MAX_IMAGE_SIZE + 1)])
    assert code == 2 and f"at most {MAX_IMAGE_SIZE}" in capsys.readouterr().err


def test_negative_latency_runs_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["evaluate", str(tmp_path), "--data", str(tmp_path), "--out",
                 str(tmp_path / "r"), "--latency-runs", "-1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--latency-runs" in err and "-1" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "abc"])
def test_threshold_must_be_a_finite_number(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["predict", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "p"),
                 "--threshold", value])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--threshold" in err and value in err


def test_negative_scientific_threshold_is_a_value(model_dir: Path, tmp_path: Path) -> None:
    """``--threshold -1e30`` used to be read as an unknown option; now every image is flagged."""
    _png(tmp_path / "in" / "a.png")
    out = tmp_path / "p"
    code = main(["predict", str(model_dir), str(tmp_path / "in"), "--out", str(out), "--quiet",
                 "--threshold", "-1e30"])  # fmt: skip
    assert code == 0
    rows = _read_rows(out)
    assert [r["label"] for r in rows] == ["defective"] and float(rows[0]["threshold"]) < -1e29


def test_alpha_outside_zero_one_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["compare", str(tmp_path / "r.json"), "--metric", "m", "--alpha", "1.5",
                 "--out", str(tmp_path / "c")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--alpha" in err and "1.5" in err


def test_help_and_unknown_commands_return_argparse_statuses(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    assert "Exit status" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------------------------------ output folders
def _fit_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", "--data", str(data), *FIT, "--out", str(out), *extra]


def test_fit_into_an_existing_file_fails_before_fitting(
    mvtec_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "model"
    target.write_text("not a folder")
    start = time.perf_counter()
    code = main(_fit_argv(mvtec_category, target))
    captured = capsys.readouterr()
    assert code == 2 and str(target) in captured.err and "is a file" in captured.err
    assert "fitting" not in captured.out and time.perf_counter() - start < 30
    assert target.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["fit", "evaluate", "predict", "compare"])
def test_unwritable_out_fails_at_once(
    command: str, mvtec_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = _unwritable_folder(tmp_path)
    argv = {
        "fit": _fit_argv(mvtec_category, out),
        "evaluate": ["evaluate", str(tmp_path), "--data", str(mvtec_category), "--out", str(out)],
        "predict": ["predict", str(tmp_path), str(mvtec_category), "--out", str(out)],
        "compare": ["compare", str(tmp_path / "r.json"), "--metric", "m", "--out", str(out)],
    }[command]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2 and str(out) in captured.err and "cannot be written" in captured.err
    assert "fitting" not in captured.out


@pytest.mark.parametrize("command", ["evaluate", "predict", "compare", "demo"])
def test_out_that_is_a_file_fails_at_once(
    command: str, mvtec_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "taken.txt"
    out.write_text("keep me")
    argv = {
        "evaluate": ["evaluate", str(tmp_path), "--data", str(mvtec_category), "--out", str(out)],
        "predict": ["predict", str(tmp_path), str(mvtec_category), "--out", str(out)],
        "compare": ["compare", str(tmp_path / "r.json"), "--metric", "m", "--out", str(out)],
        "demo": ["demo", "--out", str(out)],
    }[command]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and f"--out {out} is a file" in err
    assert out.read_text() == "keep me"


def test_refit_into_a_model_folder_needs_overwrite(
    model_dir: Path, mvtec_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    before = (model_dir / "config.json").read_text()
    code = main(_fit_argv(mvtec_category, model_dir))
    captured = capsys.readouterr()
    assert code == 2 and "--overwrite" in captured.err and str(model_dir) in captured.err
    assert "fitting" not in captured.out and (model_dir / "config.json").read_text() == before
    copy = tmp_path / "again"
    shutil.copytree(model_dir, copy)
    assert main(_fit_argv(mvtec_category, copy, "--seed", "1", "--overwrite")) == 0
    assert json.loads((copy / "config.json").read_text())["params"]["seed"] == 1


# ------------------------------------------------------------------------------ predict outputs
def test_output_names_are_unique_by_construction(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    files = [_png(a / "000.png"), _png(b / "000.png"), _png(a / "x.png"), _png(a / "x.jpg")]
    files += [files[2], files[2]]  # the same file twice, then given directly
    roots = [a, b, a, a, a, files[2]]
    overlays, maps = output_paths(files, roots)
    assert len(set(overlays)) == len(files) and len(set(maps)) == len(files)
    assert overlays[:2] == [
        PurePosixPath("overlays/a/000.png"),
        PurePosixPath("overlays/b/000.png"),
    ]
    assert overlays[3] == PurePosixPath("overlays/a/x_jpg.png")
    assert overlays[5] == PurePosixPath("overlays/x.png")
    # names that differ only in case are kept apart too (case-insensitive file systems)
    natural = [PurePosixPath("o/A.png"), PurePosixPath("o/a.png"), PurePosixPath("o/b.png")]
    unique = unique_paths(natural, [Path("A.png"), Path("a.png"), Path("b.png")])
    assert len({p.as_posix().casefold() for p in unique}) == 3 and unique[2] == natural[2]


def test_colliding_inputs_get_their_own_files(model_dir: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "in" / "a", tmp_path / "in" / "b"
    _png(a / "000.png", 1)
    _png(b / "000.png", 2)
    _png(a / "x.png", 3)
    Image.open(a / "x.png").save(a / "x.jpg")
    out = tmp_path / "p"
    code = main(["predict", str(model_dir), str(a), str(b), str(a / "x.png"), "--out", str(out),
                 "--save-maps", "--quiet"])  # fmt: skip
    assert code == 0
    rows = _read_rows(out)
    assert len(rows) == 5
    overlays = [r["overlay"] for r in rows]
    maps = [r["map"] for r in rows]
    assert len(set(overlays)) == 5 and len(set(maps)) == 5
    assert all((out / p).is_file() for p in overlays + maps)
    assert len(list((out / "overlays").rglob("*.png"))) == 5
    # each overlay shows its own input: a's and b's 000.png differ, so their overlays do too
    first, second = (np.asarray(Image.open(out / p)) for p in overlays[:2])
    assert rows[0]["path"].endswith("a/000.png") and not np.array_equal(first, second)


def test_outputs_inside_an_input_folder_are_not_scored_again(
    model_dir: Path, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    _png(images / "a.png")
    out = images / "results"
    argv = ["predict", str(model_dir), str(images), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert main(argv) == 0  # the second run must not score the first run's overlays
    rows = _read_rows(out)
    assert [Path(r["path"]).name for r in rows] == ["a.png"]
    assert [r["overlay"] for r in rows] == ["overlays/a.png"]


def test_outputs_are_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "scores.csv"
    target.write_text("old complete file\n")

    def broken_writer(tmp: Path) -> None:
        tmp.write_text("half a fi")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, broken_writer)
    assert target.read_text() == "old complete file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]  # no temporary left
    atomic_write(target, lambda tmp: tmp.write_text("new\n"))
    assert target.read_text() == "new\n"


def test_a_second_concurrent_predict_into_one_folder_is_refused(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _png(tmp_path / "in" / "a.png")
    out = tmp_path / "p"
    with FolderLock(out, "flawmap predict"):  # a first run is writing there
        code = main(["predict", str(model_dir), str(tmp_path / "in"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "another flawmap predict is writing to" in err and str(out) in err
    assert not (out / "scores.csv").exists()
    assert main(["predict", str(model_dir), str(tmp_path / "in"), "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip


def test_lock_is_held_across_processes(tmp_path: Path) -> None:
    code = (
        "import sys, time; from flawmap.outputs import FolderLock\n"
        "with FolderLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match="another flawmap is writing to"):
            FolderLock(tmp_path).__enter__()
    finally:
        proc.kill()
        proc.wait()
    with FolderLock(tmp_path):  # released when the holder died
        pass


# ------------------------------------------------------------------------------ partial failure
def _bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = _png(folder / "good.png")
    garbage = folder / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    truncated = folder / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    return {"good": good, "garbage": garbage, "empty": empty, "truncated": truncated}


def test_unreadable_files_are_recorded_and_the_rest_scored(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    files = _bad_inputs(tmp_path / "in")
    out = tmp_path / "p"
    code = main(["predict", str(model_dir), str(tmp_path / "in"), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 3
    assert "1 images scored" in captured.out and "3 failed" in captured.out
    rows = {Path(r["path"]).name: r for r in _read_rows(out)}
    assert rows["good.png"]["score"] and not rows["good.png"]["error"]
    for name in ("garbage.png", "empty.jpg", "truncated.png"):
        assert rows[name]["score"] == "" and name in rows[name]["error"]
        assert name in captured.err  # the summary names each failed file
    payload = json.loads((out / "scores.json").read_text())
    assert [r["path"] for r in payload] == [str(p) for p in sorted(files.values())]
    assert sum(r["error"] is not None for r in payload) == 3
    assert (out / rows["good.png"]["overlay"]).is_file()


def test_predict_where_nothing_is_readable_exits_3(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "in" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code = main(["predict", str(model_dir), str(bad), "--out", str(tmp_path / "p"), "--quiet"])
    assert code == 3 and "0 images scored" in capsys.readouterr().out
    rows = _read_rows(tmp_path / "p")
    assert len(rows) == 1 and "bad.png" in rows[0]["error"]


def test_predict_library_helper_reads_each_file_once(model_dir: Path, tmp_path: Path) -> None:
    from flawmap.data import PathsDataset
    from flawmap.models import load_model
    from flawmap.scoring import predict_readable

    _bad_inputs(tmp_path / "in")
    detector = load_model(model_dir)
    dataset = PathsDataset([tmp_path / "in"], transform=detector.transform)
    chunks = list(predict_readable(detector, dataset, chunk_size=3))
    assert [len(c.indices) + len(c.failures) for c in chunks] == [3, 1]
    scored = [i for c in chunks for i in c.indices]
    failed = [f.index for c in chunks for f in c.failures]
    assert sorted(scored + failed) == [0, 1, 2, 3] and len(scored) == 1
    with pytest.raises(ConfigError, match="chunk_size"):
        next(predict_readable(detector, dataset, chunk_size=0))


def test_a_missing_input_path_is_a_user_error(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "no_such_folder"
    code = main(["predict", str(model_dir), str(missing), "--out", str(tmp_path / "p")])
    assert code == 2 and str(missing) in capsys.readouterr().err


# ------------------------------------------------------------------------------ crashes, Ctrl-C
def test_internal_errors_exit_1_with_one_line_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def crash(args: object) -> int:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "cmd_models", crash)
    monkeypatch.delenv("FLAWMAP_DEBUG", raising=False)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: boom second line" in err
    assert "report" in err and "Traceback" not in err
    monkeypatch.setenv("FLAWMAP_DEBUG", "1")
    assert main(["models"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_keyboard_interrupt_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_models", interrupted)
    assert main(["models"]) == 130
    err = capsys.readouterr().err
    assert err == "flawmap: interrupted\n"


def test_ctrl_c_during_fit_leaves_no_model_folder(mvtec_category: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flawmap.cli", *_fit_argv(mvtec_category, out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed just before the fit starts
    assert line.startswith("fitting"), line
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "flawmap: interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _interrupt_self() -> None:
    """Send SIGINT to this process and give its Python-level handler the chance to run."""
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(100):
        time.sleep(0.001)


def _swallowing_kernel(then_raise: bool = False) -> str:
    """What llvmlite's ctypes callbacks do to a Ctrl-C during numba compilation: swallow it."""
    # a ctypes callback prints "Exception ignored on calling ctypes callback function"
    with contextlib.suppress(KeyboardInterrupt):
        _interrupt_self()
    if then_raise:
        raise RuntimeError("no compiled object yet")  # what numba's cache step then reports
    return "continued"


def test_a_swallowed_ctrl_c_inside_a_kernel_still_stops_the_run() -> None:
    assert _swallowing_kernel() == "continued"  # the hazard: the interrupt is simply lost
    with pytest.raises(KeyboardInterrupt):
        interrupt_safe(_swallowing_kernel)()
    with pytest.raises(KeyboardInterrupt) as info:
        interrupt_safe(_swallowing_kernel)(then_raise=True)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_is_not_held() -> None:
    reached = []

    def stubborn() -> None:
        _interrupt_self()  # held
        reached.append("after first")
        _interrupt_self()  # delivered at once
        reached.append("after second")

    with pytest.raises(KeyboardInterrupt), HeldInterrupts():
        stubborn()
    assert reached == ["after first"]


def test_ctrl_c_during_numba_compilation_stops_the_process(tmp_path: Path) -> None:
    """A real compile (empty numba cache) interrupted early ends in KeyboardInterrupt."""
    code = (
        "import sys, time\nimport numpy as np\n"
        "from flawmap.models.patchcore.search import ClusterPrunedSearch\n"
        "bank = np.random.default_rng(0).standard_normal((512, 8)).astype(np.float32)\n"
        "print('calling', flush=True)\n"
        "try:\n    ClusterPrunedSearch(n_clusters=4).fit(bank).query(bank[:16])\n"
        "except KeyboardInterrupt:\n    print('interrupted', flush=True); sys.exit(130)\n"
        "print('continued', flush=True)\n"
    )
    env = {**_env(), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "calling"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    if "continued" in stdout:
        pytest.skip("the kernels compiled before the signal arrived")
    assert proc.returncode == 130 and stdout.strip() == "interrupted", stdout + stderr
    assert "Exception ignored" not in stderr
