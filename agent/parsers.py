"""Turn a file's bytes into text, or say why not.

Text files of any kind (prose, Markdown, reStructuredText, source code, JSON, CSV, logs) are
decoded consistently: a byte-order mark decides (UTF-8, UTF-16, UTF-32); otherwise strict
UTF-8; otherwise charset-normalizer's best guess; never a silent mix. HTML is reduced to its
visible text with selectolax (its lexbor engine). PDF (pypdf) and DOCX (python-docx) are read
when their extras are installed (``lokal[pdf]``, ``lokal[docx]``). Binary files are skipped,
not embedded. For HTML, PDF and DOCX, chunk offsets refer to the extracted text.
"""

from __future__ import annotations

import codecs
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VERSION = "lokal-parsers-1"
_SNIFF = 8192
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}


class Unsupported(Exception):
    """This file is not text lokal can read (binary, an unknown format): skip it."""


@dataclass(frozen=True)
class Parsed:
    text: str
    kind: str
    encoding: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class TooSlow(Exception):
    """Extracting the text took longer than the per-file time limit."""


def parse(path: Path, data: bytes, *, max_seconds: float | None = None) -> Parsed:
    """Text of a file's ``data``. Raises :class:`Unsupported` for binary or unreadable formats
    (the caller records the reason), :class:`TooSlow` when a paged format (PDF) is still not
    read after ``max_seconds`` (checked between pages); other exceptions are failures to
    report. Text formats are linear in the size the caller already limits."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return _pdf(data, None if max_seconds is None else time.monotonic() + max_seconds)
    if suffix == ".docx":
        return _docx(data)
    text, encoding = decode(data)
    if suffix in HTML_SUFFIXES:
        return Parsed(html_text(text), "html", encoding)
    kind = "markdown" if suffix in (".md", ".markdown") else (suffix.lstrip(".") or "text")
    return Parsed(text, kind, encoding)


def decode(data: bytes) -> tuple[str, str]:
    """Decode text bytes, or raise :class:`Unsupported` for binary data."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace"), encoding
    if b"\x00" in data[:_SNIFF]:
        msg = "binary file (NUL bytes and no UTF-16/32 byte-order mark)"
        raise Unsupported(msg)
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return data.decode("utf-8", errors="replace"), "utf-8 (invalid bytes replaced)"
    best = from_bytes(data).best()
    if best is None:
        msg = "not text in any encoding charset-normalizer knows"
        raise Unsupported(msg)
    if best.language == "Unknown":
        # No language recognised (short or mixed text): several single-byte code pages fit
        # equally. Take Windows-1252, the web's default for unlabelled legacy text, when it
        # decodes, rather than whichever tied candidate came first.
        try:
            return data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            pass
    return str(best), best.encoding


def html_text(html: str) -> str:
    try:
        from selectolax.lexbor import LexborHTMLParser
    except ImportError as exc:
        msg = "HTML needs selectolax: pip install 'lokal[agent]'"
        raise Unsupported(msg) from exc
    tree = LexborHTMLParser(html)
    for node in tree.css("script, style, noscript, template"):
        node.decompose()
    body = tree.body or tree.root
    return body.text(separator="\n", strip=True) if body is not None else ""


def _pdf(data: bytes, deadline: float | None) -> Parsed:
    try:
        from pypdf import PdfReader
    except ImportError as exc:
        msg = "PDF needs pypdf: pip install 'lokal[pdf]'"
        raise Unsupported(msg) from exc
    reader = PdfReader(io.BytesIO(data))
    pages = []
    for n, page in enumerate(reader.pages):
        if deadline is not None and time.monotonic() > deadline:
            msg = (
                f"PDF text extraction stopped at page {n} of {len(reader.pages)} (max_file_seconds)"
            )
            raise TooSlow(msg)
        pages.append(page.extract_text() or "")
    return Parsed("\n\n".join(pages), "pdf", metadata={"pages": len(pages)})


def _docx(data: bytes) -> Parsed:
    try:
        import docx
    except ImportError as exc:
        msg = "DOCX needs python-docx: pip install 'lokal[docx]'"
        raise Unsupported(msg) from exc
    document = docx.Document(io.BytesIO(data))
    return Parsed("\n\n".join(p.text for p in document.paragraphs), "docx")
