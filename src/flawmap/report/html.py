"""A single self-contained HTML report: metrics, config and grids of captioned images.

The file embeds every image as a base64 PNG data URI and its CSS inline; it loads nothing
from anywhere and needs no JavaScript, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from flawmap.errors import DataError
from flawmap.report.markdown import config_json, format_value, metric_label

__all__ = ["OVERLAY_LEGEND", "png_data_uri", "write_html_report"]

#: A note explaining overlays made by :func:`flawmap.report.heatmap_overlay` with the "jet"
#: colour map; pass it in ``notes``. Only true if every overlay used the same vmin/vmax.
OVERLAY_LEGEND = (
    "Colour: anomaly score (dark blue = low, dark red = high), on the same scale for every "
    "image. "
    "White outline: region the model flags (score ≥ threshold). "
    "Green outline: ground-truth defect, where known."
)

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


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _metrics_html(metrics: dict[str, float | None]) -> str:
    if not metrics:
        return '<p class="empty">No metrics were computed.</p>'
    rows = [
        f'<tr><td>{_esc(metric_label(k))}</td><td class="value">{_esc(format_value(v))}</td></tr>'
        for k, v in metrics.items()
    ]
    return (
        '<table class="metrics">\n<thead><tr><th>Metric</th><th>Value</th></tr></thead>\n'
        "<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"
    )


def _section_html(heading: str, cards: Sequence[tuple[np.ndarray, str]]) -> str:
    parts = [f"<section>\n<h2>{_esc(heading)}</h2>"]
    if not cards:
        parts.append('<p class="empty">No images.</p>')
    else:
        parts.append('<div class="grid">')
        for image, caption in cards:
            uri = png_data_uri(image)
            cap = _esc(caption)
            parts.append(
                f'<figure class="card"><img src="{uri}" alt="{cap}">'
                f"<figcaption>{cap}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def write_html_report(
    path: str | Path,
    title: str,
    metrics: dict[str, float | None],
    config: dict,
    sections: list[tuple[str, list[tuple[np.ndarray, str]]]],
    notes: list[str] | None = None,
) -> Path:
    """Write one self-contained HTML report and return its path (parent dirs created).

    Layout: ``title``; optional ``notes`` paragraphs (e.g. :data:`OVERLAY_LEGEND`); a
    metric/value table (readable names, None → "–"); then each ``(heading, cards)``
    section as a grid of image cards, a card being ``(image (H, W, 3) uint8, caption)``;
    finally the config as JSON in a collapsible block. All text is HTML-escaped; images
    are embedded as base64 PNG; no external resources, no JavaScript.
    """
    from flawmap import __version__

    body = [f"<h1>{_esc(title)}</h1>"]
    body.extend(f'<p class="note">{_esc(note)}</p>' for note in notes or [])
    body.append(_metrics_html(metrics))
    body.extend(_section_html(heading, cards) for heading, cards in sections)
    body.append(
        "<section>\n<h2>Configuration</h2>\n<details><summary>Show configuration (JSON)</summary>"
        f"<pre>{_esc(config_json(config))}</pre></details>\n</section>"
    )
    body.append(f"<footer>Generated by flawmap {_esc(__version__)}</footer>")
    document = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    return out
