"""Writing an index: every write is one transaction, so readers see a document's old chunks or
its new ones, never a mix; each write keeps the vectors' promises (the recorded dimension,
finite, unit length where the model normalizes) and, every :data:`COMPACT_CHECK_EVERY` writes
that deleted rows, looks at the waste and compacts (:mod:`lokal.index.compaction`)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lokal.errors import IndexFileError, IndexReadOnly
from lokal.index import compaction, search, sqlite, stored
from lokal.index.filters import compile_filter
from lokal.index.reading import Reading
from lokal.index.records import Chunk

log = logging.getLogger(__name__)

#: Writes that deleted rows between two looks at the file's waste (see Index.compact).
COMPACT_CHECK_EVERY = 16


class Writing(Reading):
    """The writes of :class:`~lokal.index.Index` (a writable one: else IndexReadOnly)."""

    def __init__(self, conn: Any, path: Path, *, writable: bool) -> None:
        super().__init__(conn, path, writable=writable)
        self._deleted = 0  # rows deleted by the current write
        self._deleting_writes = 0  # writes that deleted rows since the last look at the waste
        self._bits = stored.BitsWriter(self.dimension)  # the stored compact copy's changes

    @contextmanager
    def _transaction(self, conn: Any) -> Iterator[Any]:
        """A write transaction that brings the stored compact copy (lokal.index.stored) in
        step with its changes before it commits; on any error both roll back."""
        try:
            with sqlite.write(conn):
                yield conn
                self._bits.flush(conn)
        finally:
            self._bits.discard()

    def _writer(self) -> Any:
        if not self.writable:
            msg = f"{self.path} is open read-only"
            raise IndexReadOnly(msg)
        if self._conn is None:
            msg = "the index is closed"
            raise IndexFileError(msg)
        return self._conn

    def _vectors(self, vectors: Any, n: int) -> np.ndarray:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or arr.shape != (n, self.dimension):
            msg = f"expected {n} vectors of dimension {self.dimension}, got shape {arr.shape}"
            raise ValueError(msg)
        if not np.all(np.isfinite(arr)):
            msg = "vectors contain NaN or infinity"
            raise ValueError(msg)
        if self.identity.normalize:
            _, not_unit = search.bad_vectors(arr, unit=True)
            if not_unit.any():
                msg = (
                    f"{self.path} records a model that normalizes ({self.identity.describe()}); "
                    f"vectors {np.flatnonzero(not_unit)[:5].tolist()} are not unit length"
                )
                raise ValueError(msg)
        return arr

    def _document_id(self, conn: Any, uri: str | None) -> int | None:
        if uri is None:
            return None
        row = conn.execute("SELECT id FROM documents WHERE uri = ?", (uri,)).fetchone()
        if row:
            return int(row[0])
        cur = conn.execute(
            "INSERT INTO documents (uri, updated_at) VALUES (?, ?)", (uri, time.time())
        )
        return int(cur.lastrowid)

    def _delete_rows(self, conn: Any, rowids: Sequence[int]) -> int:
        for rowid in rowids:
            text = conn.execute("SELECT text FROM chunks WHERE id = ?", (rowid,)).fetchone()
            if text is None:
                continue
            conn.execute(
                "INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', ?, ?)",
                (rowid, text[0]),
            )
            conn.execute("DELETE FROM chunks_vec WHERE rowid = ?", (rowid,))
            conn.execute("DELETE FROM chunks WHERE id = ?", (rowid,))
            self._bits.remove(rowid)
            self._deleted += 1
        return len(rowids)

    def _delete_document_rows(self, conn: Any, doc_id: int | None) -> int:
        rows = conn.execute("SELECT id FROM chunks WHERE document_id = ?", (doc_id,))
        return self._delete_rows(conn, [r[0] for r in rows.fetchall()])

    def _insert(
        self, conn: Any, chunk: Chunk, chunk_id: str, vector: np.ndarray, document_id: int | None
    ) -> None:
        cur = conn.execute(
            "INSERT INTO chunks (chunk_id, document_id, ordinal, text, char_start, char_end, "
            "line_start, line_end, tokens, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                chunk_id,
                document_id,
                chunk.ordinal,
                chunk.text,
                chunk.char_start,
                chunk.char_end,
                chunk.line_start,
                chunk.line_end,
                chunk.tokens,
                json.dumps(dict(chunk.metadata), ensure_ascii=False, default=str),
            ),
        )
        rowid = cur.lastrowid
        conn.execute(
            "INSERT INTO chunks_vec (rowid, embedding) VALUES (?, ?)", (rowid, vector.tobytes())
        )
        conn.execute("INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)", (rowid, chunk.text))
        self._bits.add(rowid, vector)

    def _rowids_for(self, conn: Any, ids: Sequence[str]) -> list[int]:
        rows = conn.execute(
            "SELECT id FROM chunks WHERE chunk_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        ).fetchall()
        return [r[0] for r in rows]

    def upsert(
        self, chunks: Sequence[Chunk], vectors: Any, *, document: str | None = None
    ) -> list[str]:
        """Insert chunks, replacing any with the same id (all in one transaction).
        Chunks without an id get a new UUID. Returns the ids in order."""
        arr = self._vectors(vectors, len(chunks))
        ids = [c.id or str(uuid.uuid4()) for c in chunks]
        if len(set(ids)) != len(ids):
            msg = "duplicate ids in one upsert"
            raise ValueError(msg)
        with self._lock:
            conn = self._writer()
            with self._transaction(conn):
                doc_id = self._document_id(conn, document)
                self._delete_rows(conn, self._rowids_for(conn, ids))
                for chunk, chunk_id, vector in zip(chunks, ids, arr, strict=True):
                    self._insert(conn, chunk, chunk_id, vector, doc_id)
            self._changed()
        return ids

    def delete(self, ids: Sequence[str]) -> int:
        """Delete chunks by id; returns how many existed."""
        with self._lock:
            conn = self._writer()
            with self._transaction(conn):
                n = self._delete_rows(conn, self._rowids_for(conn, ids))
            self._changed()
        return n

    def delete_where(self, filter: Mapping[str, Any]) -> int:
        """Delete every chunk whose metadata matches ``filter``; returns how many."""
        if not filter:
            msg = "delete_where needs a non-empty filter (use clear() to delete everything)"
            raise ValueError(msg)
        where, params = compile_filter(filter)
        with self._lock:
            conn = self._writer()
            with self._transaction(conn):
                rowids = [
                    r[0] for r in conn.execute(f"SELECT c.id FROM chunks c WHERE {where}", params)
                ]
                n = self._delete_rows(conn, rowids)
            self._changed()
        return n

    def replace_document(
        self,
        uri: str,
        chunks: Sequence[Chunk],
        vectors: Any,
        *,
        content_hash: str | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
        ctime_ns: int | None = None,
        inode: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace every chunk of document ``uri`` in one transaction: readers see all the old
        chunks or all the new ones, never a mix. Chunk ids default to ``uri#ordinal``."""
        arr = self._vectors(vectors, len(chunks))
        with self._lock:
            conn = self._writer()
            with self._transaction(conn):
                doc_id = self._document_id(conn, uri)
                self._delete_document_rows(conn, doc_id)
                ids = [c.id or f"{uri}#{c.ordinal}" for c in chunks]
                self._delete_rows(conn, self._rowids_for(conn, ids))
                for chunk, chunk_id, vector in zip(chunks, ids, arr, strict=True):
                    self._insert(conn, chunk, chunk_id, vector, doc_id)
                conn.execute(
                    "UPDATE documents SET content_hash = ?, size = ?, mtime_ns = ?, ctime_ns = ?, "
                    "inode = ?, status = 'indexed', error = NULL, metadata = ?, updated_at = ? "
                    "WHERE id = ?",
                    (
                        content_hash,
                        size,
                        mtime_ns,
                        ctime_ns,
                        inode,
                        json.dumps(dict(metadata or {}), default=str),
                        time.time(),
                        doc_id,
                    ),
                )
            self._changed()

    def set_document(
        self,
        uri: str,
        *,
        status: str,
        error: str | None = None,
        content_hash: str | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
        ctime_ns: int | None = None,
        inode: int | None = None,
    ) -> None:
        """Record a document's state without new chunks: ``"indexed"`` keeps its chunks (the
        file was touched but its content is the same), ``"failed"`` or ``"skipped"`` removes
        them and keeps the reason, so the document is retried when it changes."""
        with self._lock:
            conn = self._writer()
            with self._transaction(conn):
                doc_id = self._document_id(conn, uri)
                if status != "indexed":
                    self._delete_document_rows(conn, doc_id)
                conn.execute(
                    "UPDATE documents SET status = ?, error = ?, content_hash = ?, size = ?, "
                    "mtime_ns = ?, ctime_ns = ?, inode = ?, updated_at = ? WHERE id = ?",
                    (
                        status,
                        error,
                        content_hash,
                        size,
                        mtime_ns,
                        ctime_ns,
                        inode,
                        time.time(),
                        doc_id,
                    ),
                )
            self._changed()

    def update_settings(self, settings: Mapping[str, Any]) -> None:
        """Record the settings that produced the chunks (chunker, parsers)."""
        with self._lock:
            conn = self._writer()
            with self._transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO lokal_meta VALUES ('settings', ?)",
                    (json.dumps(dict(settings), sort_keys=True),),
                )
            self.settings = dict(settings)

    def delete_document(self, uri: str) -> int:
        """Delete a document and its chunks; returns the number of chunks removed."""
        with self._lock:
            conn = self._writer()
            with self._transaction(conn):
                row = conn.execute("SELECT id FROM documents WHERE uri = ?", (uri,)).fetchone()
                if row is None:
                    return 0
                n = self._delete_document_rows(conn, row[0])
                conn.execute("DELETE FROM documents WHERE id = ?", (row[0],))
            self._changed()
        return n

    def clear(self) -> None:
        """Delete every document and chunk (the file and its model identity stay)."""
        with self._lock:
            conn = self._writer()
            with self._transaction(conn):
                self._deleted += len(self)
                conn.execute("DELETE FROM chunks_vec")
                self._bits.clear()
                conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('delete-all')")
                conn.execute("DELETE FROM chunks")
                conn.execute("DELETE FROM documents")
            self._changed()

    def _changed(self) -> None:
        """After each write: every :data:`COMPACT_CHECK_EVERY` writes that deleted rows, look
        at the waste and compact when it passes the thresholds (lokal.index.compaction)."""
        self._writes += 1
        if not self._deleted:
            return
        self._deleted = 0
        self._deleting_writes += 1
        if self._deleting_writes < COMPACT_CHECK_EVERY:
            return
        self._deleting_writes = 0
        try:
            self.compact()
        except self._database_error as exc:  # busy, disk full: the write itself is done
            log.warning("compacting %s failed (will retry later): %s", self.path, exc)

    def compact(self, *, force: bool = False) -> dict[str, int]:
        """Give back the space edits left behind (sparse vector chunks, free pages) when it
        passes the thresholds of :mod:`lokal.index.compaction`, or always with ``force``.
        Readers keep reading meanwhile. Returns the figures ({} when nothing was done)."""
        with self._lock:
            conn = self._writer()
            if not force and not compaction.needs_compaction(compaction.waste(conn)):
                return {}
            figures = compaction.compact(conn, force=force)
            self._writes += 1
            return figures
