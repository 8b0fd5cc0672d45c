"""Compare texture sources of a texture-defect model on training data only (never the test split).

The model (default CSE) is fitted on ``1 - --val-fraction`` of train/good once per texture
source and scored on the held-out good images plus one synthetic-defect copy of each, once per
validation defect source (``--validation`` of :data:`select_on_training.VALIDATION_DEFECTS`).
Only ``cutpaste`` is neutral between all three training sources; ``structural+blur`` is what
``none`` trains on, ``dtd`` / ``procedural`` contain the matching texture source. Sources:

- ``dtd``: ``texture_dir=--textures`` (default ``DATASETS/dtd``), the Describable Textures Dataset;
- ``procedural``: ``texture_dir=None``, the built-in procedural textures (the default);
- ``none``: structural and blur defects only (the synthesizer without its ``"texture"`` kind,
  which is what ``texture_dir=None`` meant before procedural textures existed).

    python benchmarks/texture_source.py --model cse --categories bottle --threads 1 --seed 0

Writes ``benchmarks/results/<model>_texture_source.{json,md}`` after every fit (rows of other
categories, sources or seeds are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import CATEGORIES, DEFAULT_DATASETS, ROOT
from select_on_training import VALIDATION_DEFECTS, validation_defects

SOURCES = ("dtd", "procedural", "none")
METRICS = (("image_auroc", "img"), ("pixel_auroc", "pix"), ("aupro", "PRO"))


@contextlib.contextmanager
def without_texture_kind() -> Iterator[None]:
    """While active, a :class:`DefectSynthesizer` built without a texture folder leaves out the
    ``"texture"`` kind (the behaviour before procedural textures; no model parameter says so)."""
    from flawmap.synth import DEFECT_KINDS, DefectSynthesizer

    original = DefectSynthesizer.__init__

    def init(self: Any, texture_dir: Any = None, kinds: Any = DEFECT_KINDS, **kw: Any) -> None:
        if texture_dir is None:
            kinds = tuple(k for k in kinds if k != "texture")
        original(self, texture_dir, kinds, **kw)

    DefectSynthesizer.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        DefectSynthesizer.__init__ = original  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cse")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    parser.add_argument("--params", default="{}", help="JSON dict of fixed model parameters")
    parser.add_argument("--datasets", default=str(DEFAULT_DATASETS))
    parser.add_argument(
        "--validation",
        nargs="+",
        default=list(VALIDATION_DEFECTS),
        choices=VALIDATION_DEFECTS,
        help="validation defect sources, each scored on every fitted model",
    )
    parser.add_argument("--textures", default=None, help="DTD-style folder (default DATASETS/dtd)")
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    import torch
    from torch.utils.data import Subset

    from flawmap.data import MVTecDataset, split_holdout
    from flawmap.evaluation.synthetic import SyntheticValidationSet, validate
    from flawmap.models import create_model

    torch.set_num_threads(args.threads)
    textures = args.textures or str(Path(args.datasets) / "dtd")
    fixed = json.loads(args.params)
    path = Path(args.out) / f"{args.model}_texture_source.json"
    for category in args.categories:
        probe = create_model(args.model, seed=args.seed, **fixed)
        train = MVTecDataset(Path(args.datasets) / CATEGORIES[category], "train", probe.transform)
        fit_idx, val_idx = split_holdout(len(train), args.val_fraction, args.seed)
        good = Subset(train, val_idx.tolist())
        validations = {
            v: SyntheticValidationSet(
                good, validation_defects(v, args.datasets, args.textures), seed=args.seed
            )
            for v in args.validation
        }
        for source in args.sources:
            texture_dir = textures if source == "dtd" else None
            detector = create_model(
                args.model, seed=args.seed, **{**fixed, "texture_dir": texture_dir}
            )
            guard = without_texture_kind() if source == "none" else contextlib.nullcontext()
            start = time.perf_counter()
            with guard:
                detector.fit(Subset(train, fit_idx.tolist()), progress=False)
            fit_seconds = time.perf_counter() - start
            history = getattr(detector, "history_", None)
            record = {
                "model": args.model,
                "category": category,
                "texture_source": source,
                "texture_dir": texture_dir and os.path.relpath(texture_dir, ROOT),
                "params": fixed,
                "seed": args.seed,
                "threads": torch.get_num_threads(),
                "n_fit": len(fit_idx),
                "n_validation_good": len(val_idx),
                "final_train_loss": history.epoch_losses[-1] if history else None,
                "fit_seconds": fit_seconds,
                "validation": {v: validate(detector, val) for v, val in validations.items()},
            }
            print(json.dumps(record), flush=True)
            write_results(path, [record], shlex.join(sys.argv[1:]))


def _key(record: dict[str, Any]) -> tuple[str, str, str, int, str]:
    params = json.dumps(record["params"], sort_keys=True)
    return (record["model"], record["category"], record["texture_source"], record["seed"], params)


def write_results(path: Path, records: list[dict[str, Any]], argv: str) -> list[dict[str, Any]]:
    """Merge ``records`` into ``path`` (same model, category, source, seed, params replaced) and
    write the table ``path.with_suffix('.md')``: one row per run, per validation source the
    validation image AUROC / pixel AUROC / AUPRO."""
    fresh = {_key(r) for r in records}
    old = json.loads(path.read_text()) if path.is_file() else []
    order = {s: i for i, s in enumerate(SOURCES)}
    merged = sorted(
        [r for r in old if _key(r) not in fresh] + records,
        key=lambda r: (r["category"], order[r["texture_source"]], r["seed"]),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    valids = [v for v in VALIDATION_DEFECTS if any(v in r["validation"] for r in merged)]
    header = ["category", "texture source", "seed"]
    header += [f"{v} {short}" for v in valids for _, short in METRICS]
    header += ["final loss", "fit (s)"]
    lines = [
        f"# {merged[0]['model'] if merged else ''}: texture source of the synthetic training "
        "defects, validated on training data only",
        "",
        f"Command: `python benchmarks/texture_source.py {argv}`",
        "",
        "Fit on train/good less a held-out share (`n_fit` / `n_validation_good` in the JSON); "
        "validation = the held-out images + one synthetic-defect copy of each, per validation "
        "defect source (columns): img = image AUROC, pix = pixel AUROC, "
        "PRO = AUPRO. `cutpaste` is the source none of the training sources contains.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in merged:
        cells = [r["category"], r["texture_source"], str(r["seed"])]
        for v in valids:
            m = r["validation"].get(v)
            cells += ["–" if m is None else f"{m[k]:.3f}" for k, _ in METRICS]
        loss = r.get("final_train_loss")
        cells += ["–" if loss is None else f"{loss:.3f}", f"{r['fit_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return merged


if __name__ == "__main__":
    main()
