"""lokal's HTML walk against a maintained extractor (trafilatura) and selectolax's plain text,
on real documentation pages that ship on this machine (issue 16: "compare on real pages").

For each page the reference is read off its DOM (with selectolax, independently of the
walk's code): *content* is the text of every paragraph, list item, table cell, heading and
code block inside the page's main content (``<main>``, ``role=main``, else ``<article>``,
else the body) with at least four words; *boilerplate* is the text of the page's navigation,
banner, footer and sidebars (``nav``, ``aside``, ``header``/``footer`` outside an article,
and their ARIA roles) with at least three words that does not also occur in the content.
Reported per page set: content recall (share of content blocks found in the output, with
whitespace collapsed), boilerplate leaked (share of boilerplate blocks found), headings kept
as Markdown headings, table rows kept on one line, and milliseconds per page (interleaved:
each page is run by every extractor in turn).

Run: ``.venv/bin/python benchmarks/html_extraction.py`` (needs ``trafilatura``: the bench group).
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

RUST = Path.home() / ".rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html"
SETS: dict[str, list[Path]] = {
    "Rust book (mdBook)": [
        RUST / "book" / n
        for n in (
            "ch03-02-data-types.html",
            "ch04-01-what-is-ownership.html",
            "ch08-01-vectors.html",
            "ch09-02-recoverable-errors-with-result.html",
            "appendix-02-operators.html",
        )
    ],
    "Rust std (rustdoc)": [
        RUST / "std" / n
        for n in (
            "option/enum.Option.html",
            "string/struct.String.html",
            "collections/struct.HashMap.html",
            "fs/struct.File.html",
            "path/struct.Path.html",
        )
    ],
    "Node.js API": [
        Path("/usr/share/doc/nodejs/api") / n
        for n in ("fs.html", "path.html", "events.html", "url.html", "timers.html")
    ],
    "npm CLI docs": [
        Path("/usr/lib/node_modules/npm/docs/output/commands") / n
        for n in ("npm-install.html", "npm-ci.html", "npm-publish.html", "npm-run.html")
    ],
    "Valgrind manual (DocBook)": [
        Path("/usr/share/doc/valgrind/html") / n
        for n in ("QuickStart.html", "FAQ.html", "mc-manual.html", "manual-core.html")
    ],
}
_CONTENT = "p, li, td, th, h1, h2, h3, h4, h5, h6, pre, dd, dt"
_BOILER = "nav, aside, [role=navigation], [role=banner], [role=contentinfo], [role=complementary]"


def norm(text: str) -> str:
    return " ".join(text.split())


def reference(html: str) -> tuple[list[tuple[str, bool]], list[str], int, int]:
    """(content blocks, boilerplate blocks, headings, table rows) read off the DOM."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    for node in tree.css("script, style, noscript, template"):
        node.decompose()
    boiler_nodes = list(tree.css(_BOILER))
    for tag in ("header", "footer"):
        for node in tree.css(tag):
            if not _inside(node, {"article", "section", "main", "aside", "nav"}):
                boiler_nodes.append(node)
    boiler = {norm(n.text(separator=" ")) for n in boiler_nodes}
    for node in boiler_nodes:
        node.decompose()
    main = tree.css_first("main, [role=main]") or tree.css_first("article") or tree.body
    if main is None:
        return [], [], 0, 0
    content: list[tuple[str, bool]] = []  # (text, a code block: its lines are its own)
    for node in main.css(_CONTENT):
        if node.css_first("p, li, pre, table") is not None and node.tag in ("li", "dd", "td"):
            continue  # a container: its own blocks are counted
        text = norm(node.text(separator=""))  # inline text joins as a browser shows it
        if len(text.split()) >= 4 and not _hidden(node):
            content.append((text, node.tag == "pre" or node.css_first("pre") is not None))
    joined = " ".join(c for c, _ in content)
    boiler_blocks = [b for b in boiler if len(b.split()) >= 3 and b not in joined]
    headings = len(main.css("h1, h2, h3, h4, h5, h6"))
    rows = [r for r in main.css("tr") if len(r.css("td, th")) >= 2]
    return content, boiler_blocks, headings, len(rows)


def _inside(node: object, tags: set[str]) -> bool:
    parent = node.parent  # type: ignore[attr-defined]
    while parent is not None:
        if parent.tag in tags:
            return True
        parent = parent.parent
    return False


def _hidden(node: object) -> bool:
    while node is not None:
        attrs = node.attributes or {}  # type: ignore[attr-defined]
        if "hidden" in attrs or (attrs.get("aria-hidden") or "") == "true":
            return True
        node = node.parent  # type: ignore[attr-defined]
    return False


def lokal_walk(html: str) -> str:
    from lokal.agent.parsers import html_text

    return html_text(html)


def selectolax_text(html: str) -> str:
    """lokal before issue 16: the body's text nodes, one per line."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    for node in tree.css("script, style, noscript, template"):
        node.decompose()
    body = tree.body or tree.root
    return body.text(separator="\n", strip=True) if body is not None else ""


def trafilatura_text(html: str, *, formatting: bool = False) -> str:
    import trafilatura

    return (
        trafilatura.extract(
            html,
            output_format="markdown",
            include_tables=True,
            include_comments=False,
            include_formatting=formatting,  # headings as Markdown headings, emphasis marked
            favor_recall=True,
        )
        or ""
    )


EXTRACTORS: dict[str, Callable[[str], str]] = {
    "lokal walk": lokal_walk,
    "selectolax .text() (before)": selectolax_text,
    "trafilatura 2 (favor_recall)": trafilatura_text,
    "trafilatura 2 (favor_recall, formatting)": lambda html: trafilatura_text(
        html, formatting=True
    ),
}


def squash(text: str) -> str:
    """Text with whitespace and Markdown's emphasis and code marks (``*``, `````) removed, on
    both sides: trafilatura's Markdown writes them, the reference has none."""
    return "".join(text.split()).replace("*", "").replace("`", "")


def score(
    out: str, content: list[tuple[str, bool]], boiler: list[str]
) -> tuple[float, float, float, int, int]:
    """(content found, content found whole on one line, boilerplate found, heading lines,
    table-row lines). Found: with all whitespace removed from both sides, so line breaks and
    spacing do not count; whole (code blocks left out): the block's text, spaces collapsed,
    inside one output line (a paragraph not cut into its inline elements)."""
    flat = squash(out)
    lines = [norm(line) for line in out.split("\n")]
    one_line = "\n".join(lines)
    found = sum(squash(c) in flat for c, _ in content) / (len(content) or 1)
    prose = [c for c, code in content if not code]
    whole = sum(c in one_line and any(c in line for line in lines) for c in prose)
    whole /= len(prose) or 1
    leaked = sum(squash(b) in flat for b in boiler) / len(boiler) if boiler else 0.0
    headings = sum(1 for line in lines if re.match(r"#{1,6} ", line))
    rows = sum(1 for line in lines if " | " in line or line.startswith("|"))
    return found, whole, leaked, headings, rows


def main() -> None:
    import trafilatura

    print(
        f"python {platform.python_version()}, trafilatura {trafilatura.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} (shared machine), cpus {os.cpu_count()}"
    )
    header = "| page set | pages | extractor | content found | paragraphs whole on a line | "
    print(header + "boilerplate leaked | heading lines (of) | table rows (of) | ms/page |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, pages in SETS.items():
        pages = [p for p in pages if p.is_file()]
        if not pages:
            print(f"| {name} | 0 (not on this machine) |", file=sys.stderr)
            continue
        refs = [(p, p.read_text(errors="replace")) for p in pages]
        truth = [reference(html) for _, html in refs]
        results: dict[str, list[tuple[float, float, float, int, int, float]]] = {
            k: [] for k in EXTRACTORS
        }
        for (_, html), (content, boiler, _h, _r) in zip(refs, truth, strict=True):
            for extractor, run in EXTRACTORS.items():  # interleaved, page by page
                start = time.perf_counter()
                out = run(html)
                ms = (time.perf_counter() - start) * 1000
                results[extractor].append((*score(out, content, boiler), ms))
        want_h = sum(t[2] for t in truth)
        want_r = sum(t[3] for t in truth)
        for extractor, rows in results.items():
            found, whole, leaked = (statistics.mean(r[i] for r in rows) for i in range(3))
            print(
                f"| {name} | {len(pages)} | {extractor} | {found:.0%} | {whole:.0%} | "
                f"{leaked:.0%} | {sum(r[3] for r in rows)} ({want_h}) | "
                f"{sum(r[4] for r in rows)} ({want_r}) | "
                f"{statistics.median(r[5] for r in rows):.0f} |"
            )


if __name__ == "__main__":
    main()
