"""The search copy as stored in the index file, so a new process loads it at disk speed.

Reading 1M vectors through ``SELECT rowid, embedding FROM chunks_vec`` costs 13-20 s: vec0
answers one row at a time. Two stores read in large pieces instead, both inside the one file:

- **float vectors** are read from vec0's own storage: its chunk list (``chunks_vec_chunks``:
  per chunk of :data:`~lokal.index.schema.VEC_CHUNK_SIZE` slots, a validity bitmap and the
  slots' rowids) and its vector blobs (``chunks_vec_vector_chunks00``), each turned into numpy
  arrays with ``numpy.frombuffer``. They are the stored rows themselves, so they cannot
  disagree with them; a layout other than sqlite-vec 0.1's makes :func:`read_floats` return
  None and the caller reads row by row as before. A change feed's batch of some rows is read
  the same way (:func:`vectors_of`): this module alone knows vec0's storage layout.
- **1-bit codes** (the compact copy: 48 bytes per 384-dim vector) live in the ``vectors_bits``
  table (migration 5): one row per block of ``2 ** BLOCK_SHIFT`` rowids, holding the block's
  sorted rowids and packed sign bits as two blobs. Every write keeps it in step in the same
  transaction (:class:`BitsWriter`, flushed by :mod:`lokal.index.writing` before COMMIT), and
  ``lokal check`` compares it with the codes of the stored floats.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lokal.errors import IndexFileError
from lokal.index import sqlite

log = logging.getLogger(__name__)

BITS_TABLE = "vectors_bits"
#: A block holds the rowids ``block << BLOCK_SHIFT`` to ``((block + 1) << BLOCK_SHIFT) - 1``:
#: 1024 rows, 48 KiB of codes at 384 dims; a write rewrites only the blocks it touches.
BLOCK_SHIFT = 10
#: vec0 chunks read per batch (16 slots each: 64 chunks are 1.5 MB of floats at 384 dims, a
#: size the allocator reuses and the CPU cache holds while a batch is checked and encoded).
_CHUNK_BATCH = 64


def bits_width(dimension: int) -> int:
    """Bytes of one vector's packed sign bits."""
    return (dimension + 7) // 8


def encode_bits(vectors: np.ndarray) -> np.ndarray:
    """The 1-bit code of each row: its signs, packed (the same bits as the in-memory copy's;
    normalizing a vector does not change its signs)."""
    return np.packbits(np.asarray(vectors) > 0, axis=-1)


def create_bits_table(conn: Any) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS vectors_bits "
        "(block INTEGER PRIMARY KEY, rowids BLOB NOT NULL, bits BLOB NOT NULL)"
    )


def has_bits(conn: Any) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (BITS_TABLE,)
    ).fetchone()
    return found is not None


def read_bits(conn: Any, dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """(rowids, codes) of the stored compact copy, sorted by rowid (a handful of large blobs).
    A block of the wrong size is :class:`IndexFileError`."""
    width = bits_width(dimension)
    ids: list[bytes] = []
    codes: list[bytes] = []
    for block, rowids, bits in conn.execute(
        "SELECT block, rowids, bits FROM vectors_bits ORDER BY block"
    ):
        if len(rowids) % 8 or len(bits) != len(rowids) // 8 * width:
            msg = f"the stored search copy is damaged (block {block}); run `lokal check`"
            raise IndexFileError(msg)
        ids.append(rowids)
        codes.append(bits)
    out_ids = np.frombuffer(b"".join(ids), dtype=np.int64)
    out_codes = np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(len(out_ids), width)
    return out_ids, out_codes


def _vec0_slots(conn: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """(chunk ids, validity (chunks, size) bool, rowids (chunks, size), size) of vec0's chunk
    list, or None when its layout is not the one this module knows."""
    try:
        rows = conn.execute(
            "SELECT chunk_id, size, validity, rowids FROM chunks_vec_chunks ORDER BY chunk_id"
        ).fetchall()
    except Exception as exc:  # no such table or column: another sqlite-vec layout
        if "no such" not in str(exc):
            raise
        log.debug("vec0 chunk table unreadable: %s", exc)
        return None
    if not rows:
        empty = np.zeros((0, 0), dtype=bool)
        return np.zeros(0, dtype=np.int64), empty, np.zeros((0, 0), dtype=np.int64), 0
    size = int(rows[0][1])
    if any(r[1] != size or len(r[2]) != (size + 7) // 8 or len(r[3]) != 8 * size for r in rows):
        log.debug("vec0 chunks of unexpected sizes: reading vectors row by row")
        return None
    chunk_ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    valid = np.unpackbits(
        np.frombuffer(b"".join(r[2] for r in rows), dtype=np.uint8).reshape(len(rows), -1),
        axis=1,
        bitorder="little",
    )[:, :size].astype(bool)
    rowids = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.int64).reshape(len(rows), size)
    return chunk_ids, valid, rowids, size


def read_floats(
    conn: Any,
    dimension: int,
    out_shape: tuple[int, ...],
    out_dtype: type,
    transform: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every stored vector read from vec0's storage in large pieces, passed a batch at a time
    through ``transform(vectors, rowids)`` (check, normalize, encode: ``vectors`` is a
    writable scratch array it may change in place) into an array of ``out_shape`` rows and
    ``out_dtype``; returns (rowids sorted, rows in that order), or None when vec0's layout is
    not the expected one (the caller reads row by row then)."""
    slots = _vec0_slots(conn)
    if slots is None:
        return None
    chunk_ids, valid, slot_rowids, size = slots
    full = bool(valid.all())
    rowids = slot_rowids.reshape(-1) if full else slot_rowids[valid]
    if len(rowids) < 2 or bool(np.all(rowids[1:] > rowids[:-1])):
        dest = None  # already in rowid order: each batch is a slice of the output
    else:
        order = np.argsort(rowids, kind="stable")
        dest = np.empty(len(order), dtype=np.int64)
        dest[order] = np.arange(len(order))
    # where each chunk's first valid slot lands in ``rowids`` (valid slots, chunk order)
    first = np.concatenate([[0], np.cumsum(valid.sum(axis=1))])
    out: np.ndarray = np.empty((len(rowids), *out_shape), dtype=out_dtype)
    # float rows in rowid order, every slot valid: the blobs are copied straight into the
    # output and transformed there, in place (no scratch copy)
    direct = dest is None and full and out_dtype == np.float32 and out_shape == (dimension,)
    chunk_bytes = 4 * size * dimension
    scratch = np.empty((_CHUNK_BATCH * size, dimension), dtype=np.float32)
    done = 0  # chunks read
    cursor = conn.execute("SELECT rowid, vectors FROM chunks_vec_vector_chunks00 ORDER BY rowid")
    while rows := cursor.fetchmany(_CHUNK_BATCH):
        start, done = done, done + len(rows)
        # both queries go by chunk id: this batch is the next len(rows) chunks of the list
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if done > len(chunk_ids) or not np.array_equal(chunk_ids[start:done], ids):
            log.debug("vec0 vector chunks and chunk list differ: reading row by row")
            return None
        lo, hi = int(first[start]), int(first[done])
        block = out[lo:hi] if direct else scratch[: len(rows) * size]
        raw = memoryview(block.data).cast("B")
        for j, (_, blob) in enumerate(rows):
            if len(blob) != chunk_bytes:
                msg = f"stored vectors are not all {dimension} floats: the index is damaged"
                raise IndexFileError(msg)
            raw[j * chunk_bytes : (j + 1) * chunk_bytes] = blob
        if not full:
            block = block[valid[start:done].reshape(-1)]
        encoded = transform(block, rowids[lo:hi])
        if direct:
            if encoded is not block:
                out[lo:hi] = encoded
        elif dest is None:
            out[lo:hi] = encoded
        else:
            out[dest[lo:hi]] = encoded
    if done != len(chunk_ids):
        log.debug("vec0 chunks without vectors: reading row by row")
        return None
    return (rowids if dest is None else rowids[order]), out


def rebuild_bits(conn: Any, dimension: int) -> int:
    """Write the compact copy of every stored vector (migration 5; a bulk load that wrote
    vec0 directly); the caller holds a write transaction. Returns the rows written."""
    create_bits_table(conn)
    conn.execute("DELETE FROM vectors_bits")
    found = read_floats(
        conn, dimension, (bits_width(dimension),), np.uint8, lambda v, _ids: encode_bits(v)
    )
    if found is None:
        rows = conn.execute("SELECT rowid, embedding FROM chunks_vec ORDER BY rowid").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        floats = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        found = ids, encode_bits(floats.reshape(len(rows), dimension))
    rowids, codes = found
    _write_blocks(conn, rowids, codes)
    return len(rowids)


def _write_blocks(conn: Any, rowids: np.ndarray, codes: np.ndarray) -> None:
    """Store sorted ``rowids`` and their codes, replacing the blocks they fall in."""
    blocks = rowids >> BLOCK_SHIFT
    bounds = np.flatnonzero(np.diff(blocks)) + 1
    for part_ids, part_codes in zip(np.split(rowids, bounds), np.split(codes, bounds), strict=True):
        if len(part_ids):
            conn.execute(
                "INSERT OR REPLACE INTO vectors_bits VALUES (?, ?, ?)",
                (int(part_ids[0] >> BLOCK_SHIFT), part_ids.tobytes(), part_codes.tobytes()),
            )


class BitsWriter:
    """A write transaction's changes to the stored compact copy, applied by :meth:`flush`
    (in the same transaction, before COMMIT) block by block."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._changes: dict[int, np.ndarray | None] = {}
        self._cleared = False

    def add(self, rowid: int, vector: np.ndarray) -> None:
        self._changes[int(rowid)] = encode_bits(vector)

    def remove(self, rowid: int) -> None:
        self._changes[int(rowid)] = None

    def clear(self) -> None:
        self._changes.clear()
        self._cleared = True

    def discard(self) -> None:
        self._changes.clear()
        self._cleared = False

    def flush(self, conn: Any) -> None:
        try:
            if (self._changes or self._cleared) and has_bits(conn):
                if self._cleared:
                    conn.execute("DELETE FROM vectors_bits")
                by_block: dict[int, dict[int, np.ndarray | None]] = {}
                for rowid, code in self._changes.items():
                    by_block.setdefault(rowid >> BLOCK_SHIFT, {})[rowid] = code
                for block, changes in by_block.items():
                    self._apply(conn, block, changes)
        finally:
            self.discard()

    def _apply(self, conn: Any, block: int, changes: dict[int, np.ndarray | None]) -> None:
        width = bits_width(self.dimension)
        row = conn.execute(
            "SELECT rowids, bits FROM vectors_bits WHERE block = ?", (block,)
        ).fetchone()
        ids = np.frombuffer(row[0], dtype=np.int64) if row else np.zeros(0, dtype=np.int64)
        codes = (
            np.frombuffer(row[1], dtype=np.uint8).reshape(len(ids), width)
            if row
            else np.zeros((0, width), dtype=np.uint8)
        )
        keep = ~np.isin(ids, np.fromiter(changes, dtype=np.int64, count=len(changes)))
        added = sorted((r, c) for r, c in changes.items() if c is not None)
        ids = np.concatenate([ids[keep], np.array([r for r, _ in added], dtype=np.int64)])
        codes = np.concatenate(
            [codes[keep], np.array([c for _, c in added], dtype=np.uint8).reshape(-1, width)]
        )
        if not len(ids):
            conn.execute("DELETE FROM vectors_bits WHERE block = ?", (block,))
            return
        order = np.argsort(ids, kind="stable")
        conn.execute(
            "INSERT OR REPLACE INTO vectors_bits VALUES (?, ?, ?)",
            (block, ids[order].tobytes(), codes[order].tobytes()),
        )


def vectors_of(conn: Any, rowids: Sequence[int], dimension: int) -> dict[int, np.ndarray]:
    """The float32 vectors of some ``rowids`` (a change feed's batch): read from vec0's storage in
    a few queries (a vec0 point lookup per row costs ~7 us, a sync reads every row), checked
    against the ordinary lookup of the first row; that lookup for every row when the storage is
    not laid out as expected."""
    if not rowids:
        return {}
    try:
        out = _slot_vectors(conn, rowids, dimension)
    except (ValueError, KeyError, IndexError, sqlite.sqlite_module().Error) as exc:
        log.debug("vector storage not read directly (%s): one lookup per row", exc)
        out = None
    if out is not None and np.array_equal(out[rowids[0]], vector_of(conn, rowids[0], dimension)):
        return out
    return {rowid: vector_of(conn, rowid, dimension) for rowid in rowids}


def _slot_vectors(conn: Any, rowids: Sequence[int], dimension: int) -> dict[int, np.ndarray] | None:
    wanted = json.dumps(list(rowids))
    places = conn.execute(
        "SELECT rowid, chunk_id, chunk_offset FROM chunks_vec_rowids "
        "WHERE rowid IN (SELECT value FROM json_each(?))",
        (wanted,),
    ).fetchall()
    if len(places) != len(rowids):
        return None  # a row without a vector: the lookup says which
    blocks = {
        chunk: np.frombuffer(blob, dtype=np.float32).reshape(-1, dimension)
        for chunk, blob in conn.execute(
            "SELECT rowid, vectors FROM chunks_vec_vector_chunks00 "
            "WHERE rowid IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted({p[1] for p in places})),),
        )
    }
    return {rowid: blocks[chunk][offset] for rowid, chunk, offset in places}


def vector_of(conn: Any, rowid: int, dimension: int) -> np.ndarray:
    """One row's float32 vector through vec0 itself (the ordinary lookup)."""
    row = conn.execute("SELECT embedding FROM chunks_vec WHERE rowid = ?", (rowid,)).fetchone()
    if row is None:
        msg = f"chunk row {rowid} has no vector (run Index.check)"
        raise IndexFileError(msg)
    return np.frombuffer(row[0], dtype=np.float32, count=dimension)
