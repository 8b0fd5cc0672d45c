"""Graph sessions of ONNX Runtime and OpenVINO behind one small interface, with the thread
settings of :mod:`flawmap.runtime.threads`. Imported lazily: a machine needs only the backend
its exports use."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from flawmap.errors import ConfigError
from flawmap.runtime.threads import ThreadSettings

#: OpenVINO's inference precision for each export precision (int8 layers run in int8 whatever
#: this says; the layers left in floating point run in fp32).
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class Graph(Protocol):
    """One compiled graph: named float32 inputs -> its named outputs."""

    #: The inputs the graph really takes (tracing drops an input the graph does not use).
    input_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxRuntimeGraph:
    """An ONNX Runtime CPU session."""

    def __init__(self, path: Path, precision: str, threads: ThreadSettings) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ConfigError("this export needs ONNX Runtime: pip install onnxruntime") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads.count
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if threads.spin else "0"
        )
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, inputs), strict=True))


class OpenVinoGraph:
    """An OpenVINO CPU compiled model (latency hint, one stream)."""

    def __init__(self, path: Path, precision: str, threads: ThreadSettings) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ConfigError("this export needs OpenVINO: pip install openvino") from exc
        core = ov.Core()
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads.count),
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
        }
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer(inputs)
        return {port.get_any_name(): np.asarray(results[port]) for port in self.compiled.outputs}


def open_graph(path: Path, backend: str, precision: str, threads: ThreadSettings) -> Graph:
    """A compiled graph of ``backend`` (``"onnx"`` or ``"openvino"``) from ``path``."""
    if backend == "onnx":
        return OnnxRuntimeGraph(path, precision, threads)
    if backend == "openvino":
        return OpenVinoGraph(path, precision, threads)
    raise ConfigError(f"unknown backend {backend!r}; expected onnx or openvino")
