"""HTML to the text a reader sees, with its structure in the form the chunker splits on.

Parsed by selectolax (its lexbor engine, an HTML5 parser), then walked in document order:

- inline elements are joined into their paragraph (``<p>Hold the <b>red</b> button.</p>`` is
  one line); whitespace is collapsed as a browser does, ``<br>`` breaks the line;
- block elements are paragraphs separated by a blank line; ``<h1>``-``<h6>`` become Markdown
  headings (``## Title``), which the chunker splits on; list items start with ``- ``; table
  rows are one line each, their cells joined by `` | ``; ``<pre>`` keeps its lines;
- left out: ``<head>``, scripts, styles, ``<noscript>``, ``<template>``, ``<nav>``,
  ``<aside>``, buttons, forms' option lists, embedded media; the page's ``<header>`` and
  ``<footer>`` (those not inside an article, section, main, aside or nav, the HTML standard's
  banner and content info); elements with the ``hidden`` attribute, ``aria-hidden="true"``,
  an inline ``display: none`` or ``visibility: hidden``, or a navigation, banner, content
  info, complementary or search role.

Elements hidden by a style sheet rule (a class) are not known to be hidden: there is no CSS
engine here. The walk is iterative: no nesting depth makes it recurse.
"""

from __future__ import annotations

import re
from typing import Any

from .base import Unsupported, row

_SKIP = frozenset(
    {
        "head",
        "script",
        "style",
        "noscript",
        "template",
        "nav",
        "aside",
        "button",
        "select",
        "datalist",
        "svg",
        "math",
        "iframe",
        "canvas",
        "object",
        "embed",
        "audio",
        "video",
    }
)
_BLOCK = frozenset(
    {
        "address",
        "article",
        "blockquote",
        "body",
        "caption",
        "center",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hgroup",
        "html",
        "legend",
        "li",
        "main",
        "menu",
        "ol",
        "p",
        "section",
        "summary",
        "ul",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
    }
)
_SECTIONING = frozenset({"article", "aside", "main", "nav", "section"})
_HIDDEN_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search"})
_HIDDEN_STYLE = re.compile(r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*hidden)\b", re.I)
#: A <br> among the collected text (the HTML parser drops NUL characters or turns them into
#: U+FFFD, so no text has one).
_BREAK = "\x00"
_HEADINGS = {f"h{n}": "#" * n + " " for n in range(1, 7)}


def html_text(html: str) -> str:
    """The visible text of an HTML document: paragraphs separated by blank lines, headings
    as Markdown headings."""
    try:
        from selectolax.lexbor import LexborHTMLParser
    except ImportError as exc:
        msg = "HTML needs selectolax: pip install 'lokal[agent]'"
        raise Unsupported(msg) from exc
    tree = LexborHTMLParser(html)
    root = tree.body if tree.body is not None else tree.root
    if root is None:
        return ""
    walk = _Walk(0)
    walk.run(root)
    return "\n\n".join(walk.out)


class _Walk:
    """Collects blocks of text from a subtree in document order."""

    def __init__(self, sectioning: int) -> None:
        self.out: list[str] = []
        self._line: list[str] = []
        self._prefix = ""
        #: how many sectioning elements (article, section, ...) the walk is inside
        self._sectioning = sectioning

    def run(self, root: Any) -> None:
        stack: list[tuple[Any, bool]] = [(c, True) for c in reversed(_children(root))]
        while stack:
            node, entering = stack.pop()
            tag = node.tag
            if not entering:
                self._leave(tag)
            elif tag == "-text":
                self._line.append(node.text_content or "")
            elif tag.startswith("-") or self._hidden(node, tag):
                continue  # comments, doctype; what a reader does not see
            elif tag == "br":
                self._line.append(_BREAK)
            elif tag == "hr":
                self.flush()
            elif tag == "pre":
                self.flush()
                self._emit(node.text(deep=True, separator="").strip("\n"), verbatim=True)
            elif tag == "table":
                self.flush()
                self._table(node)
            else:
                self._enter(tag)
                stack.append((node, False))
                stack.extend((c, True) for c in reversed(_children(node)))
        self.flush()

    def _hidden(self, node: Any, tag: str) -> bool:
        if tag in _SKIP:
            return True
        if tag in ("header", "footer") and not self._sectioning:
            return True  # the page's banner and content info, not an article's own
        attrs = node.attributes
        if not attrs:
            return False
        if "hidden" in attrs or (attrs.get("aria-hidden") or "").strip().lower() == "true":
            return True
        if tag == "dialog" and "open" not in attrs:
            return True
        if (attrs.get("role") or "").strip().lower() in _HIDDEN_ROLES:
            return True
        return bool(_HIDDEN_STYLE.search(attrs.get("style") or ""))

    def _enter(self, tag: str) -> None:
        if tag in _SECTIONING:
            self._sectioning += 1
        if tag in _BLOCK:
            self.flush()
            if tag in _HEADINGS:
                self._prefix = _HEADINGS[tag]
            elif tag == "li":
                self._prefix = "- "

    def _leave(self, tag: str) -> None:
        if tag in _SECTIONING:
            self._sectioning -= 1
        if tag in _BLOCK:
            self.flush()

    def flush(self) -> None:
        """End the paragraph being collected (a block boundary)."""
        text = "".join(self._line)
        self._line = []
        lines = (" ".join(line.split()) for line in text.split(_BREAK))
        self._emit("\n".join(line for line in lines if line))

    def _emit(self, text: str, *, verbatim: bool = False) -> None:
        if not text.strip():
            return  # an empty block keeps the prefix for the text inside it (<li><p>...)
        if self._prefix.startswith("#"):
            text = " ".join(text.split())
        elif verbatim and self._prefix:
            text = "\n" + text
        self.out.append(self._prefix + text)
        self._prefix = ""

    def _table(self, table: Any) -> None:
        lines = []
        for part in _children(table):
            if part.tag == "caption":
                lines.append(self._inline(part))
            rows = [part] if part.tag == "tr" else []
            if part.tag in ("thead", "tbody", "tfoot"):
                rows = [r for r in _children(part) if r.tag == "tr"]
            for tr in rows:
                cells = [
                    self._inline(cell)
                    for cell in _children(tr)
                    if cell.tag in ("td", "th") and not self._hidden(cell, cell.tag)
                ]
                line = row(cells)
                if line:
                    lines.append(line)
        self._emit("\n".join(line for line in lines if line))

    def _inline(self, node: Any) -> str:
        """A subtree's text on one line (a table cell, a caption)."""
        sub = _Walk(self._sectioning)
        sub.run(node)
        return " ".join(" ".join(sub.out).split())


def _children(node: Any) -> list[Any]:
    return list(node.iter(include_text=True))
