"""Turn a file's bytes into text, or say why not.

Text files of any kind (prose, Markdown, reStructuredText, source code, JSON, CSV, logs) are
decoded consistently: a byte-order mark decides (UTF-8, UTF-16, UTF-32); otherwise strict
UTF-8; otherwise, when the text is overwhelmingly UTF-8 with a few broken bytes, UTF-8 with
those bytes replaced (and a warning the document's record keeps); otherwise charset-normalizer's
best guess; never a silent mix. HTML is reduced to its
visible text with selectolax (its lexbor engine). PDF (pypdf) and DOCX (python-docx) are read
when their extras are installed (``lokal[pdf]``, ``lokal[docx]``). Binary files are skipped,
not embedded. For HTML, PDF and DOCX, chunk offsets refer to the extracted text.

Zip-based formats (DOCX) are checked from the zip's central directory before anything is
inflated (:func:`zip_guard`): a zip bomb is refused (:class:`TooLarge`), never read.
"""

from __future__ import annotations

import codecs
import io
import logging
import time
from collections.abc import Callable
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
_REPLACED = "utf-8 ("


class Unsupported(Exception):
    """This file is not text lokal can read (binary, an unknown format): skip it."""


#: What a zip-based document may inflate to, all members together (python-docx holds every
#: part in memory, and lxml's tree of an XML part is several times its size: the shipped unit
#: has MemoryMax=1G).
MAX_INFLATED_BYTES = 128 * 1024 * 1024
#: The most a member over :data:`_RATIO_FLOOR` bytes may inflate, times its compressed size
#: (Apache POI's ZipSecureFile default: office XML is typically 5-20x).
MAX_INFLATE_RATIO = 100
_RATIO_FLOOR = 1024 * 1024
MAX_ZIP_MEMBERS = 10_000
#: Decoded as UTF-8 with replacement when there are at least this many valid multi-byte
#: characters per invalid sequence (a legacy 8-bit file has none or next to none).
_UTF8_MAJORITY = 4


@dataclass(frozen=True)
class Parsed:
    text: str
    kind: str
    encoding: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: something the document's record should say (invalid bytes replaced...)
    warning: str | None = None


class TooSlow(Exception):
    """Extracting the text took longer than the per-file time limit."""


class TooLarge(Exception):
    """The file would inflate past a limit (a zip bomb): refused before reading it."""


def parse(
    path: Path,
    data: bytes,
    *,
    max_seconds: float | None = None,
    check: Callable[[], None] | None = None,
) -> Parsed:
    """Text of a file's ``data``. Raises :class:`Unsupported` for binary or unreadable formats
    (the caller records the reason), :class:`TooSlow` when a paged format (PDF) is still not
    read after ``max_seconds`` (checked between pages, where ``check`` is called too: what it
    raises ends the call), :class:`TooLarge` for a zip bomb; other exceptions are failures to
    report. Text formats are linear in the size the caller already limits."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        return _pdf(data, deadline, check)
    if suffix == ".docx":
        return _docx(data)
    text, encoding = decode(data)
    warning = None
    if encoding.startswith(_REPLACED):
        # "utf-8 (4 invalid byte sequences replaced)"
        warning = f"not valid UTF-8: {encoding[len(_REPLACED) : -1]} with U+FFFD"
    if suffix in HTML_SUFFIXES:
        return Parsed(html_text(text), "html", encoding, warning=warning)
    kind = "markdown" if suffix in (".md", ".markdown") else (suffix.lstrip(".") or "text")
    return Parsed(text, kind, encoding, warning=warning)


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
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - data.count("\ufffd".encode())
    multibyte = len(text) - len(text.encode("ascii", errors="ignore")) - bad
    if multibyte >= _UTF8_MAJORITY * bad:
        # UTF-8 with a few broken bytes (a truncated write, one pasted Latin-1 word): reading
        # it all as a legacy code page would garble every valid character instead
        return text, _replaced(bad)
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return text, _replaced(bad)
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


def _replaced(bad: int) -> str:
    return f"{_REPLACED}{bad} invalid byte sequence{'s' if bad != 1 else ''} replaced)"


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


def _pdf(data: bytes, deadline: float | None, check: Callable[[], None] | None) -> Parsed:
    try:
        from pypdf import PdfReader
    except ImportError as exc:
        msg = "PDF needs pypdf: pip install 'lokal[pdf]'"
        raise Unsupported(msg) from exc
    reader = PdfReader(io.BytesIO(data))
    pages = []
    for n, page in enumerate(reader.pages):
        if check is not None:
            check()
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
    zip_guard(data, "DOCX")
    document = docx.Document(io.BytesIO(data))
    return Parsed("\n\n".join(p.text for p in document.paragraphs), "docx")


def zip_guard(data: bytes, kind: str) -> None:
    """Refuse a zip-based document that would inflate past the limits, from its central
    directory, before any member is inflated: more than :data:`MAX_ZIP_MEMBERS` members, one
    member inflating more than :data:`MAX_INFLATE_RATIO` times, or more than
    :data:`MAX_INFLATED_BYTES` in all. Every zip-based parser calls it first. What is read
    afterwards is bounded by these recorded sizes: Python's zipfile (which python-docx reads
    through) stops each member at its recorded size and checks its CRC, so a directory that
    lies gets a BadZipFile, not more bytes."""
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        msg = f"{kind} has {len(members)} zip members (more than {MAX_ZIP_MEMBERS}): not read"
        raise TooLarge(msg)
    total = 0
    for m in members:
        total += m.file_size
        if m.file_size > _RATIO_FLOOR and m.file_size > MAX_INFLATE_RATIO * m.compress_size:
            msg = (
                f"{kind} member {m.filename} would inflate {m.compress_size:,} bytes to "
                f"{m.file_size:,} (more than {MAX_INFLATE_RATIO}x): a zip bomb, not read"
            )
            raise TooLarge(msg)
    if total > MAX_INFLATED_BYTES:
        msg = (
            f"{kind} would inflate to {total:,} bytes (more than {MAX_INFLATED_BYTES:,}, "
            "MAX_INFLATED_BYTES): not read"
        )
        raise TooLarge(msg)
