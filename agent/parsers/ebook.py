"""EPUB (ebooklib): the chapters in reading order (the spine), each XHTML document read as HTML
(:func:`.html.html_text`: headings kept, navigation left out)."""

from __future__ import annotations

import io
import warnings

from .base import Check, Parsed, blocks, needs, zip_guard
from .html import html_text
from .text import decode


def epub(data: bytes, check: Check) -> Parsed:
    module = needs("ebooklib.epub", "EPUB", "ebooklib", "epub")
    zip_guard(data, "EPUB")
    with warnings.catch_warnings():  # ebooklib's notices about its own future options
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        book = module.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
    out = []
    chapters = 0
    for idref, *_ in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or not item.media_type.endswith(("html", "xml")):
            continue
        check()
        text, _encoding = decode(item.get_content())
        out.append(html_text(text))
        chapters += 1
    title = " ".join(str(t[0]) for t in book.get_metadata("DC", "title")[:1])
    if title and not (out and out[0].lstrip("# ").startswith(title)):
        out.insert(0, f"# {title}")
    return Parsed(blocks(out), "epub", metadata={"chapters": chapters})
