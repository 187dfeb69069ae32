"""The central schema: one PostgreSQL schema per collection (one model key), numbered
migrations, the sites and their rights.

Tables (in schema ``s``, default ``lokal``):

- ``s.meta``: ``identity`` (the :class:`~lokal.identity.ModelIdentity` the collection was
  created with), ``dimension``, ``text_search_config``;
- ``s.migrations``: which migrations ran, when;
- ``s.sites``: one row per site: the generation and last sequence number the centre applied
  (``applied_seq``, ``applied_change``: what lets a sync tell "continue" from "start over"),
  a rebuild being staged (``pending_*``), generations it replaced (``retired``), the box's
  identity, the database role that may write its rows, when it last synced;
- ``s.chunks``: every site's chunks, keyed (site, chunk_id): text, position, metadata (jsonb),
  vector (pgvector), a generated tsvector; HNSW (cosine), GIN (tsv, metadata), btree (site, path);
- ``s.staging``: a site's new generation while it is sent, swapped into ``chunks`` in one
  transaction once complete.

Rights: row-level security on ``sites``, ``chunks`` and ``staging``: a site's role
(:func:`add_site`) reads and writes only the rows of the sites whose ``db_role`` it is; the
group role ``<s>_reader`` reads everything. The owner (who ran the migrations) is not bound.

The collection's tables need the vectors' dimension: migrations 2+ wait until an identity is
recorded (``lokal central init --index FILE``, or the owner's first sync).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lokal.central.connect import one_line, psycopg_module
from lokal.errors import CentralError, ModelMismatch, ModelVariantWarning
from lokal.identity import ModelIdentity
from lokal.index import fulltext

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = "lokal"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
#: the columns a sync writes (``tsv`` is generated)
COLUMNS = (
    "site",
    "chunk_id",
    "path",
    "ordinal",
    "text",
    "char_start",
    "char_end",
    "line_start",
    "line_end",
    "tokens",
    "metadata",
    "embedding",
)
#: their types, for binary COPY
COLUMN_TYPES: tuple[str, ...] = ("text", "text", "text", "int4", "text", "int4", "int4")
COLUMN_TYPES += ("int4", "int4", "int4", "jsonb", "vector")
SITE_COLUMNS_A_BOX_UPDATES = (
    "generation",
    "applied_seq",
    "applied_change",
    "pending_generation",
    "pending_seq",
    "pending_change",
    "retired",
    "identity",
    "synced_at",
)


def sql_module() -> Any:
    from psycopg import sql

    return sql


def check_schema_name(name: str) -> str:
    if not _SCHEMA_NAME.match(name):
        msg = f"schema name must match {_SCHEMA_NAME.pattern}, got {name!r}"
        raise CentralError(msg)
    return name


def check_site_name(name: str) -> str:
    if not _SITE_NAME.match(name):
        msg = f"site name must match {_SITE_NAME.pattern} (lower case), got {name!r}"
        raise CentralError(msg)
    return name


def reader_role(s: str) -> str:
    return f"{s}_reader"


def site_role(s: str, site: str) -> str:
    return f"{s}_site_{site}"


def text_search_config(identity: ModelIdentity) -> str:
    """``english`` (stemming, stop words) for English-only models, ``simple`` otherwise: the
    same language decision as an index file's tokenizer (:mod:`lokal.index.fulltext`)."""
    return fulltext.text_search_config(identity.name)


# ---- migrations ------------------------------------------------------------------------------

Ctx = dict[str, Any]


def _m001_bookkeeping(cur: Any, s: str, ctx: Ctx) -> None:
    sql = sql_module()
    q = sql.Identifier(s)
    reader = sql.Identifier(reader_role(s))
    cur.execute(
        sql.SQL("CREATE TABLE {}.meta (key text PRIMARY KEY, value jsonb NOT NULL)").format(q)
    )
    cur.execute(
        sql.SQL(
            "CREATE TABLE {}.sites (site text PRIMARY KEY, generation text, "
            "applied_seq bigint NOT NULL DEFAULT 0, applied_change text, "
            "pending_generation text, pending_seq bigint NOT NULL DEFAULT 0, "
            "pending_change text, retired text[] NOT NULL DEFAULT '{{}}', identity jsonb, "
            "db_role text, synced_at timestamptz)"
        ).format(q)
    )
    create_role(cur, reader_role(s), "NOLOGIN")
    cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(q, reader))
    cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(q, reader))
    cur.execute(
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
            q, reader
        )
    )
    cur.execute(sql.SQL("ALTER TABLE {}.sites ENABLE ROW LEVEL SECURITY").format(q))
    cur.execute(
        sql.SQL("CREATE POLICY own_site ON {}.sites USING (db_role = current_user)").format(q)
    )
    cur.execute(
        sql.SQL("CREATE POLICY readers ON {}.sites FOR SELECT TO {} USING (true)").format(q, reader)
    )


def _m002_collection(cur: Any, s: str, ctx: Ctx) -> None:
    sql = sql_module()
    q = sql.Identifier(s)
    reader = sql.Identifier(reader_role(s))
    dim = int(ctx["dimension"])
    config = str(ctx["text_search_config"])
    columns = (
        "site text NOT NULL, chunk_id text NOT NULL, path text, ordinal int NOT NULL DEFAULT 0, "
        "text text NOT NULL, char_start int, char_end int, line_start int, line_end int, "
        "tokens int, metadata jsonb NOT NULL DEFAULT '{{}}', "
        f"embedding vector({dim}) NOT NULL"
    )
    cur.execute(
        sql.SQL(
            "CREATE TABLE {}.chunks (" + columns + ", tsv tsvector GENERATED ALWAYS AS "
            "(to_tsvector({}::regconfig, text)) STORED, PRIMARY KEY (site, chunk_id))"
        ).format(q, sql.Literal(config))
    )
    cur.execute(
        sql.SQL("CREATE TABLE {}.staging (" + columns + ", PRIMARY KEY (site, chunk_id))").format(q)
    )
    cur.execute(
        sql.SQL(
            "CREATE INDEX chunks_embedding_hnsw ON {}.chunks "
            "USING hnsw (embedding vector_cosine_ops)"
        ).format(q)
    )
    cur.execute(sql.SQL("CREATE INDEX chunks_tsv ON {}.chunks USING gin (tsv)").format(q))
    cur.execute(
        sql.SQL(
            "CREATE INDEX chunks_metadata ON {}.chunks USING gin (metadata jsonb_path_ops)"
        ).format(q)
    )
    cur.execute(sql.SQL("CREATE INDEX chunks_site_path ON {}.chunks (site, path)").format(q))
    own = sql.SQL("site IN (SELECT t.site FROM {}.sites t WHERE t.db_role = current_user)").format(
        q
    )
    for table in ("chunks", "staging"):
        t = sql.Identifier(table)
        cur.execute(sql.SQL("ALTER TABLE {}.{} ENABLE ROW LEVEL SECURITY").format(q, t))
        cur.execute(
            sql.SQL("CREATE POLICY own_site ON {}.{} USING ({}) WITH CHECK ({})").format(
                q, t, own, own
            )
        )
    cur.execute(
        sql.SQL("CREATE POLICY readers ON {}.chunks FOR SELECT TO {} USING (true)").format(
            q, reader
        )
    )
    cur.execute(sql.SQL("GRANT SELECT ON {}.chunks TO {}").format(q, reader))
    # sites added before the collection had a model get their rights on its tables now
    cur.execute(
        sql.SQL("SELECT DISTINCT db_role FROM {}.sites WHERE db_role IS NOT NULL").format(q)
    )
    for (role,) in cur.fetchall():
        grant_collection(cur, s, role)


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    step: Callable[[Any, str, Ctx], None]
    needs_identity: bool = False


MIGRATIONS = [
    Migration(1, "bookkeeping: meta, sites, reader role, row-level security", _m001_bookkeeping),
    Migration(
        2,
        "collection: chunks (vector, tsvector, HNSW, GIN), staging, row-level security",
        _m002_collection,
        needs_identity=True,
    ),
]


def table_exists(cur: Any, s: str, table: str) -> bool:
    # pg_tables, not to_regclass: a catalog query sees what other sessions committed since
    # this transaction began (another migrator, just before the advisory lock was ours)
    cur.execute(
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s", (s, table)
    )
    return cur.fetchone() is not None


def _applied(cur: Any, s: str) -> set[int] | None:
    """The migrations applied to schema ``s`` (None: no such schema)."""
    sql = sql_module()
    if not table_exists(cur, s, "migrations"):
        return None
    cur.execute(sql.SQL("SELECT number FROM {}.migrations").format(sql.Identifier(s)))
    return {r[0] for r in cur.fetchall()}


def recorded_identity(conn: Any, s: str) -> ModelIdentity | None:
    sql = sql_module()
    with conn.cursor() as cur:
        if not table_exists(cur, s, "meta"):
            return None
        cur.execute(
            sql.SQL("SELECT value FROM {}.meta WHERE key = 'identity'").format(sql.Identifier(s))
        )
        row = cur.fetchone()
    return None if row is None else ModelIdentity.from_dict(row[0])


def migrate(conn: Any, s: str = DEFAULT_SCHEMA, identity: ModelIdentity | None = None) -> list[int]:
    """Bring schema ``s`` up to date (creating it); record ``identity`` as the collection's
    model if it has none yet, and check it against the recorded one if it has (a different
    model key raises :class:`ModelMismatch`; another variant warns). One transaction,
    serialized with other migrators by an advisory lock. Returns the migrations run."""
    check_schema_name(s)
    psycopg = _psycopg()
    sql = sql_module()
    q = sql.Identifier(s)
    with conn.transaction(), conn.cursor() as cur:
        done = _applied(cur, s)
        recorded = recorded_identity(conn, s)
        want_identity = recorded is None and identity is not None
        pending = [
            m
            for m in MIGRATIONS
            if (done is None or m.number not in done)
            and (not m.needs_identity or recorded is not None or identity is not None)
        ]
        if not pending and not want_identity:
            if identity is not None and recorded is not None:
                check_identity(recorded, identity, s)
            return []
        try:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"lokal.central:{s}",))
            # re-read under the lock: another migrator may have finished meanwhile
            done = _applied(cur, s)
            recorded = recorded_identity(conn, s)
            _ensure_vector_extension(cur)
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(q))
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.migrations (number int PRIMARY KEY, "
                    "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(q)
            )
            done = done or set()
            ran: list[int] = []
            if 1 not in done:
                _m001_bookkeeping(cur, s, {})
                _record(cur, s, MIGRATIONS[0])
                done.add(1)
                ran.append(1)
            if recorded is None and identity is not None:
                _record_identity(cur, s, identity)
                recorded = identity
            elif recorded is not None and identity is not None:
                check_identity(recorded, identity, s)
            if recorded is None:
                return ran
            ctx = {
                "dimension": recorded.dimension,
                "text_search_config": text_search_config(recorded),
            }
            for m in MIGRATIONS:
                if m.number not in done:
                    m.step(cur, s, ctx)
                    _record(cur, s, m)
                    ran.append(m.number)
        except psycopg.errors.InsufficientPrivilege as exc:
            msg = (
                f"the central schema {s!r} needs migrating and this role may not: run "
                f"`lokal central init URL --schema {s}` as its owner ({exc.diag.message_primary})"
            )
            raise CentralError(msg) from exc
    if ran:
        log.info("central schema %s: migrations %s applied", s, ran)
    return ran


def _record(cur: Any, s: str, m: Migration) -> None:
    sql = sql_module()
    cur.execute(
        sql.SQL("INSERT INTO {}.migrations (number, name) VALUES (%s, %s)").format(
            sql.Identifier(s)
        ),
        (m.number, m.name),
    )


def _record_identity(cur: Any, s: str, identity: ModelIdentity) -> None:
    sql = sql_module()
    rows = {
        "identity": identity.to_dict(),
        "dimension": identity.dimension,
        "text_search_config": text_search_config(identity),
    }
    for key, value in rows.items():
        cur.execute(
            sql.SQL("INSERT INTO {}.meta (key, value) VALUES (%s, %s)").format(sql.Identifier(s)),
            (key, json.dumps(value)),
        )


def _ensure_vector_extension(cur: Any) -> None:
    psycopg = _psycopg()
    cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
    if cur.fetchone() is not None:
        return
    try:
        with cur.connection.transaction():
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        msg = (
            "pgvector is not enabled in this database and this role cannot enable it: run "
            f"CREATE EXTENSION vector; as a superuser ({one_line(exc)})"
        )
        raise CentralError(msg) from exc


def check_identity(recorded: ModelIdentity, identity: ModelIdentity, s: str) -> None:
    same = recorded.compare(identity)
    if same == "different":
        msg = (
            f"the central collection {s!r} holds vectors from {recorded.describe()}; this index "
            f"holds vectors from {identity.describe()}: they cannot be searched together. Sync "
            "it to another collection (--schema NAME), or rebuild the index with the "
            "collection's model."
        )
        raise ModelMismatch(msg)
    if same == "variant":
        warnings.warn(
            f"the central collection {s!r} was created with {recorded.describe()}; this index "
            f"was written with {identity.describe()}: same model, slightly different vectors",
            ModelVariantWarning,
            stacklevel=3,
        )


def _psycopg() -> Any:
    return psycopg_module()


# ---- sites and rights ------------------------------------------------------------------------


def create_role(cur: Any, role: str, options: str) -> None:
    """``CREATE ROLE role options`` unless it exists (roles are shared by every database of
    the server, so two collections, or two concurrent migrators, may both want it)."""
    sql = sql_module()
    statement = sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(role)).as_string(cur)
    cur.execute(
        "DO $body$ BEGIN EXECUTE "
        + sql.Literal(statement).as_string(cur)
        + "; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $body$"
    )


def add_site(
    conn: Any, s: str, site: str, *, role: str | None = None, password: str | None = None
) -> tuple[str, str]:
    """Register ``site`` and create (or update) the login role that may write its rows, and
    only its rows. Returns ``(role, password)``: what the box needs, with the URL."""
    check_schema_name(s)
    check_site_name(site)
    role = role or site_role(s, site)
    password = password or secrets.token_urlsafe(24)
    sql = sql_module()
    q, r = sql.Identifier(s), sql.Identifier(role)
    migrate(conn, s)
    with conn.transaction(), conn.cursor() as cur:
        create_role(cur, role, "LOGIN")
        cur.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(r, sql.Literal(password)))
        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(q, r))
        cur.execute(sql.SQL("GRANT SELECT ON {}.meta, {}.migrations TO {}").format(q, q, r))
        cur.execute(
            sql.SQL("GRANT SELECT, UPDATE ({}) ON {}.sites TO {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in SITE_COLUMNS_A_BOX_UPDATES), q, r
            )
        )
        if table_exists(cur, s, "chunks"):
            grant_collection(cur, s, role)
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.sites (site, db_role) VALUES (%s, %s) "
                "ON CONFLICT (site) DO UPDATE SET db_role = excluded.db_role"
            ).format(q),
            (site, role),
        )
    return role, password


def grant_collection(cur: Any, s: str, role: str) -> None:
    sql = sql_module()
    q, r = sql.Identifier(s), sql.Identifier(role)
    cur.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {}.chunks, {}.staging TO {}").format(
            q, q, r
        )
    )


def site_roles(conn: Any, s: str) -> list[str]:
    sql = sql_module()
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT DISTINCT db_role FROM {}.sites WHERE db_role IS NOT NULL").format(
                sql.Identifier(s)
            )
        )
        return [r[0] for r in cur.fetchall()]


@dataclass(frozen=True)
class RemovedSite:
    """What :func:`remove_site` did: chunks deleted, and the site's role and its fate."""

    chunks: int
    role: str | None
    role_dropped: bool
    note: str = ""


def remove_site(conn: Any, s: str, site: str) -> RemovedSite:
    """Retire ``site``: delete its rows and its registration, and its role with them when no
    other site of the collection names it: this collection's rights are revoked, then the
    role is dropped if lokal named it (``<s>_site_<site>``) and nothing else needs it (rights
    in another collection or database, objects it owns). Otherwise the role stays, and
    :attr:`RemovedSite.note` says why; it can no longer write anything here either way
    (row security finds no site of its own)."""
    check_schema_name(s)
    sql = sql_module()
    q = sql.Identifier(s)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT db_role FROM {}.sites WHERE site = %s").format(q), (site,))
        row = cur.fetchone()
        if row is None:
            msg = f"no site {site!r} in the central collection {s!r}"
            raise CentralError(msg)
        role = row[0]
        n = 0
        if table_exists(cur, s, "chunks"):
            cur.execute(sql.SQL("DELETE FROM {}.chunks WHERE site = %s").format(q), (site,))
            n = cur.rowcount
            cur.execute(sql.SQL("DELETE FROM {}.staging WHERE site = %s").format(q), (site,))
        cur.execute(sql.SQL("DELETE FROM {}.sites WHERE site = %s").format(q), (site,))
        if role is None:
            return RemovedSite(n, None, False)
        dropped, note = _retire_role(cur, s, role, site)
    return RemovedSite(n, role, dropped, note)


def _retire_role(cur: Any, s: str, role: str, site: str) -> tuple[bool, str]:
    """Revoke this collection's rights from ``role`` and drop it if it is lokal's own and
    nothing else needs it. Returns (dropped, why not)."""
    psycopg = _psycopg()
    sql = sql_module()
    q, r = sql.Identifier(s), sql.Identifier(role)
    cur.execute(sql.SQL("SELECT count(*) FROM {}.sites WHERE db_role = %s").format(q), (role,))
    if cur.fetchone()[0]:
        return False, "other sites of this collection use it"
    cur.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(q, r))
    cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(q, r))
    if role != site_role(s, site):
        return False, f"it was given with --role: its rights here are revoked; DROP ROLE {role}"
    try:
        with cur.connection.transaction():  # a savepoint: the site is removed either way
            cur.execute(sql.SQL("DROP ROLE {}").format(r))
    except psycopg.errors.DependentObjectsStillExist as exc:
        detail = one_line(exc.diag.message_detail or exc)
        return False, f"it still has rights or objects elsewhere ({detail})"
    except psycopg.errors.InsufficientPrivilege as exc:
        return False, f"this role may not drop it: {exc.diag.message_primary}"
    log.info("role %s dropped with site %s", role, site)
    return True, ""
