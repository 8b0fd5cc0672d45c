"""Pieces of the self-contained HTML reports (:mod:`flawmap.report.document`): images as
base64 PNG data URIs and the inline style sheet; nothing is loaded from anywhere."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from flawmap.errors import DataError

__all__ = ["png_data_uri"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem;
       color: #1a1a1a; background: #fafafa; line-height: 1.4; }
h1 { margin-top: 0; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ccc; padding-bottom: .25rem; }
p.note { color: #444; max-width: 60rem; }
table.metrics { border-collapse: collapse; margin: 1rem 0; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: .3rem .8rem; }
table.metrics th { background: #eee; text-align: left; }
table.metrics td.value { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr));
        gap: 1rem; }
figure.card { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 4px;
              padding: .5rem; }
figure.card img { display: block; width: 100%; height: auto; }
figure.card figcaption { font-size: .85rem; margin-top: .4rem; word-break: break-word; }
details pre { background: #fff; border: 1px solid #ddd; padding: .75rem; overflow-x: auto; }
p.empty { color: #777; font-style: italic; }
footer { margin-top: 3rem; color: #888; font-size: .8rem; }
"""


def png_data_uri(image: np.ndarray) -> str:
    """Encode a (H, W, 3) or (H, W) uint8 array as a ``data:image/png;base64,...`` URI."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise DataError(
            f"report images must be (H, W, 3) or (H, W) uint8 arrays, got shape {arr.shape} "
            f"and dtype {arr.dtype}"
        )
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
