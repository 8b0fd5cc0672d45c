"""PatchCore nearest-neighbour search: exact searches vs faiss vs low-precision screening.

For each category, PatchCore (model defaults, pretrained weights, seed 0) is fitted on
train/good; its memory bank (M, D) and the patch features of every test image (one image =
h * w query rows of D) are the data. Each search is fitted on the bank (timed), then queried one
image at a time (batch 1), the searches interleaved image by image so that load from other jobs
hits them alike; ``--threads`` threads for BLAS / OpenMP / faiss / OpenVINO.

Searches (``--searches``):

- ``pruned``: :class:`ClusterPrunedSearch`, the model's default (exact), its queries split over
  ``--threads`` threads of one BLAS thread each, as the model runs it.
- ``brute``: :class:`BruteForceSearch` (exact); one BLAS thread for banks up to ``SMALL_BANK``
  rows, as the model sets it.
- ``faiss_flat``: :class:`flawmap.runtime.search.FaissSearch`, faiss ``IndexFlatL2`` plus the
  float64 distance of the index found (exact).
- ``faiss_hnsw`` (M = 32, efConstruction 200, efSearch 128), ``faiss_ivf`` (4 sqrt(M) lists,
  nprobe ``--nprobe``, 16): approximate faiss screening for ``k`` candidates, re-ranked exactly.
- ``ov_bf16``: one OpenVINO graph (``MatMul`` of the centred queries with the centred bank,
  ``- |b|^2 / 2``, ``TopK``) run with ``INFERENCE_PRECISION_HINT=bf16`` (AMX where the CPU has
  it) for ``k`` candidates, re-ranked by their float64 distances. ``ov_fp32``: the same graph in
  float32.

Per search and category: fit seconds, median / p95 ms per image (after warm-up) and their ratio
to ``pruned`` in the same run, recall@1 of the brute-force nearest neighbour (a different index
at the same float64 distance within 1e-6 relative counts as correct), the largest relative
distance error, and image AUROC / pixel AUROC / AUPRO when the search's distances replace the
exact ones (maps from the model's own post-processing).

Run: ``python benchmarks/nn_search.py [--categories bottle magnetic_tile] [--max-images N]``.
The fitted model, bank and test features are cached under ``--cache`` (delete it to refit).
``--max-images N`` keeps N test images spread evenly over the (folder-sorted) test set.
"""

from __future__ import annotations

import argparse
import os
import sys

_THREADS = "2"
for _i, _a in enumerate(sys.argv):  # thread pools read these when numpy / faiss load
    if _a == "--threads" and _i + 1 < len(sys.argv):
        _THREADS = sys.argv[_i + 1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # the runtime's default (runtime.threads)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = _THREADS

import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import CATEGORIES, DEFAULT_DATASETS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ALL_SEARCHES = ("pruned", "brute", "faiss_flat", "faiss_hnsw", "faiss_ivf", "ov_bf16", "ov_fp32")
TIE_REL = 1e-6

Query = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # (Q, D) -> (dist, index)


# ------------------------------------------------------------------------------------------
# data


def make_model() -> Any:
    from flawmap.models import create_model

    return create_model("patchcore", weights="pretrained", image_size=256, seed=0)


def prepare(category: str, datasets: Path, cache: Path) -> dict[str, Any]:
    """Fit PatchCore on train/good (or load the cache): the fitted model, bank (M, D) float32,
    queries (N, h * w, D) float32, labels (N,), masks (N, H, W) bool, grid (h, w), fit seconds."""
    folder = cache / category
    if (folder / "meta.json").is_file():
        from flawmap.models import load_model

        meta = json.loads((folder / "meta.json").read_text())
        return {
            **meta,
            "model": load_model(folder / "model"),
            "bank": np.load(folder / "bank.npy"),
            "queries": np.load(folder / "queries.npy", mmap_mode="r"),
            "labels": np.load(folder / "labels.npy"),
            "masks": np.unpackbits(np.load(folder / "masks.npy"), axis=-1).astype(bool),
        }
    import torch

    from flawmap.data import MVTecDataset

    root = datasets / CATEGORIES[category]
    model = make_model()
    train = MVTecDataset(root, "train", transform=model.transform)
    test = MVTecDataset(root, "test", transform=model.transform)
    start = time.perf_counter()
    model.fit(train, progress=False)
    fit_seconds = time.perf_counter() - start
    module = model.module.eval()
    bank = module.memory_bank.numpy().copy()
    queries, labels, masks = [], [], []
    with torch.inference_mode():
        for i in range(len(test)):
            item = test[i]
            emb = module.embed(item["image"][None])  # (1, D, h, w)
            grid = tuple(emb.shape[-2:])
            queries.append(emb[0].permute(1, 2, 0).reshape(-1, emb.shape[1]).numpy())
            labels.append(int(item["label"]))
            masks.append(item["mask"][0].numpy() > 0.5)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model", overwrite=True)
    meta = {"fit_seconds": fit_seconds, "grid": list(grid), "n_train": len(train)}
    np.save(folder / "bank.npy", bank)
    np.save(folder / "queries.npy", np.stack(queries).astype(np.float32))
    np.save(folder / "labels.npy", np.array(labels, dtype=np.int64))
    np.save(folder / "masks.npy", np.packbits(np.stack(masks), axis=-1))
    (folder / "meta.json").write_text(json.dumps(meta))
    return prepare(category, datasets, cache)


# ------------------------------------------------------------------------------------------
# searches


def exact64(q: np.ndarray, bank: np.ndarray, index: np.ndarray) -> np.ndarray:
    """q (Q, D), index (Q,) or (Q, k) -> float64 Euclidean distances, same shape as index."""
    delta = q.astype(np.float64)[:, None, :] - bank[index.reshape(len(q), -1)].astype(np.float64)
    return np.sqrt(np.einsum("qkd,qkd->qk", delta, delta)).reshape(index.shape)


def rerank(q: np.ndarray, bank: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (Q, k) (``-1`` = none) -> the nearest of them: (dist (Q,), index (Q,)).

    The candidates are compared by float32 sums of squared differences (exact to ~1e-6
    relative), the chosen one's distance is recomputed in float64."""
    cand = np.where(cand < 0, cand.max(axis=1, keepdims=True), cand)
    delta = bank[cand] - q[:, None, :]  # (Q, k, D) float32
    j = np.einsum("qkd,qkd->qk", delta, delta).argmin(axis=1)
    index = cand[np.arange(len(q)), j].astype(np.int64)
    return exact64(q, bank, index).astype(np.float32), index


def build_search(name: str, bank: np.ndarray, threads: int, k: int, nprobe: int = 16) -> Query:
    """Fit the search ``name`` on bank (M, D); returns its per-image query function."""
    from threadpoolctl import threadpool_limits

    from flawmap.models.patchcore.model import SMALL_BANK
    from flawmap.models.patchcore.search import BruteForceSearch, ClusterPrunedSearch

    # the model's rules (PatchCoreModule.patch_scores)
    blas = 1 if name == "pruned" or len(bank) <= SMALL_BANK else threads
    if name in ("pruned", "brute"):
        index = (
            ClusterPrunedSearch(seed=0, threads=threads) if name == "pruned" else BruteForceSearch()
        )
        index.fit(bank)

        def query_model(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with threadpool_limits(limits=blas, user_api="blas"):
                return index.query(q)

        return query_model
    if name.startswith("faiss"):
        import faiss

        faiss.omp_set_num_threads(threads)
        if name == "faiss_flat":
            from flawmap.runtime.search import FaissSearch

            flat = FaissSearch(bank, threads)

            def query_flat(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                _, idx = flat.index.search(q, 1)  # the same two steps as FaissSearch.distances
                return exact64(q, flat.bank, idx[:, 0]).astype(np.float32), idx[:, 0]

            return query_flat
        d = bank.shape[1]
        if name == "faiss_hnsw":
            ann = faiss.IndexHNSWFlat(d, 32)
            ann.hnsw.efConstruction = 200
            ann.add(bank)
            ann.hnsw.efSearch = max(128, k)
        elif name == "faiss_ivf":
            nlist = round(4 * float(np.sqrt(len(bank))))
            ann = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
            ann.cp.seed = 0
            ann.train(bank)
            ann.add(bank)
            ann.nprobe = nprobe
        else:
            raise SystemExit(f"unknown search {name}")

        def query_ann(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            _, cand = ann.search(q, k)
            return rerank(q, bank, cand)

        return query_ann
    if name in ("ov_bf16", "ov_fp32"):
        return build_openvino(bank, threads, k, "bf16" if name == "ov_bf16" else "f32")
    raise SystemExit(f"unknown search {name}")


def build_openvino(bank: np.ndarray, threads: int, k: int, precision: str) -> Query:
    """Screen: TopK_k(q_c @ b_c.T - |b_c|^2 / 2) in one OpenVINO graph (c: centred on the bank
    mean), at ``precision``; then the float64 re-rank of the k candidates."""
    import onnx
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper

    mean = bank.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred = (bank - mean).astype(np.float32)
    half_norm = (-0.5 * np.einsum("ij,ij->i", centred.astype(np.float64), centred)).astype(
        np.float32
    )
    d = bank.shape[1]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["q", "bank_t"], ["dots"]),
            helper.make_node("Add", ["dots", "half_norm"], ["score"]),
            helper.make_node("TopK", ["score", "k"], ["values", "indices"], axis=1, largest=1),
        ],
        "screen",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["Q", d])],
        [
            helper.make_tensor_value_info("values", TensorProto.FLOAT, ["Q", k]),
            helper.make_tensor_value_info("indices", TensorProto.INT64, ["Q", k]),
        ],
        [
            numpy_helper.from_array(np.ascontiguousarray(centred.T), "bank_t"),
            numpy_helper.from_array(half_norm, "half_norm"),
            numpy_helper.from_array(np.array([k], dtype=np.int64), "k"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, Path(tmp) / "screen.onnx")
        graph_ov = core.read_model(Path(tmp) / "screen.onnx")
    compiled = core.compile_model(
        graph_ov,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    request = compiled.create_infer_request()

    def query(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = request.infer({"q": q - mean})
        return rerank(q, bank, result["indices"])

    return query


# ------------------------------------------------------------------------------------------
# measurement


def run_category(category: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import faiss
    import torch

    from flawmap.metrics import compute_metrics

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    data = prepare(category, Path(args.datasets), Path(args.cache))
    bank = np.ascontiguousarray(data["bank"], dtype=np.float32)
    n = (
        len(data["labels"])
        if args.max_images is None
        else min(args.max_images, len(data["labels"]))
    )
    picks = np.arange(len(data["labels"]))
    if n < len(picks):  # development runs: an even spread of the test set
        picks = np.linspace(0, len(picks) - 1, n).round().astype(int)
    queries = [np.ascontiguousarray(data["queries"][i], dtype=np.float32) for i in picks]
    print(f"== {category}: bank {bank.shape}, {n} test images x {queries[0].shape}", flush=True)
    searches: dict[str, Query] = {}
    fit_seconds: dict[str, float] = {}
    for name in args.searches:
        start = time.perf_counter()
        searches[name] = build_search(name, bank, args.threads, args.k, args.nprobe)
        fit_seconds[name] = time.perf_counter() - start
        print(f"  {name}: fitted in {fit_seconds[name]:.2f} s", flush=True)
    for query in searches.values():  # warm-up (numba load, thread pools, graph caches)
        for q in queries[: args.warmup]:
            query(q)
    times = {name: np.empty(n) for name in searches}
    dist = {name: np.empty((n, queries[0].shape[0]), dtype=np.float32) for name in searches}
    index = {name: np.empty((n, queries[0].shape[0]), dtype=np.int64) for name in searches}
    order = list(searches)
    for i, q in enumerate(queries):
        for name in order[i % len(order) :] + order[: i % len(order)]:  # rotate who goes first
            start = time.perf_counter()
            d_i, j_i = searches[name](q)
            times[name][i] = time.perf_counter() - start
            dist[name][i], index[name][i] = d_i, j_i
    # ground truth: BruteForceSearch's index, its float64 distance
    from flawmap.models.patchcore.search import BruteForceSearch

    if "brute" in searches:  # its indices from the timed pass are the ground truth
        true_idx = index["brute"]
    else:
        truth = BruteForceSearch().fit(bank)
        true_idx = np.stack([truth.nearest(q) for q in queries])
    true_d = np.stack([exact64(q, bank, j) for q, j in zip(queries, true_idx, strict=True)])
    module = data["model"].module  # the fitted model: its post-processing makes the maps
    h, w = data["grid"]
    labels = data["labels"][picks]
    masks = data["masks"][picks]
    records = []
    ref_ms = 1e3 * np.median(times["pruned"]) if "pruned" in times else None
    ref_p95 = 1e3 * np.percentile(times["pruned"], 95) if "pruned" in times else None
    for name in searches:
        got_d = np.stack([exact64(q, bank, j) for q, j in zip(queries, index[name], strict=True)])
        correct = got_d <= true_d * (1 + TIE_REL)
        reported = dist[name].astype(np.float64)
        rel_err = np.abs(reported - true_d) / np.maximum(true_d, 1e-12)
        with torch.inference_mode():
            scores, maps = module.postprocess(
                torch.from_numpy(dist[name]).view(n, 1, h, w),
                tuple(masks.shape[-2:]),
                upsample=module.upsample,
            )
        metrics = compute_metrics(labels, scores.numpy(), masks, maps.numpy())
        med = 1e3 * float(np.median(times[name]))
        p95 = 1e3 * float(np.percentile(times[name], 95))
        record = {
            "search": name,
            "category": category,
            "k": args.k if name in ("faiss_hnsw", "faiss_ivf", "ov_bf16", "ov_fp32") else None,
            "nprobe": args.nprobe if name == "faiss_ivf" else None,
            "bank_rows": int(bank.shape[0]),
            "dim": int(bank.shape[1]),
            "queries_per_image": int(queries[0].shape[0]),
            "n_images": n,
            "threads": args.threads,
            "fit_index_seconds": fit_seconds[name],
            "median_ms": med,
            "p95_ms": p95,
            "median_over_pruned": med / ref_ms if ref_ms else None,
            "p95_over_pruned": p95 / ref_p95 if ref_p95 else None,
            "recall_at_1": float(correct.mean()),
            "same_index": float((index[name] == true_idx).mean()),
            "max_rel_distance_error": float(rel_err.max()),
            "image_auroc": metrics["image_auroc"],
            "pixel_auroc": metrics["pixel_auroc"],
            "aupro": metrics["aupro"],
            "patchcore_fit_seconds": data["fit_seconds"],
        }
        records.append(record)
        print("  " + json.dumps(record), flush=True)
    return records


COLUMNS = [
    ("search", "search", "{}"),
    ("category", "category", "{}"),
    ("k", "k", "{}"),
    ("nprobe", "nprobe", "{}"),
    ("fit_index_seconds", "index fit s", "{:.2f}"),
    ("median_ms", "median ms", "{:.1f}"),
    ("p95_ms", "p95 ms", "{:.1f}"),
    ("median_over_pruned", "median / pruned", "{:.2f}"),
    ("p95_over_pruned", "p95 / pruned", "{:.2f}"),
    ("recall_at_1", "recall@1", "{:.5f}"),
    ("max_rel_distance_error", "max rel dist err", "{:.1e}"),
    ("image_auroc", "image AUROC", "{:.4f}"),
    ("pixel_auroc", "pixel AUROC", "{:.4f}"),
    ("aupro", "AUPRO", "{:.4f}"),
]


def table(records: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in records:
        cells = ["–" if r.get(key) is None else fmt.format(r[key]) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=str(DEFAULT_DATASETS))
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    parser.add_argument(
        "--searches",
        nargs="+",
        default=[s for s in ALL_SEARCHES if s != "ov_fp32"],
        choices=ALL_SEARCHES,
    )
    parser.add_argument("--threads", type=int, default=int(_THREADS))
    parser.add_argument("--k", type=int, default=16, help="candidates re-ranked (approximate)")
    parser.add_argument("--nprobe", type=int, default=16, help="faiss_ivf lists searched")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up images per search")
    parser.add_argument("--max-images", type=int, default=None, help="development: fewer images")
    parser.add_argument(
        "--cache", default=str(Path(tempfile.gettempdir()) / "flawmap_nn_search_cache")
    )
    parser.add_argument("--out", default=str(RESULTS / "nn_search"), help="results path stem")
    args = parser.parse_args()
    if "pruned" in args.searches:  # the reference of the ratios runs first
        args.searches = ["pruned", *[s for s in args.searches if s != "pruned"]]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:])
    records = (
        json.loads(out.with_suffix(".json").read_text())
        if out.with_suffix(".json").is_file()
        else []
    )
    for category in args.categories:  # results written after each category (reruns replace)
        fresh = run_category(category, args)
        for r in fresh:
            r["command"] = command
        done = {(r["search"], r["category"]) for r in fresh}
        records = [r for r in records if (r["search"], r["category"]) not in done] + fresh
        records.sort(key=lambda r: (r["category"], ALL_SEARCHES.index(r["search"])))
        out.with_suffix(".json").write_text(json.dumps(records, indent=2) + "\n")
        commands = sorted({r.get("command", "") for r in records})
        text = (
            "Commands: " + "; ".join(f"`{c}`" for c in commands) + "\n\n"
            f"{__doc__.split(chr(10) + chr(10))[1]}\n\n"
            f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
            f"{args.threads} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; "
            "shared machine, so compare the ratios to `pruned` (same run, searches interleaved "
            "image by image).\n\n" + table(records) + "\n"
        )
        out.with_suffix(".md").write_text(text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
