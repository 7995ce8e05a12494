"""A report as a list of blocks (headings, paragraphs, lists, tables, images, code), written out as
Markdown (images as files beside it) and as one self-contained HTML page (images embedded as base64)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Document:
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", items))

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", headers, rows))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("image", path, caption))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(document: Document, folder: Path) -> str:
    parts = []
    for block in document.blocks:
        kind = block[0]
        if kind == "heading":
            parts.append(f"{'#' * block[1]} {block[2]}")
        elif kind == "paragraph":
            parts.append(block[1])
        elif kind == "bullets":
            parts.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines = [
                "| " + " | ".join(map(_cell, headers)) + " |",
                "|" + "|".join("---" for _ in headers) + "|",
            ]
            lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
            parts.append("\n".join(lines))
        elif kind == "image":
            parts.append(f"![{block[2]}]({Path(block[1]).relative_to(folder)})")
        elif kind == "code":
            parts.append(f"```\n{block[1]}\n```")
    return "\n\n".join(parts) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
"""


def _inline(text: str) -> str:
    """Escaped text with Markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def page(document: Document, title: str) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
    ]
    for block in document.blocks:
        kind = block[0]
        if kind == "heading":
            parts.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "paragraph":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "bullets":
            parts.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(str(value))}</td>" for value in row) + "</tr>"
                for row in block[2]
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "image":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
            caption = html.escape(block[2])
            parts.append(
                f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        elif kind == "code":
            parts.append(f"<pre>{html.escape(block[1])}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
