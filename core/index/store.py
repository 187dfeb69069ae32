"""The index file: the contract between the edge agent (writer) and applications (readers).

One SQLite file with sqlite-vec that records which model made its vectors:

- creating it records a :class:`~lokal.identity.ModelIdentity`;
- a writer must match that identity exactly (key and variant);
- a reader must match its *model key*, else :class:`~lokal.errors.ModelMismatch` names both
  models; another variant of the same key (the fp32 model reading what the q8_0 GGUF wrote)
  gets a :class:`~lokal.errors.ModelVariantWarning`;
- an index the agent manages is read-only to everyone else (:class:`IndexReadOnly`).

Every write is one transaction: a document's chunks are replaced all at once, never mixed.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import threading
import time
import uuid
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lokal import __version__
from lokal.errors import (
    IndexFileError,
    IndexReadOnly,
    ModelMismatch,
    ModelVariantWarning,
)
from lokal.identity import ModelIdentity
from lokal.index import compaction, feed, schema, search, sqlite, upkeep
from lokal.index.filters import compile_filter
from lokal.index.upkeep import CheckReport

FILE_MODE = 0o640
MANAGED_BY = ("app", "agent")


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
    vector search, normalized reciprocal-rank fusion for hybrid search. ``distance`` is the
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


log = logging.getLogger(__name__)

#: Writes that deleted rows between two looks at the file's waste (see Index.compact).
COMPACT_CHECK_EVERY = 16

# Every Index object alive in this process (weak), for open_indexes().
_INSTANCES: weakref.WeakSet[Index] = weakref.WeakSet()


def open_indexes() -> list[Index]:
    """The Index objects of this process that are still open (not closed, not yet freed):
    what a test checks to catch a leaked connection."""
    return [index for index in list(_INSTANCES) if not index.closed]


#: Filters whose matching rows an open index remembers (until the file changes).
_FILTER_CACHE_SIZE = 16

_RECORD_COLUMNS = (
    "c.chunk_id, c.text, c.metadata, d.uri, c.ordinal, c.char_start, c.char_end, "
    "c.line_start, c.line_end, c.tokens"
)


M = TypeVar("M", bound=Callable[..., Any])


def _reading(method: M) -> M:
    """A read whose SQLite error (a damaged page, an unreadable vector blob) becomes a clear
    :class:`IndexFileError` naming the file and ``lokal check``, never a raw traceback."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self: Index, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from method(self, *args, **kwargs)
            except (self._database_error, json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise self._unreadable(exc) from exc

        return generator  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self: Index, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (self._database_error, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._unreadable(exc) from exc

    return wrapper  # type: ignore[return-value]


def _record(row: Sequence[Any], cls: type[Record] = Record, **extra: Any) -> Any:
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


class Index:
    """A lokal index file. Open with :meth:`create`, :meth:`open` or :meth:`open_or_create`."""

    def __init__(self, conn: Any, path: Path, *, writable: bool) -> None:
        self._conn = conn
        self.path = path
        self.writable = writable
        self._lock = threading.RLock()
        self._cache: search.VectorCache | None = None
        # filter (canonical JSON) -> positions in self._cache of the rows it matches; emptied
        # whenever the cache is reloaded (the file changed)
        self._filter_positions: OrderedDict[str, np.ndarray] = OrderedDict()
        self._writes = 0
        self._deleted = 0  # rows deleted by the current write
        self._deleting_writes = 0  # writes that deleted rows since the last look at the waste
        self._inode = os.stat(path).st_ino
        self._database_error: type[Exception] = sqlite.sqlite_module(path).DatabaseError
        try:
            meta = dict(conn.execute("SELECT key, value FROM lokal_meta").fetchall())
        except self._database_error as exc:
            raise self._unreadable(exc) from exc
        self.identity = ModelIdentity.from_dict(json.loads(meta["model"]))
        self.dimension = int(meta["dimension"])
        self.quantization = meta.get("quantization", "float")
        self.managed_by = meta.get("managed_by", "app")
        self.settings: dict[str, Any] = json.loads(meta.get("settings", "{}"))
        _INSTANCES.add(self)

    # ---- opening ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        identity: ModelIdentity,
        *,
        quantization: str = "float",
        managed_by: str = "app",
        settings: Mapping[str, Any] | None = None,
    ) -> Index:
        """Create a new index file (never world-readable) recording ``identity``."""
        if quantization not in search.QUANTIZATIONS:
            msg = f"quantization must be one of {search.QUANTIZATIONS}, got {quantization!r}"
            raise ValueError(msg)
        if managed_by not in MANAGED_BY:
            msg = f"managed_by must be one of {MANAGED_BY}, got {managed_by!r}"
            raise ValueError(msg)
        p = Path(path)
        if p.exists():
            msg = f"{p} already exists; open it with Index.open"
            raise IndexFileError(msg)
        # Built whole under a temporary name, then linked into place: a crash (kill -9, power)
        # leaves either no index or a complete one, never a file that is not yet an index.
        _remove_stale_creations(p)
        tmp = p.with_name(f".{p.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        os.close(fd)
        try:
            conn = sqlite.connect(tmp)
            try:
                # before any table: free pages can then go back to the file system without
                # rewriting the file (lokal.index.compaction)
                conn.execute(f"PRAGMA auto_vacuum = {compaction.INCREMENTAL}")
                conn.execute("VACUUM")
                with sqlite.write(conn):
                    schema.migrate(conn, {"dimension": identity.dimension})
                    meta = {
                        "model": json.dumps(identity.to_dict()),
                        "dimension": str(identity.dimension),
                        "quantization": quantization,
                        "managed_by": managed_by,
                        "settings": json.dumps(dict(settings or {})),
                        "created_at": str(time.time()),
                        "created_by": f"lokal {__version__}",
                    }
                    conn.executemany("INSERT INTO lokal_meta VALUES (?, ?)", meta.items())
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            sqlite.remove_orphan_wal(p)  # never pair a new file with a deleted one's log
            try:
                os.link(tmp, p)  # unlike rename, never replaces a file created meanwhile
            except FileExistsError as exc:
                msg = f"{p} already exists; open it with Index.open"
                raise IndexFileError(msg) from exc
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        sqlite.fsync_directory(p.parent)
        return cls(sqlite.connect(p), p, writable=True)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        identity: ModelIdentity | None = None,
        *,
        writable: bool = False,
        agent: bool = False,
    ) -> Index:
        """Open an existing index, checking ``identity`` against the recorded model.

        ``writable=True`` needs an exact match (key and variant) and, for an agent-managed
        index, ``agent=True``. Readers need the same model key.
        """
        p = Path(path)
        if not p.is_file():
            msg = f"no index file at {p}"
            raise IndexFileError(msg)
        readonly_file = not os.access(p, os.W_OK)
        if writable and readonly_file:
            msg = f"{p} is not writable by this user"
            raise IndexReadOnly(msg)
        sqlite.check_file(p)
        conn = sqlite.connect(p, readonly=readonly_file)
        try:
            try:
                found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'lokal_meta'")
                is_index = found.fetchone() is not None
            except sqlite.sqlite_module(p).DatabaseError as exc:
                if readonly_file and not os.path.exists(f"{p}-shm"):
                    msg = (
                        f"cannot read {p}: it is in WAL mode, its -shm file is missing and this "
                        f"user may not create it ({exc}). Start the agent once (it leaves the "
                        "file readable when it stops), or ask its owner to open it once"
                    )
                    raise IndexReadOnly(msg) from exc
                msg = f"{p} is not a lokal index (not a SQLite database: {exc})"
                raise IndexFileError(msg) from exc
            if not is_index:
                msg = f"{p} is a SQLite file but not a lokal index"
                raise IndexFileError(msg)
            if schema.applied(conn) - {m[0] for m in schema.MIGRATIONS}:
                msg = f"{p} was written by a newer lokal; upgrade lokal to read it"
                raise IndexFileError(msg)
            index = cls(conn, p, writable=writable)
        except BaseException:
            conn.close()
            raise
        try:
            # Refuse before writing anything: no lock is taken and no migration runs for a
            # caller that may not write this file.
            if writable and index.managed_by == "agent" and not agent:
                msg = (
                    f"{p} is managed by the lokal agent: applications may read it, not write "
                    "it. Create an index of your own to write."
                )
                raise IndexReadOnly(msg)
            if identity is not None:
                index._check_identity(identity, writing=writable)
            if writable:
                with sqlite.write(conn):
                    schema.migrate(conn, {"dimension": index.dimension})
            else:
                conn.execute("PRAGMA query_only = ON")
        except BaseException:
            index.close()
            raise
        return index

    @classmethod
    def open_or_create(
        cls, path: str | os.PathLike[str], identity: ModelIdentity, **create_args: Any
    ) -> Index:
        """Open ``path`` for writing, creating it if needed (safe when two processes race)."""
        try:
            return cls.create(path, identity, **create_args)
        except IndexFileError:
            if not Path(path).exists():
                raise
        return cls.open(
            path, identity, writable=True, agent=create_args.get("managed_by") == "agent"
        )

    @staticmethod
    def recorded_identity(path: str | os.PathLike[str]) -> ModelIdentity:
        """The model an index file records, without opening it for use."""
        with Index.open(path) as index:
            return index.identity

    def check_identity(self, identity: ModelIdentity) -> None:
        """Check a reader's model against the recorded one, as :meth:`open` does for
        ``identity``: another model raises ModelMismatch, another variant warns."""
        self._check_identity(identity, writing=False)

    def _check_identity(self, identity: ModelIdentity, *, writing: bool) -> None:
        same = self.identity.compare(identity)
        if same == "different":
            msg = (
                f"{self.path} holds vectors from {self.identity.describe()}; they cannot be "
                f"compared with {identity.describe()}. Open it with the recorded model (pass "
                "no model to load it), or build a new index."
            )
            raise ModelMismatch(msg)
        if same == "variant":
            if writing:
                msg = (
                    f"{self.path} was written with {self.identity.describe()}; a writer must "
                    f"use exactly that variant, not {identity.describe()}"
                )
                raise ModelMismatch(msg)
            warnings.warn(
                f"{self.path} was written with {self.identity.describe()} and is read with "
                f"{identity.describe()}: same model, slightly different vectors",
                ModelVariantWarning,
                stacklevel=3,
            )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                if self.writable and self.managed_by == "agent":
                    sqlite.leave_wal(self._conn)  # group members read it while it is stopped
                self._conn.close()
                self._conn = None

    @property
    def closed(self) -> bool:
        return self._conn is None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "rw" if self.writable else "ro"
        return f"Index({str(self.path)!r}, {self.identity.describe()}, {mode})"

    # ---- writing ---------------------------------------------------------------------------

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
            with sqlite.write(conn):
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
            with sqlite.write(conn):
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
            with sqlite.write(conn):
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
            with sqlite.write(conn):
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
            with sqlite.write(conn):
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
            with sqlite.write(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO lokal_meta VALUES ('settings', ?)",
                    (json.dumps(dict(settings), sort_keys=True),),
                )
            self.settings = dict(settings)

    def delete_document(self, uri: str) -> int:
        """Delete a document and its chunks; returns the number of chunks removed."""
        with self._lock:
            conn = self._writer()
            with sqlite.write(conn):
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
            with sqlite.write(conn):
                self._deleted += len(self)
                conn.execute("DELETE FROM chunks_vec")
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

    # ---- reading ---------------------------------------------------------------------------

    def _unreadable(self, exc: Exception) -> IndexFileError:
        return IndexFileError(
            f"cannot read {self.path}: {exc}. If this persists the file is damaged: run "
            f"`lokal check --index {self.path}`, then rebuild it or restore a snapshot"
        )

    def _reader(self) -> Any:
        if self._conn is None:
            msg = "the index is closed"
            raise IndexFileError(msg)
        if not self.writable and not self._conn.in_transaction:
            self._follow_replacement()
        return self._conn

    def _follow_replacement(self) -> None:
        """A reader follows a file the agent replaced (a model change builds a new index beside
        the old one and renames it over the old): reopen, if its vectors are comparable."""
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            return  # gone for a moment (being replaced): keep reading the open file
        if inode == self._inode:
            return
        fresh = Index.open(self.path)
        same = self.identity.compare(fresh.identity)
        if same == "different":
            fresh.close()
            msg = (
                f"{self.path} was rebuilt with {fresh.identity.describe()}; this reader holds "
                f"{self.identity.describe()}. Open the index again (with no model, to load the "
                "recorded one)."
            )
            raise ModelMismatch(msg)
        if same == "variant":
            warnings.warn(
                f"{self.path} was rebuilt with {fresh.identity.describe()}; this reader holds "
                f"{self.identity.describe()}: same model, slightly different vectors",
                ModelVariantWarning,
                stacklevel=4,
            )
        assert self._conn is not None and fresh._conn is not None
        self._conn.close()
        self._conn, fresh._conn = fresh._conn, None
        self._inode, self._cache = inode, None
        self._filter_positions.clear()
        self.settings, self.managed_by = fresh.settings, fresh.managed_by
        self.quantization = fresh.quantization
        self.identity = fresh.identity
        log.info("%s was replaced by the agent: reading the new file", self.path)

    # ---- the change feed (lokal.index.feed) --------------------------------------------------

    @property
    def generation(self) -> str:
        """The id of this file's history: a new file (a rebuild) has a new one."""
        with self._lock:
            return feed.generation(self._reader(), self.path)

    @property
    def last_seq(self) -> int:
        """The sequence number of the latest change (0 for a file never written)."""
        with self._lock:
            return feed.last_seq(self._reader(), self.path)

    def changes(self, after: int = 0, limit: int = 1000) -> list[feed.Change]:
        """Up to ``limit`` changes after sequence number ``after``, in order: each chunk
        changed since, once, with its row and vector now (``upsert``) or a tombstone."""
        with self._lock, sqlite.read(self._reader()) as conn:
            return feed.changes(conn, self.path, self.dimension, after, limit)

    def continues(self, seq: int, tag: str | None) -> bool:
        """Whether this file's history continues one a reader applied up to ``seq`` (last
        change ``tag``): False for a copy restored from before it (see
        :func:`lokal.index.feed.continues`)."""
        with self._lock:
            return feed.continues(self._reader(), self.path, seq, tag)

    def count_changes(self, after: int = 0) -> int:
        """How many changes (chunks changed, tombstones included) follow ``after``."""
        with self._lock:
            return feed.count_after(self._reader(), self.path, after)

    @_reading
    def __len__(self) -> int:
        with self._lock:
            return int(self._reader().execute("SELECT count(*) FROM chunks").fetchone()[0])

    @_reading
    def document_count(self) -> int:
        """Documents (files) the index holds."""
        with self._lock:
            return int(self._reader().execute("SELECT count(*) FROM documents").fetchone()[0])

    @_reading
    def get_by_ids(self, ids: Sequence[str]) -> list[Record]:
        """The chunks with these ids, in the order given; missing ids are skipped."""
        with self._lock:
            rows = (
                self._reader()
                .execute(
                    f"SELECT {_RECORD_COLUMNS} FROM chunks c LEFT JOIN documents d ON "
                    "d.id = c.document_id WHERE c.chunk_id IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(ids)),),
                )
                .fetchall()
            )
        by_id = {r[0]: _record(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    @_reading
    def get(
        self, *, filter: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[Record]:
        """Chunks whose metadata matches ``filter`` (all chunks without one), in storage order."""
        where, params = compile_filter(filter)
        sql = (
            f"SELECT {_RECORD_COLUMNS} FROM chunks c LEFT JOIN documents d ON "
            f"d.id = c.document_id WHERE {where} ORDER BY c.id LIMIT ?"
        )
        with self._lock:
            rows = self._reader().execute(sql, [*params, -1 if limit is None else limit])
            return [_record(r) for r in rows.fetchall()]

    @_reading
    def document_chunks(self, uri: str) -> list[Record]:
        with self._lock:
            rows = (
                self._reader()
                .execute(
                    f"SELECT {_RECORD_COLUMNS} FROM chunks c JOIN documents d "
                    "ON d.id = c.document_id WHERE d.uri = ? ORDER BY c.ordinal",
                    (uri,),
                )
                .fetchall()
            )
        return [_record(r) for r in rows]

    def document(self, uri: str) -> DocumentRecord | None:
        """The document with this URI, if the index has it."""
        return next((d for d in self.documents(under=uri) if d.uri == uri), None)

    @_reading
    def documents(self, under: str | None = None) -> Iterator[DocumentRecord]:
        """Every document, by URI; with ``under``, the one with that URI and those below it
        (``under`` + ``/`` ...)."""
        where: str = ""
        params: tuple[str, ...] = ()
        if under is not None:
            base = under.rstrip("/")
            # "0" follows "/" in code point order: [base/, base0) is everything below base
            where, params = (
                "WHERE d.uri = ? OR (d.uri >= ? AND d.uri < ?)",
                (base, base + "/", base + "0"),
            )
        with self._lock:
            rows = (
                self._reader()
                .execute(
                    "SELECT d.uri, d.content_hash, d.size, d.mtime_ns, d.ctime_ns, d.inode, "
                    "d.status, d.error, "
                    "(SELECT count(*) FROM chunks c WHERE c.document_id = d.id), "
                    f"d.updated_at, d.metadata FROM documents d {where} ORDER BY d.uri",
                    params,
                )
                .fetchall()
            )
        for r in rows:
            yield DocumentRecord(
                uri=r[0],
                content_hash=r[1],
                size=r[2],
                mtime_ns=r[3],
                ctime_ns=r[4],
                inode=r[5],
                status=r[6],
                error=r[7],
                chunks=r[8],
                updated_at=r[9],
                metadata=json.loads(r[10]),
            )

    def _cache_for_search(self) -> search.VectorCache:
        conn = self._reader()
        version = (int(conn.execute("PRAGMA data_version").fetchone()[0]), self._writes)
        if self._cache is None or self._cache.version != version:
            with sqlite.read(conn):
                self._cache = search.VectorCache.load(
                    conn, self.dimension, self.quantization, version, unit=self.identity.normalize
                )
                self._filter_positions.clear()
        return self._cache

    def _query(self, vector: Any) -> np.ndarray:
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape != (self.dimension,) or not np.all(np.isfinite(q)):
            msg = f"query vector must be {self.dimension} finite numbers, got shape {q.shape}"
            raise ValueError(msg)
        return search.normalize(q)

    def _filtered_positions(
        self, cache: search.VectorCache, flt: Mapping[str, Any] | None
    ) -> np.ndarray | None:
        """Positions in ``cache`` of the rows matching ``flt`` (None: no filter). The SQL runs
        once per filter and file version: a retriever's fixed filter costs it once."""
        if not flt:
            return None
        where, params = compile_filter(flt)
        key = json.dumps([where, params], default=str)
        found = self._filter_positions.get(key)
        if found is not None:
            self._filter_positions.move_to_end(key)
            return found
        rows = self._reader().execute(f"SELECT c.id FROM chunks c WHERE {where}", params)
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64)
        found = cache.positions(np.sort(rowids))
        self._filter_positions[key] = found
        while len(self._filter_positions) > _FILTER_CACHE_SIZE:
            self._filter_positions.popitem(last=False)
        return found

    def _float_vectors(self, rowids: Sequence[int]) -> dict[int, np.ndarray]:
        conn = self._reader()
        out = {}
        for rowid in rowids:
            row = conn.execute(
                "SELECT embedding FROM chunks_vec WHERE rowid = ?", (int(rowid),)
            ).fetchone()
            if row is not None:
                vector = np.frombuffer(row[0], dtype=np.float32).reshape(1, -1)
                if vector.shape[1] != self.dimension:
                    msg = f"the index is damaged: stored vector {rowid} has the wrong size"
                    raise IndexFileError(msg)
                search.refuse_damaged(vector, np.array([rowid]), self.identity.normalize)
                out[int(rowid)] = search.normalize(vector[0])
        return out

    def _nearest(
        self, q: np.ndarray, n: int, flt: Mapping[str, Any] | None
    ) -> list[tuple[int, float]]:
        """(rowid, exact cosine) of the ``n`` nearest rows matching ``flt``, best first."""
        cache = self._cache_for_search()
        pos = self._filtered_positions(cache, flt)
        scores = search.approximate_scores(cache, q, pos)
        want = n * search.OVERSAMPLE[cache.quantization]
        best = search.top_positions(scores, want)
        rows = cache.rowids[best] if pos is None else cache.rowids[pos[best]]
        if cache.quantization == "float":
            return [(int(r), float(s)) for r, s in zip(rows, scores[best], strict=True)]
        exact = self._float_vectors(rows.tolist())
        rescored = sorted(
            ((float(v @ q), r) for r, v in exact.items()), key=lambda t: (-t[0], t[1])
        )
        return [(r, s) for s, r in rescored[:n]]

    def _hits(self, scored: Sequence[tuple[int, float, float | None]]) -> list[Hit]:
        """Hits for (rowid, score, cosine) triples, in the given order."""
        if not scored:
            return []
        if not all(np.isfinite(s) and (c is None or np.isfinite(c)) for _, s, c in scored):
            msg = f"{self.path}: a score is not finite (damaged vectors?); run `lokal check`"
            raise IndexFileError(msg)
        conn = self._reader()
        rows = conn.execute(
            f"SELECT c.id, {_RECORD_COLUMNS} FROM chunks c LEFT JOIN documents d ON "
            "d.id = c.document_id WHERE c.id IN (SELECT value FROM json_each(?))",
            (json.dumps([r for r, _, _ in scored]),),
        ).fetchall()
        by_rowid = {r[0]: r[1:] for r in rows}
        return [
            _record(
                by_rowid[r],
                Hit,
                score=float(score),
                distance=None if cos is None else float(1.0 - cos),
            )
            for r, score, cos in scored
            if r in by_rowid
        ]

    @_reading
    def search(
        self, vector: Any, k: int = 4, *, filter: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """The ``k`` chunks nearest to ``vector`` among those matching ``filter`` (exact in
        float mode: equal to numpy's top-k over the matching rows)."""
        q = self._query(vector)
        with self._lock, sqlite.read(self._reader()):
            nearest = self._nearest(q, k, filter)
            return self._hits([(r, float(search.relevance(c)), c) for r, c in nearest])

    @_reading
    def text_search(
        self, text: str, k: int = 4, *, filter: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """Full-text (BM25) matches for any word of ``text``. ``score`` is each hit's BM25
        relative to the best hit's (the best is 1.0); ``distance`` is None."""
        with self._lock, sqlite.read(self._reader()):
            ranked = self._text_ranks(text, k, filter)
            best = ranked[0][1] if ranked else 1.0
            return self._hits([(r, bm25 / best if best else 1.0, None) for r, bm25 in ranked])

    def _text_ranks(
        self, text: str, k: int, filter: Mapping[str, Any] | None
    ) -> list[tuple[int, float]]:
        """(rowid, bm25) of the best full-text matches (FTS5's bm25: lower is better). Words
        found in more than :data:`~lokal.index.search.COMMON_TERM_SHARE` of the chunks are left
        out (unless every word is that common)."""
        conn = self._reader()
        words = search.query_words(text)
        if words:
            total = max(1, len(self))
            counts = dict(
                conn.execute(
                    "SELECT term, doc FROM chunks_fts_vocab WHERE term IN "
                    "(SELECT value FROM json_each(?))",
                    (json.dumps(words),),
                ).fetchall()
            )
            limit = max(search.COMMON_TERM_SHARE * total, search.COMMON_TERM_MIN_DOCS)
            rare = [w for w in words if counts.get(w, 0) <= limit]
            words = rare or sorted(words, key=lambda w: counts.get(w, 0))[:1]
        query = search.fts_query(words)
        if query is None:
            return []
        where, params = compile_filter(filter)
        sql = (
            "SELECT f.rowid, bm25(chunks_fts) AS rank FROM chunks_fts f JOIN chunks c ON "
            f"c.id = f.rowid WHERE chunks_fts MATCH ? AND {where} ORDER BY rank LIMIT ?"
        )
        rows = conn.execute(sql, [query, *params, k]).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    @_reading
    def hybrid_search(
        self,
        vector: Any,
        text: str,
        k: int = 4,
        *,
        filter: Mapping[str, Any] | None = None,
        fetch_k: int | None = None,
    ) -> list[Hit]:
        """Vector and full-text (BM25) rankings fused by reciprocal rank fusion. ``score`` is
        the fused score divided by its maximum (first in both lists = 1.0)."""
        q = self._query(vector)
        fetch = fetch_k or search.candidate_depth(k)
        with self._lock, sqlite.read(self._reader()):
            nearest = self._nearest(q, fetch, filter)
            lexical = self._text_ranks(text, fetch, filter)
            fused = search.rrf([[r for r, _ in nearest], [r for r, _ in lexical]])
            cosines: dict[int, float | None] = {r: c for r, c in nearest}
            top = sorted(fused.items(), key=lambda t: (-t[1], t[0]))[:k]
            best = 2.0 / (search.RRF_K + 1)
            missing = [r for r, _ in top if r not in cosines]
            for r, v in self._float_vectors(missing).items():
                cosines[r] = float(v @ q)
            return self._hits([(r, s / best, cosines.get(r)) for r, s in top])

    @_reading
    def mmr_search(
        self,
        vector: Any,
        k: int = 4,
        *,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Maximal marginal relevance: relevant to the query, and different from each other."""
        q = self._query(vector)
        with self._lock, sqlite.read(self._reader()):
            nearest = self._nearest(q, max(fetch_k, k), filter)
            vectors = self._float_vectors([r for r, _ in nearest])
            rowids = [r for r, _ in nearest if r in vectors]
            if not rowids:
                return []
            chosen = search.mmr(q, np.stack([vectors[r] for r in rowids]), k, lambda_mult)
            cos = dict(nearest)
            return self._hits(
                [
                    (rowids[i], float(search.relevance(cos[rowids[i]])), cos[rowids[i]])
                    for i in chosen
                ]
            )

    # ---- upkeep ----------------------------------------------------------------------------

    def check(self) -> CheckReport:
        """Whether the file tells the truth about itself (:mod:`lokal.index.upkeep`): SQLite's
        integrity, chunks, vectors and full text agreeing one to one, every vector readable,
        finite and (where the model normalizes) unit length, the search copy equal to the
        stored rows, and free space. Never raises on a damaged file: each SQLite error is one
        more problem in the report."""
        with self._lock:
            return upkeep.check(self, self._reader())

    def snapshot(self, dest: str | os.PathLike[str]) -> Path:
        """A consistent single-file copy, safe while a writer is running (SQLite's backup API:
        what is still in the write-ahead log is included)."""
        out = Path(dest)
        tmp = out.with_name(out.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        os.close(fd)
        module = sqlite.sqlite_module(self.path)
        target = module.connect(str(tmp))
        try:
            with self._lock:
                self._reader().backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
        tmp.replace(out)
        return out


def _remove_stale_creations(path: Path) -> None:
    """Temporary files of creations whose process died (see :meth:`Index.create`)."""
    prefix = f".{path.name}.creating-"
    for stale in (p for p in path.parent.iterdir() if p.name.startswith(prefix)):
        pid = stale.name.rsplit(".creating-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
