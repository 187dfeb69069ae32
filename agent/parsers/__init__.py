"""Turn a file's bytes into text, or say why not.

Text files of any kind (prose, Markdown, reStructuredText, source code, JSON, CSV, logs) are
decoded consistently (:mod:`.text`: a byte-order mark, UTF-16 without one, UTF-8, UTF-8 with a
few bytes replaced and a warning, else charset-normalizer's answer; never a silent mix). HTML
is reduced to the text a reader sees, headings kept as Markdown headings (:mod:`.html`).
Documents are read by the library that reads their format, installed by their extra:

=========  ===================  =====================  ======================
suffix     format               library                extra
=========  ===================  =====================  ======================
.pdf       PDF                  pypdf                  ``lokal[pdf]``
.docx      Word                 python-docx            ``lokal[docx]``
.pptx      PowerPoint           python-pptx            ``lokal[pptx]``
.xlsx      Excel                openpyxl               ``lokal[xlsx]``
.odt       OpenDocument text    odfpy                  ``lokal[odt]``
.epub      EPUB                 ebooklib               ``lokal[epub]``
.rtf       RTF                  striprtf               ``lokal[rtf]``
.eml       e-mail               the standard library   (none)
=========  ===================  =====================  ======================

(``lokal[documents]`` installs them all.) A format whose extra is missing, a binary file and
a legacy binary Office file are skipped (:class:`Unsupported`) with a reason that names the
format and, where lokal reads it, the extra. For every format but plain text, chunk offsets
refer to the extracted text.

Zip-based formats (DOCX, PPTX, XLSX, ODT, EPUB) are checked from the zip's central directory
before anything is inflated (:func:`zip_guard`): a zip bomb is refused (:class:`TooLarge`),
never read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from . import binary
from .base import (
    MAX_INFLATE_RATIO,
    MAX_INFLATED_BYTES,
    MAX_ZIP_MEMBERS,
    Parsed,
    TooLarge,
    TooSlow,
    Unsupported,
    zip_guard,
)
from .html import html_text
from .text import REPLACED, decode

__all__ = [
    "HTML_SUFFIXES",
    "MAX_INFLATED_BYTES",
    "MAX_INFLATE_RATIO",
    "MAX_ZIP_MEMBERS",
    "SUFFIXES",
    "VERSION",
    "Parsed",
    "TooLarge",
    "TooSlow",
    "Unsupported",
    "decode",
    "html_text",
    "parse",
    "zip_guard",
]

#: Recorded with the index's chunk settings: a new version re-reads every file.
VERSION = "lokal-parsers-2"
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
#: The document formats read by a library of their own (suffix -> format).
SUFFIXES = {
    ".pdf": "PDF",
    ".docx": "DOCX",
    ".pptx": "PPTX",
    ".xlsx": "XLSX",
    ".xlsm": "XLSX",
    ".odt": "ODT",
    ".epub": "EPUB",
    ".rtf": "RTF",
    ".eml": "e-mail",
}


def parse(
    path: Path,
    data: bytes,
    *,
    max_seconds: float | None = None,
    check: Callable[[], None] | None = None,
) -> Parsed:
    """Text of a file's ``data``. Raises :class:`Unsupported` for binary or unreadable formats
    (the caller records the reason), :class:`TooSlow` when a paged format (PDF) is still not
    read after ``max_seconds`` (checked between pages, slides, sheets' rows and chapters,
    where ``check`` is called too: what it raises ends the call), :class:`TooLarge` for a zip
    bomb; other exceptions are failures to report. Text formats are linear in the size the
    caller already limits."""
    suffix = path.suffix.lower()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds

    def between() -> None:
        if check is not None:
            check()
        if deadline is not None and time.monotonic() > deadline:
            msg = f"{SUFFIXES.get(suffix, suffix)} text extraction stopped (max_file_seconds)"
            raise TooSlow(msg)

    if suffix in SUFFIXES:
        return _document(suffix, data, deadline, check, between)
    if binary.is_binary(data):
        raise Unsupported(binary.describe(path, data))
    try:
        text, encoding = decode(data)
    except Unsupported as exc:
        raise Unsupported(binary.describe(path, data)) from exc
    warning = None
    if encoding.startswith(REPLACED):
        # "utf-8 (4 invalid byte sequences replaced)"
        warning = f"not valid UTF-8: {encoding[len(REPLACED) : -1]} with U+FFFD"
    if suffix in HTML_SUFFIXES:
        return Parsed(html_text(text), "html", encoding, warning=warning)
    kind = "markdown" if suffix in (".md", ".markdown") else (suffix.lstrip(".") or "text")
    return Parsed(text, kind, encoding, warning=warning)


def _document(
    suffix: str,
    data: bytes,
    deadline: float | None,
    check: Callable[[], None] | None,
    between: Callable[[], None],
) -> Parsed:
    from . import ebook, mail, office, opendocument, pdf, rtf

    if suffix == ".pdf":
        return pdf.pdf(data, deadline, check)
    if suffix == ".docx":
        return office.docx(data)
    if suffix == ".pptx":
        return office.pptx(data, between)
    if suffix in (".xlsx", ".xlsm"):
        return office.xlsx(data, between)
    if suffix == ".odt":
        return opendocument.odt(data, between)
    if suffix == ".epub":
        return ebook.epub(data, between)
    if suffix == ".rtf":
        return rtf.rtf(data)
    return mail.eml(data)
