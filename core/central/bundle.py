"""Sync bundles: an index's changes in one file, for sites with no network to the centre.

``lokal sync --index FILE --to OUT.lokalbundle`` writes the changes since the last bundle of
that site; ``lokal sync --from OUT.lokalbundle --to postgresql://...`` applies it centrally,
in one transaction. A bundle is a SQLite file:

- ``header(key, value)``: format, site, generation, the sequence range ``(after, last]``,
  ``replace`` (a whole generation: the site's rows are replaced), the bundle's number, the
  model identity, the row count and a SHA-256 covering every other header row and the rows
  (format 2; format 1 bundles, from before, covered the rows only);
- ``changes``: one row per change, its vector as float32 bytes.

Applying reads the bundle once, in one read transaction, and hashes exactly the rows it
applies: a bundle whose header or rows do not match its digest (damaged, edited, or changed
while it is applied) is refused and its PostgreSQL transaction rolled back, so nothing of it
is applied.

The box remembers what it bundled last in a JSON state file beside the index
(``INDEX.bundles.json``, one entry per site). Applying checks the centre's ``sites`` row:
a bundle already applied is a no-op; one that does not start where the centre is refuses,
naming the missing sequence range.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lokal.central import schema
from lokal.central.applying import apply_changes
from lokal.central.connect import connect, one_line, psycopg_module, register_vector
from lokal.central.sync import read_state, register_site
from lokal.errors import BundleError, CentralError, CentralUnreachable
from lokal.identity import ModelIdentity
from lokal.index import feed, sqlite
from lokal.index.feed import Change
from lokal.index.store import FILE_MODE

log = logging.getLogger(__name__)

FORMAT = "lokal-bundle/2"
#: bundles written before the digest covered the header: still applied, rows checked
FORMAT_1 = "lokal-bundle/1"
SUFFIX = ".lokalbundle"
_PAGE = 1000
_FIELDS = (
    "seq",
    "chunk_id",
    "op",
    "document",
    "ordinal",
    "text",
    "char_start",
    "char_end",
    "line_start",
    "line_end",
    "tokens",
    "metadata",
)


@dataclass(frozen=True)
class BundleInfo:
    site: str
    generation: str
    after: int
    last: int
    last_change: str
    replace: bool
    number: int
    identity: dict[str, Any]
    count: int
    sha256: str
    created_at: float

    def describe(self) -> str:
        kind = "whole generation" if self.replace else "changes"
        return (
            f"bundle #{self.number} of site {self.site!r}: {kind} {self.after + 1}-{self.last} "
            f"of generation {self.generation[:12]} ({self.count} changes)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ApplyResult:
    status: str  # "applied", "already applied", "obsolete"
    applied: int
    info: BundleInfo

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "applied": self.applied, "bundle": self.info.to_dict()}


def is_bundle_path(target: str) -> bool:
    return target.endswith(SUFFIX)


def state_path_for(index_path: Path) -> Path:
    return index_path.with_name(index_path.name + ".bundles.json")


def _row_digest(h: Any, c: Change) -> None:
    fields = [getattr(c, f) for f in _FIELDS]
    h.update(json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str).encode())
    if c.vector is not None:
        h.update(np.asarray(c.vector, dtype="<f4").tobytes())


def _digest(header: dict[str, str], rows_digest: str) -> str:
    """The bundle's SHA-256: every header row but the digest, as stored, then the rows'."""
    if header.get("format") == FORMAT_1:
        return rows_digest
    rows = sorted((k, v) for k, v in header.items() if k != "sha256")
    canonical = json.dumps(rows, ensure_ascii=False).encode()
    return hashlib.sha256(canonical + b"\n" + rows_digest.encode()).hexdigest()


# ---- writing (on the box) ------------------------------------------------------------------


def write_bundle(
    index: Any, out: Path, site: str, *, state_path: Path | None = None
) -> BundleInfo | None:
    """Write the changes of ``index`` since the last bundle for ``site`` to ``out``; None
    when nothing changed. A file restored from an older copy (its feed no longer continues
    the last bundle) gets a new generation and a whole bundle."""
    schema.check_site_name(site)
    state_path = state_path or state_path_for(Path(index.path))
    states = _load_states(state_path)
    last = states.get(site)
    generation = index.generation
    replace = True
    after = 0
    if last and last["generation"] == generation:
        if index.continues(last["last_seq"], last["last_change"]):
            replace, after = False, int(last["last_seq"])
        else:
            generation = _renew_generation(Path(index.path))
            log.warning(
                "%s no longer continues bundle #%s (restored from an older copy?): new "
                "generation %s, bundled whole",
                index.path,
                last["number"],
                generation,
            )
    target = index.last_seq
    if not replace and after >= target:
        return None
    if out.exists():  # never overwrite a bundle that may not have been carried yet
        msg = f"{out} already exists: give the new bundle another name"
        raise BundleError(msg)
    number = int(last["number"]) + 1 if last else 1
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))  # like the index
    conn = sqlite.sqlite_module().connect(str(tmp), isolation_level=None)
    h = hashlib.sha256()
    count, seq, tag = 0, after, ""
    try:
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE header (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE changes (seq INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL, op TEXT NOT "
            "NULL, document TEXT, ordinal INTEGER, text TEXT, char_start INTEGER, char_end "
            "INTEGER, line_start INTEGER, line_end INTEGER, tokens INTEGER, metadata TEXT, "
            "embedding BLOB)"
        )
        while seq < target:
            page = index.changes(seq, _PAGE)
            if not page:
                break
            for c in page:
                _row_digest(h, c)
                conn.execute(
                    "INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        *(getattr(c, f) for f in _FIELDS[:-1]),
                        c.metadata_json,
                        None if c.vector is None else np.asarray(c.vector, "<f4").tobytes(),
                    ),
                )
            count += len(page)
            seq, tag = page[-1].seq, page[-1].tag
        if index.generation != generation:
            msg = f"{index.path} was replaced while it was bundled (a rebuild?): run it again"
            raise BundleError(msg)
        info = BundleInfo(
            site=site,
            generation=generation,
            after=after,
            last=seq,
            last_change=tag,
            replace=replace,
            number=number,
            identity=index.identity.to_dict(),
            count=count,
            sha256="",
            created_at=time.time(),
        )
        header = {"format": FORMAT, **{k: json.dumps(v) for k, v in asdict(info).items()}}
        info = dataclasses.replace(info, sha256=_digest(header, h.hexdigest()))
        header["sha256"] = json.dumps(info.sha256)
        conn.executemany("INSERT INTO header VALUES (?, ?)", header.items())
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        tmp.unlink(missing_ok=True)
        raise
    conn.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    try:
        os.link(tmp, out)  # unlike rename, never replaces a bundle written meanwhile
    except FileExistsError as exc:
        msg = f"{out} already exists: give the new bundle another name"
        raise BundleError(msg) from exc
    finally:
        tmp.unlink(missing_ok=True)
    sqlite.fsync_directory(out.parent)
    states[site] = {
        "generation": generation,
        "last_seq": info.last,
        "last_change": info.last_change,
        "number": number,
        "bundle": str(out),
    }
    _save_states(state_path, states)
    return info


def _renew_generation(path: Path) -> str:
    conn = sqlite.connect(path)
    try:
        with sqlite.write(conn):
            return feed.renew_generation(conn)
    finally:
        conn.close()


def _load_states(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        msg = f"cannot read the bundle state {path}: {exc} (remove it to start with a whole bundle)"
        raise BundleError(msg) from exc
    return dict(data)


def _save_states(path: Path, states: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(states, indent=1, sort_keys=True), encoding="utf-8")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


# ---- reading and applying (at the centre) ----------------------------------------------------


def _open(path: Path) -> Any:
    if not path.is_file():
        msg = f"no bundle at {path}"
        raise BundleError(msg)
    uri = path.resolve().as_uri() + "?mode=ro"
    module = sqlite.sqlite_module()
    conn = None
    try:
        conn = module.connect(uri, uri=True, isolation_level=None)
        conn.execute("SELECT count(*) FROM header").fetchone()
    except module.DatabaseError as exc:
        if conn is not None:
            conn.close()
        msg = f"{path} is not a lokal bundle (or it is damaged): {exc}"
        raise BundleError(msg) from exc
    return conn


def _header(conn: Any, path: Path) -> tuple[BundleInfo, dict[str, str]]:
    """The header as stored and as a :class:`BundleInfo`, not yet checked against the digest."""
    try:
        header = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM header")}
        if header.get("format") not in (FORMAT, FORMAT_1):
            msg = f"{path}: not a {FORMAT} bundle (format {header.get('format')!r})"
            raise BundleError(msg)
        info = BundleInfo(**{k: json.loads(v) for k, v in header.items() if k != "format"})
        int(info.identity["dimension"])
    except (ValueError, TypeError, KeyError) as exc:
        msg = f"{path}: damaged bundle header: {exc}"
        raise BundleError(msg) from exc
    except sqlite.sqlite_module().DatabaseError as exc:
        msg = f"{path}: damaged bundle: {exc}"
        raise BundleError(msg) from exc
    return info, header


def _checked(
    conn: Any, path: Path, info: BundleInfo, header: dict[str, str], after: int = 0
) -> Iterator[Change]:
    """The bundle's changes after ``after``, every row (those skipped too) hashed as it is
    read; once the last is read, :class:`BundleError` unless rows and header match the
    digest. A caller that applies them inside a transaction lets the error roll it back."""
    h = hashlib.sha256()
    n = 0
    try:
        for c in _changes(conn, int(info.identity["dimension"])):
            _row_digest(h, c)
            n += 1
            if c.seq > after:
                yield c
    except (sqlite.sqlite_module().DatabaseError, ValueError) as exc:
        msg = f"{path}: damaged bundle: {exc}"
        raise BundleError(msg) from exc
    if n != info.count or _digest(header, h.hexdigest()) != info.sha256:
        msg = f"{path}: damaged bundle: its header or rows do not match their checksum"
        raise BundleError(msg)
    if header.get("format") == FORMAT_1:
        log.warning("%s: a %s bundle: its header is not covered by its checksum", path, FORMAT_1)


def read_header(path: Path) -> BundleInfo:
    """The bundle's header, unchecked (for ordering bundles: :func:`apply_bundle` checks)."""
    conn = _open(path)
    try:
        return _header(conn, path)[0]
    finally:
        conn.close()


def read_info(path: Path) -> BundleInfo:
    """The bundle's header, after checking it and its rows against their SHA-256."""
    conn = _open(path)
    try:
        conn.execute("BEGIN")
        info, header = _header(conn, path)
        for _ in _checked(conn, path, info, header):
            pass
    finally:
        conn.close()
    return info


def _changes(conn: Any, dimension: int, after: int = 0) -> Iterator[Change]:
    rows = conn.execute(
        "SELECT seq, chunk_id, op, document, ordinal, text, char_start, char_end, line_start, "
        "line_end, tokens, metadata, embedding FROM changes WHERE seq > ? ORDER BY seq",
        (after,),
    )
    for r in rows:
        if r[2] not in feed.OPS or (r[2] == "upsert") != (r[12] is not None):
            msg = f"change {r[0]} is neither an upsert with a vector nor a tombstone"
            raise ValueError(msg)
        vector = None if r[12] is None else np.frombuffer(r[12], dtype="<f4", count=dimension)
        yield Change(
            seq=r[0],
            chunk_id=r[1],
            op=r[2],
            document=r[3],
            ordinal=r[4],
            text=r[5],
            char_start=r[6],
            char_end=r[7],
            line_start=r[8],
            line_end=r[9],
            tokens=r[10],
            metadata_json=r[11],
            vector=vector,
        )


def apply_bundle(
    path: Path,
    url: str,
    *,
    schema_name: str = schema.DEFAULT_SCHEMA,
    password: str | None = None,
) -> ApplyResult:
    """Apply a bundle to the central store, in one transaction, from one read of the bundle
    (one read transaction): what is applied is what was checked against its digest."""
    source = _open(path)
    try:
        source.execute("BEGIN")
        info, header = _header(source, path)
        bundle = _Bundle(source, path, info, header)
        return _connect_and_apply(bundle, url, schema_name, password)
    finally:
        source.close()


@dataclass(frozen=True)
class _Bundle:
    conn: Any
    path: Path
    info: BundleInfo
    header: dict[str, str]

    def changes(self, after: int = 0) -> Iterator[Change]:
        return _checked(self.conn, self.path, self.info, self.header, after)

    def check(self) -> None:
        for _ in self.changes():
            pass


def _connect_and_apply(
    bundle: _Bundle, url: str, schema_name: str, password: str | None
) -> ApplyResult:
    try:
        identity = ModelIdentity.from_dict(bundle.info.identity)
    except (ValueError, TypeError, KeyError) as exc:
        bundle.check()  # a damaged header says so first
        msg = f"{bundle.path}: the bundle's model identity is not one: {exc}"
        raise BundleError(msg) from exc
    psycopg = psycopg_module()
    conn = connect(url, password=password, vector=False)
    try:
        s = schema_name
        schema.migrate(conn, s, identity)
        register_vector(conn)
        register_site(conn, s, bundle.info.site, identity)
        return _apply(conn, bundle, s)
    except psycopg.OperationalError as exc:
        msg = f"the connection to the central store was lost: {one_line(exc)}"
        raise CentralUnreachable(msg) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        msg = f"the central store refused: {exc.diag.message_primary}"
        raise CentralError(msg) from exc
    finally:
        conn.close()


def _apply(conn: Any, bundle: _Bundle, s: str) -> ApplyResult:
    sql = schema.sql_module()
    q = sql.Identifier(s)
    info = bundle.info
    site = info.site
    with conn.transaction(), conn.cursor() as cur:
        state = read_state(cur, s, site, lock=True)
        assert state is not None
        same = state.generation == info.generation
        obsolete = info.generation in state.retired
        done = same and state.applied_seq >= info.last
        gap = (not info.replace and not same) or (same and state.applied_seq < info.after)
        if obsolete or done or gap:
            bundle.check()  # not applied, but refused all the same when damaged or edited
        if info.generation in state.retired:
            return ApplyResult("obsolete", 0, info)
        if same and state.applied_seq >= info.last:
            return ApplyResult("already applied", 0, info)
        if not info.replace and not same:
            msg = (
                f"{info.describe()} continues generation {info.generation[:12]}, but the centre "
                f"holds {'generation ' + state.generation[:12] if state.generation else 'nothing'}"
                f" for site {site!r}: apply this generation's bundles before it, from its "
                f"whole one (changes 1-{info.after} are missing)"
            )
            raise BundleError(msg)
        if same and state.applied_seq < info.after:
            msg = (
                f"{info.describe()} starts after change {info.after}, but the centre has applied "
                f"up to {state.applied_seq}: changes {state.applied_seq + 1}-{info.after} are "
                "missing; apply the bundle(s) holding them first"
            )
            raise BundleError(msg)
        retired = list(state.retired)
        # the rows are checked as they are applied: a mismatch rolls this transaction back
        if same:
            applied = apply_changes(cur, s, site, "chunks", bundle.changes(state.applied_seq))
        else:  # a whole generation replaces the site's rows
            cur.execute(sql.SQL("DELETE FROM {}.chunks WHERE site = %s").format(q), (site,))
            applied = apply_changes(cur, s, site, "chunks", bundle.changes(), fresh=True)
            if state.generation and state.generation not in retired:
                retired.append(state.generation)
        cur.execute(
            sql.SQL(
                "UPDATE {}.sites SET generation = %s, applied_seq = %s, applied_change = %s, "
                "retired = %s, synced_at = now() WHERE site = %s"
            ).format(q),
            (info.generation, info.last, info.last_change, retired, site),
        )
    return ApplyResult("applied", applied, info)
