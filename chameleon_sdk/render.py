"""Render documents for people: HTML (images inline), Markdown (images beside it), JSON."""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import PIL.Image

from chameleon_sdk.document import Document, Image, Text, png_bytes
from chameleon_sdk.errors import DocumentError
from chameleon_sdk.payloads import render_html, render_text
from chameleon_sdk.storage.atomic_files import atomic_write_bytes, atomic_write_text

__all__ = ["document_to_html", "document_to_text", "html_page", "png_data_uri", "write_document"]


def png_data_uri(picture: PIL.Image.Image) -> str:
    """``picture`` as a ``data:image/png;base64,...`` URI, to inline in HTML."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(picture)).decode("ascii")


def _segment_html(segment: object) -> str:
    if isinstance(segment, Text):
        return f'<span class="text">{html.escape(segment.text)}</span>'
    if isinstance(segment, Image):
        w, h = segment.image.size
        scale = max(1, 256 // max(w, h))
        size = f'width="{w * scale}" height="{h * scale}"'
        return f'<img src="{png_data_uri(segment.image)}" {size} style="image-rendering: pixelated">'
    return render_html(segment.modality, segment.payload)  # type: ignore[attr-defined]


def document_to_html(document: Document) -> str:
    """One document as an HTML fragment (text escaped, images as inline PNG data URIs)."""
    return "".join(_segment_html(s) for s in document)


def document_to_text(document: Document) -> str:
    """One document as plain text: images and plugin payloads as their ``render_text`` (or a fallback)."""
    return "".join(_segment_text(s) for s in document)


def _segment_text(segment: object) -> str:
    if isinstance(segment, Text):
        return segment.text
    if isinstance(segment, Image):
        return f"[image {segment.image.size[0]}x{segment.image.size[1]}]"
    return render_text(segment.modality, segment.payload)  # type: ignore[attr-defined]


def _page(title: str, sections: Sequence[tuple[str, Document]]) -> str:
    body = "\n".join(
        f'<section><h2>{html.escape(heading)}</h2><div class="doc">{document_to_html(doc)}</div></section>'
        for heading, doc in sections
    )
    return html_page(title, body)


def html_page(title: str, body: str, *, style: str = "") -> str:
    """A whole HTML page around ``body`` (already HTML), with a heading and the default style."""
    css = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}.doc{white-space:pre-wrap}"
        "img{vertical-align:middle;margin:4px}" + style
    )
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{css}</style>"
    return f"<!doctype html><html><head>{head}</head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"


def _markdown(sections: Sequence[tuple[str, Document]], out: Path) -> str:
    lines = []
    counter = 0
    for heading, doc in sections:
        lines.append(f"## {heading}\n")
        parts = []
        for segment in doc:
            if isinstance(segment, Text):
                parts.append(segment.text)
            elif isinstance(segment, Image):
                counter += 1
                name = f"{out.stem}_{counter:03d}.png"
                atomic_write_bytes(out.parent / name, png_bytes(segment.image))
                parts.append(f"![image {counter}]({name})")
            else:
                parts.append(render_text(segment.modality, segment.payload))
        lines.append("".join(parts) + "\n")
    return "\n".join(lines)


def output_suffix(path: str | os.PathLike[str]) -> str:
    """The suffix of an output file :func:`write_document` can write; :class:`DocumentError` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".html", ".md", ".json"):
        raise DocumentError(f"output file {str(path)!r}: expected a .html, .md or .json suffix")
    return suffix


def write_document(
    path: str | os.PathLike[str], sections: Sequence[tuple[str, Document]], *, title: str = "chameleon"
) -> Path:
    """Write titled documents to ``path``; the format follows the suffix: ``.html``, ``.md`` or ``.json``."""
    path = Path(path)
    suffix = output_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".html":
        text = _page(title, sections)
    elif suffix == ".md":
        text = f"# {title}\n\n" + _markdown(sections, path)
    else:
        text = json.dumps([{"title": h, **d.to_json()} for h, d in sections], ensure_ascii=False, indent=1) + "\n"
    atomic_write_text(path, text)
    return path
