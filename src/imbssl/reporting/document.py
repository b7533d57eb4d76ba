"""A table file's content, built once and written twice: as Markdown (`results/tables/*.md`, for a
paper or a README) and as a small HTML page that the Snakemake report shows inline.

A document is a list of blocks: a paragraph (a string, with Markdown's `**bold**`, `*italic*` and
`` `code` `` marks; a line break stays a line break, lines starting with "- " are a list) or a
`Table` of cells that are already text.
Every number is formatted where the table is built, once, so the Markdown, the HTML page and the
report all show the same digits. No torch, no pandas: strings in, strings out.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Sequence, Union

from imbssl.core.atomic import write_text


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    numeric: Sequence[bool]  # per column: right-aligned (numbers) or left-aligned (names)

    def __post_init__(self):
        assert len(self.numeric) == len(self.header), "one alignment per column"
        assert all(len(row) == len(self.header) for row in self.rows), "one cell per column in every row"


Block = Union[str, Table]


def markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown, separated by blank lines."""
    return "\n\n".join(_markdown_table(b) if isinstance(b, Table) else b for b in blocks) + "\n"


def _markdown_table(table: Table) -> str:
    lines = ["| " + " | ".join(table.header) + " |",
             "|" + "".join("---:|" if right else "---|" for right in table.numeric)]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines)


# Markdown's inline marks, in the order they are replaced (code first: nothing inside it is a mark).
_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
           (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"<em>\1</em>")]


def inline_html(text: str) -> str:
    """One paragraph's text as HTML: escaped, then its bold, italic and code marks."""
    out = html.escape(text, quote=False)
    for pattern, replacement in _INLINE:
        out = pattern.sub(replacement, out)
    return out


def _html_table(table: Table) -> str:
    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(f'<{tag} class="{"num" if right else "txt"}">{inline_html(value)}</{tag}>'
                       for value, right in zip(values, table.numeric))

    body = "\n".join(f"<tr>{cells('td', row)}</tr>" for row in table.rows)
    return f"<table>\n<thead><tr>{cells('th', table.header)}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _html_paragraph(text: str) -> str:
    """A paragraph; its lines that start with "- " (a Markdown list under it) as a list."""
    lines = text.splitlines()
    lead = [line for line in lines if not line.startswith("- ")]
    items = [line[2:] for line in lines if line.startswith("- ")]
    html_text = "<p>" + "<br>\n".join(inline_html(line) for line in lead) + "</p>" if lead else ""
    if items:
        html_text += "\n<ul>" + "".join(f"<li>{inline_html(item)}</li>" for item in items) + "</ul>"
    return html_text


# Small and self-contained (the report embeds the page as it is): readable in the report's frame,
# numbers right-aligned in columns of equal-width digits, the header kept in view while scrolling.
STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2937; margin: 16px; }
h1 { font-size: 16px; margin: 0 0 12px; }
p { margin: 10px 0; max-width: 80em; }
table { border-collapse: collapse; margin: 8px 0 18px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e7eb; white-space: nowrap; }
th { background: #f3f4f6; position: sticky; top: 0; font-weight: 600; }
tbody tr:nth-child(even) { background: #f9fafb; }
.num { text-align: right; }
.txt { text-align: left; }
code { font-size: 13px; background: #f3f4f6; padding: 0 3px; border-radius: 3px; }
"""


def html_page(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one standalone HTML page (inline stylesheet, no scripts, nothing fetched)."""
    body = "\n".join(_html_table(b) if isinstance(b, Table) else _html_paragraph(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"{body}\n</body>\n</html>\n")


def write_document(blocks: Sequence[Block], out_md, out_html=None, title: str = "") -> None:
    """The Markdown file and, when asked for, the HTML page of the same blocks (each written whole)."""
    write_text(out_md, markdown(blocks))
    if out_html is not None:
        write_text(out_html, html_page(blocks, title))
