"""Applying a run of changes to the central table, inside the caller's transaction (the sync's
batches and a bundle's one transaction).

The changed chunks' rows are deleted, then the upserts are COPYed in, a slice of
:data:`SLICE` changes at a time, as binary COPY encoded by :mod:`lokal.central.wire`: straight
into the table for its owner; for a site's role through a temporary table and
``INSERT ... SELECT`` (PostgreSQL refuses COPY FROM into a table under row security).

A first fill (``fresh``: the site had no rows in the table when the run began) skips the
deletes; only a slice that meets an existing row (a chunk changed during the fill) goes the
careful way. The COPY streams of a batch can be encoded ahead (:func:`encode_slices`, in the
sync's reader thread, while the server applies the batch before).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from lokal.central import schema, wire
from lokal.central.connect import psycopg_module
from lokal.index.feed import Change

#: Changes per COPY (and per delete statement) within a batch.
SLICE = 2000


def slices(changes: Iterable[Change], size: int = SLICE) -> Iterator[list[Change]]:
    batch: list[Change] = []
    for c in changes:
        batch.append(c)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_slices(site: str, changes: Sequence[Change]) -> list[bytes]:
    """The COPY stream of each slice's upserts, as :func:`apply_changes` would send them."""
    return [wire.encode(site, [c for c in part if c.op == "upsert"]) for part in slices(changes)]


def apply_changes(
    cur: Any,
    s: str,
    site: str,
    table: str,
    changes: Iterable[Change],
    *,
    fresh: bool = False,
    streams: Sequence[bytes] | None = None,
    secured: bool | None = None,
) -> int:
    """Apply ``changes`` to ``table`` (``chunks`` or ``staging``) for ``site``, inside the
    caller's transaction; ``streams``: their slices' COPY streams, encoded ahead by
    :func:`encode_slices` from the same changes; ``secured``: :func:`row_security` if the
    caller knows it. Returns how many changes."""
    psycopg = psycopg_module()
    sql = schema.sql_module()
    target = sql.SQL("{}.{}").format(sql.Identifier(s), sql.Identifier(table))
    if secured is None:
        secured = row_security(cur, s, table)
    if secured:
        _temp_table(cur, s)
    n = 0
    for i, part in enumerate(slices(changes)):
        n += len(part)
        upserts = [c for c in part if c.op == "upsert"]
        gone = [c.chunk_id for c in part if c.op == "delete"]
        stream = streams[i] if streams is not None else wire.encode(site, upserts)
        if fresh and upserts:
            if gone:
                _delete(cur, target, site, gone)
            try:
                with cur.connection.transaction():  # a savepoint
                    _insert(cur, s, target, stream, secured)
                continue
            except psycopg.errors.UniqueViolation:
                fresh = False  # rows exist after all: the careful way from here on
                gone = []
        _delete(cur, target, site, gone + [c.chunk_id for c in upserts])
        if upserts:
            _insert(cur, s, target, stream, secured)
    return n


def _temp_table(cur: Any, s: str) -> None:
    sql = schema.sql_module()
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS lokal_incoming (LIKE {}.staging) ON COMMIT DELETE ROWS"
        ).format(sql.Identifier(s))
    )


def row_security(cur: Any, s: str, table: str) -> bool:
    """Whether row-level security applies to this role on ``table`` (a site's role: yes; the
    owner: no)."""
    cur.execute("SELECT row_security_active(%s::regclass)", (f"{s}.{table}",))
    return bool(cur.fetchone()[0])


def _delete(cur: Any, target: Any, site: str, ids: list[str]) -> None:
    if ids:
        sql = schema.sql_module()
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE site = %s AND chunk_id = ANY(%s)").format(target),
            (site, ids),
        )


def _insert(cur: Any, s: str, target: Any, stream: bytes, secured: bool) -> None:
    sql = schema.sql_module()
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in schema.COLUMNS)
    into = sql.SQL("lokal_incoming") if secured else target
    # binary COPY (lokal.central.wire): pgvector's text form cost 1.5 ms a row at 384 dims
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(into, columns)) as c:
        c.write(stream)
    if secured:
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM lokal_incoming").format(
                target, columns, columns
            )
        )
        cur.execute("TRUNCATE lokal_incoming")
