"""Score images with an exported model, without PyTorch: numpy, Pillow, and ONNX Runtime or
OpenVINO (faiss for PatchCore's memory bank).

>>> from flawmap.runtime import load_exported
>>> model = load_exported("exports/bottle")          # written by `flawmap export`
>>> pred = model.predict_images(["part_001.png"])      # scores, maps, labels, threshold

Nothing here imports torch or timm.
"""

from __future__ import annotations

from flawmap.runtime.format import ExportInfo, is_export_folder, read_export
from flawmap.runtime.model import ExportedModel, RuntimePrediction, load_exported
from flawmap.runtime.threads import ThreadSettings, set_passive_wait_policy

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
