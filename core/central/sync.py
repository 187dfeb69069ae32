"""``lokal sync``: send an index's change feed to the central store.

The centre decides what to send: its ``sites`` row says which generation it holds for the site
and the last sequence number it applied. The box sends the changes after it, in batches; each
batch is applied in one transaction together with the new ``applied_seq``, and only if the
centre is still where the batch starts (the site's row is locked): a batch sent twice, or
after a kill -9 or a dropped connection, changes nothing, and the next run continues.

A new generation (a rebuilt index, or one restored from an older copy: see
:func:`lokal.index.feed.continues`) is sent into ``staging`` and swapped with the site's rows
in one transaction once complete: searches see the old rows until then, never a mix. A site's
first sync writes straight into ``chunks``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from lokal.central import schema
from lokal.central.applying import apply_changes, encode_slices, row_security
from lokal.central.connect import connect, one_line, psycopg_module
from lokal.errors import CentralError, CentralUnreachable
from lokal.index.feed import Change

log = logging.getLogger(__name__)

#: Changes per batch (one transaction each).
BATCH_SIZE = 1000
#: progress(done, total): changes applied so far in this run, and how many there are to send
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SiteState:
    generation: str | None
    applied_seq: int
    applied_change: str | None
    pending_generation: str | None
    pending_seq: int
    pending_change: str | None
    retired: list[str]


@dataclass(frozen=True)
class SyncResult:
    site: str
    generation: str
    applied_seq: int
    last_seq: int
    sent: int
    batches: int
    replaced: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Moved(Exception):
    """The site's row is not where this run expected (another sync ran): decide again."""


# ---- the centre's state of a site (shared with bundles) ------------------------------------


def read_state(cur: Any, s: str, site: str, *, lock: bool = False) -> SiteState | None:
    sql = schema.sql_module()
    cur.execute(
        sql.SQL(
            "SELECT generation, applied_seq, applied_change, pending_generation, pending_seq, "
            "pending_change, retired FROM {}.sites WHERE site = %s{}"
        ).format(sql.Identifier(s), sql.SQL(" FOR UPDATE" if lock else "")),
        (site,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return SiteState(row[0], int(row[1]), row[2], row[3], int(row[4]), row[5], list(row[6] or []))


def register_site(conn: Any, s: str, site: str, identity: Any) -> SiteState:
    """The site's state at the centre; the owner registers a new site on its first sync, a
    site role must have been added (``lokal central add-site``)."""
    psycopg = psycopg_module()
    sql = schema.sql_module()
    with conn.transaction(), conn.cursor() as cur:
        state = read_state(cur, s, site)
        if state is None:
            try:
                with conn.transaction():
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {}.sites (site) VALUES (%s) ON CONFLICT (site) DO NOTHING"
                        ).format(sql.Identifier(s)),
                        (site,),
                    )
            except psycopg.errors.InsufficientPrivilege as exc:
                msg = (
                    f"the central store does not know site {site!r} for this role "
                    f"({_current_user(conn)}): the administrator adds it with "
                    f"`lokal central add-site {site}`, which prints the role to use"
                )
                raise CentralError(msg) from exc
            state = read_state(cur, s, site)
            if state is None:  # the row exists but belongs to another role (row security)
                msg = f"site {site!r} belongs to another role than {_current_user(conn)}"
                raise CentralError(msg)
        cur.execute(
            sql.SQL("UPDATE {}.sites SET identity = %s WHERE site = %s").format(sql.Identifier(s)),
            (json.dumps(identity.to_dict()), site),
        )
    return state


def _current_user(conn: Any) -> str:
    return str(conn.execute("SELECT current_user").fetchone()[0])


# ---- the sync ---------------------------------------------------------------------------------


def sync(
    index: Any,
    url: str,
    site: str,
    *,
    schema_name: str = schema.DEFAULT_SCHEMA,
    password: str | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> SyncResult:
    """Send what the centre has not applied of ``index``'s changes for ``site``.

    Raises :class:`CentralUnreachable` when the server cannot be reached or the connection
    drops (run it again: it continues), :class:`~lokal.errors.ModelMismatch` when the
    collection holds another model's vectors, :class:`CentralError` when this role may not
    write the site."""
    psycopg = psycopg_module()
    conn = connect(url, password=password, vector=False)
    try:
        return _sync(conn, index, site, schema_name, batch_size, progress)
    except psycopg.OperationalError as exc:
        msg = f"the connection to the central store was lost: {one_line(exc)}"
        raise CentralUnreachable(msg) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        msg = f"the central store refused: {exc.diag.message_primary}"
        raise CentralError(msg) from exc
    finally:
        conn.close()


def _sync(
    conn: Any, index: Any, site: str, s: str, batch_size: int, progress: Progress | None
) -> SyncResult:
    from lokal.central.connect import register_vector

    schema.check_site_name(site)
    started = time.perf_counter()
    schema.migrate(conn, s, index.identity)
    register_vector(conn)
    register_site(conn, s, site, index.identity)
    for _ in range(5):
        try:
            return _run(conn, index, site, s, batch_size, progress, started)
        except _Moved:
            log.info("site %s moved at the centre meanwhile (another sync?): deciding again", site)
    msg = f"site {site!r} keeps changing at the centre: is another sync of it running?"
    raise CentralError(msg)


def _run(
    conn: Any,
    index: Any,
    site: str,
    s: str,
    batch_size: int,
    progress: Progress | None,
    started: float,
) -> SyncResult:
    with conn.cursor() as cur:
        state = read_state(cur, s, site)
    conn.rollback()
    assert state is not None
    generation = index.generation
    target = index.last_seq
    if state.generation is None:
        _start_first(conn, s, site, generation)
        return _send(
            conn,
            index,
            site,
            s,
            "chunks",
            generation,
            0,
            target,
            batch_size,
            progress,
            started,
            False,
        )
    if state.generation == generation and _continues(
        index, state.applied_seq, state.applied_change
    ):
        if state.pending_generation is not None:  # a rebuild staged, then given up
            _drop_staging(conn, s, site, state)
        return _send(
            conn,
            index,
            site,
            s,
            "chunks",
            generation,
            state.applied_seq,
            target,
            batch_size,
            progress,
            started,
            False,
        )
    # a new generation, or a copy restored from before what the centre applied: stage it whole
    after = state.pending_seq
    if state.pending_generation != generation or not _continues(
        index, state.pending_seq, state.pending_change
    ):
        _start_staging(conn, s, site, generation, state)
        after = 0
    log.info(
        "site %s: %s -> generation %s: sending it whole, swapped in when complete",
        site,
        state.generation,
        generation,
    )
    result = _send(
        conn,
        index,
        site,
        s,
        "staging",
        generation,
        after,
        target,
        batch_size,
        progress,
        started,
        True,
    )
    _swap(conn, s, site, generation)
    # what changed while it was staged
    return _send(
        conn,
        index,
        site,
        s,
        "chunks",
        generation,
        result.applied_seq,
        index.last_seq,
        batch_size,
        None,
        started,
        True,
        sent=result.sent,
        batches=result.batches,
    )


def _continues(index: Any, seq: int, tag: str | None) -> bool:
    return bool(index.continues(seq, tag))


def _start_first(conn: Any, s: str, site: str, generation: str) -> None:
    sql = schema.sql_module()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "UPDATE {}.sites SET generation = %s, applied_seq = 0, applied_change = NULL "
                "WHERE site = %s AND generation IS NULL"
            ).format(sql.Identifier(s)),
            (generation, site),
        )
        if cur.rowcount != 1:
            raise _Moved


def _start_staging(conn: Any, s: str, site: str, generation: str, seen: SiteState) -> None:
    sql = schema.sql_module()
    q = sql.Identifier(s)
    with conn.transaction(), conn.cursor() as cur:
        state = read_state(cur, s, site, lock=True)
        if state != seen:
            raise _Moved
        cur.execute(sql.SQL("DELETE FROM {}.staging WHERE site = %s").format(q), (site,))
        cur.execute(
            sql.SQL(
                "UPDATE {}.sites SET pending_generation = %s, pending_seq = 0, "
                "pending_change = NULL WHERE site = %s"
            ).format(q),
            (generation, site),
        )


def _drop_staging(conn: Any, s: str, site: str, seen: SiteState) -> None:
    sql = schema.sql_module()
    q = sql.Identifier(s)
    with conn.transaction(), conn.cursor() as cur:
        if read_state(cur, s, site, lock=True) != seen:
            raise _Moved
        cur.execute(sql.SQL("DELETE FROM {}.staging WHERE site = %s").format(q), (site,))
        cur.execute(
            sql.SQL(
                "UPDATE {}.sites SET pending_generation = NULL, pending_seq = 0, "
                "pending_change = NULL WHERE site = %s"
            ).format(q),
            (site,),
        )


def _swap(conn: Any, s: str, site: str, generation: str) -> None:
    """The staged generation replaces the site's rows, in one transaction."""
    sql = schema.sql_module()
    q = sql.Identifier(s)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in schema.COLUMNS)
    with conn.transaction(), conn.cursor() as cur:
        state = read_state(cur, s, site, lock=True)
        if state is None or state.pending_generation != generation:
            raise _Moved
        cur.execute(sql.SQL("DELETE FROM {}.chunks WHERE site = %s").format(q), (site,))
        cur.execute(
            sql.SQL("INSERT INTO {}.chunks ({}) SELECT {} FROM {}.staging WHERE site = %s").format(
                q, columns, columns, q
            ),
            (site,),
        )
        cur.execute(sql.SQL("DELETE FROM {}.staging WHERE site = %s").format(q), (site,))
        retired = list(state.retired)
        if state.generation and state.generation != generation and state.generation not in retired:
            retired.append(state.generation)
        cur.execute(
            sql.SQL(
                "UPDATE {}.sites SET generation = %s, applied_seq = pending_seq, "
                "applied_change = pending_change, pending_generation = NULL, pending_seq = 0, "
                "pending_change = NULL, retired = %s, synced_at = now() WHERE site = %s"
            ).format(q),
            (generation, retired, site),
        )
    log.info("site %s: generation %s swapped in", site, generation)


def _send(
    conn: Any,
    index: Any,
    site: str,
    s: str,
    table: str,
    generation: str,
    after: int,
    target: int,
    batch_size: int,
    progress: Progress | None,
    started: float,
    replaced: bool,
    *,
    sent: int = 0,
    batches: int = 0,
) -> SyncResult:
    total = index.count_changes(after) if progress else 0
    fresh = after == 0  # a first fill of the table for this site (see apply_changes)
    done = 0
    if progress:
        progress(0, total)

    def read(after: int) -> list[Change]:
        changes = index.changes(after, batch_size)
        if index.generation != generation:  # the file was replaced (the agent's rebuild)
            raise _Moved
        return list(changes)

    def read_ahead(after: int) -> tuple[list[Change], list[bytes]]:
        changes = read(after)
        return changes, encode_slices(site, changes)

    with conn.transaction(), conn.cursor() as cur:  # once for the run, not once a batch
        # Not waiting for the WAL flush is safe: a server crash can lose only whole
        # transactions (batches: rows and applied_seq together), which the next sync sends
        # again. The connection is this sync's own.
        cur.execute("SET synchronous_commit = off")
        secured = row_security(cur, s, table)
    # the next batch is read from the index and encoded while PostgreSQL applies this one
    with ThreadPoolExecutor(1, thread_name_prefix="lokal-sync-read") as reader:
        changes, streams = read_ahead(after) if after < target else ([], [])
        while changes:
            ahead = reader.submit(read_ahead, changes[-1].seq) if changes[-1].seq < target else None
            try:
                sent += apply_batch(
                    conn,
                    s,
                    site,
                    table,
                    generation,
                    after,
                    changes,
                    fresh=fresh,
                    streams=streams,
                    secured=secured,
                )
            except BaseException:
                if ahead is not None:
                    ahead.cancel()
                raise
            after = changes[-1].seq
            done += len(changes)
            batches += 1
            if progress:
                progress(min(done, total), total)
            changes, streams = ahead.result() if ahead is not None else ([], [])
    return SyncResult(
        site=site,
        generation=generation,
        applied_seq=after,
        last_seq=target,
        sent=sent,
        batches=batches,
        replaced=replaced,
        seconds=time.perf_counter() - started,
    )


def apply_batch(
    conn: Any,
    s: str,
    site: str,
    table: str,
    generation: str,
    after: int,
    changes: Sequence[Change],
    *,
    fresh: bool = False,
    streams: Sequence[bytes] | None = None,
    secured: bool | None = None,
) -> int:
    """Apply one batch (the changes in ``(after, changes[-1].seq]``) in one transaction with
    the site's new sequence number, if the centre is where the batch starts or inside it.
    ``streams``: the batch's COPY streams encoded ahead (:func:`applying.encode_slices`).
    Returns how many changes were applied (0: the batch was applied before)."""
    sql = schema.sql_module()
    q = sql.Identifier(s)
    prefix = "pending_" if table == "staging" else "applied_"
    last = changes[-1]
    with conn.transaction(), conn.cursor() as cur:
        state = read_state(cur, s, site, lock=True)
        if state is None:
            raise _Moved
        have_gen = state.pending_generation if table == "staging" else state.generation
        have_seq = state.pending_seq if table == "staging" else state.applied_seq
        if have_gen != generation or have_seq < after:
            raise _Moved
        if have_seq >= last.seq:
            return 0
        todo = [c for c in changes if c.seq > have_seq]
        whole = len(todo) == len(changes)  # else a part was applied: encode the rest again
        apply_changes(
            cur,
            s,
            site,
            table,
            todo,
            fresh=fresh,
            streams=streams if whole else None,
            secured=secured,
        )
        cur.execute(
            sql.SQL(
                "UPDATE {}.sites SET {} = %s, {} = %s, synced_at = now() WHERE site = %s"
            ).format(q, sql.Identifier(prefix + "seq"), sql.Identifier(prefix + "change")),
            (last.seq, last.tag, site),
        )
    return len(todo)


def site_status(
    url: str, s: str = schema.DEFAULT_SCHEMA, *, password: str | None = None
) -> list[dict[str, Any]]:
    """Every site the role may see: generation, applied seq, last sync, rows."""
    sql = schema.sql_module()
    q = sql.Identifier(s)
    conn = connect(url, password=password, vector=False)
    try:
        with conn.cursor() as cur:
            has_chunks = schema.table_exists(cur, s, "chunks")
            count = (
                sql.SQL("(SELECT count(*) FROM {}.chunks c WHERE c.site = t.site)").format(q)
                if has_chunks
                else sql.SQL("0")
            )
            cur.execute(
                sql.SQL(
                    "SELECT t.site, t.generation, t.applied_seq, t.synced_at, t.db_role, {} "
                    "FROM {}.sites t ORDER BY t.site"
                ).format(count, q)
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    return [
        {
            "site": r[0],
            "generation": r[1],
            "applied_seq": r[2],
            "synced_at": r[3].isoformat() if r[3] else None,
            "role": r[4],
            "chunks": r[5],
        }
        for r in rows
    ]
