"""Keeping an index file near the size of a fresh build through months of edits.

Two kinds of space leak when documents are replaced again and again:

- **vector slots**: sqlite-vec 0.1.9 stores vectors in chunks of
  :data:`~lokal.index.schema.VEC_CHUNK_SIZE` slots, clears a slot on delete and frees a chunk
  only when all its slots are empty; inserts go to a new chunk, never into the holes. Edited
  documents leave half-empty chunks behind for ever. :func:`repack_vectors` moves the rows of
  sparse chunks (delete and insert again, same rowid, in one write transaction) into dense
  new ones, and sqlite-vec frees the emptied chunks.
- **full-text segments**: FTS5 records deletions as new entries and merges segments lazily;
  compaction runs its ``optimize`` (one merged segment, deleted entries dropped).
- **free pages**: SQLite keeps freed pages in the file. New files are created with
  ``auto_vacuum = INCREMENTAL`` and :func:`compact` returns free pages to the file system with
  ``PRAGMA incremental_vacuum``. A file made before that (``auto_vacuum = NONE``) is switched
  once with ``VACUUM``, which also packs every b-tree.

Readers are never blocked: in WAL mode they keep reading their snapshot while the writer
compacts, and they see the compacted file at their next transaction (the search copy is
reloaded because the file changed). The writer itself pauses for the compaction, which the
index runs only when the waste passes a threshold (:func:`needs_compaction`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lokal.index import sqlite

log = logging.getLogger(__name__)

#: A vector chunk at most this full is repacked.
REPACK_BELOW = 0.75
#: Compact when empty vector slots pass this share of the stored vectors ...
SLOT_WASTE = 0.25
#: ... or free pages this share of the file's pages ...
PAGE_WASTE = 0.10
#: ... and there is at least this much to win (small files are left alone).
MIN_PAGES = 64
MIN_SLOTS = 64
INCREMENTAL = 2  # PRAGMA auto_vacuum value


@dataclass(frozen=True)
class Waste:
    pages: int
    free_pages: int
    slots: int
    vectors: int
    auto_vacuum: int

    @property
    def unused_slots(self) -> int:
        return max(0, self.slots - self.vectors)


def waste(conn: Any) -> Waste:
    """Cheap figures: the file header and vec0's chunk list (one row per 16 vectors)."""
    slots, vectors = conn.execute(
        "SELECT (SELECT coalesce(sum(size), 0) FROM chunks_vec_chunks), "
        "(SELECT count(*) FROM chunks_vec_rowids)"
    ).fetchone()
    return Waste(
        pages=int(conn.execute("PRAGMA page_count").fetchone()[0]),
        free_pages=int(conn.execute("PRAGMA freelist_count").fetchone()[0]),
        slots=int(slots),
        vectors=int(vectors),
        auto_vacuum=int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]),
    )


def needs_compaction(w: Waste) -> bool:
    slots = w.unused_slots >= max(MIN_SLOTS, SLOT_WASTE * w.vectors)
    pages = w.free_pages >= max(MIN_PAGES, PAGE_WASTE * w.pages)
    return slots or pages


def repack_vectors(conn: Any) -> int:
    """Move the vectors of chunks at most :data:`REPACK_BELOW` full (not the newest chunk,
    where inserts go) into new dense chunks; returns how many moved. The caller holds a
    write transaction."""
    chunks = conn.execute("SELECT chunk_id, size, validity FROM chunks_vec_chunks").fetchall()
    if len(chunks) < 2:
        return 0
    newest = max(c[0] for c in chunks)
    sparse = [
        cid
        for cid, size, validity in chunks
        if cid != newest and int.from_bytes(validity, "little").bit_count() <= REPACK_BELOW * size
    ]
    if not sparse:
        return 0
    rows = conn.execute(
        "SELECT rowid FROM chunks_vec_rowids WHERE chunk_id IN "
        "(SELECT value FROM json_each(?)) ORDER BY rowid",
        (f"[{','.join(str(c) for c in sparse)}]",),
    ).fetchall()
    moved = 0
    for (rowid,) in rows:
        found = conn.execute(
            "SELECT embedding FROM chunks_vec WHERE rowid = ?", (rowid,)
        ).fetchone()
        if found is None:
            continue
        conn.execute("DELETE FROM chunks_vec WHERE rowid = ?", (rowid,))
        conn.execute("INSERT INTO chunks_vec (rowid, embedding) VALUES (?, ?)", (rowid, found[0]))
        moved += 1
    return moved


def compact(conn: Any, *, force: bool = False) -> dict[str, int]:
    """Repack sparse vector chunks, then give free pages back to the file system. ``conn``
    is a writer's connection outside any transaction. ``force``: switch a file from before
    auto_vacuum even when its free pages are below the threshold. Returns before/after
    figures."""
    before = waste(conn)
    with sqlite.write(conn):
        moved = repack_vectors(conn)
        # FTS5 keeps deleted entries and small segments until merged: one merged segment
        conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('optimize')")
    after_repack = waste(conn)
    if after_repack.auto_vacuum == INCREMENTAL:
        conn.execute("PRAGMA incremental_vacuum").fetchall()
    elif force or after_repack.free_pages >= max(MIN_PAGES, PAGE_WASTE * after_repack.pages):
        # a file from before auto_vacuum: switch it once (VACUUM rewrites the whole file)
        log.info("switching to incremental vacuum (one VACUUM of %d pages)", before.pages)
        conn.execute(f"PRAGMA auto_vacuum = {INCREMENTAL}")
        conn.execute("VACUUM")
    # copy what the WAL holds into the file (and truncate it) without waiting for readers
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    after = waste(conn)
    log.info(
        "compacted: %d vectors repacked, pages %d -> %d, unused vector slots %d -> %d",
        moved,
        before.pages,
        after.pages,
        before.unused_slots,
        after.unused_slots,
    )
    return {
        "vectors_moved": moved,
        "pages_before": before.pages,
        "pages_after": after.pages,
        "unused_slots_before": before.unused_slots,
        "unused_slots_after": after.unused_slots,
    }
