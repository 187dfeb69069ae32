"""The index's change feed: what changed after sequence number N, for ``lokal sync``.

Triggers on ``chunks`` (migrations 3 and 6, :mod:`lokal.index.schema`) keep one row per chunk
id in ``changes`` with its latest operation under an ever-growing ``seq``: every write path
(``upsert``, ``delete``, ``replace_document``, ``clear``, the agent's rebuild...) records itself
without any code of its own. A live chunk's row holds its rowid (``chunk``), a deleted one's
its id (``deleted``: a tombstone). A reader that has applied everything up to ``seq`` N asks
for the changes after N and gets, for each chunk changed since, either its current row and
vector (``upsert``) or a tombstone (``delete``).

``generation`` (in ``lokal_meta``) names the file's history. A new file has a new one; a file
restored from an old copy keeps its generation but its sequence goes back: a sync detects that
(:func:`continues`) and :func:`renew_generation` gives the file a new one.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from lokal.errors import IndexFileError
from lokal.index import stored

log = logging.getLogger(__name__)

OPS = ("upsert", "delete")


@dataclass(slots=True)
class Change:
    """One entry of the feed. For ``op == "upsert"`` the chunk as it is now (``vector`` is its
    float32 vector); for ``"delete"`` only ``seq`` and ``chunk_id``. (Not frozen: a sync
    makes one per changed chunk, and a frozen dataclass's ``__init__`` costs 4x as much.)"""

    seq: int
    chunk_id: str
    op: str
    text: str | None = None
    document: str | None = None
    ordinal: int = 0
    char_start: int | None = None
    char_end: int | None = None
    line_start: int | None = None
    line_end: int | None = None
    tokens: int | None = None
    #: the chunk's metadata as stored (JSON text): a sync passes it on without parsing it
    metadata_json: str = "{}"
    vector: np.ndarray | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(json.loads(self.metadata_json))

    @property
    def tag(self) -> str:
        """What a sync remembers of the last change it applied (see :func:`continues`)."""
        return f"{self.op}:{self.chunk_id}"


def has_feed(conn: Any) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'changes'"
    ).fetchone()
    return row is not None


def _require_feed(conn: Any, path: object) -> None:
    if not has_feed(conn):
        msg = (
            f"{path} predates lokal's change feed: open it once for writing (the agent does on "
            "start, or Index.open(path, writable=True)) to upgrade it in place"
        )
        raise IndexFileError(msg)


#: The two layouts of ``changes``: since migration 6 a change joins its chunk by rowid; before
#: it (migration 3: a file an older lokal still writes) by id. Each query, as the layout reads
#: it, with the same columns either way.
_QUERIES = {
    6: {
        "changes": (
            "SELECT f.seq, f.deleted, c.id, c.chunk_id, c.text, d.uri, c.ordinal, c.char_start, "
            "c.char_end, c.line_start, c.line_end, c.tokens, c.metadata FROM changes f "
            "LEFT JOIN chunks c ON c.id = f.chunk LEFT JOIN documents d ON d.id = c.document_id "
            "WHERE f.seq > ? ORDER BY f.seq LIMIT ?"
        ),
        "tag": (
            "SELECT coalesce(c.chunk_id, f.deleted), c.id IS NOT NULL FROM changes f "
            "LEFT JOIN chunks c ON c.id = f.chunk WHERE f.seq = ?"
        ),
        # both through an index: the live chunk's id, or a tombstone's
        "seq": (
            "SELECT f.seq FROM chunks c JOIN changes f ON f.chunk = c.id WHERE c.chunk_id = ?1 "
            "UNION ALL SELECT seq FROM changes WHERE deleted = ?1"
        ),
    },
    3: {
        "changes": (
            "SELECT f.seq, CASE WHEN c.id IS NULL THEN f.chunk_id END, c.id, c.chunk_id, c.text, "
            "d.uri, c.ordinal, c.char_start, c.char_end, c.line_start, c.line_end, c.tokens, "
            "c.metadata FROM changes f "
            "LEFT JOIN chunks c ON f.op = 'upsert' AND c.chunk_id = f.chunk_id "
            "LEFT JOIN documents d ON d.id = c.document_id "
            "WHERE f.seq > ? ORDER BY f.seq LIMIT ?"
        ),
        "tag": "SELECT chunk_id, op = 'upsert' FROM changes WHERE seq = ?",
        "seq": "SELECT seq FROM changes WHERE chunk_id = ?1",
    },
}


def _query(conn: Any, name: str) -> str:
    legacy = conn.execute("SELECT 1 FROM pragma_table_info('changes') WHERE name = 'op'")
    return _QUERIES[3 if legacy.fetchone() else 6][name]


def generation(conn: Any, path: object) -> str:
    _require_feed(conn, path)
    row = conn.execute("SELECT value FROM lokal_meta WHERE key = 'generation'").fetchone()
    return str(row[0])


def last_seq(conn: Any, path: object) -> int:
    """The highest sequence number the file has used (0 for a file never written)."""
    _require_feed(conn, path)
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return int(row[0]) if row else 0


def count_after(conn: Any, path: object, after: int) -> int:
    _require_feed(conn, path)
    return int(
        conn.execute("SELECT count(*) FROM changes WHERE seq > ?", (int(after),)).fetchone()[0]
    )


def changes(conn: Any, path: object, dimension: int, after: int, limit: int) -> list[Change]:
    """Up to ``limit`` changes with ``seq > after``, in order. The caller holds a read
    transaction, so rows and vectors come from one snapshot."""
    _require_feed(conn, path)
    if limit <= 0:
        msg = f"limit must be positive, got {limit}"
        raise ValueError(msg)
    rows = conn.execute(_query(conn, "changes"), (int(after), int(limit))).fetchall()
    rowids = [r[2] for r in rows if r[2] is not None]
    vectors = stored.vectors_of(conn, rowids, dimension)
    out = []
    for r in rows:
        if r[2] is None:
            if r[1] is None:  # the triggers never leave this: a damaged file
                msg = f"{path}: change {r[0]} names a chunk row that does not exist"
                raise IndexFileError(msg)
            out.append(Change(seq=r[0], chunk_id=r[1], op="delete"))
            continue
        out.append(
            Change(
                seq=r[0],
                chunk_id=r[3],
                op="upsert",
                text=r[4],
                document=r[5],
                ordinal=r[6],
                char_start=r[7],
                char_end=r[8],
                line_start=r[9],
                line_end=r[10],
                tokens=r[11],
                metadata_json=r[12],
                vector=vectors[r[2]],
            )
        )
    return out


def change_tag_at(conn: Any, seq: int) -> str | None:
    row = conn.execute(_query(conn, "tag"), (int(seq),)).fetchone()
    if row is None or row[0] is None:
        return None
    return f"{'upsert' if row[1] else 'delete'}:{row[0]}"


def seq_of(conn: Any, chunk_id: str) -> int | None:
    """The seq of the latest change of ``chunk_id`` (None: the file never held it)."""
    row = conn.execute(_query(conn, "seq"), (chunk_id,)).fetchone()
    return None if row is None else int(row[0])


def continues(conn: Any, path: object, applied_seq: int, applied_tag: str | None) -> bool:
    """Whether this file's history continues the one a reader applied up to ``applied_seq``,
    whose last change there was ``applied_tag`` (:attr:`Change.tag`), within one generation.

    False when the file is behind (restored from an older copy) or its change at that seq is
    another (restored, then written again). When that seq's row is gone, its chunk changed
    again since: the chunk's row must then sit after ``applied_seq``.
    """
    if applied_seq == 0:
        return True
    if last_seq(conn, path) < applied_seq:
        return False
    if applied_tag is None:
        return True
    found = change_tag_at(conn, applied_seq)
    if found is not None:
        return found == applied_tag
    seq = seq_of(conn, applied_tag.split(":", 1)[1])
    return seq is not None and seq > applied_seq


def renew_generation(conn: Any) -> str:
    """Give the file a new generation (the caller holds a write transaction)."""
    new = uuid.uuid4().hex
    conn.execute("UPDATE lokal_meta SET value = ? WHERE key = 'generation'", (new,))
    return new
