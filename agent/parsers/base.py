"""What every parser shares: the result, the three ways a file is not read, the zip guard."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Called between the pages, slides, sheets or chapters of a document: what it raises (the
#: caller's time limit, a stop) ends the parse.
Check = Callable[[], None]

#: What a zip-based document may inflate to, all members together (python-docx holds every
#: part in memory, and lxml's tree of an XML part is several times its size: the shipped unit
#: has MemoryMax=1G).
MAX_INFLATED_BYTES = 128 * 1024 * 1024
#: The most a member over :data:`_RATIO_FLOOR` bytes may inflate, times its compressed size
#: (Apache POI's ZipSecureFile default: office XML is typically 5-20x).
MAX_INFLATE_RATIO = 100
_RATIO_FLOOR = 1024 * 1024
MAX_ZIP_MEMBERS = 10_000


class Unsupported(Exception):
    """This file is not text lokal can read (binary, an unknown format): skip it."""


class TooSlow(Exception):
    """Extracting the text took longer than the per-file time limit."""


class TooLarge(Exception):
    """The file would inflate past a limit (a zip bomb): refused before reading it."""


@dataclass(frozen=True)
class Parsed:
    text: str
    kind: str
    encoding: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: something the document's record should say (invalid bytes replaced...)
    warning: str | None = None


def needs(module: str, kind: str, package: str, extra: str) -> Any:
    """Import ``module`` (the library that reads ``kind``), or raise :class:`Unsupported`
    naming the format and the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{kind} needs {package}: pip install 'lokal[{extra}]'"
        raise Unsupported(msg) from exc


def blocks(parts: list[str]) -> str:
    """Paragraph-like blocks, empty ones left out, separated by a blank line (where the
    chunker splits first after headings)."""
    return "\n\n".join(p for p in (part.strip() for part in parts) if p)


def row(cells: list[str]) -> str:
    """A table row on one line: the cells' text with whitespace collapsed, joined by `` | ``;
    empty cells at the end left out."""
    texts = [" ".join(c.split()) for c in cells]
    while texts and not texts[-1]:
        texts.pop()
    return " | ".join(texts)


def zip_guard(data: bytes, kind: str) -> None:
    """Refuse a zip-based document that would inflate past the limits, from its central
    directory, before any member is inflated: more than :data:`MAX_ZIP_MEMBERS` members, one
    member inflating more than :data:`MAX_INFLATE_RATIO` times, or more than
    :data:`MAX_INFLATED_BYTES` in all. Every zip-based parser calls it first. What is read
    afterwards is bounded by these recorded sizes: Python's zipfile (which python-docx and the
    other readers read through) stops each member at its recorded size and checks its CRC, so
    a directory that lies gets a BadZipFile, not more bytes. Raises :class:`Unsupported` for
    data that is not a zip archive at all."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as exc:
        msg = f"not a {kind} file: {kind} is a zip archive and this is none ({exc})"
        raise Unsupported(msg) from exc
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
