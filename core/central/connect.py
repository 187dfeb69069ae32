"""One connection helper for the central store: psycopg 3 with pgvector's types registered.

The password never needs to sit in the DSN: libpq reads ``PGPASSWORD`` and ``~/.pgpass``
(``PGPASSFILE``), and ``password_file=`` reads it from a file (a Docker or systemd secret).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lokal.errors import IndexFileError, MissingDependency


def psycopg_module() -> Any:
    """The psycopg module, or MissingDependency naming ``lokal[central]``."""
    try:
        import psycopg
    except ImportError as exc:
        raise MissingDependency(extra="central", feature="the central store (PostgreSQL)") from exc
    return psycopg


def connect(
    dsn: str,
    *,
    password_file: str | os.PathLike[str] | None = None,
    autocommit: bool = True,
    register_vector: bool = True,
) -> Any:
    """A ``psycopg.Connection`` to ``dsn`` with pgvector's ``vector`` type registered (numpy
    arrays in and out). ``register_vector=False`` before the extension exists."""
    psycopg = psycopg_module()
    try:
        from pgvector.psycopg import register_vector as _register
    except ImportError as exc:
        raise MissingDependency(extra="central", feature="the central store (pgvector)") from exc
    kwargs: dict[str, Any] = {}
    if password_file is not None:
        kwargs["password"] = Path(password_file).read_text(encoding="utf-8").strip()
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        msg = f"cannot connect to the central store at {redact(dsn)}: {exc}"
        raise IndexFileError(msg) from exc
    if register_vector:
        try:
            _register(conn)
        except psycopg.ProgrammingError as exc:
            conn.close()
            msg = f"{redact(dsn)} has no pgvector extension (CREATE EXTENSION vector)"
            raise IndexFileError(msg) from exc
    return conn


def redact(dsn: str) -> str:
    """``dsn`` without its password, for messages and logs."""
    head, sep, tail = dsn.partition("://")
    if not sep or "@" not in tail.split("/", 1)[0]:
        return dsn
    userinfo, _, rest = tail.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{head}://{user}{':***' if ':' in userinfo else ''}@{rest}"
