"""The index file's schema, as numbered migrations applied in order, each in one transaction.

Tables:

- ``lokal_meta``: key/value facts about the file (model identity, settings, who manages it);
- ``lokal_migrations``: which migrations ran, when;
- ``documents``: one row per source (a file path or URI) with what the agent needs to see
  whether it changed (hash, size, mtime, ctime, inode), its status and last error;
- ``chunks``: the text pieces, their user-facing id, position in the document (ordinal, char
  and line offsets), token count and JSON metadata. ``chunks.id`` is the rowid shared with:
- ``chunks_vec``: a sqlite-vec ``vec0`` table with the float32 vectors (cosine distance), in
  chunks of :data:`VEC_CHUNK_SIZE` rows;
- ``chunks_fts``: an FTS5 full-text table over ``chunks.text`` (external content), and
  ``chunks_fts_vocab`` (fts5vocab) with each term's document count;
- ``changes``: the change feed, kept by triggers on ``chunks`` so that every write path records
  itself: one row per chunk id with its latest operation (``upsert`` or ``delete``, a tombstone)
  under a sequence number that only grows. A reader asks "what changed after N"
  (:mod:`lokal.index.feed`). ``lokal_meta.generation`` names the file's history: a new file
  (including the agent's rebuild on a model change) has a new one.
- ``vectors_bits``: the compact (1-bit) search copy in blocks of rowids, kept in step by every
  write, so a new process loads it at disk speed (:mod:`lokal.index.stored`).

Add a migration by appending to :data:`MIGRATIONS`; never edit one that has shipped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from lokal.index import stored

Migration = tuple[int, str, Callable[[Any, dict[str, Any]], None]]

#: Rows per sqlite-vec storage chunk. vec0 keeps each chunk's vectors in one blob and reads the
#: whole blob to return one row; at its default of 1024 rows (1.5 MB at 384 dims) fetching the
#: float vectors of 400 rescoring candidates took 190 ms at 100k rows, at 16 rows 18 ms, with
#: the same file size and a faster full read (benchmarks/search_latency.py, docs/benchmarks.md).
#: lokal never uses vec0's own brute-force KNN, which is what large chunks are for.
VEC_CHUNK_SIZE = 16


def _m001_initial(conn: Any, ctx: dict[str, Any]) -> None:
    dim = int(ctx["dimension"])
    conn.execute("CREATE TABLE lokal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("""
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            uri TEXT NOT NULL UNIQUE,
            content_hash TEXT,
            size INTEGER,
            mtime_ns INTEGER,
            ctime_ns INTEGER,
            inode INTEGER,
            status TEXT NOT NULL DEFAULT 'indexed',
            error TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',
            updated_at REAL NOT NULL
        )""")
    conn.execute("""
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            chunk_id TEXT NOT NULL UNIQUE,
            document_id INTEGER REFERENCES documents(id),
            ordinal INTEGER NOT NULL DEFAULT 0,
            text TEXT NOT NULL,
            char_start INTEGER,
            char_end INTEGER,
            line_start INTEGER,
            line_end INTEGER,
            tokens INTEGER,
            metadata TEXT NOT NULL DEFAULT '{}'
        )""")
    conn.execute("CREATE INDEX chunks_by_document ON chunks(document_id, ordinal)")
    conn.execute(
        f"CREATE VIRTUAL TABLE chunks_vec USING vec0(embedding float[{dim}] "
        f"distance_metric=cosine, chunk_size={VEC_CHUNK_SIZE})"
    )
    conn.execute(
        "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id', "
        "tokenize='unicode61 remove_diacritics 2')"
    )
    # per-term document counts, to leave terms that are everywhere out of full-text queries
    conn.execute("CREATE VIRTUAL TABLE chunks_fts_vocab USING fts5vocab(chunks_fts, 'row')")


def _m002_metadata_index(conn: Any, ctx: dict[str, Any]) -> None:
    # A filter reads every chunk's metadata; this covering index lets SQLite read just that
    # (and the rowid) instead of every chunk's text: 150 ms -> 26 ms at 100k chunks.
    conn.execute("CREATE INDEX IF NOT EXISTS chunks_metadata ON chunks(metadata)")


def _m003_change_feed(conn: Any, ctx: dict[str, Any]) -> None:
    # One row per chunk id: a new operation on a chunk replaces its old row under a new, higher
    # seq (AUTOINCREMENT: a seq is never reused, even after the highest row is replaced), so the
    # feed stays as large as the set of chunk ids the file has held, tombstones included.
    conn.execute("""
        CREATE TABLE changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            chunk_id TEXT NOT NULL UNIQUE,
            op TEXT NOT NULL CHECK (op IN ('upsert', 'delete'))
        )""")
    conn.execute("""
        CREATE TRIGGER chunks_feed_insert AFTER INSERT ON chunks BEGIN
            INSERT OR REPLACE INTO changes (chunk_id, op) VALUES (new.chunk_id, 'upsert');
        END""")
    conn.execute("""
        CREATE TRIGGER chunks_feed_update AFTER UPDATE ON chunks BEGIN
            INSERT OR REPLACE INTO changes (chunk_id, op)
                SELECT old.chunk_id, 'delete' WHERE old.chunk_id <> new.chunk_id;
            INSERT OR REPLACE INTO changes (chunk_id, op) VALUES (new.chunk_id, 'upsert');
        END""")
    conn.execute("""
        CREATE TRIGGER chunks_feed_delete AFTER DELETE ON chunks BEGIN
            INSERT OR REPLACE INTO changes (chunk_id, op) VALUES (old.chunk_id, 'delete');
        END""")
    # an existing file: what it holds is its first changes, under a generation of its own
    conn.execute(
        "INSERT INTO changes (chunk_id, op) SELECT chunk_id, 'upsert' FROM chunks ORDER BY id"
    )
    conn.execute("INSERT OR IGNORE INTO lokal_meta VALUES ('generation', ?)", (uuid.uuid4().hex,))


def _m005_stored_search_copy(conn: Any, ctx: dict[str, Any]) -> None:
    # The 1-bit codes of every vector in blocks of 1024 rowids: the compact search copy of a
    # 1M-row index loads in a fraction of a second instead of 13-20 s row by row.
    stored.rebuild_bits(conn, int(ctx["dimension"]))


MIGRATIONS: list[Migration] = [
    (1, "initial: meta, documents, chunks, vectors (vec0), full text (fts5)", _m001_initial),
    (2, "covering index on chunk metadata for filters", _m002_metadata_index),
    (3, "change feed: changes table kept by triggers on chunks; generation", _m003_change_feed),
    (5, "stored search copy: 1-bit codes in blocks (vectors_bits)", _m005_stored_search_copy),
]


def applied(conn: Any) -> set[int]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lokal_migrations'"
    ).fetchone()
    if not exists:
        return set()
    return {row[0] for row in conn.execute("SELECT number FROM lokal_migrations")}


def migrate(conn: Any, ctx: dict[str, Any]) -> list[int]:
    """Apply the migrations this file lacks; the caller holds a write transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS lokal_migrations "
        "(number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    done = applied(conn)
    ran = []
    for number, name, step in MIGRATIONS:
        if number in done:
            continue
        step(conn, ctx)
        conn.execute("INSERT INTO lokal_migrations VALUES (?, ?, ?)", (number, name, time.time()))
        ran.append(number)
    return ran


def latest() -> int:
    return MIGRATIONS[-1][0]
