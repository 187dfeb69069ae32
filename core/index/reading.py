"""An open index file and its plain reads: the connection every other part of :class:`Index`
works through (closed, read-only or writable, following a file the agent swapped in), the
records it holds (``len``, ``get``, ``get_by_ids``, ``documents``), and the rule that a SQLite
read error becomes a clear :class:`~lokal.errors.IndexFileError` (:func:`reading`).

Search lives in :mod:`lokal.index.search`, writes in :mod:`lokal.index.writing`; the change
feed's reads (``changes``, ``last_seq``, ``generation``) belong here, beside the other reads.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lokal.errors import IndexFileError
from lokal.identity import ModelIdentity
from lokal.index import feed, lifecycle, sqlite
from lokal.index.filters import compile_filter
from lokal.index.records import RECORD_COLUMNS, DocumentRecord, Record, record

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is 3.11+; annotations only

# Every index object alive in this process (weak), for open_indexes().
_INSTANCES: weakref.WeakSet[Reading] = weakref.WeakSet()


def open_indexes() -> list[Any]:
    """The Index objects of this process that are still open (not closed, not yet freed):
    what a test checks to catch a leaked connection."""
    return [index for index in list(_INSTANCES) if not index.closed]


M = TypeVar("M", bound=Callable[..., Any])


def reading(method: M) -> M:
    """A read whose SQLite error (a damaged page, an unreadable vector blob) becomes a clear
    :class:`IndexFileError` naming the file and ``lokal check``, never a raw traceback."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self: Reading, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from method(self, *args, **kwargs)
            except (self._database_error, json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise self._unreadable(exc) from exc

        return generator  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self: Reading, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (self._database_error, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._unreadable(exc) from exc

    return wrapper  # type: ignore[return-value]


class Reading:
    """An open index file: its recorded facts, its connection, and reads of its records."""

    def __init__(self, conn: Any, path: Path, *, writable: bool) -> None:
        self._conn = conn
        self.path = path
        self.writable = writable
        self._lock = threading.RLock()
        self._writes = 0
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

    @property
    def inode(self) -> int:
        """The inode of the file this object reads (another file at :attr:`path` means the
        agent swapped a rebuild in)."""
        return self._inode

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                if self.writable and self.managed_by == "agent":
                    lifecycle.leave_wal(self._conn)  # group members read it while it is stopped
                self._conn.close()
                self._conn = None

    @property
    def closed(self) -> bool:
        return self._conn is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "rw" if self.writable else "ro"
        return f"Index({str(self.path)!r}, {self.identity.describe()}, {mode})"

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
        the old one and renames it over the old): reopen, if its vectors are comparable
        (:func:`lokal.index.lifecycle.replacement`)."""
        fresh = lifecycle.replacement(self.path, self._inode, self.identity)
        if fresh is None:
            return
        assert self._conn is not None and fresh._conn is not None
        self._conn.close()
        self._conn, fresh._conn = fresh._conn, None
        self._inode = fresh._inode
        self.settings, self.managed_by = fresh.settings, fresh.managed_by
        self.quantization = fresh.quantization
        self.identity = fresh.identity
        self._file_replaced()

    def _file_replaced(self) -> None:
        """Forget what was derived from the previous file (the search copy)."""

    # ---- records ---------------------------------------------------------------------------

    @reading
    def __len__(self) -> int:
        with self._lock:
            return int(self._reader().execute("SELECT count(*) FROM chunks").fetchone()[0])

    @reading
    def document_count(self) -> int:
        """Documents (files) the index holds."""
        with self._lock:
            return int(self._reader().execute("SELECT count(*) FROM documents").fetchone()[0])

    # ---- the change feed (lokal.index.feed) ------------------------------------------------

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

    @reading
    def get_by_ids(self, ids: Sequence[str]) -> list[Record]:
        """The chunks with these ids, in the order given; missing ids are skipped."""
        with self._lock:
            rows = (
                self._reader()
                .execute(
                    f"SELECT {RECORD_COLUMNS} FROM chunks c LEFT JOIN documents d ON "
                    "d.id = c.document_id WHERE c.chunk_id IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(ids)),),
                )
                .fetchall()
            )
        by_id = {r[0]: record(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    @reading
    def get(
        self, *, filter: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[Record]:
        """Chunks whose metadata matches ``filter`` (all chunks without one), in storage order."""
        where, params = compile_filter(filter)
        sql = (
            f"SELECT {RECORD_COLUMNS} FROM chunks c LEFT JOIN documents d ON "
            f"d.id = c.document_id WHERE {where} ORDER BY c.id LIMIT ?"
        )
        with self._lock:
            rows = self._reader().execute(sql, [*params, -1 if limit is None else limit])
            return [record(r) for r in rows.fetchall()]

    @reading
    def document_chunks(self, uri: str) -> list[Record]:
        with self._lock:
            rows = (
                self._reader()
                .execute(
                    f"SELECT {RECORD_COLUMNS} FROM chunks c JOIN documents d "
                    "ON d.id = c.document_id WHERE d.uri = ? ORDER BY c.ordinal",
                    (uri,),
                )
                .fetchall()
            )
        return [record(r) for r in rows]

    def document(self, uri: str) -> DocumentRecord | None:
        """The document with this URI, if the index has it."""
        return next((d for d in self.documents(under=uri) if d.uri == uri), None)

    @reading
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
