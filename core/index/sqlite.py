"""The one place that opens SQLite for lokal: extension loading, WAL, timeouts, transactions.

Python's stdlib ``sqlite3`` cannot load extensions on many builds (pyenv's, macOS's system
Python). Then lokal uses a SQLite library that can, with no action from the user: sqlean-py
(wheels for Linux x86-64/ARM and macOS), else pysqlite3. One library serves a given index file
for the life of the process, so two libraries never hold locks on the same file.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any

from lokal.errors import IndexFileError, MissingDependency, SQLiteUnavailable

log = logging.getLogger(__name__)

#: Milliseconds a connection waits for a lock before "database is locked".
BUSY_TIMEOUT_MS = 30_000
_CANDIDATES = ("sqlite3", "sqlean", "pysqlite3.dbapi2")
_chosen: dict[str, ModuleType] = {}
_lock = threading.Lock()
# Every connection opened here and not yet closed or freed (see open_connections()).
_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()
_tracking: dict[ModuleType, type] = {}


def _can_load_extensions(module: ModuleType) -> bool:
    return hasattr(module.Connection, "enable_load_extension")


def sqlite_module(path: str | os.PathLike[str] | None = None) -> ModuleType:
    """The SQLite DB-API module for ``path`` (the same one for the life of the process)."""
    key = str(Path(path).resolve()) if path is not None else ""
    with _lock:
        if key in _chosen:
            return _chosen[key]
        for name in _CANDIDATES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            if _can_load_extensions(module):
                _chosen[key] = module
                log.debug("SQLite library for %s: %s", key or "(default)", name)
                return module
    raise SQLiteUnavailable


def _tracked(module: ModuleType) -> type:
    """``module``'s Connection class, made to register itself in :func:`open_connections`."""
    with _lock:
        cls = _tracking.get(module)
        if cls is None:

            class Connection(module.Connection):  # type: ignore[name-defined,misc]
                closed = False

                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    super().__init__(*args, **kwargs)
                    _OPEN.add(self)

                def close(self) -> None:
                    self.closed = True
                    super().close()

            cls = _tracking[module] = Connection
        return cls


def open_connections() -> list[Any]:
    """The SQLite connections lokal opened in this process that are still open (not closed,
    not yet freed): what a test checks, beside :func:`lokal.index.open_indexes`, to catch a
    connection left open by any module of the index."""
    return [conn for conn in list(_OPEN) if not conn.closed]


def connect_plain(path: str | os.PathLike[str]) -> Any:
    """A plain connection to ``path`` (no extension, no WAL): the target of a copy."""
    module = sqlite_module(path)
    return module.connect(str(path), factory=_tracked(module))


def connect(path: str | os.PathLike[str], *, readonly: bool = False) -> Any:
    """Open ``path`` with sqlite-vec loaded, WAL on, a busy timeout, autocommit mode.

    Transactions are explicit: use :func:`write` for writers (``BEGIN IMMEDIATE``).
    """
    try:
        import sqlite_vec
    except ImportError as exc:
        raise MissingDependency(feature="lokal's index", package="sqlite-vec>=0.1.9") from exc
    module = sqlite_module(path)
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = module.connect(
            uri,
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
            factory=_tracked(module),
        )
    else:
        conn = module.connect(
            str(path),
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
            factory=_tracked(module),
        )
    try:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed transaction survives a power cut, not only a process crash.
            conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except module.DatabaseError as exc:
        conn.close()
        msg = f"{path} is not a lokal index (not a SQLite database: {exc})"
        raise IndexFileError(msg) from exc
    except Exception:
        conn.close()
        raise
    return conn


@contextmanager
def write(conn: Any) -> Iterator[Any]:
    """A write transaction: ``BEGIN IMMEDIATE`` (take the write lock up front, so a writer never
    fails half way on a lock upgrade), commit on success, roll back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (a full disk does that); a failed COMMIT leaves
        # the transaction open: either way the connection is left usable.
        if conn.in_transaction:
            with suppress(Exception):  # the first error is the one to report
                conn.execute("ROLLBACK")
        raise


@contextmanager
def read(conn: Any) -> Iterator[Any]:
    """A read transaction: one consistent snapshot for several SELECTs (WAL readers are never
    blocked by the writer). Inside an open transaction it simply joins it."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


#: SQLite's primary result codes for a full disk and for an I/O error.
_SQLITE_FULL, _SQLITE_IOERR = 13, 10
#: Below this many free bytes an I/O error writing the index is taken for a full disk (SQLite
#: reports a full -shm or -wal as an I/O error).
_LOW_SPACE = 1 << 20


def disk_full(exc: BaseException, path: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``exc`` (from SQLite or the OS, or what it was raised from) means the disk
    holding ``path`` is full."""
    if exc.__cause__ is not None and disk_full(exc.__cause__, path):
        return True
    if isinstance(exc, OSError) and not hasattr(exc, "sqlite_errorcode"):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == _SQLITE_FULL or "database or disk is full" in str(exc):
        return True
    if path is not None and (primary == _SQLITE_IOERR or "disk I/O error" in str(exc)):
        return free_bytes(path) < _LOW_SPACE
    return False


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path``."""
    p = Path(path)
    try:
        st = os.statvfs(p if p.is_dir() else p.parent)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


#: The first bytes of every SQLite database file.
_MAGIC = b"SQLite format 3\0"


def check_file(path: str | os.PathLike[str]) -> None:
    """Refuse, with a clear :class:`IndexFileError`, a file that is not a SQLite database or is
    shorter than its own header says (a truncated copy, a disk that filled while copying).

    The header's page count is trusted as SQLite trusts it (the change counter matches the
    "valid for" counter); while a write-ahead log holds frames the main file may legitimately
    be mid-checkpoint, so then only the magic is checked."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            header = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        msg = f"cannot read {p}: {exc.strerror or exc}"
        raise IndexFileError(msg) from exc
    if not header:
        msg = f"{p} is empty: not a lokal index"
        raise IndexFileError(msg)
    if not header.startswith(_MAGIC) or len(header) < 100:
        msg = f"{p} is not a lokal index (not a SQLite database)"
        raise IndexFileError(msg)
    wal = Path(f"{p}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    trusted = header[24:28] == header[92:96] and pages > 0
    if trusted and size < pages * page_size:
        msg = (
            f"{p} is truncated: {size} bytes where its header says {pages * page_size}. "
            "Restore it from a snapshot (lokal snapshot), or remove it and index again"
        )
        raise IndexFileError(msg)


def quote_identifier(name: str) -> str:
    """Quote an SQL identifier (table or column name)."""
    return '"' + name.replace('"', '""') + '"'


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make a rename or link in ``path`` durable (it survives a power cut once this returns)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
