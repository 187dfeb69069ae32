"""The one place that opens SQLite for lokal: extension loading, WAL, timeouts, transactions.

Python's stdlib ``sqlite3`` cannot load extensions on many builds (pyenv's, macOS's system
Python). Then lokal uses a SQLite library that can, with no action from the user: sqlean-py
(wheels for Linux x86-64/ARM and macOS), else pysqlite3. One library serves a given index file
for the life of the process, so two libraries never hold locks on the same file.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


def connect(path: str | os.PathLike[str], *, readonly: bool = False) -> Any:
    """Open ``path`` with sqlite-vec loaded, WAL on, a busy timeout, autocommit mode.

    Transactions are explicit: use :func:`write` for writers (``BEGIN IMMEDIATE``).
    """
    try:
        import sqlite_vec
    except ImportError as exc:
        raise MissingDependency(extra="index", feature="lokal's index (sqlite-vec)") from exc
    module = sqlite_module(path)
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = module.connect(
            uri,
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
    else:
        conn = module.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
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
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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
