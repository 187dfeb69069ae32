"""What the index hands in and out: chunks to store, stored records, search hits, documents,
and the report of a check. Plain frozen dataclasses; nothing here touches the file."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Chunk:
    """A piece of a document to store: its text and where it came from."""

    text: str
    ordinal: int = 0
    char_start: int | None = None
    char_end: int | None = None
    line_start: int | None = None
    line_end: int | None = None
    tokens: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Record:
    """A stored chunk."""

    id: str
    text: str
    metadata: dict[str, Any]
    document: str | None = None
    ordinal: int = 0
    char_start: int | None = None
    char_end: int | None = None
    line_start: int | None = None
    line_end: int | None = None
    tokens: int | None = None


@dataclass(frozen=True)
class Hit(Record):
    """A search result. ``score`` is in [0, 1], higher is better: ``(1 + cosine) / 2`` for
    vector search, the fused score for hybrid search (1.0: first in both rankings;
    :func:`lokal.index.search.fuse`). ``distance`` is the
    cosine distance (``1 - cosine``) where a vector score exists."""

    score: float = 0.0
    distance: float | None = None


@dataclass(frozen=True)
class DocumentRecord:
    uri: str
    content_hash: str | None
    size: int | None
    mtime_ns: int | None
    ctime_ns: int | None
    inode: int | None
    status: str
    error: str | None
    chunks: int
    updated_at: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckReport:
    """What :meth:`Index.check` found. ``counts`` has the rows of each kind and the file's
    free space (``free_pages``, ``free_bytes``, ``file_bytes``, ``vector_slots_unused``)."""

    ok: bool
    problems: list[str]
    counts: dict[str, int]


#: The columns :func:`record` reads, in its order (``c``: chunks, ``d``: documents).
RECORD_COLUMNS = (
    "c.chunk_id, c.text, c.metadata, d.uri, c.ordinal, c.char_start, c.char_end, "
    "c.line_start, c.line_end, c.tokens"
)


def record(row: Sequence[Any], cls: type[Record] = Record, **extra: Any) -> Any:
    """A :class:`Record` (or ``cls``) from a row of :data:`RECORD_COLUMNS`."""
    return cls(
        id=row[0],
        text=row[1],
        metadata=json.loads(row[2]),
        document=row[3],
        ordinal=row[4],
        char_start=row[5],
        char_end=row[6],
        line_start=row[7],
        line_end=row[8],
        tokens=row[9],
        **extra,
    )
