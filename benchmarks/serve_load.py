"""Load test of ``flawmap serve``: throughput, latency, errors and server memory under 16 clients,
then bad requests mixed into good ones. Loopback only, bounded in count and time.

The model (default): PatchCore as shipped for bottle (``--params``, the configuration of
``benchmarks/deploy_chosen.py``: 1 % coreset, automatic tiling, default image size), fitted on all
of MVTec AD bottle ``train/good`` with ``--seed``; or ``--model-dir`` serves an existing model or
export folder. The server is a real ``flawmap serve`` subprocess on 127.0.0.1 (a free port, a
bearer token file, ``--max-upload-mb 8``, ``--threads``), its data folder in a temporary folder
removed at the end. The images sent are the bottle test images (good and defective), cycled.

- Phase 1 (load): ``--requests`` (1000) predict requests, one image each, from ``--clients`` (16)
  concurrent clients (a thread and an ``httpx.Client`` each). Reported: throughput (answered
  requests / wall time), client-side latency p50/p95/p99, errors (any answer but 200 with a score,
  503 counted apart), and the server's RSS (process and children, sampled every 0.1 s with the
  number of answered requests): after warm-up, at the start of the last 500 requests, at the end,
  peak, and the growth over the last 500 (see ``FLAT_RULE``).
- Phase 2 (bad inputs): ``--bad-phase-requests`` (1000) requests, 20 % of them bad, shuffled with
  ``--seed``: good predicts plus, in equal numbers, non-image bytes named ``.png`` (422), the first
  half of a real PNG (422), a decompression bomb (a valid 49 kB PNG of 20000 x 20000 pixels; 422
  from the pixel limit, before decoding), an upload above ``--max-upload-mb`` (413) and a wrong
  token (401). Checked: every bad request gets its 4xx, every good one 200 with the same score as
  that image's first score (relative 1e-5), no 5xx, and afterwards ``/health``, ``/ready`` and one
  more predict succeed.

Both phases stop taking new requests after ``--max-seconds`` (counted from the first request of
phase 1) and are then reported as incomplete. Exit status 0 when every check passes, else 1.
Run it alone on a quiet machine (it is a timing benchmark; clients and server share the CPUs)::

    python benchmarks/serve_load.py --datasets ../shared/datasets --threads 2

Writes ``benchmarks/results/serve_load.{json,md}`` (``--out`` for another folder, ``--name`` for
another file stem). ``--export openvino:bf16`` serves the fitted model's export (the torch-free
runtime) instead of the model folder::

    python benchmarks/serve_load.py --datasets ../shared/datasets --threads 2 \\
        --export openvino:bf16 --name serve_load_openvino
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import queue
import random
import secrets
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from common import CATEGORIES, parse_study_arguments

MIB = 2**20
KINDS = ("good", "not_image", "truncated", "bomb", "oversized", "wrong_token")
BAD_KINDS = KINDS[1:]
EXPECTED = {
    "good": 200,
    "not_image": 422,
    "truncated": 422,
    "bomb": 422,
    "oversized": 413,
    "wrong_token": 401,
}
BAD_FRACTION = 0.2
BOMB_SIDE = 20_000
SCORE_RTOL = 1e-5
#: "Flat" memory: how much the server's RSS may grow over the last ``window`` requests.
FLAT_MIB, FLAT_FRACTION = 10.0, 0.02
FLAT_RULE = (
    "window = the last 500 requests of phase 1 (half of them when fewer than 1000); flat = the "
    "median server RSS while the window's last tenth was answered exceeds the median while its "
    f"first tenth was answered by less than max({FLAT_MIB:g} MiB, {FLAT_FRACTION:.0%} of the "
    "latter); not measured when the phase is incomplete"
)
SAMPLE_INTERVAL_S = 0.1


# ---------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Job:
    """One request to send: its kind (``KINDS``) and the test image it uses (-1: none)."""

    index: int
    kind: str
    image: int


@dataclass
class Outcome:
    """What came back for a :class:`Job`."""

    job: Job
    status: int | None  # None: no answer (the exception is in ``failure``)
    seconds: float
    score: float | None = None
    server_ms: float | None = None
    code: str | None = None  # the "error" of a JSON error answer
    failure: str | None = None


class Payloads:
    """The bytes of every kind of request, built once."""

    def __init__(self, images: list[tuple[str, bytes]], max_upload_mb: float, seed: int) -> None:
        self.images = images
        rng = random.Random(seed)
        self.not_image = b"this is not an image, only text named like one\n" * 40
        self.bomb = decompression_bomb(BOMB_SIDE)
        # 1 MiB above the server's limit, incompressible
        self.oversized = rng.randbytes(int(max_upload_mb * MIB) + MIB)

    def body(self, job: Job) -> tuple[str, bytes]:
        """(upload file name, bytes) of ``job``."""
        if job.kind in ("good", "wrong_token"):
            return self.images[job.image]
        if job.kind == "truncated":
            name, data = self.images[job.image]
            return f"truncated_{name}", data[: len(data) // 2]
        if job.kind == "not_image":
            return "not_an_image.png", self.not_image
        if job.kind == "bomb":
            return "bomb.png", self.bomb
        if job.kind == "oversized":
            return "oversized.png", self.oversized
        raise ValueError(job.kind)


def decompression_bomb(side: int) -> bytes:
    """A valid PNG of ``side`` x ``side`` black 1-bit pixels (~side²/8 bytes inflated, a
    thousandth of that on the wire), written chunk by chunk so it is never held decoded.
    Its header is read back with Pillow (pixel limit lifted for that read only)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    deflate = zlib.compressobj(9)
    parts = []
    for start in range(0, side, 500):
        parts.append(deflate.compress(row * min(500, side - start)))
    parts.append(deflate.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(png)) as im:
            if im.size != (side, side) or im.format != "PNG":
                raise RuntimeError(f"the bomb reads back as {im.format} {im.size}")
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return png


def send(client: httpx.Client, model: str, payloads: Payloads, job: Job) -> Outcome:
    """Send ``job`` as a multipart predict request with one ``files`` part."""
    name, data = payloads.body(job)
    headers = {"Authorization": "Bearer wrong-" + "0" * 34} if job.kind == "wrong_token" else None
    start = time.perf_counter()
    try:
        response = client.post(
            f"/v1/models/{model}/predict",
            files={"files": (name, data, "image/png")},
            headers=headers,
        )
        body = response.content
    except httpx.HTTPError as exc:
        seconds = time.perf_counter() - start
        return Outcome(job, None, seconds, failure=f"{type(exc).__name__}: {exc}"[:300])
    seconds = time.perf_counter() - start
    outcome = Outcome(job, response.status_code, seconds)
    try:
        payload = json.loads(body)
    except ValueError:
        outcome.code = f"non-JSON body: {body[:100]!r}"
        return outcome
    if response.status_code == 200:
        try:
            result = payload["results"][0]
            outcome.score = float(result["score"])
            outcome.server_ms = float(result["latency_ms"])
        except (KeyError, IndexError, TypeError, ValueError):
            outcome.code = f"200 without a result: {str(payload)[:200]}"
    elif isinstance(payload, dict):
        outcome.code = str(payload.get("error"))
    return outcome


# ---------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_rss(process: psutil.Process) -> int:
    """RSS of ``process`` and its children, in bytes (0 once it has exited)."""
    try:
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return int(total)
    except psutil.Error:
        return 0


def high_water_mark(pid: int) -> int | None:
    """The kernel's peak RSS of ``pid`` (``VmHWM``, Linux), in bytes; None where unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextlib.contextmanager
def serve(
    model_dir: Path, workdir: Path, args: argparse.Namespace, token: str
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """A ``flawmap serve`` subprocess on a free loopback port, ready (``GET /ready``): yields
    (process, base URL, its log file); terminated (then killed) on the way out, whatever
    happened."""
    token_file = workdir / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "flawmap.cli",
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(workdir / "data"),
        "--token-file",
        str(token_file),
        "--max-upload-mb",
        str(args.max_upload_mb),
        "--queue",
        str(args.queue),
        "--threads",
        str(args.threads),
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    env.pop("FLAWMAP_MAX_PIXELS", None)  # the server's default pixel limit
    log_path = workdir / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(process, url, token, args.start_timeout, log_path)
            yield process, url, log_path
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=20)


def wait_ready(
    process: subprocess.Popen[bytes], url: str, token: str, timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.stderr.write(log.read_text(errors="replace")[-4000:])
            raise SystemExit(f"the server exited with status {process.returncode} before ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", headers=headers, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    sys.stderr.write(log.read_text(errors="replace")[-4000:])
    raise SystemExit(f"the server was not ready after {timeout:g} s")


# ---------------------------------------------------------------------------------- phases
@dataclass
class PhaseRun:
    outcomes: list[Outcome]
    wall_s: float
    samples: list[tuple[float, int, int]]  # (seconds since start, answered, server RSS bytes)
    planned: int

    @property
    def complete(self) -> bool:
        return len(self.outcomes) == self.planned


def run_phase(
    title: str,
    jobs: list[Job],
    clients: list[httpx.Client],
    send_job: Callable[[httpx.Client, Job], Outcome],
    server: psutil.Process,
    deadline: float,
) -> PhaseRun:
    """Send ``jobs`` from every client concurrently (each takes the next job when its previous
    answer is in) until all are answered or ``deadline`` (perf_counter) has passed, sampling the
    server's RSS with the number of answers so far."""
    work: queue.SimpleQueue[Job] = queue.SimpleQueue()
    for job in jobs:
        work.put(job)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = threading.Event()
    samples: list[tuple[float, int, int]] = []
    start = time.perf_counter()

    def client_loop(client: httpx.Client) -> None:
        while not stop.is_set() and time.perf_counter() < deadline:
            try:
                job = work.get_nowait()
            except queue.Empty:
                return
            outcome = send_job(client, job)
            with lock:
                outcomes.append(outcome)

    def sampler() -> None:
        while not stop.is_set():
            with lock:
                answered = len(outcomes)
            samples.append((time.perf_counter() - start, answered, process_rss(server)))
            stop.wait(SAMPLE_INTERVAL_S)

    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()
    threads = [threading.Thread(target=client_loop, args=(c,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    step = max(1, len(jobs) // 10)
    reported = 0
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.25)
            answered = len(outcomes)
            if answered // step > reported // step:
                reported = answered
                rss = samples[-1][2] / MIB if samples else float("nan")
                elapsed = time.perf_counter() - start
                print(
                    f"  {title}: {answered}/{len(jobs)} answered, {elapsed:.1f} s, "
                    f"server RSS {rss:.0f} MiB",
                    flush=True,
                )
    finally:
        stop.set()
    wall = time.perf_counter() - start
    sampling.join()
    samples.append((wall, len(outcomes), process_rss(server)))
    return PhaseRun(outcomes, wall, samples, len(jobs))


# ---------------------------------------------------------------------------------- analysis
def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
    }


def rss_while(samples: list[tuple[float, int, int]], low: int, high: int) -> float | None:
    """Median RSS (MiB) of the samples taken while ``low <= answered < high``; else the first
    sample at or after ``low`` answers; None when there is none."""
    inside = [rss for _, answered, rss in samples if low <= answered < high]
    if inside:
        return statistics.median(inside) / MIB
    after = [rss for _, answered, rss in samples if answered >= low]
    return after[0] / MIB if after else None


def memory_summary(run: PhaseRun, warmup: int, window: int) -> dict[str, Any]:
    """The server's RSS through phase 1 and whether it stayed flat over the last ``window``."""
    n = run.planned
    band = max(1, window // 10)
    start_window = n - window
    at_window_start = rss_while(run.samples, start_window, start_window + band)
    at_window_end = rss_while(run.samples, n - band, n)
    in_window = [rss for _, answered, rss in run.samples if answered >= start_window]
    summary: dict[str, Any] = {
        "rule": FLAT_RULE,
        "window_requests": window,
        "band_requests": band,
        "samples": len(run.samples),
        "rss_before_first_mib": run.samples[0][2] / MIB if run.samples else None,
        "rss_after_warmup_mib": rss_while(run.samples, warmup, warmup + band),
        "warmup_requests": warmup,
        "rss_window_start_mib": at_window_start,
        "rss_window_end_mib": at_window_end,
        "rss_end_idle_mib": run.samples[-1][2] / MIB if run.samples else None,
        "rss_peak_mib": max(s[2] for s in run.samples) / MIB if run.samples else None,
        "rss_peak_in_window_mib": max(in_window) / MIB if in_window else None,
        "growth_mib": None,
        "growth_percent": None,
        "flat": None,
    }
    if run.complete and at_window_start is not None and at_window_end is not None:
        growth = at_window_end - at_window_start
        summary["growth_mib"] = growth
        summary["growth_percent"] = 100.0 * growth / at_window_start
        summary["flat"] = growth < max(FLAT_MIB, FLAT_FRACTION * at_window_start)
    return summary


def scores_agree(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=SCORE_RTOL, abs_tol=1e-12)


class Reference:
    """The first score each test image got; later scores are compared with it."""

    def __init__(self) -> None:
        self.scores: dict[int, float] = {}
        self.worst_relative = 0.0

    def check(self, image: int, score: float) -> bool:
        first = self.scores.setdefault(image, score)
        if first != score:
            relative = abs(score - first) / max(abs(first), 1e-12)
            self.worst_relative = max(self.worst_relative, relative)
        return scores_agree(first, score)


def phase1_summary(run: PhaseRun, reference: Reference, args: argparse.Namespace) -> dict:
    ok = [o for o in run.outcomes if o.status == 200 and o.score is not None]
    failed = [o for o in run.outcomes if not (o.status == 200 and o.score is not None)]
    mismatched = sum(not reference.check(o.job.image, o.score) for o in ok)  # type: ignore[arg-type]
    statuses = Counter(str(o.status) for o in failed)
    window = min(500, run.planned // 2)
    warmup = min(100, run.planned // 10)
    server_ms = [o.server_ms for o in ok if o.server_ms is not None]
    return {
        "requests": run.planned,
        "clients": args.clients,
        "answered": len(run.outcomes),
        "complete": run.complete,
        "ok": len(ok),
        "errors": len(failed),
        "errors_by_status": dict(statuses),
        "busy_503": statuses.get("503", 0),
        "error_examples": [describe(o) for o in failed[:5]],
        "score_mismatches": mismatched,
        "wall_s": run.wall_s,
        "throughput_rps": len(ok) / run.wall_s if run.wall_s > 0 else None,
        "latency": percentiles_ms([o.seconds for o in ok]),
        "server_scoring_ms_median": statistics.median(server_ms) if server_ms else None,
        "memory": memory_summary(run, warmup, window),
    }


def phase2_summary(run: PhaseRun, reference: Reference) -> dict:
    kinds: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        mine = [o for o in run.outcomes if o.job.kind == kind]
        wrong = [o for o in mine if o.status != EXPECTED[kind]]
        if kind == "good":
            wrong += [o for o in mine if o.status == 200 and o.score is None]
        kinds[kind] = {
            "sent": sum(1 for _ in mine),
            "expected_status": EXPECTED[kind],
            "as_expected": len(mine) - len(wrong),
            "mismatches": len(wrong),
            "statuses": dict(Counter(str(o.status) for o in mine)),
            "error_codes": dict(Counter(str(o.code) for o in mine if o.code is not None)),
            "mismatch_examples": [describe(o) for o in wrong[:3]],
            "latency": percentiles_ms([o.seconds for o in mine if o.status is not None]),
        }
    good = [o for o in run.outcomes if o.job.kind == "good" and o.score is not None]
    kinds["good"]["score_mismatches"] = sum(
        not reference.check(o.job.image, o.score)  # type: ignore[arg-type]
        for o in good
    )
    return {
        "requests": run.planned,
        "answered": len(run.outcomes),
        "complete": run.complete,
        "bad": sum(1 for o in run.outcomes if o.job.kind != "good"),
        "no_answer": sum(1 for o in run.outcomes if o.status is None),
        "server_errors_5xx": sum(1 for o in run.outcomes if o.status and o.status >= 500),
        "wall_s": run.wall_s,
        "kinds": kinds,
        "rss_peak_mib": max(s[2] for s in run.samples) / MIB if run.samples else None,
        "rss_end_idle_mib": run.samples[-1][2] / MIB if run.samples else None,
    }


def describe(o: Outcome) -> str:
    what = f"#{o.job.index} {o.job.kind} (image {o.job.image}): "
    if o.status is None:
        return what + f"no answer after {o.seconds:.2f} s ({o.failure})"
    return what + f"{o.status} {o.code or ''} after {o.seconds:.2f} s".rstrip()


def health_after(
    client: httpx.Client,
    model: str,
    payloads: Payloads,
    reference: Reference,
    process: subprocess.Popen[bytes],
) -> dict[str, Any]:
    """/health, /ready and one more good predict once phase 2 is over."""
    out: dict[str, Any] = {"process_running": process.poll() is None}
    for path in ("/health", "/ready"):
        try:
            out[path] = client.get(path).status_code
        except httpx.HTTPError as exc:
            out[path] = f"{type(exc).__name__}: {exc}"
    outcome = send(client, model, payloads, Job(-1, "good", 0))
    out["predict"] = outcome.status
    out["predict_score_agrees"] = outcome.score is not None and reference.check(0, outcome.score)
    out["healthy"] = (
        out["process_running"]
        and out["/health"] == 200
        and out["/ready"] == 200
        and out["predict"] == 200
        and out["predict_score_agrees"]
    )
    return out


def checks(p1: dict, p2: dict | None, after: dict | None) -> list[tuple[str, bool, str]]:
    mem = p1["memory"]
    growth = (
        "not measured (phase incomplete)"
        if mem["growth_mib"] is None
        else f"{mem['growth_mib']:+.1f} MiB ({mem['growth_percent']:+.2f} %)"
    )
    out = [
        ("load: all requests answered", p1["complete"], f"{p1['answered']}/{p1['requests']}"),
        ("load: 0 errors", p1["errors"] == 0, f"{p1['errors']} ({p1['errors_by_status']})"),
        (
            "load: the same score for the same image",
            p1["score_mismatches"] == 0,
            f"{p1['score_mismatches']} mismatches",
        ),
        (
            f"load: server RSS flat over the last {mem['window_requests']} requests",
            bool(mem["flat"]),
            growth,
        ),
    ]
    if p2 is None or after is None:
        out.append(("bad inputs: phase run", False, "not run (time limit)"))
        return out
    out.append(
        ("bad inputs: all requests answered", p2["complete"], f"{p2['answered']}/{p2['requests']}")
    )
    for kind in KINDS:
        k = p2["kinds"][kind]
        detail = f"{k['as_expected']}/{k['sent']} got {k['expected_status']} ({k['statuses']})"
        out.append((f"bad inputs: {kind} -> {k['expected_status']}", k["mismatches"] == 0, detail))
    good = p2["kinds"]["good"]
    out.append(
        (
            "bad inputs: good scores equal their first score",
            good["score_mismatches"] == 0,
            f"{good['score_mismatches']} mismatches (rel. tol. {SCORE_RTOL:g})",
        )
    )
    out.append(("bad inputs: no 5xx", p2["server_errors_5xx"] == 0, str(p2["server_errors_5xx"])))
    detail = ", ".join(f"{k} {after[k]}" for k in ("/health", "/ready", "predict"))
    out.append(("healthy afterwards", bool(after["healthy"]), detail))
    return out


# ---------------------------------------------------------------------------------- output
def fmt(value: Any, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(record: dict[str, Any]) -> str:
    p1, p2 = record["phase1"], record.get("phase2")
    mem = p1["memory"]
    lat = p1["latency"]
    flat = {True: "yes", False: "**no**", None: "not measured"}[mem["flat"]]
    lines = [
        "# `flawmap serve` under load (`benchmarks/serve_load.py`)",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Model: {record['model']['description']}; server `--threads {record['threads']}`, "
        f"queue {record['server']['queue']}, upload limit {record['server']['max_upload_mb']:g} "
        f"MiB; {record['machine']['cpus']} CPUs shared by server and clients; load average "
        f"{record['machine']['loadavg_before'][0]:.2f} before.",
        "",
        "## Load",
        "",
        "| requests | clients | answered | errors (503) | throughput (req/s) | "
        "p50 / p95 / p99 (ms) | scoring median (ms) |",
        "|---|---|---|---|---|---|---|",
        f"| {p1['requests']} | {p1['clients']} | {p1['answered']} | "
        f"{p1['errors']} ({p1['busy_503']}) | {fmt(p1['throughput_rps'], '.2f')} | "
        f"{fmt(lat['p50_ms'], '.0f')} / {fmt(lat['p95_ms'], '.0f')} / "
        f"{fmt(lat['p99_ms'], '.0f')} | {fmt(p1['server_scoring_ms_median'])} |",
        "",
        "| server RSS (MiB) | before | after warm-up | last-window start | last-window end | "
        "peak | growth over last window | flat |",
        "|---|---|---|---|---|---|---|---|",
        f"| {mem['window_requests']}-request window, {mem['warmup_requests']} warm-up | "
        f"{fmt(mem['rss_before_first_mib'], '.0f')} | {fmt(mem['rss_after_warmup_mib'], '.0f')} "
        f"| {fmt(mem['rss_window_start_mib'], '.0f')} | {fmt(mem['rss_window_end_mib'], '.0f')} "
        f"| {fmt(mem['rss_peak_mib'], '.0f')} | {fmt(mem['growth_mib'], '+.1f')} MiB "
        f"({fmt(mem['growth_percent'], '+.2f')} %) | {flat} |",
        "",
        f"RSS = the server process and its children, sampled every {SAMPLE_INTERVAL_S:g} s; "
        "'after warm-up', 'start' and 'end' are medians of the samples taken while a tenth of "
        f"the window ({mem['band_requests']} requests) was answered. Rule: {FLAT_RULE}. "
        "Kernel peak RSS of the server (VmHWM, incl. loading): "
        f"{fmt(record['server']['vmhwm_mib'], '.0f')} MiB.",
    ]
    if not p1["complete"]:
        lines += ["", f"**Incomplete**: time limit reached, {p1['answered']} answered."]
    if p2 is not None:
        lines += [
            "",
            f"## Bad inputs ({p2['bad']} of {p2['requests']} requests, shuffled)",
            "",
            "| kind | sent | expected | as expected | answers | p50 (ms) |",
            "|---|---|---|---|---|---|",
        ]
        for kind in KINDS:
            k = p2["kinds"][kind]
            answers = ", ".join(f"{s}: {n}" for s, n in sorted(k["statuses"].items()))
            lines.append(
                f"| {kind} | {k['sent']} | {k['expected_status']} | {k['as_expected']} | "
                f"{answers} | {fmt(k['latency']['p50_ms'], '.0f')} |"
            )
        lines += [
            "",
            f"Server RSS peak in this phase: {fmt(p2['rss_peak_mib'], '.0f')} MiB; 5xx: "
            f"{p2['server_errors_5xx']}; no answer: {p2['no_answer']}.",
        ]
        if not p2["complete"]:
            lines += ["", f"**Incomplete**: time limit reached, {p2['answered']} answered."]
    lines += ["", "## Checks", ""]
    lines += [
        f"- {'PASS' if ok else '**FAIL**'}: {name} — {detail}"
        for name, ok, detail in record["checks"]
    ]
    lines += ["", f"Result: {'all checks pass' if record['passed'] else '**checks failed**'}."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- model
def fit_model(args: argparse.Namespace, root: Path, folder: Path) -> dict[str, Any]:
    """Fit the benchmark's model on ``root``'s training images and save it to ``folder``."""
    from flawmap.data import ImageDataset, MVTecDataset
    from flawmap.models import create_model

    params = json.loads(args.params)
    if args.quick:
        params["image_size"] = 128
    detector = create_model(args.model, seed=args.seed, **params)
    train: Any = MVTecDataset(root, "train")
    if args.quick:
        train = ImageDataset(train.samples[:20])
    start = time.perf_counter()
    detector.fit(train)
    fit_s = time.perf_counter() - start
    detector.save(folder)
    quick = " (--quick: 20 training images, 128 px; a smoke test, not the benchmark)"
    return {
        "model": args.model,
        "params": params,
        "seed": args.seed,
        "data": str(root),
        "n_train": detector.n_train_,
        "input_size": list(detector.geometry_.size),
        "tiles": list(detector.geometry_.tiles),
        "fit_seconds": fit_s,
        "quick": args.quick,
        "description": f"{args.model} {json.dumps(params)} fitted on {detector.n_train_} "
        f"{root.name} training images, seed {args.seed}" + (quick if args.quick else ""),
    }


def export_fitted(model_dir: Path, spec: str, workdir: Path) -> Path:
    """Export the model in ``model_dir`` as ``FORMAT:PRECISION`` (no calibration: fp32/bf16)."""
    from flawmap.export import export_model
    from flawmap.models import load_model

    fmt, _, precision = spec.partition(":")
    out = workdir / f"{model_dir.name}-{fmt}-{precision or 'fp32'}"
    export_model(load_model(model_dir), out, format=fmt, precision=precision or "fp32")
    return out


# ---------------------------------------------------------------------------------- main
def make_jobs(n_good: int, n_bad: int, n_images: int, rng: random.Random) -> list[Job]:
    """``n_good`` good predicts (images cycled) and ``n_bad`` bad requests spread evenly over
    the bad kinds, shuffled with ``rng``; indices are positions in the shuffled list."""
    kinds = [("good", i % n_images) for i in range(n_good)]
    for i in range(n_bad):
        kind = BAD_KINDS[i % len(BAD_KINDS)]
        image = (i * 7) % n_images if kind in ("truncated", "wrong_token") else -1
        kinds.append((kind, image))
    rng.shuffle(kinds)
    return [Job(i, kind, image) for i, (kind, image) in enumerate(kinds)]


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: the server is stopped on the way out


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", default="bottle", choices=CATEGORIES)
    parser.add_argument("--model", default="patchcore")
    parser.add_argument("--params", default='{"tiling": "auto", "coreset_ratio": 0.01}')
    parser.add_argument("--model-dir", type=Path, default=None, help="serve this folder instead")
    parser.add_argument(
        "--export",
        default=None,
        metavar="FORMAT:PRECISION",
        help="serve an export of the fitted model instead (e.g. openvino:bf16, onnx:fp32)",
    )
    parser.add_argument("--name", default="serve_load", help="result file stem")
    parser.add_argument("--quick", action="store_true", help="smoke test: 20 images at 128 px")
    parser.add_argument("--requests", type=int, default=1000, help="phase 1 predict requests")
    parser.add_argument("--bad-phase-requests", type=int, default=1000, help="phase 2, 20%% bad")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-upload-mb", type=float, default=8.0)
    parser.add_argument("--queue", type=int, default=32, help="the server's --queue")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="both phases together")
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument("--start-timeout", type=float, default=300.0)
    args = parse_study_arguments(parser)
    if args.requests < 2 or args.bad_phase_requests < 1 or args.clients < 1:
        parser.error("--requests must be >= 2, --bad-phase-requests and --clients >= 1")
    command = "python benchmarks/serve_load.py " + " ".join(sys.argv[1:])
    root = Path(args.datasets) / CATEGORIES[args.category]
    image_paths = sorted((root / "test").glob("*/*.png"))
    if not image_paths:
        raise SystemExit(f"no test images under {root / 'test'}")
    images = [(f"{p.parent.name}_{p.name}", p.read_bytes()) for p in image_paths]
    payloads = Payloads(images, args.max_upload_mb, args.seed)
    rng = random.Random(args.seed)
    n_bad = round(BAD_FRACTION * args.bad_phase_requests)
    phase1_jobs = [Job(i, "good", i % len(images)) for i in range(args.requests)]
    phase2_jobs = make_jobs(args.bad_phase_requests - n_bad, n_bad, len(images), rng)
    loadavg_before = list(os.getloadavg())
    token = secrets.token_hex(20)

    with tempfile.TemporaryDirectory(prefix="flawmap-serve-load-") as tmp:
        workdir = Path(tmp)
        if args.model_dir is not None:
            model_dir = args.model_dir
            model_info: dict[str, Any] = {"description": f"the folder {model_dir}"}
        else:
            model_dir = workdir / args.category
            print(f"fitting {args.model} on {root} ...", flush=True)
            model_info = fit_model(args, root, model_dir)
            print(f"  {model_info['description']}: {model_info['fit_seconds']:.1f} s", flush=True)
            if args.export is not None:
                model_dir = export_fitted(model_dir, args.export, workdir)
                model_info["export"] = args.export
                model_info["description"] += f", served as its {args.export} export"
        model = model_dir.resolve().name
        with serve(model_dir, workdir, args, token) as (process, url, log_path):
            server = psutil.Process(process.pid)
            print(f"server pid {process.pid} ready at {url}, serving {model}", flush=True)
            clients = [
                httpx.Client(
                    base_url=url,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=args.request_timeout,
                )
                for _ in range(args.clients)
            ]
            try:

                def send_job(client: httpx.Client, job: Job) -> Outcome:
                    return send(client, model, payloads, job)

                reference = Reference()
                deadline = time.perf_counter() + args.max_seconds
                print(f"phase 1: {args.requests} predicts from {args.clients} clients", flush=True)
                run1 = run_phase("load", phase1_jobs, clients, send_job, server, deadline)
                p1 = phase1_summary(run1, reference, args)
                p2 = after = None
                if time.perf_counter() < deadline:
                    print(f"phase 2: {len(phase2_jobs)} requests, {n_bad} of them bad", flush=True)
                    run2 = run_phase("bad inputs", phase2_jobs, clients, send_job, server, deadline)
                    p2 = phase2_summary(run2, reference)
                    after = health_after(clients[0], model, payloads, reference, process)
                vmhwm = high_water_mark(process.pid)
            finally:
                for client in clients:
                    client.close()
            server_log = log_path.read_text(errors="replace")

    results = checks(p1, p2, after)
    passed = all(ok for _, ok, _ in results)
    record = {
        "command": command,
        "seed": args.seed,
        "threads": args.threads,
        "model": model_info,
        "server": {
            "queue": args.queue,
            "max_upload_mb": args.max_upload_mb,
            "vmhwm_mib": vmhwm / MIB if vmhwm is not None else None,
            "log_tail": server_log[-2000:],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": loadavg_before,
            "loadavg_after": list(os.getloadavg()),
        },
        "worst_relative_score_difference": reference.worst_relative,
        "test_images": len(images),
        "bomb_bytes": len(payloads.bomb),
        "oversized_bytes": len(payloads.oversized),
        "phase1": p1,
        "phase2": p2,
        "after": after,
        "checks": results,
        "passed": passed,
    }
    out = Path(args.out)
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    text = markdown(record)
    (out / f"{args.name}.md").write_text(text)
    print()
    print(text)
    return 0 if passed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: the server was stopped, no results written", file=sys.stderr)
        sys.exit(130)
