"""Speed of every model: torch eager vs its ONNX Runtime and OpenVINO exports, quiet and loaded.

For every model on bottle and magnetic tile at 256 px (pretrained backbone; trained heads get a
short schedule, :data:`SHORT_EPOCHS` epochs, so the accuracy columns compare the variants of one
fitted model, not the models' best accuracy):

- the model is fitted once and cached (``--models-dir``), then exported as each variant of
  :data:`EXPORTS` (``--exports-dir``; int8 calibrated on training good images only);
- latency at batch size 1, from a decoded test image (PIL, full size) to score + map: torch
  ``model.transform.image`` + ``model.module``, a runtime ``preprocess`` + ``predict``;
  warm-up, then ``--runs`` timed runs, variants interleaved (round-robin per repetition);
  median and p95, quiet and with two CPU-bound processes beside it (:class:`load.BusyLoad`);
- throughput at batch size 8 (a pre-processed batch), images/s;
- accuracy of every variant on the whole test set (image AUROC, pixel AUROC, AUPRO), the share
  of labels that agree with torch and the largest score difference to torch;
- FLOPs per image (``FlopCounterMode`` on the module at batch 1; PatchCore adds ``2 Q M D`` for
  its nearest-neighbour search, as a brute-force search would do) and the achieved share of the
  peak GEMM rate of the variant's precision (measured once per run, :func:`load.peak_gemm`);
- threading: for PaDiM only, torch with the OpenMP wait policy ACTIVE vs PASSIVE, ONNX Runtime
  with spinning on vs off, 1 vs 2 threads, quiet and loaded (each in its own process: the wait
  policy is read when OpenMP starts); OpenVINO fp32 and bf16 at 1 vs 2 threads. This table
  chooses the runtime's defaults;
- a targets table: per model, the fastest export that keeps parity with torch, against the
  latency targets, the 2x speed-up over torch and the 3x loaded/quiet bound.

Every (model, category) is measured in its own subprocess. Results:
``benchmarks/results/speed.{json,md}`` (records merged, so a partial run keeps other rows;
``--table-only`` rewrites the tables). Full run (a quiet machine) and smoke run::

    python benchmarks/speed.py
    python benchmarks/speed.py --models padim --categories bottle --runs 5 --no-threading
"""

from __future__ import annotations

import os

# What the CLI does: idle OpenMP workers sleep (set before torch is imported, here and in the
# workers this script starts; the threading table measures the alternative).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CATEGORIES, DEFAULT_DATASETS, ROOT, load_records, merge_records
from load import BusyLoad, peak_gemm

IMAGE_SIZE = 256
THREADS = 2
#: Epochs of the trained models (SimpleNet, TrisimpleNet, CSE, FCDD, MLFF) in this benchmark.
SHORT_EPOCHS = 1
#: Exported variants: name -> (format, precision).
EXPORTS: dict[str, tuple[str, str]] = {
    "onnx-fp32": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),
    "openvino-fp32": ("openvino", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
    "openvino-int8": ("openvino", "int8"),
}
VARIANTS = ("torch", *EXPORTS)
#: Model of the threading table (Lite0 backbone, no memory-bank search).
THREADING_MODEL = "padim"
LOAD_PROCESSES = 2
RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------------------- pure helpers
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear interpolation between ranks."""
    if not values:
        raise ValueError("no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must lie in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, ``None`` when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median and p95 of timings in seconds, as milliseconds."""
    return {
        "median_ms": 1000.0 * statistics.median(seconds),
        "p95_ms": 1000.0 * percentile(seconds, 95.0),
    }


def interleaved(
    fns: dict[str, Callable[[], Any]], warmup: int, runs: int
) -> dict[str, list[float]]:
    """Seconds of ``runs`` calls of every function, after ``warmup`` untimed calls each.

    The functions take turns (round-robin per repetition), so a change in machine load touches
    every one alike.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(warmup + runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if rep >= warmup:
                times[name].append(elapsed)
    return times


def precision_of(variant: str) -> str:
    """``fp32``, ``bf16`` or ``int8``: the peak GEMM rate a variant is compared with."""
    return "fp32" if variant == "torch" else EXPORTS[variant][1]


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


#: Table columns: (record key, header, format).
COLUMNS: list[tuple[str, str, str]] = [
    ("median_ms", "median ms", ".1f"),
    ("p95_ms", "p95 ms", ".1f"),
    ("ratio_to_torch", "÷ torch", ".2f"),
    ("loaded_median_ms", "loaded median ms", ".1f"),
    ("loaded_over_quiet", "loaded ÷ quiet", ".2f"),
    ("throughput_b8_ips", "batch-8 img/s", ".1f"),
    ("gflop", "GFLOP", ".2f"),
    ("search_gflop", "of which search", ".2f"),
    ("pct_of_peak", "% of peak", ".1f"),
    ("image_auroc", "image AUROC", ".4f"),
    ("pixel_auroc", "pixel AUROC", ".4f"),
    ("aupro", "AUPRO", ".4f"),
    ("label_agreement_pct", "labels = torch %", ".1f"),
    ("max_score_rel_diff", "max score rel diff", ".1e"),
]

THREADING_COLUMNS: list[tuple[str, str, str]] = [
    ("median_ms", "quiet median ms", ".1f"),
    ("p95_ms", "quiet p95 ms", ".1f"),
    ("loaded_median_ms", "loaded median ms", ".1f"),
    ("loaded_p95_ms", "loaded p95 ms", ".1f"),
    ("loaded_over_quiet", "loaded ÷ quiet", ".2f"),
]


def markdown_table(rows: list[dict[str, Any]], keys: list[str], columns: list) -> str:
    """Markdown table: the ``keys`` of each row as text, then ``columns`` formatted."""
    header = [*keys, *(c[1] for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row.get(k, "–")) for k in keys]
        cells += [_fmt(row.get(key), spec) for key, _, spec in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Batch-1 latency targets (ms) by model, or by model and category.
TARGET_MS: dict[str, float | dict[str, float]] = {
    "padim": 15.0,
    "simplenet": 15.0,
    "trisimplenet": 15.0,
    "cse": 15.0,
    "fcdd": 15.0,
    "mlff": 25.0,
    "patchcore": {"bottle": 20.0, "magnetic_tile": 40.0},
}
#: Parity an export must keep to count for the targets (to torch fp32, on the test set).
PARITY_AUROC, PARITY_LABELS_PCT = 0.005, 99.0


def passes_parity(row: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Image and pixel AUROC within :data:`PARITY_AUROC` of ``reference`` (torch) and at least
    :data:`PARITY_LABELS_PCT` % of the labels the same."""
    for key in ("image_auroc", "pixel_auroc"):
        a, b = row.get(key), reference.get(key)
        if a is not None and b is not None and abs(a - b) > PARITY_AUROC:
            return False
    agree = row.get("label_agreement_pct")
    return agree is None or agree >= PARITY_LABELS_PCT


def targets_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (category, model): the fastest export that keeps parity, against the targets."""
    out = []
    for category, model in sorted({(r["category"], r["model"]) for r in rows}):
        group = [r for r in rows if r["category"] == category and r["model"] == model]
        torch_rows = [r for r in group if r["variant"] == "torch"]
        if not torch_rows:
            continue
        ref = torch_rows[0]
        fit = [r for r in group if r["variant"] != "torch" and passes_parity(r, ref)]
        target = TARGET_MS.get(model)
        if isinstance(target, dict):
            target = target.get(category)
        best = min(fit, key=lambda r: r["median_ms"]) if fit else None
        row: dict[str, Any] = {
            "category": category,
            "model": model,
            "best export": best["variant"] if best else "none keeps parity",
            "torch_ms": ref["median_ms"],
            "target_ms": target,
        }
        if best is not None:
            speedup = ratio(ref["median_ms"], best["median_ms"])
            row.update(
                best_ms=best["median_ms"],
                speedup=speedup,
                loaded_over_quiet=best.get("loaded_over_quiet"),
            )
            met = [
                target is None or best["median_ms"] <= target,
                speedup is not None and speedup >= 2.0,
                (best.get("loaded_over_quiet") or 0.0) <= 3.0,
            ]
            row["met"] = "yes" if all(met) else "no"
        out.append(row)
    return out


TARGET_COLUMNS: list[tuple[str, str, str]] = [
    ("best_ms", "median ms", ".1f"),
    ("target_ms", "target ms", ".0f"),
    ("torch_ms", "torch ms", ".1f"),
    ("speedup", "torch ÷ export (≥ 2)", ".2f"),
    ("loaded_over_quiet", "loaded ÷ quiet (≤ 3)", ".2f"),
]


def _variant_rank(variant: str) -> int:
    return VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS)


def speed_markdown(records: list[dict[str, Any]], command: str) -> str:
    """The results file's text: preamble, peak rates, one table per category, threading."""
    peaks = [r for r in records if r.get("kind") == "peak"]
    rows = [r for r in records if r.get("kind") == "variant"]
    threading = [r for r in records if r.get("kind") == "threading"]
    lines = [
        f"Command: `{command}`",
        "",
        f"{IMAGE_SIZE} px, batch size 1 from a decoded test image (PIL, full size) to score + map, "
        f"{THREADS} threads; torch eager = `model.transform.image` + `model.module` under "
        "`torch.inference_mode` (OMP_WAIT_POLICY=PASSIVE, as the CLI), runtimes = "
        "`flawmap.runtime.load_exported(folder, threads=2)` (`preprocess` + `predict`, no "
        "spinning). Median and p95 of the timed runs after warm-up, variants interleaved. "
        f"Loaded: the same with {LOAD_PROCESSES} CPU-bound Python processes running beside it. "
        "Batch-8 throughput from a pre-processed batch.",
        "",
        "Models: pretrained EfficientNet-Lite0 backbone; the trained models (SimpleNet, "
        f"TrisimpleNet, CSE, FCDD, MLFF) are fitted with a short schedule ({SHORT_EPOCHS} "
        "epoch(s)): the accuracy columns compare the variants of the same fitted model, they are "
        "not the models' best accuracy. int8 = calibrated on training good images only. "
        "Labels at the model's stored threshold; 'max score rel diff' = max |s - s_torch| / "
        "max |s_torch| over the test set.",
        "",
        "GFLOP per image: `torch.utils.flop_counter.FlopCounterMode` on the module's forward at "
        "batch 1; PatchCore adds 2·Q·M·D for its nearest-neighbour search (Q query patches, M "
        "memory-bank rows, D dimensions: the cost of the exact brute-force search, which the "
        "runtime's search equals in result, not necessarily in work: torch's default pruned "
        "search skips most of it, so its % of peak can pass 100). % of peak = GFLOP / "
        "median latency / the measured peak GEMM rate of the variant's precision (torch and "
        "fp32 exports: fp32; bf16: bf16; int8: int8).",
        "",
    ]
    for peak in peaks[-1:]:
        lines += [
            f"Peak GEMM ({peak['threads']} threads, {peak['size']}² matrices, best of "
            f"{peak['repeats']}): fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} "
            f"GFLOP/s, int8 {peak['int8']:.0f} GOP/s ({peak['int8_kernel']}). Machine: "
            f"{peak.get('cpus', '?')} CPUs, load average before {peak.get('load_before', '?')}.",
            "",
        ]
    for category in sorted({r["category"] for r in rows}):
        chosen = sorted(
            (r for r in rows if r["category"] == category),
            key=lambda r: (r["model"], _variant_rank(r["variant"])),
        )
        counts = sorted({(r["model"], r.get("n_train"), r.get("n_test")) for r in chosen})
        sizes = "; ".join(f"{m}: fitted on {a} good training images" for m, a, _ in counts)
        n_tests = sorted({str(t) for _, _, t in counts})
        lines += [
            f"### {category}",
            "",
            f"Accuracy columns on {', '.join(n_tests)} test images (a seeded subset when fewer "
            f"than the category's test set); {sizes} (a seeded subset where smaller than the "
            "training set).",
            "",
            markdown_table(chosen, ["model", "variant"], COLUMNS),
            "",
        ]
    if rows:
        lines += [
            "### Targets",
            "",
            "Per model and category, the fastest export that keeps parity with torch on the "
            f"test set (image and pixel AUROC within {PARITY_AUROC}, ≥ {PARITY_LABELS_PCT:.0f} % "
            "of the labels the same); 'met' = latency target, ≥ 2× torch and loaded ≤ 3× quiet.",
            "",
            markdown_table(
                targets_rows(rows), ["category", "model", "best export", "met"], TARGET_COLUMNS
            ),
            "",
        ]
    if threading:
        chosen = sorted(
            threading, key=lambda r: (r["category"], r["engine"], r["setting"], r["threads"])
        )
        lines += [
            f"### Threading ({THREADING_MODEL}, batch size 1, quiet and with {LOAD_PROCESSES} "
            "busy processes)",
            "",
            "Each row in its own process. torch: OMP_WAIT_POLICY read when OpenMP starts; "
            "onnx: ONNX Runtime `session.intra_op.allow_spinning`; openvino: no spin setting.",
            "",
            markdown_table(chosen, ["category", "engine", "setting", "threads"], THREADING_COLUMNS),
            "",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- worker side
def _subset(dataset: Any, limit: int | None, seed: int) -> Any:
    """A seeded random subset of ``limit`` items (all of them when ``limit`` is None)."""
    import numpy as np
    from torch.utils.data import Subset

    if limit is None or limit >= len(dataset):
        return dataset
    keep = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:limit])
    return Subset(dataset, keep.tolist())


def _fitted_model(
    name: str, category: str, root: Path, models_dir: Path, seed: int, max_train: int | None
) -> Any:
    """The cached fitted model of ``models_dir/category/name``, fitted and saved if absent
    (on ``max_train`` seeded training images when given)."""
    from flawmap.data import MVTecDataset
    from flawmap.models import create_model, load_model, model_class

    folder = models_dir / category / (name if max_train is None else f"{name}-train{max_train}")
    if folder.exists():
        try:
            model = load_model(folder)
            same_size = tuple(model.transform.output_size) == (IMAGE_SIZE, IMAGE_SIZE)
            epochs = model.get_params().get("epochs")
            if model.name == name and same_size and epochs in (None, SHORT_EPOCHS):
                return model
        except Exception as exc:
            print(f"refitting {folder}: {exc}", file=sys.stderr)
    params: dict[str, Any] = {"weights": "pretrained", "image_size": IMAGE_SIZE, "seed": seed}
    if "epochs" in model_class(name)().get_params():
        params["epochs"] = SHORT_EPOCHS
    model = create_model(name, **params)
    model.fit(_subset(MVTecDataset(root, "train", transform=model.transform), max_train, seed))
    model.save(folder, overwrite=True)
    return model


def _export(model: Any, variant: str, root: Path, folder: Path, seed: int, *, reuse: bool) -> Path:
    """The export of ``variant`` written to ``folder``; with ``reuse``, an export of this fit
    already there is kept (exports made by older export code are not detected)."""
    from flawmap.data import MVTecDataset
    from flawmap.export import export_model
    from flawmap.runtime import is_export_folder, read_export

    if reuse and is_export_folder(folder):
        try:
            if read_export(folder).meta.get("fit_id") == model.fit_id_:
                return folder
        except Exception as exc:
            print(f"re-exporting {folder}: {exc}", file=sys.stderr)
    fmt, precision = EXPORTS[variant]
    calibration = (
        MVTecDataset(root, "train", transform=model.transform) if precision == "int8" else None
    )
    return export_model(
        model, folder, format=fmt, precision=precision, calibration=calibration,
        overwrite=True, seed=seed,
    )  # fmt: skip


def _flops(model: Any) -> tuple[float, float]:
    """Floating-point operations of one image, in all and of them the nearest-neighbour search
    (0 for models without a memory bank; see the module docstring)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module = model.module
    x = torch.zeros(1, 3, *model.transform.output_size)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(x)
    flops = float(counter.get_total_flops())
    search = 0.0
    bank = getattr(module, "memory_bank", None)
    if bank is not None and hasattr(module, "embed"):
        with torch.inference_mode():
            _, d, h, w = module.embed(x).shape
        search = 2.0 * h * w * bank.shape[0] * d
    return flops + search, search


def _progress(what: str, since: float) -> None:
    print(f"   {what} ({time.perf_counter() - since:.0f} s)", file=sys.stderr, flush=True)


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every variant of one (model, category): records of the variant kind."""
    import numpy as np
    import torch

    from flawmap.data import MVTecDataset
    from flawmap.data.io import load_image
    from flawmap.metrics import compute_metrics
    from flawmap.runtime import load_exported

    torch.set_num_threads(THREADS)
    root = Path(args.datasets) / CATEGORIES[args.category]
    models_dir, exports_dir = Path(args.models_dir), Path(args.exports_dir)
    start = time.perf_counter()
    model = _fitted_model(
        args.model, args.category, root, models_dir, args.seed, _cap(args.max_train, args.category)
    )
    fit_s = time.perf_counter() - start
    _progress("model fitted or loaded", start)
    variants = [v for v in args.variants.split(",") if v != "torch"]
    runtimes, export_s = {}, {}
    for variant in variants:
        start = time.perf_counter()
        folder = _export(
            model,
            variant,
            root,
            exports_dir / args.category / args.model / variant,
            0,
            reuse=args.reuse_exports,
        )
        export_s[variant] = time.perf_counter() - start
        runtimes[variant] = load_exported(folder, threads=THREADS)
        _progress(f"{variant} exported or loaded", start)
    module, transform = model.module, model.transform
    full_test = MVTecDataset(root, "test", transform=transform)
    limit = _cap(args.max_test, args.category)
    test = _subset(full_test, limit, args.seed)
    chosen = test.indices if limit is not None and limit < len(full_test) else range(len(full_test))
    paths = [full_test.samples[i].path for i in chosen]

    # accuracy: the whole test set, 8 images at a time (decoded once for torch through the
    # dataset, once for every export through the runtime's pre-processing)
    start = time.perf_counter()
    scores: dict[str, list[np.ndarray]] = {v: [] for v in ["torch", *variants]}
    maps: dict[str, list[np.ndarray]] = {v: [] for v in scores}
    masks, labels = [], []
    for begin in range(0, len(test), 8):
        items = [test[i] for i in range(begin, min(begin + 8, len(test)))]
        masks.append(np.stack([it["mask"][0].numpy() > 0.5 for it in items]))
        labels.append(np.array([int(it["label"]) for it in items]))
        with torch.inference_mode():
            s, m = module(torch.stack([it["image"] for it in items]))
        scores["torch"].append(s.float().numpy())
        maps["torch"].append(m.float().numpy())
        if runtimes:
            pils = [load_image(paths[i]) for i in range(begin, begin + len(items))]
            first = next(iter(runtimes.values()))  # one pre-processing for every export
            batch = np.stack([first.preprocess(p) for p in pils])
            for variant, rt in runtimes.items():
                pred = rt.predict(batch)
                scores[variant].append(pred.scores)
                maps[variant].append(pred.maps)
    _progress(f"{len(test)} test images scored by every variant", start)
    label_arr, mask_arr = np.concatenate(labels), np.concatenate(masks)
    threshold = model.threshold
    ref_scores = np.concatenate(scores["torch"])
    accuracy: dict[str, dict[str, Any]] = {}
    for variant in scores:
        s = np.concatenate(scores[variant])
        metrics = compute_metrics(label_arr, s, mask_arr, np.concatenate(maps[variant]))
        agree = None
        if threshold is not None:
            agree = 100.0 * float(np.mean((s >= threshold) == (ref_scores >= threshold)))
        accuracy[variant] = {
            "image_auroc": metrics["image_auroc"],
            "pixel_auroc": metrics["pixel_auroc"],
            "aupro": metrics["aupro"],
            "label_agreement_pct": agree,
            "max_score_rel_diff": float(
                np.abs(s - ref_scores).max() / max(np.abs(ref_scores).max(), 1e-12)
            ),
        }
        maps[variant] = []

    # latency at batch 1 from decoded images; a few test images, the same one per repetition
    picks = [paths[i] for i in np.linspace(0, len(paths) - 1, 8).round().astype(int)]
    pils = [load_image(p) for p in picks]
    turn = {"i": 0}

    def torch_one() -> None:
        pil = pils[turn["i"] % len(pils)]
        with torch.inference_mode():
            s, m = module(transform.image(pil)[None])
        s.numpy(), m.numpy()

    def runtime_one(rt: Any) -> Callable[[], None]:
        def run() -> None:
            rt.predict(rt.preprocess(pils[turn["i"] % len(pils)])[None])

        return run

    single = {"torch": torch_one, **{v: runtime_one(rt) for v, rt in runtimes.items()}}

    def rotating(fns: dict[str, Callable[[], None]]) -> dict[str, Callable[[], None]]:
        last = next(reversed(fns))  # the image changes after the last variant's turn

        def wrap(name: str, fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                fn()
                if name == last:
                    turn["i"] += 1

            return run

        return {name: wrap(name, fn) for name, fn in fns.items()}

    start = time.perf_counter()
    quiet = interleaved(rotating(single), args.warmup, args.runs)
    _progress("quiet latency", start)
    with BusyLoad(LOAD_PROCESSES):
        time.sleep(1.0)
        loaded = interleaved(rotating(single), args.warmup, args.runs)
    _progress("loaded latency", start)

    # throughput at batch 8 from a pre-processed batch
    batch_t = torch.stack([transform.image(p) for p in pils])
    batch_np = batch_t.numpy().copy()

    def torch_eight() -> None:
        with torch.inference_mode():
            module(batch_t)

    eight = {"torch": torch_eight}
    eight.update(
        {v: (lambda rt=rt: rt.predict(batch_np, batch_size=8)) for v, rt in runtimes.items()}
    )
    b8 = interleaved(eight, 2, max(3, args.runs // 3))

    flops, search_flops = _flops(model)
    records = []
    torch_median = statistics.median(quiet["torch"])
    for variant in single:
        q, ld = summary_ms(quiet[variant]), summary_ms(loaded[variant])
        records.append(
            {
                "kind": "variant",
                "model": args.model,
                "category": args.category,
                "seed": args.seed,
                "params": {"variant": variant},
                "variant": variant,
                "precision": precision_of(variant),
                "image_size": IMAGE_SIZE,
                "threads": THREADS,
                "epochs": model.get_params().get("epochs"),
                "runs": args.runs,
                "warmup": args.warmup,
                "n_test": len(test),
                "n_train": model.n_train_,
                **q,
                "loaded_median_ms": ld["median_ms"],
                "loaded_p95_ms": ld["p95_ms"],
                "loaded_over_quiet": ratio(ld["median_ms"], q["median_ms"]),
                "ratio_to_torch": ratio(statistics.median(quiet[variant]), torch_median),
                "throughput_b8_ips": 8.0 / statistics.median(b8[variant]),
                "gflop": flops / 1e9,
                "search_gflop": search_flops / 1e9,
                **accuracy[variant],
                "fit_or_load_s": fit_s,
                "export_or_load_s": export_s.get(variant),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        )
    return records


def threading_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Batch-1 latency of one engine and thread setting, quiet and loaded (one record)."""
    import torch

    from flawmap.data import MVTecDataset
    from flawmap.data.io import load_image
    from flawmap.runtime import load_exported

    root = Path(args.datasets) / CATEGORIES[args.category]
    models_dir, exports_dir = Path(args.models_dir), Path(args.exports_dir)
    torch.set_num_threads(args.threads)
    model = _fitted_model(
        args.model, args.category, root, models_dir, args.seed, _cap(args.max_train, args.category)
    )
    test = MVTecDataset(root, "test", transform=model.transform)
    pil = load_image(test.samples[0].path)
    if args.engine == "torch":
        module, transform = model.module, model.transform

        def one() -> None:
            with torch.inference_mode():
                module(transform.image(pil)[None])

        setting = f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}"
    else:
        folder = _export(
            model,
            args.engine,
            root,
            exports_dir / args.category / args.model / args.engine,
            0,
            reuse=args.reuse_exports,
        )
        rt = load_exported(folder, threads=args.threads, spin=bool(args.spin))

        def one() -> None:
            rt.predict(rt.preprocess(pil)[None])

        setting = f"spin={bool(args.spin)}" if args.engine.startswith("onnx") else "default"
    quiet = interleaved({"x": one}, args.warmup, args.runs)["x"]
    with BusyLoad(LOAD_PROCESSES):
        time.sleep(1.0)
        loaded = interleaved({"x": one}, args.warmup, args.runs)["x"]
    q, ld = summary_ms(quiet), summary_ms(loaded)
    return {
        "kind": "threading",
        "model": f"threading:{args.model}",
        "category": args.category,
        "seed": args.seed,
        "params": {"engine": args.engine, "setting": setting, "threads": args.threads},
        "engine": args.engine,
        "setting": setting,
        "threads": args.threads,
        "runs": args.runs,
        **q,
        "loaded_median_ms": ld["median_ms"],
        "loaded_p95_ms": ld["p95_ms"],
        "loaded_over_quiet": ratio(ld["median_ms"], q["median_ms"]),
    }


# ---------------------------------------------------------------------------- driver side
def run_worker(argv: list[str], what: str, env: dict[str, str] | None = None) -> Any:
    """Run this script with ``argv`` in a fresh interpreter; its last ``RESULT`` line's JSON."""
    full_env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), **(env or {})}
    proc = subprocess.run(  # stderr passes through: the worker's progress lines
        [sys.executable, __file__, *argv],
        stdout=subprocess.PIPE,
        text=True,
        env=full_env,
        check=False,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout)
        raise SystemExit(f"{what} failed")
    return json.loads(lines[-1][len("RESULT ") :])


def _cap(spec: str | None, category: str) -> int | None:
    """``--max-train`` / ``--max-test``: ``N`` for every category or ``cat=N,cat=N``."""
    if not spec:
        return None
    if "=" not in spec:
        return int(spec)
    caps = dict(item.split("=") for item in spec.split(","))
    return int(caps[category]) if category in caps else None


def _common_argv(args: argparse.Namespace) -> list[str]:
    return [
        *(["--max-train", args.max_train] if args.max_train else []),
        *(["--max-test", args.max_test] if args.max_test else []),
        "--datasets", args.datasets, "--models-dir", args.models_dir,
        "--exports-dir", args.exports_dir, "--runs", str(args.runs),
        "--warmup", str(args.warmup), "--seed", str(args.seed),
        *(["--reuse-exports"] if args.reuse_exports else []),
    ]  # fmt: skip


def threading_settings() -> list[tuple[str, dict[str, str], int, int]]:
    """(engine, environment, threads, spin) of every row of the threading table."""
    rows: list[tuple[str, dict[str, str], int, int]] = []
    for threads in (1, 2):
        for policy in ("PASSIVE", "ACTIVE"):
            rows.append(("torch", {"OMP_WAIT_POLICY": policy}, threads, 0))
        for spin in (0, 1):
            rows.append(("onnx-fp32", {}, threads, spin))
        rows.append(("openvino-fp32", {}, threads, 0))
        rows.append(("openvino-bf16", {}, threads, 0))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=str(DEFAULT_DATASETS))
    parser.add_argument("--models", default=None, help="comma-separated (default: every model)")
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated; torch always runs"
    )
    parser.add_argument("--runs", type=int, default=30, help="timed runs per variant (>= 30)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models-dir", default=str(ROOT / "runs" / "speed_models"))
    parser.add_argument("--exports-dir", default=str(ROOT / "runs" / "speed_exports"))
    parser.add_argument(
        "--reuse-exports",
        action="store_true",
        help="keep exports of the same fit found in --exports-dir (default: export again)",
    )
    parser.add_argument(
        "--max-train",
        default=None,
        help="seeded subset of training images: N, or category=N,... (default: all)",
    )
    parser.add_argument(
        "--max-test",
        default=None,
        help="seeded subset of test images for the accuracy columns: N or category=N,...",
    )
    parser.add_argument("--no-threading", action="store_true", help="skip the threading table")
    parser.add_argument("--table-only", action="store_true", help="rewrite speed.md only")
    parser.add_argument("--name", default="speed", help="results file stem")
    # worker modes (one process each)
    parser.add_argument(
        "--worker", choices=("measure", "threading", "peak"), help=argparse.SUPPRESS
    )
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--category", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=THREADS, help=argparse.SUPPRESS)
    parser.add_argument("--spin", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "measure":
        print("RESULT " + json.dumps(measure(args)), flush=True)
        return
    if args.worker == "threading":
        print("RESULT " + json.dumps(threading_probe(args)), flush=True)
        return
    if args.worker == "peak":
        print("RESULT " + json.dumps(peak_gemm(THREADS)), flush=True)
        return

    from flawmap.models import list_models

    models = args.models.split(",") if args.models else list_models()
    categories = args.categories.split(",")
    variants = ["torch", *(v for v in args.variants.split(",") if v and v != "torch")]
    unknown = [c for c in categories if c not in CATEGORIES] + [
        v for v in variants if v not in VARIANTS
    ]
    if unknown:
        parser.error(f"unknown categories/variants: {', '.join(unknown)}")
    path = RESULTS / f"{args.name}.json"
    merged = load_records(path)
    if not args.table_only:
        load_before = [round(x, 2) for x in os.getloadavg()]
        peak = run_worker(["--worker", "peak"], "peak GEMM")
        peak.update(
            kind="peak", model="peak_gemm", category="machine", seed=0, params={},
            cpus=os.cpu_count(), load_before=load_before, python=platform.python_version(),
        )  # fmt: skip
        print(json.dumps(peak), flush=True)
        merged = merge_records(path, [peak])
        for category in categories:
            for model in models:
                print(f"== {model} on {category}", flush=True)
                start = time.perf_counter()
                worker = ["--worker", "measure", "--model", model, "--category", category]
                records = run_worker(
                    [*worker, "--variants", ",".join(variants), *_common_argv(args)],
                    f"{model} on {category}",
                )
                for r in records:
                    r["peak_gops"] = peak[r["precision"]]
                    r["pct_of_peak"] = (
                        100.0 * r["gflop"] / (r["median_ms"] / 1000.0) / r["peak_gops"]
                    )
                    r["wall_s"] = time.perf_counter() - start
                    print(json.dumps(r), flush=True)
                merged = merge_records(path, records)
        if not args.no_threading:
            for category in categories[:1]:
                for engine, env, threads, spin in threading_settings():
                    print(f"== threading {engine} {env} threads={threads} spin={spin}", flush=True)
                    worker = ["--worker", "threading", "--model", THREADING_MODEL]
                    worker += ["--category", category, "--engine", engine]
                    worker += ["--threads", str(threads), "--spin", str(spin)]
                    if THREADING_MODEL in models and not args.reuse_exports:
                        worker.append("--reuse-exports")  # exported by this run just now
                    record = run_worker(
                        [*worker, *_common_argv(args)],
                        f"threading {engine}",
                        {**env, "OMP_NUM_THREADS": str(threads)},
                    )
                    print(json.dumps(record), flush=True)
                    merged = merge_records(path, [record])
    command = f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:])
    text = speed_markdown(merged, command.strip())
    (RESULTS / f"{args.name}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
