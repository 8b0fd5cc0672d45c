"""A report as a list of sections of blocks, written as one self-contained HTML file and as
Markdown with its figures and images beside it.

Blocks: :class:`Paragraph`, :class:`Table`, :class:`Figure` (an SVG drawing), :class:`Gallery`
(captioned images) and :class:`Code` (collapsible text). The HTML file embeds every figure as
inline SVG and every image as a base64 PNG, with its CSS inline: it loads nothing from anywhere
and needs no JavaScript. The Markdown file links the same figures (``figures/<name>.svg``) and
images (``images/<name>.png``), written next to it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flawmap.outputs import atomic_write, write_text_atomic
from flawmap.report.html import _CSS, png_data_uri
from flawmap.report.overlay import save_png

__all__ = [
    "Card",
    "Code",
    "Document",
    "Figure",
    "Gallery",
    "Paragraph",
    "Section",
    "Table",
    "render_html",
    "render_markdown",
    "write_report",
]


@dataclass(frozen=True)
class Paragraph:
    """Text; ``kind`` "note" (greyed) or "empty" (a section that cannot exist, and why)."""

    text: str
    kind: str = ""


@dataclass(frozen=True)
class Table:
    """A table of text cells; ``numeric`` columns are right-aligned."""

    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    numeric: tuple[int, ...] = ()


@dataclass(frozen=True)
class Figure:
    """An SVG drawing (``svg`` is the ``<svg>`` element's text) named for its file; ``wide``
    drawings keep their natural width (up to the page's) instead of a plot's 420 px."""

    name: str
    svg: str
    caption: str
    wide: bool = False


@dataclass(frozen=True)
class Card:
    """A (H, W, 3) uint8 image with its caption; ``name`` names its PNG file."""

    name: str
    image: np.ndarray
    caption: str


@dataclass(frozen=True)
class Gallery:
    cards: list[Card]
    empty: str = "No images."


@dataclass(frozen=True)
class Code:
    """Collapsible preformatted text (e.g. a configuration as JSON)."""

    summary: str
    text: str


Block = Paragraph | Table | Figure | Gallery | Code


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)
    intro: list[Paragraph] = field(default_factory=list)


# ---------------------------------------------------------------------------------- HTML
_EXTRA_CSS = """
nav.toc { margin: .5rem 0 1.5rem; font-size: .9rem; }
nav.toc a { margin-right: 1rem; }
figure.plot { display: inline-block; margin: 0 1rem 1rem 0; vertical-align: top;
              background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: .5rem; }
figure.plot svg { display: block; width: 420px; max-width: 100%; height: auto; }
figure.plot figcaption { font-size: .85rem; max-width: 420px; margin-top: .3rem; }
figure.plot.wide svg { width: auto; max-width: 100%; }
figure.plot.wide figcaption { max-width: none; }
table.metrics td.text { text-align: left; }
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _svg_body(svg: str) -> str:
    """The ``<svg>`` element of an SVG document (XML declaration and DOCTYPE dropped)."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def _block_html(block: Block) -> str:
    if isinstance(block, Paragraph):
        css = f' class="{block.kind}"' if block.kind else ""
        return f"<p{css}>{_esc(block.text)}</p>"
    if isinstance(block, Table):
        head = ""
        if any(block.header):
            cells = "".join(f"<th>{_esc(h)}</th>" for h in block.header)
            head = f"<thead><tr>{cells}</tr></thead>"
        rows = []
        for row in block.rows:
            cells = "".join(
                f'<td class="{"value" if i in block.numeric else "text"}">{_esc(c)}</td>'
                for i, c in enumerate(row)
            )
            rows.append(f"<tr>{cells}</tr>")
        return f'<table class="metrics">{head}<tbody>{"".join(rows)}</tbody></table>'
    if isinstance(block, Figure):
        css = "plot wide" if block.wide else "plot"
        return (
            f'<figure class="{css}" data-figure="{_esc(block.name)}">{_svg_body(block.svg)}'
            f"<figcaption>{_esc(block.caption)}</figcaption></figure>"
        )
    if isinstance(block, Gallery):
        if not block.cards:
            return f'<p class="empty">{_esc(block.empty)}</p>'
        cards = [
            f'<figure class="card"><img src="{png_data_uri(c.image)}" alt="{_esc(c.caption)}">'
            f"<figcaption>{_esc(c.caption)}</figcaption></figure>"
            for c in block.cards
        ]
        return '<div class="grid">' + "".join(cards) + "</div>"
    return (
        f"<details><summary>{_esc(block.summary)}</summary><pre>{_esc(block.text)}</pre></details>"
    )


def render_html(document: Document) -> str:
    """The whole report as one self-contained HTML document."""
    from flawmap import __version__

    toc = " ".join(f'<a href="#{s.anchor}">{_esc(s.title)}</a>' for s in document.sections)
    body = [f"<h1>{_esc(document.title)}</h1>"]
    body += [_block_html(p) for p in document.intro]
    body.append(f'<nav class="toc">{toc}</nav>')
    for section in document.sections:
        body.append(f'<section id="{section.anchor}"><h2>{_esc(section.title)}</h2>')
        body += [_block_html(b) for b in section.blocks]
        body.append("</section>")
    body.append(f"<footer>Generated by flawmap {_esc(__version__)}</footer>")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            '<head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(document.title)}</title>",
            f"<style>{_CSS}{_EXTRA_CSS}</style></head>",
            "<body>",
            *body,
            "</body></html>",
            "",
        ]
    )


# ---------------------------------------------------------------------------------- Markdown
def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _block_markdown(block: Block, files: dict[str, bytes | np.ndarray]) -> str:
    if isinstance(block, Paragraph):
        return f"*{block.text}*" if block.kind == "empty" else block.text
    if isinstance(block, Table):
        lines = [
            "| " + " | ".join(_md_cell(h) for h in block.header) + " |",
            "|"
            + "|".join("---:" if i in block.numeric else "---" for i in range(len(block.header)))
            + "|",
        ]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Figure):
        path = f"figures/{block.name}.svg"
        files[path] = block.svg.encode("utf-8")
        return f"![{block.caption}]({path})\n\n{block.caption}"
    if isinstance(block, Gallery):
        if not block.cards:
            return f"*{block.empty}*"
        lines = []
        for card in block.cards:
            path = f"images/{card.name}.png"
            files[path] = card.image
            lines.append(f"![{card.caption}]({path})  \n{card.caption}\n")
        return "\n".join(lines)
    return f"<details><summary>{block.summary}</summary>\n\n```\n{block.text}\n```\n\n</details>"


def render_markdown(document: Document) -> tuple[str, dict[str, bytes | np.ndarray]]:
    """(Markdown text, the files it links: relative path -> SVG bytes or an image array)."""
    files: dict[str, bytes | np.ndarray] = {}
    parts = [f"# {document.title}"]
    parts += [_block_markdown(p, files) for p in document.intro]
    for section in document.sections:
        parts.append(f"## {section.title}")
        parts += [_block_markdown(b, files) for b in section.blocks]
    return "\n\n".join(parts) + "\n", files


def write_report(document: Document, folder: str | Path, stem: str = "report") -> list[Path]:
    """Write ``<stem>.html`` (self-contained) and ``<stem>.md`` with the figures and images it
    links into ``folder`` (created), each file atomically; returns the two report paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    text, files = render_markdown(document)
    for relative, content in files.items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            atomic_write(target, lambda tmp, c=content: tmp.write_bytes(c))
        else:
            atomic_write(target, lambda tmp, c=content: save_png(c, tmp))
    html_path = write_text_atomic(out / f"{stem}.html", render_html(document))
    md_path = write_text_atomic(out / f"{stem}.md", text)
    return [html_path, md_path]
