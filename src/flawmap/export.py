"""Export a fitted model to ONNX or OpenVINO for :mod:`flawmap.runtime` (no torch needed there).

``export_model(model, out, format=..., precision=...)`` traces the graphs of the module's
:meth:`~flawmap.models.base.AnomalyModule.export_plan` to ONNX (opset 17): the backbone, the
head (or, for PatchCore, the patch features and the post-processing around the memory-bank
search the runtime does). A reduced precision applies to the backbone graph only; heads,
distances and post-processing stay fp32. Then:

- ``onnx``: ``fp32`` as traced; ``int8``: ONNX Runtime static quantisation (QDQ, per-channel
  int8 weights, uint8 activations) of the backbone's convolutions, calibrated on good training
  images; ``bf16`` is refused (ONNX Runtime's CPU kernels have no bf16 convolutions);
- ``openvino``: the ONNX graphs converted to OpenVINO IR with fp32 weights; ``bf16`` is an
  inference precision the runtime asks OpenVINO for (AMX/AVX-512 BF16 where the CPU has them);
  ``int8``: NNCF post-training quantisation of the backbone, calibrated on good training images.

The threshold, the pre-processing and the model's parameters are written as plain JSON files
beside the graphs (:mod:`flawmap.runtime.format`), never into a graph.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

import flawmap
from flawmap.errors import ConfigError, DataError
from flawmap.models.base import Detector, ExportPlan, _jsonable
from flawmap.outputs import check_folder_target, write_folder_atomic, write_json_synced
from flawmap.runtime.format import (
    BACKENDS,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    MODEL_FILE,
    PRECISIONS,
    PREPROCESS_FILE,
    RESIZE_RULE,
    THRESHOLD_FILE,
    file_sha256,
    is_export_file,
)

__all__ = ["CALIBRATION_IMAGES", "check_export_options", "export_model"]

OPSET = 17
#: Good training images used to calibrate int8 quantisation (a seeded random subset).
CALIBRATION_IMAGES = 64
#: The graph that takes a reduced precision (the others stay fp32: heads, distances and
#: post-processing keep their range and cost little).
REDUCED_PRECISION_GRAPH = "backbone"


def check_export_options(format: str, precision: str) -> None:
    """ConfigError for an unknown format or precision, or a combination with no fast kernels."""
    if format not in BACKENDS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if format == "onnx" and precision == "bf16":
        raise ConfigError(
            "ONNX Runtime's CPU provider has no bf16 convolution kernels, so a bf16 ONNX graph "
            "would run slower than fp32: use --format openvino --precision bf16, or "
            "--format onnx --precision fp32|int8"
        )


def export_model(
    model: Detector,
    out: str | Path,
    *,
    format: str = "onnx",
    precision: str = "fp32",
    calibration: Dataset | None = None,
    overwrite: bool = False,
    seed: int = 0,
) -> Path:
    """Write an export folder of the fitted ``model`` to ``out`` (atomically).

    Args:
        format: ``"onnx"`` or ``"openvino"``.
        precision: ``"fp32"``, ``"bf16"`` (OpenVINO) or ``"int8"``.
        calibration: int8 only: good training images (a flawmap dataset built with
            ``model.transform``); at most :data:`CALIBRATION_IMAGES` of them, drawn with ``seed``.
        overwrite: replace an export already in ``out``.

    Raises:
        ConfigError: bad options, an int8 export without calibration images, or ``out``
            unusable (see :func:`flawmap.outputs.check_folder_target`).
        NotFittedError: ``model`` is not fitted.
    """
    check_export_options(format, precision)
    module = model.module
    if precision == "int8" and calibration is None:
        raise ConfigError(
            "int8 export needs calibration images: pass the good training images "
            "(command line: --data CATEGORY, whose train/good images are used)"
        )
    target = check_folder_target(out, overwrite, is_export_file, "export")
    size = model.transform.output_size
    plan = module.export_plan(size)
    samples = _calibration_batches(model, calibration, seed) if precision == "int8" else None
    try:
        _write_export(model, target, plan, format, precision, samples, seed)
    finally:
        module.eval()  # exporting must never leave the fitted module in training mode
    return Path(out)


def _write_export(
    model: Detector,
    target: Path,
    plan: ExportPlan,
    format: str,
    precision: str,
    samples: list[np.ndarray] | None,
    seed: int,
) -> None:

    def write(staging: Path) -> None:
        files = _write_graphs(plan, staging, format, precision, samples)
        for name, array in plan.arrays.items():
            np.save(staging / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        arrays = {name: f"{name}.npy" for name in plan.arrays}
        written = sorted(p.name for p in staging.iterdir() if p.is_file())
        meta = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_VERSION,
            "flawmap_version": flawmap.__version__,
            "torch_version": torch.__version__,
            "model": model.name,
            "fit_id": model.fit_id_,
            "params": {k: _jsonable(v) for k, v in model.get_params().items()},
            "fit": model.fit_summary(),
            "backend": format,
            "precision": precision,
            "head": plan.head,
            "graphs": {
                name: {
                    "file": files[name],
                    "inputs": list(part.inputs),
                    "outputs": list(part.outputs),
                    "precision": precision if name == REDUCED_PRECISION_GRAPH else "fp32",
                }
                for name, part in plan.graphs.items()
            },
            "arrays": arrays,
            "calibration": None
            if samples is None
            else {"images": len(samples), "source": "good training images", "seed": seed},
            "files": {name: file_sha256(staging / name) for name in written},
        }
        crop = model.transform.center_crop
        write_json_synced(
            staging / PREPROCESS_FILE,
            {
                "image_size": list(model.transform.resize_size),
                "center_crop": None if crop is None else list(model.transform.output_size),
                "resize": RESIZE_RULE,
                "input": "RGB, (N, 3, H, W) float32 in [0, 1]; mean/std normalisation is in "
                "the graph",
            },
        )
        write_json_synced(
            staging / THRESHOLD_FILE,
            {
                "threshold": model.threshold,
                "rule": "an image is defective when its score >= threshold; edit this number "
                "to change the decision (no re-export needed)",
                "learned_from": f"quantile {model.threshold_quantile} of held-out good training "
                "images' scores",
            },
        )
        write_json_synced(staging / MODEL_FILE, meta)

    write_folder_atomic(target, write)


def _calibration_batches(model: Detector, data: Dataset | None, seed: int) -> list[np.ndarray]:
    """Good training images for int8 calibration: a seeded subset of at most
    :data:`CALIBRATION_IMAGES`, each a (1, 3, H, W) float32 batch."""
    if data is None or len(data) == 0:  # type: ignore[arg-type]
        raise DataError("no calibration images: int8 export needs good training images")
    n = len(data)  # type: ignore[arg-type]
    order = np.random.default_rng(seed).permutation(n)[: min(n, CALIBRATION_IMAGES)]
    subset = Subset(data, sorted(order.tolist()))
    images = []
    for batch in model.batches(subset):
        images.extend(x[None].numpy().astype(np.float32) for x in batch["image"])
    return images


def _trace_onnx(plan: ExportPlan, name: str, path: Path) -> None:
    part = plan.graphs[name]
    dynamic = {n: {0: "batch"} for n in (*part.inputs, *part.outputs)}
    with (
        warnings.catch_warnings(),
        torch.no_grad(),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                part.module,
                part.examples,
                str(path),
                input_names=list(part.inputs),
                output_names=list(part.outputs),
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
        except Exception as exc:  # an operation the tracer or ONNX cannot express
            what = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            raise ConfigError(
                f"the {name} graph of this model cannot be exported to ONNX ({what}); a model "
                "whose scoring leaves torch must say how in AnomalyModule.export_plan"
            ) from exc


#: A traced graph must reproduce its module on inputs it was not traced with to this fraction
#: of each output's range (fp32 rounding is far below it; a value traced as a constant is not).
CHECK_TOLERANCE = 1e-3


def _check_inputs(plan: ExportPlan) -> dict[str, torch.Tensor]:
    """Inputs of every graph for :func:`_check_traced`: two seeded random images, each graph's
    torch outputs for the next, seeded random values for what the runtime computes itself."""
    generator = torch.Generator().manual_seed(0)
    first = next(iter(plan.graphs.values()))
    images = torch.rand(2, *first.examples[0].shape[1:], generator=generator)
    values: dict[str, torch.Tensor] = {"images": images}
    with torch.no_grad():
        for part in plan.graphs.values():
            for key, example in zip(part.inputs, part.examples, strict=True):
                if key not in values:
                    shape = (2, *example.shape[1:])
                    values[key] = torch.rand(shape, generator=generator) + 0.5
            out = part.module(*(values[key] for key in part.inputs))
            out = out if isinstance(out, tuple | list) else (out,)
            values.update(zip(part.outputs, out, strict=True))
    return values


def _check_traced(plan: ExportPlan, name: str, path: Path, values: dict[str, torch.Tensor]) -> None:
    """ConfigError unless the ONNX graph ``path`` gives the module's outputs on ``values``:
    tracing records any step that leaves torch (numpy, Python numbers) as a constant, and such
    an export would score every image alike without a word."""
    import onnxruntime as ort

    part = plan.graphs[name]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: values[i.name].numpy() for i in session.get_inputs()}
    for output, got in zip(part.outputs, session.run(list(part.outputs), feeds), strict=True):
        want = values[output].numpy()
        scale = max(float(want.max() - want.min()), float(np.abs(want).max()), 1e-12)
        error = float(np.abs(got - want).max()) / scale
        if not error <= CHECK_TOLERANCE:
            raise ConfigError(
                f"the {name} graph of this model cannot be exported faithfully: on new inputs "
                f"its output {output!r} differs from the model's by {error:.2g} of its range "
                "(a step that leaves torch was traced as a constant); a model whose scoring "
                "leaves torch must say how in AnomalyModule.export_plan"
            )


def _write_graphs(
    plan: ExportPlan, folder: Path, format: str, precision: str, samples: list[np.ndarray] | None
) -> dict[str, str]:
    """Write every graph of ``plan`` into ``folder``; returns graph name -> file name. Only the
    backbone graph is quantised (int8)."""
    files = {}
    check_inputs = _check_inputs(plan)
    for name in plan.graphs:
        onnx_path = folder / f"{name}.onnx"
        _trace_onnx(plan, name, onnx_path)
        _check_traced(plan, name, onnx_path, check_inputs)
        feeds = samples if name == REDUCED_PRECISION_GRAPH else None
        if format == "onnx":
            if feeds is not None:
                _quantise_onnx(onnx_path, feeds)
            files[name] = onnx_path.name
        else:
            files[name] = _to_openvino(onnx_path, feeds).name
            onnx_path.unlink()
    return files


def _quantise_onnx(path: Path, feeds: list[np.ndarray]) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {"images": item}

    prepared = path.with_name(path.stem + ".prep.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    prepared.unlink()


def _to_openvino(onnx_path: Path, feeds: list[np.ndarray] | None) -> Path:
    import openvino as ov

    ov_model = ov.convert_model(str(onnx_path))
    if feeds is not None:
        # nncf imports torch's C++-extension helper, which logs a CUDA warning, and logs each
        # layer it skips: neither concerns the user.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        import nncf

        nncf.set_log_level(logging.ERROR)

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            ov_model = nncf.quantize(
                ov_model,
                nncf.Dataset(feeds),
                subset_size=len(feeds),
                # Asymmetric activations (stage outputs are signed and skewed) and the full bias
                # correction: the most accurate backbone features of the settings compared.
                preset=nncf.QuantizationPreset.MIXED,
                fast_bias_correction=False,
            )
    xml = onnx_path.with_suffix(".xml")
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    return xml
