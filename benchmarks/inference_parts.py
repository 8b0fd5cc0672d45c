"""Each inference speed-up of the accuracy work, against what it replaced, in one run.

For PatchCore (``--seed``, default 0, fitted on all of ``train/good``) on bottle at 448 px with
a 1 % bank and on magnetic tile at the default 256 px budget with a 10 % bank, at batch size 1 on
one real test image, median of ``--runs`` after warm-up, the two variants of each part interleaved:

- post-processing: bilinear resize + separable Gaussian convolutions (before) vs the two matrix
  products of ``AnomalyMapPostprocessor.operators`` (now);
- backbone: the timm network as loaded (before) vs the copy with BatchNorms folded into the
  convolutions (``FeatureExtractor.inference_net``, now);
- nearest-neighbour search: one thread with faiss for the queries pruning cannot help (before)
  vs the queries split over the threads with the numpy GEMM fallback (now);
- the whole module (now) for reference.

    python benchmarks/inference_parts.py --datasets ../shared/datasets --threads 2

Writes ``benchmarks/results/inference_parts.{json,md}``. Run it alone: it is a timing benchmark.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import parse_study_arguments

SETUPS = (
    ("bottle", "mvtec_ad/bottle", {"image_size": 448, "coreset_ratio": 0.01}),
    ("magnetic_tile", "magnetic_tile", {}),
)


def interleaved(variants: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median ms of each variant, the variants called in turn ``runs`` times after warm-up."""
    for fn in variants.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def measure(category: str, folder: str, params: dict[str, Any], args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from threadpoolctl import threadpool_limits

    from flawmap.data import MVTecDataset
    from flawmap.models import create_model
    from flawmap.models.patchcore.search import BruteForceSearch, ClusterPrunedSearch

    root = Path(args.datasets) / folder
    model = create_model("patchcore", seed=args.seed, **params)
    model.fit(MVTecDataset(root, "train"))
    module = model.module
    image = MVTecDataset(root, "test", model.transform)[0]["image"][None]
    extractor, post = module.extractor, module.postprocess
    size = model.transform.output_size
    with torch.inference_mode():
        emb = module.embed(image)
        _, d, h, w = emb.shape
        queries = np.ascontiguousarray(emb.permute(0, 2, 3, 1).reshape(-1, d).numpy())
        raw = torch.rand(1, 1, h, w)
        x = ((image - extractor.mean) / extractor.std).contiguous(memory_format=torch.channels_last)
        folded = extractor.inference_net()
        bank = module.memory_bank.numpy()
        before = ClusterPrunedSearch(seed=0).fit(bank)
        before._brute = BruteForceSearch(use_faiss=True).fit(bank)
        now = ClusterPrunedSearch(seed=0, threads=args.threads).fit(bank)

        def search(index: ClusterPrunedSearch, blas: int | None) -> Callable[[], object]:
            def run() -> object:
                with threadpool_limits(limits=blas, user_api="blas"):
                    return index.query(queries)

            return run

        def resize_smooth() -> object:
            up = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
            return post.smooth(up)

        parts = {
            "postprocess": interleaved(
                {"before": resize_smooth, "now": lambda: post(raw, size)}, args.runs
            ),
            "backbone": interleaved(
                {"before": lambda: extractor.net(x), "now": lambda: folded(x)}, args.runs
            ),
            "search": interleaved({"before": search(before, 1), "now": search(now, 1)}, args.runs),
            "module": interleaved({"now": lambda: module(image)}, args.runs),
        }
    return {
        "category": category,
        "params": params,
        "input_size": list(size),
        "bank_rows": int(bank.shape[0]),
        "queries": int(queries.shape[0]),
        "threads": args.threads,
        "runs": args.runs,
        "parts": parts,
    }


def markdown(records: list[dict]) -> str:
    lines = [
        "# Inference parts before and after (`benchmarks/inference_parts.py`)",
        "",
        "| category | input | bank rows | part | before (ms) | now (ms) | before ÷ now |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        size = "×".join(map(str, r["input_size"]))
        for part, t in r["parts"].items():
            old = t.get("before")
            ratio = "–" if old is None else f"{old / t['now']:.1f}"
            lines.append(
                f"| {r['category']} | {size} | {r['bank_rows']} | {part} | "
                f"{'–' if old is None else f'{old:.1f}'} | {t['now']:.1f} | {ratio} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parse_study_arguments(parser)
    records = [measure(c, f, p, args) for c, f, p in SETUPS]
    out = Path(args.out)
    (out / "inference_parts.json").write_text(json.dumps({"records": records}, indent=2) + "\n")
    (out / "inference_parts.md").write_text(markdown(records))
    print(markdown(records))


if __name__ == "__main__":
    main()
