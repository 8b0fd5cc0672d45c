"""Score images with an exported model, without PyTorch: numpy, Pillow, and ONNX Runtime or
OpenVINO (faiss for PatchCore's memory bank).

>>> from flawmap.runtime import load_exported
>>> model = load_exported("exports/bottle")          # written by `flawmap export`
>>> pred = model.predict_images(["part_001.png"])      # scores, maps, labels, threshold

Nothing here imports torch or timm. Attributes are imported on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flawmap.lazy import lazy_attributes

if TYPE_CHECKING:
    from flawmap.runtime.format import ExportInfo, is_export_folder, read_export
    from flawmap.runtime.model import ExportedModel, RuntimePrediction, load_exported
    from flawmap.runtime.threads import ThreadSettings, set_passive_wait_policy

_WHERE = {
    "ExportInfo": "flawmap.runtime.format",
    "is_export_folder": "flawmap.runtime.format",
    "read_export": "flawmap.runtime.format",
    "ExportedModel": "flawmap.runtime.model",
    "RuntimePrediction": "flawmap.runtime.model",
    "load_exported": "flawmap.runtime.model",
    "ThreadSettings": "flawmap.runtime.threads",
    "set_passive_wait_policy": "flawmap.runtime.threads",
}

__all__ = [
    "ExportInfo",
    "ExportedModel",
    "RuntimePrediction",
    "ThreadSettings",
    "is_export_folder",
    "load_exported",
    "read_export",
    "set_passive_wait_policy",
]

__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
