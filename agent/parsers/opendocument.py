"""OpenDocument text (ODT, odfpy): headings, paragraphs, lists and tables in document order.

Headings (``text:h`` with an outline level) become Markdown headings; list items start with
``- ``; tables are one row per
line, cells joined by `` | ``; the pages' headers and footers (in the master pages' styles)
come first and last. Tracked changes' deleted text is not what a reader sees: left out.
"""

from __future__ import annotations

import io
from typing import Any

from .base import Check, Parsed, blocks, needs, row, zip_guard

_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_STYLE = "urn:oasis:names:tc:opendocument:xmlns:style:1.0"
#: Not part of what the document reads as.
_LEFT_OUT = {
    (_TEXT, "tracked-changes"),
    (_TEXT, "sequence-decls"),
    (_TEXT, "variable-decls"),
    (_TEXT, "user-field-decls"),
    (_TEXT, "table-of-content"),
}


def odt(data: bytes, check: Check) -> Parsed:
    opendocument = needs("odf.opendocument", "ODT", "odfpy", "odt")
    zip_guard(data, "ODT")
    document = opendocument.load(io.BytesIO(data))
    headers: list[str] = []
    footers: list[str] = []
    for page in _elements(document.masterstyles):
        for part in _elements(page):
            local = part.qname[1]
            if part.qname[0] == _STYLE and local.startswith(("header", "footer")):
                text = blocks(_blocks(part, check))
                into = headers if local.startswith("header") else footers
                if text and text not in into:
                    into.append(text)
    body = _blocks(document.text, check)
    return Parsed(blocks([*headers, *body, *footers]), "odt")


def _elements(node: Any) -> list[Any]:
    return [c for c in getattr(node, "childNodes", ()) if c.nodeType == c.ELEMENT_NODE]


def _blocks(root: Any, check: Check) -> list[str]:
    """Blocks of text under ``root`` in document order (an explicit stack: no recursion)."""
    from odf import teletype

    out: list[str] = []
    stack = [(node, "") for node in reversed(_elements(root))]
    while stack:
        node, prefix = stack.pop()
        name = node.qname
        if name in _LEFT_OUT:
            continue
        if name == (_TEXT, "h"):
            level = node.getAttrNS(_TEXT, "outline-level") or "1"
            depth = min(max(int(level), 1), 6) if str(level).isdigit() else 1
            out.append("#" * depth + " " + " ".join(teletype.extractText(node).split()))
        elif name == (_TEXT, "p"):
            out.append(prefix + teletype.extractText(node))
        elif name == (_TABLE, "table"):
            check()
            out.append(_table(node))
        else:  # sections, lists, frames, ...: their content in order; an item's first line
            children = _elements(node)  # starts with "- "
            mark = "- " if name == (_TEXT, "list-item") else prefix
            stack.extend(
                (c, mark if i == 0 else "") for i, c in reversed(list(enumerate(children)))
            )
    return out


def _table(table: Any) -> str:
    from odf import teletype

    lines = []
    rows = [r for r in table.getElementsByType(_row_type()) if _owner(r) is table]
    for tr in rows:
        cells = [
            " ".join(teletype.extractText(p) for p in _elements(cell))
            for cell in _elements(tr)
            if cell.qname in ((_TABLE, "table-cell"), (_TABLE, "covered-table-cell"))
        ]
        line = row(cells)
        if line:
            lines.append(line)
    return "\n".join(lines)


def _row_type() -> Any:
    from odf.table import TableRow

    return TableRow


def _owner(node: Any) -> Any:
    """The table a row belongs to (a nested table's rows are read with its cell)."""
    parent = node.parentNode
    while parent is not None and parent.qname != (_TABLE, "table"):
        parent = parent.parentNode
    return parent
