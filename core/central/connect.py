"""The one place that opens PostgreSQL for lokal.

A password never travels in a command line or a config file: it comes from a file
(``password_file``), from an environment variable named by the caller (``password_env``), or
from libpq's own sources (``PGPASSWORD``, ``~/.pgpass``). A ``postgresql://`` URL that carries
one is refused where users type URLs (:func:`check_url`). TLS is libpq's: put
``sslmode=verify-full`` (and ``sslrootcert=...``) in the URL's query string.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from lokal.errors import CentralError, CentralUnreachable, MissingDependency

log = logging.getLogger(__name__)

#: Seconds to wait for a connection when the URL says nothing (libpq waits forever).
CONNECT_TIMEOUT_S = 10
_URL = re.compile(r"^postgres(ql)?://", re.IGNORECASE)


def psycopg_module() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise MissingDependency(extra="central", feature="the central store (PostgreSQL)") from exc
    return psycopg


def is_url(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL server (``postgresql://`` or ``postgres://``)."""
    return bool(_URL.match(target))


def url_has_password(url: str) -> bool:
    """Whether a ``postgresql://`` URL carries a password (``user:pw@`` or ``password=``)."""
    from urllib.parse import parse_qs, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(parts.password) or any(k.lower() == "password" for k in parse_qs(parts.query))


def check_url(url: str, where: str = "the URL") -> None:
    """Refuse a URL that is not ``postgresql://...`` or that carries a password."""
    if not is_url(url):
        msg = f"{where} must start with postgresql://, got {url[:40]!r}"
        raise CentralError(msg)
    psycopg = psycopg_module()
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        msg = f"{where} is not a valid PostgreSQL URL: {exc}"
        raise CentralError(msg) from exc
    if params.get("password") or url_has_password(url):
        msg = (
            f"{where} contains a password: put it in a file (--password-file, password_file) "
            "or in the PGPASSWORD environment variable instead"
        )
        raise CentralError(msg)


def read_password(
    password_file: str | os.PathLike[str] | None, password_env: str | None
) -> str | None:
    """The password from a file (its first line) or a named environment variable, if given."""
    if password_file is not None:
        try:
            lines = Path(password_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            msg = f"cannot read the password file {password_file}: {exc.strerror}"
            raise CentralError(msg) from exc
        if not lines or not lines[0]:
            msg = f"the password file {password_file} is empty"
            raise CentralError(msg)
        return lines[0]
    if password_env is not None:
        value = os.environ.get(password_env)
        if not value:
            msg = f"the environment variable {password_env} (the password) is not set"
            raise CentralError(msg)
        return value
    return None


def connect(
    url: str,
    *,
    password: str | None = None,
    autocommit: bool = False,
    vector: bool = True,
    application_name: str = "lokal",
) -> Any:
    """A ``psycopg.Connection`` to ``url``, with pgvector's types registered when the database
    has the extension (``vector=True``). Raises :class:`CentralUnreachable` when the server
    cannot be reached."""
    psycopg = psycopg_module()
    kwargs: dict[str, Any] = {"autocommit": autocommit, "application_name": application_name}
    if password is not None:
        kwargs["password"] = password
    if "connect_timeout" not in url:
        kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
    if "keepalives" not in url:
        # a connection whose network stalls mid-batch is found dead in about a minute, not
        # after the kernel's two hours: the agent's pusher, and the agent's stop, wait for it
        kwargs.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
    try:
        conn = psycopg.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        msg = f"cannot connect to {redact(url)}: {one_line(exc)}"
        raise CentralUnreachable(msg) from exc
    if vector:
        register_vector(conn)
    return conn


def register_vector(conn: Any) -> bool:
    """Register pgvector's ``vector`` type on ``conn`` if the database has it."""
    row = conn.execute("SELECT 1 FROM pg_type WHERE typname = 'vector'").fetchone()
    if not conn.autocommit:
        conn.rollback()
    if row is None:
        return False
    try:
        from pgvector.psycopg import register_vector as register
    except ImportError as exc:
        raise MissingDependency(extra="central", feature="the central store (pgvector)") from exc
    register(conn)
    if not conn.autocommit:
        conn.rollback()
    return True


def redact(url: str) -> str:
    """``url`` without a password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def one_line(exc: BaseException) -> str:
    """An error's message on one line (libpq's span several)."""
    return " ".join(str(exc).split())
