"""flawmap: unsupervised visual anomaly detection and localisation for industrial images."""

from __future__ import annotations

__version__ = "0.1.0"
