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
  ``chunks_fts_vocab`` (fts5vocab) with each term's document count. Its tokenizer follows the
  model's language (:mod:`lokal.index.fulltext`: Porter stemming for English-only models);
  migration 4 rebuilds the table of an older file, whose tokenizer had no stemming;
- ``changes``: the change feed, kept by triggers on ``chunks`` so that every write path records
  itself: one row per chunk id with its latest operation under a sequence number that only
  grows. Since migration 6 a live chunk's row holds only its rowid (``chunk``; the id, text and
  vector are read from ``chunks`` by joining), a deleted chunk's row its id (``deleted``, a
  tombstone). A reader asks "what changed after N" (:mod:`lokal.index.feed`).
  ``lokal_meta.generation`` names the file's history: a new file (including the agent's rebuild
  on a model change) has a new one.
- ``vectors_bits``: the compact (1-bit) search copy in blocks of rowids, kept in step by every
  write, so a new process loads it at disk speed (:mod:`lokal.index.stored`).

Add a migration by appending to :data:`MIGRATIONS`; never edit one that has shipped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from lokal.index import fulltext, stored

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


def _m004_fulltext_language(conn: Any, ctx: dict[str, Any]) -> None:
    # The full-text table again, with the tokenizer of the model's language (ctx["tokenizer"],
    # from Index.create / Index.open), rebuilt from chunks.text in this transaction: an older
    # file's table had no stemming, and what a query matches depends on the table's tokenizer.
    tokenizer = ctx.get("tokenizer") or fulltext.TOKENIZERS[fulltext.ANY]
    conn.execute("DROP TABLE IF EXISTS chunks_fts_vocab")
    conn.execute("DROP TABLE IF EXISTS chunks_fts")
    fulltext.create_table(conn, tokenizer)
    conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")


def _m005_stored_search_copy(conn: Any, ctx: dict[str, Any]) -> None:
    # The 1-bit codes of every vector in blocks of 1024 rowids: the compact search copy of a
    # 1M-row index loads in a fraction of a second instead of 13-20 s row by row.
    stored.rebuild_bits(conn, int(ctx["dimension"]))


#: The feed's triggers from migration 6 on: a live chunk's row names its rowid, a tombstone
#: the deleted chunk's id; the partial unique indexes keep one row per chunk id.
_FEED_TRIGGERS = (
    """CREATE TRIGGER chunks_feed_insert AFTER INSERT ON chunks BEGIN
        DELETE FROM changes WHERE deleted = new.chunk_id;
        INSERT OR REPLACE INTO changes (chunk) VALUES (new.id);
    END""",
    """CREATE TRIGGER chunks_feed_update AFTER UPDATE ON chunks BEGIN
        DELETE FROM changes WHERE chunk = old.id;
        INSERT OR REPLACE INTO changes (deleted)
            SELECT old.chunk_id WHERE old.chunk_id <> new.chunk_id;
        DELETE FROM changes WHERE deleted = new.chunk_id;
        INSERT OR REPLACE INTO changes (chunk) VALUES (new.id);
    END""",
    """CREATE TRIGGER chunks_feed_delete AFTER DELETE ON chunks BEGIN
        DELETE FROM changes WHERE chunk = old.id;
        INSERT OR REPLACE INTO changes (deleted) VALUES (old.chunk_id);
    END""",
)


def _m006_compact_feed(conn: Any, ctx: dict[str, Any]) -> None:
    # Migration 3 stored each chunk id a second and third time (the feed's row and its unique
    # index): ~185 bytes a chunk with the agent's path ids, +5.8% of a small index. A live
    # chunk's row now holds its rowid; only a tombstone keeps the id, whose chunk row is gone.
    # Seqs and the sequence's high mark are kept: a reader's applied seq stays meaningful.
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    high = int(row[0]) if row else 0
    for name in ("chunks_feed_insert", "chunks_feed_update", "chunks_feed_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    conn.execute("ALTER TABLE changes RENAME TO changes_v3")
    conn.execute("""
        CREATE TABLE changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            chunk INTEGER,
            deleted TEXT,
            CHECK ((chunk IS NULL) <> (deleted IS NULL))
        )""")
    conn.execute("CREATE UNIQUE INDEX changes_live ON changes(chunk) WHERE chunk IS NOT NULL")
    conn.execute(
        "CREATE UNIQUE INDEX changes_tombstones ON changes(deleted) WHERE deleted IS NOT NULL"
    )
    # an upsert whose chunk row is missing was read as a tombstone before: it stays one
    conn.execute("""
        INSERT INTO changes (seq, chunk, deleted)
        SELECT f.seq, c.id, CASE WHEN c.id IS NULL THEN f.chunk_id END
        FROM changes_v3 f LEFT JOIN chunks c ON f.op = 'upsert' AND c.chunk_id = f.chunk_id
        ORDER BY f.seq""")
    conn.execute("DROP TABLE changes_v3")
    # sqlite_sequence has no key: update the row the inserts made, or add the one they did not
    cur = conn.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'changes'", (high,)
    )
    if cur.rowcount == 0 and high:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('changes', ?)", (high,))
    for statement in _FEED_TRIGGERS:
        conn.execute(statement)


MIGRATIONS: list[Migration] = [
    (1, "initial: meta, documents, chunks, vectors (vec0), full text (fts5)", _m001_initial),
    (2, "covering index on chunk metadata for filters", _m002_metadata_index),
    (3, "change feed: changes table kept by triggers on chunks; generation", _m003_change_feed),
    (4, "full text tokenized for the model's language", _m004_fulltext_language),
    (5, "stored search copy: 1-bit codes in blocks (vectors_bits)", _m005_stored_search_copy),
    (6, "change feed keyed by chunk rowid; tombstones keep the deleted id", _m006_compact_feed),
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
