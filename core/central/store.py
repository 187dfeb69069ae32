"""Search the central store (one PostgreSQL schema = one collection) like an index file.

>>> from lokal.central.store import CentralIndex
>>> with CentralIndex.open("postgresql://reader@central/fleet", site="plant-7") as central:
...     hits = central.search(vector, k=5, filter={"kind": "manual"})
...     hits[0].site, hits[0].document          # the box it came from, the path on that box

Results are the index's own types: :class:`CentralRecord` and :class:`CentralHit`
(:mod:`lokal.central.records`) are a :class:`~lokal.index.Record` and a
:class:`~lokal.index.Hit` with one more field, ``site``;
``document`` is the chunk's ``path`` on its box. Scores mean what they mean locally:
``(1 + cosine) / 2`` for vector search, the fused score for hybrid search (as in an index).

**k results whenever k rows match.** pgvector's HNSW index filters *after* its graph search
(``hnsw.ef_search`` candidates), so a selective filter can leave fewer than k. lokal raises
``hnsw.ef_search`` for filtered searches, uses pgvector's iterative scans where the server has
them (pgvector >= 0.8, ``hnsw.iterative_scan``), and when the result is still short while more
rows match, repeats the search as an exact scan with the HNSW index disabled.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from lokal.central import filters
from lokal.central.connect import connect, psycopg_module, read_password, redact
from lokal.central.records import (
    COLUMNS,
    CentralHit,
    CentralRecord,
    Key,
    check_site,
    fields,
    pg_json,
    pg_text,
    relevance,
    vector_array,
)
from lokal.errors import CentralError, CentralUnreachable, ModelMismatch, ModelVariantWarning
from lokal.identity import ModelIdentity
from lokal.index import fulltext, search
from lokal.index.store import Chunk

__all__ = [
    "DEFAULT_SCHEMA",
    "EF_SEARCH",
    "EF_SEARCH_FILTERED",
    "SCHEMA_PATTERN",
    "CentralHit",
    "CentralIndex",
    "CentralRecord",
]

log = logging.getLogger(__name__)

SCHEMA_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
DEFAULT_SCHEMA = "lokal"
#: HNSW candidates per search (``hnsw.ef_search``; pgvector's default is 40). Measured on 1M
#: distinct real passages from 10 sites (docs/benchmarks.md, "1M real texts"): recall@10 0.999
#: at 1000 (p50 52 ms), 0.978 at 200 (13 ms), 0.936 at 40: lokal asks for the most pgvector
#: allows. Lower ``CentralIndex.ef_search`` to trade recall for speed.
EF_SEARCH = 1000
#: ... and with a filter, which pgvector applies to the candidates: the most it allows (filtered
#: by site at 1M: 0.997 at 1000, 26 ms; 0.954 at 200; at 100 the exact fallback runs on half).
EF_SEARCH_FILTERED = 1000


class CentralIndex:
    """The central store, opened for search (and for the writes of an application's own site).

    Open with :meth:`open`. ``site`` (one name or several) limits every read to those sites.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        site: str | Sequence[str] | None = None,
        password_file: str | None = None,
        password_env: str | None = None,
    ) -> None:
        if not SCHEMA_PATTERN.match(schema):
            msg = f"invalid schema name {schema!r}: lowercase letters, digits and '_'"
            raise ValueError(msg)
        self.dsn = dsn
        self.schema = schema
        self.sites: tuple[str, ...] | None = (
            None if site is None else ((site,) if isinstance(site, str) else tuple(site))
        )
        self.ef_search = EF_SEARCH
        self.ef_search_filtered = EF_SEARCH_FILTERED
        self._password = read_password(password_file, password_env)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._closed = False
        try:
            meta = self._read_meta()
            self.identity = ModelIdentity.from_dict(meta["identity"])
            self.dimension = int(meta.get("dimension", self.identity.dimension))
            config = str(meta.get("text_search_config", "simple"))
            if not SCHEMA_PATTERN.match(config):
                msg = f"{self._where()}: invalid text_search_config {config!r} in its meta table"
                raise CentralError(msg)
            self.text_search_config = config
            self.pgvector_version = self._pgvector_version()
        except BaseException:
            self.close()
            raise

    # ---- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        dsn: str,
        identity: ModelIdentity | None = None,
        *,
        schema: str = DEFAULT_SCHEMA,
        site: str | Sequence[str] | None = None,
        password_file: str | None = None,
        password_env: str | None = None,
        writing: bool = False,
    ) -> CentralIndex:
        """Open the collection in ``schema`` at ``dsn``, checking ``identity`` against the model
        it records: another model key is :class:`~lokal.errors.ModelMismatch` naming both;
        another variant warns (:class:`~lokal.errors.ModelVariantWarning`), or is refused when
        ``writing``. The password, if libpq's own (``PGPASSWORD``, ``~/.pgpass``) will not do,
        comes from ``password_file`` or the environment variable ``password_env``, never the
        URL."""
        index = cls(
            dsn,
            schema=schema,
            site=site,
            password_file=password_file,
            password_env=password_env,
        )
        try:
            if identity is not None:
                index.check_identity(identity, writing=writing)
        except BaseException:
            index.close()
            raise
        return index

    def _where(self) -> str:
        return f"the central store {redact(self.dsn)} (schema {self.schema})"

    def check_identity(self, identity: ModelIdentity, *, writing: bool = False) -> None:
        same = self.identity.compare(identity)
        if same == "different":
            msg = (
                f"{self._where()} holds vectors from {self.identity.describe()}; they cannot be "
                f"compared with {identity.describe()}. Query it with the recorded model (pass "
                "no model to load it)."
            )
            raise ModelMismatch(msg)
        if same == "variant":
            if writing:
                msg = (
                    f"{self._where()} was written with {self.identity.describe()}; a writer "
                    f"must use exactly that variant, not {identity.describe()}"
                )
                raise ModelMismatch(msg)
            warnings.warn(
                f"{self._where()} was written with {self.identity.describe()} and is read with "
                f"{identity.describe()}: same model, slightly different vectors",
                ModelVariantWarning,
                stacklevel=3,
            )

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """The connection, for one operation, under the lock. A lost connection is
        :class:`~lokal.errors.CentralUnreachable` (the next operation reconnects)."""
        psycopg = psycopg_module()
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except psycopg.OperationalError as exc:
                if not conn.broken and not conn.closed:
                    raise
                msg = f"{self._where()}: the connection was lost ({str(exc).strip()})"
                raise CentralUnreachable(msg) from exc

    def _connection(self) -> Any:
        """The open connection (call with ``self._lock`` held), reopened if it broke."""
        if self._closed:
            msg = "the central store is closed"
            raise CentralError(msg)
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                log.warning("%s: connection lost; reconnecting", self._where())
                self._conn.close()
            self._conn = connect(self.dsn, password=self._password, autocommit=True)
        return self._conn

    def _read_meta(self) -> dict[str, Any]:
        psycopg = psycopg_module()
        try:
            with self._session() as conn:
                rows = conn.execute(self._sql("SELECT key, value FROM {s}.meta")).fetchall()
        except psycopg.errors.UndefinedTable as exc:
            msg = (
                f"{self._where()} does not exist: create it with `lokal sync --to ...` (or "
                "`lokal central init`), or name another with schema="
            )
            raise CentralError(msg) from exc
        meta = dict(rows)
        if "identity" not in meta:
            msg = f"{self._where()} records no model identity in its meta table"
            raise CentralError(msg)
        return meta

    def _pgvector_version(self) -> tuple[int, ...]:
        with self._session() as conn:
            row = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()
        return tuple(int(p) for p in re.findall(r"\d+", row[0])[:3]) if row else (0,)

    def _sql(self, text: str) -> Any:
        """``text`` with ``{s}`` replaced by the quoted schema name (psycopg.sql). Nothing
        else in ``text`` is a placeholder: filters' ``'{}'`` paths stay as they are."""
        from psycopg import sql

        parts: list[Any] = []
        for i, part in enumerate(text.split("{s}")):
            if i:
                parts.append(sql.Identifier(self.schema))
            parts.append(sql.SQL(part))
        return sql.Composed(parts)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> CentralIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        """Where this store is, for messages and status (the URL without its password)."""
        return redact(self.dsn)

    def __repr__(self) -> str:
        sites = "" if self.sites is None else f", site={list(self.sites)}"
        return f"CentralIndex({redact(self.dsn)!r}, schema={self.schema!r}{sites})"

    # ---- filters ---------------------------------------------------------------------------

    def _filter(self, flt: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        """WHERE clause and its parameters: ``flt`` and the sites this store reads."""
        where, params = filters.compile_filter(flt)
        if self.sites is not None:
            where = f"c.site = ANY(%s) AND {where}"
            params = [list(self.sites), *params]
        return where, params

    def _query(self, vector: Any) -> np.ndarray:
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape != (self.dimension,) or not np.all(np.isfinite(q)):
            msg = f"query vector must be {self.dimension} finite numbers, got shape {q.shape}"
            raise ValueError(msg)
        return search.normalize(q)

    # ---- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        where, params = self._filter(None)
        sql = self._sql(f"SELECT count(*) FROM {{s}}.chunks c WHERE {where}")
        with self._session() as conn:
            return int(conn.execute(sql, params).fetchone()[0])

    def get_by_ids(self, ids: Sequence[str]) -> list[CentralRecord]:
        """The chunks with these ids, in the order given (every site's chunk of that id, in
        site order); missing ids are skipped."""
        if not ids:
            return []
        where, params = self._filter(None)
        sql = self._sql(
            f"SELECT {COLUMNS} FROM {{s}}.chunks c WHERE c.chunk_id = ANY(%s) AND {where} "
            "ORDER BY c.site"
        )
        with self._session() as conn:
            rows = conn.execute(sql, [list(ids), *params]).fetchall()
        by_id: dict[str, list[CentralRecord]] = {}
        for r in rows:
            by_id.setdefault(r[1], []).append(CentralRecord(**fields(r)))
        return [rec for i in dict.fromkeys(ids) for rec in by_id.get(i, [])]

    def get(
        self, *, filter: Mapping[str, Any] | None = None, limit: int | None = None
    ) -> list[CentralRecord]:
        """Chunks matching ``filter`` (every chunk without one), by site and id."""
        where, params = self._filter(filter)
        sql = self._sql(
            f"SELECT {COLUMNS} FROM {{s}}.chunks c WHERE {where} ORDER BY c.site, c.chunk_id "
            "LIMIT %s"
        )
        with self._session() as conn:
            rows = conn.execute(sql, [*params, limit]).fetchall()
        return [CentralRecord(**fields(r)) for r in rows]

    def _nearest(
        self,
        conn: Any,
        q: np.ndarray,
        n: int,
        flt: Mapping[str, Any] | None,
        *,
        vectors: bool = False,
    ) -> list[tuple[Any, ...]]:
        """Rows (record columns, cosine distance[, embedding]) of the ``n`` nearest chunks
        matching ``flt``, nearest first. Runs inside the caller's transaction."""
        if n <= 0:
            return []
        where, params = self._filter(flt)
        extra = ", c.embedding" if vectors else ""
        sql = self._sql(
            f"SELECT {COLUMNS}, c.embedding <=> %s AS distance{extra} FROM {{s}}.chunks c "
            f"WHERE {where} ORDER BY c.embedding <=> %s LIMIT %s"
        )
        args = [q, *params, q, n]
        filtered = bool(flt) or self.sites is not None
        ef = max(self.ef_search_filtered if filtered else self.ef_search, n)
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(min(ef, 1000))])
        if self.pgvector_version >= (0, 8) and filtered:
            conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
        rows: list[tuple[Any, ...]] = conn.execute(sql, args).fetchall()
        if len(rows) < n and filtered:
            count_sql = self._sql(
                f"SELECT count(*) FROM (SELECT 1 FROM {{s}}.chunks c WHERE {where} LIMIT %s) m"
            )
            matching = int(conn.execute(count_sql, [*params, n]).fetchone()[0])
            if matching > len(rows):
                log.debug("HNSW found %d of %d matching rows; exact scan", len(rows), matching)
                # ordered outside a materialized CTE: no plan can use the HNSW index for it
                exact = self._sql(
                    f"WITH m AS MATERIALIZED (SELECT {COLUMNS}, c.embedding <=> %s AS distance"
                    f"{extra} FROM {{s}}.chunks c WHERE {where}) "
                    "SELECT * FROM m ORDER BY distance LIMIT %s"
                )
                rows = conn.execute(exact, [q, *params, n]).fetchall()
        return rows

    def _hit(self, row: Sequence[Any], score: float, distance: float | None) -> CentralHit:
        return CentralHit(**fields(row), score=float(score), distance=distance)

    def search(
        self, vector: Any, k: int = 4, *, filter: Mapping[str, Any] | None = None
    ) -> list[CentralHit]:
        """The ``k`` chunks nearest to ``vector`` among those matching ``filter`` (``k`` of
        them whenever ``k`` match; the order is HNSW's, approximate)."""
        q = self._query(vector)
        with self._session() as conn:
            with conn.transaction():
                rows = self._nearest(conn, q, k, filter)
        return [self._hit(r, relevance(r[11]), float(r[11])) for r in rows]

    def _text_ranks(
        self, conn: Any, text: str, k: int, flt: Mapping[str, Any] | None
    ) -> list[tuple[Any, ...]]:
        """Rows (record columns, ts_rank_cd) of the best full-text matches for any word of
        ``text``, best first: every word searched, as in an index file
        (:mod:`lokal.index.fulltext`), with the collection's text search configuration."""
        words = fulltext.query_words(text)
        if not words or k <= 0:
            return []
        where, params = self._filter(flt)
        config = self.text_search_config
        query = " || ".join(["plainto_tsquery(%s::regconfig, %s)"] * len(words))
        query_params = [p for w in words for p in (config, w)]
        sql = self._sql(
            f"SELECT {COLUMNS}, ts_rank_cd(c.tsv, q) AS rank FROM {{s}}.chunks c, "
            f"({' SELECT ' + query}) AS t(q) WHERE c.tsv @@ q AND {where} "
            "ORDER BY rank DESC, c.site, c.chunk_id LIMIT %s"
        )
        rows: list[tuple[Any, ...]] = conn.execute(sql, [*query_params, *params, k]).fetchall()
        return rows

    def text_search(
        self, text: str, k: int = 4, *, filter: Mapping[str, Any] | None = None
    ) -> list[CentralHit]:
        """Full-text matches for any word of ``text`` (PostgreSQL's ``ts_rank_cd``).
        ``score`` is each hit's rank relative to the best hit's (the best is 1.0);
        ``distance`` is None."""
        with self._session() as conn:
            with conn.transaction():
                rows = self._text_ranks(conn, text, k, filter)
        best = float(rows[0][11]) if rows else 1.0
        return [self._hit(r, float(r[11]) / best if best else 1.0, None) for r in rows]

    def hybrid_search(
        self,
        vector: Any,
        text: str,
        k: int = 4,
        *,
        filter: Mapping[str, Any] | None = None,
        fetch_k: int | None = None,
    ) -> list[CentralHit]:
        """The vector and full-text rankings, ``fetch_k`` candidates each (default
        :data:`lokal.index.search.HYBRID_DEPTH`), fused as
        :meth:`lokal.index.Index.hybrid_search` fuses them (:func:`lokal.index.search.fuse`:
        min-max normalized scores, weighted). ``score`` is the fused score: 1.0 for first in
        both rankings."""
        q = self._query(vector)
        fetch = search.hybrid_depth(k, fetch_k)
        with self._session() as conn:
            with conn.transaction():
                nearest = self._nearest(conn, q, fetch, filter)
                lexical = self._text_ranks(conn, text, fetch, filter)
        rows: dict[Key, Sequence[Any]] = {}
        for r in (*nearest, *lexical):
            rows.setdefault((r[0], r[1]), r)
        top = search.fuse(
            [
                [((r[0], r[1]), 1.0 - float(r[11])) for r in nearest],  # cosine
                [((r[0], r[1]), float(r[11])) for r in lexical],  # ts_rank_cd
            ],
            k,
        )
        distances = {(r[0], r[1]): float(r[11]) for r in nearest}
        missing = [key for key, _ in top if key not in distances]
        distances.update(self._distances(q, missing))
        return [self._hit(rows[key], s, distances.get(key)) for key, s in top]

    def _distances(self, q: np.ndarray, keys: Sequence[Key]) -> dict[Key, float]:
        if not keys:
            return {}
        sql = self._sql(
            "SELECT c.site, c.chunk_id, c.embedding <=> %s FROM {s}.chunks c "
            "WHERE (c.site, c.chunk_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        )
        with self._session() as conn:
            rows = conn.execute(sql, [q, [k[0] for k in keys], [k[1] for k in keys]]).fetchall()
        return {(r[0], r[1]): float(r[2]) for r in rows}

    def mmr_search(
        self,
        vector: Any,
        k: int = 4,
        *,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
    ) -> list[CentralHit]:
        """Maximal marginal relevance among the ``fetch_k`` nearest: relevant to the query,
        and different from each other."""
        q = self._query(vector)
        with self._session() as conn:
            with conn.transaction():
                rows = self._nearest(conn, q, max(fetch_k, k), filter, vectors=True)
        if not rows:
            return []
        candidates = search.normalize(np.stack([vector_array(r[12]) for r in rows]))
        chosen = search.mmr(q, candidates, k, lambda_mult)
        return [self._hit(rows[i], relevance(rows[i][11]), float(rows[i][11])) for i in chosen]

    # ---- writing (an application's own site) -----------------------------------------------

    def upsert(
        self,
        chunks: Sequence[Chunk],
        vectors: Any,
        *,
        site: str,
        path: str | None = None,
    ) -> list[str]:
        """Insert or replace ``chunks`` (by ``(site, id)``; None ids become UUIDs) in one
        transaction, under ``site`` and, if given, the document ``path``. Boxes send their
        rows with ``lokal sync``; this is for an application's own site (LangChain,
        LlamaIndex). Returns the ids in order."""
        check_site(site)
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or arr.shape != (len(chunks), self.dimension):
            msg = (
                f"expected {len(chunks)} vectors of dimension {self.dimension}, "
                f"got shape {arr.shape}"
            )
            raise ValueError(msg)
        if not np.all(np.isfinite(arr)):
            msg = "vectors contain NaN or infinity"
            raise ValueError(msg)
        ids = [c.id or str(uuid.uuid4()) for c in chunks]
        rows = [
            (
                site,
                chunk_id,
                path,
                c.ordinal,
                pg_text(c.text, "text"),
                c.char_start,
                c.char_end,
                c.line_start,
                c.line_end,
                c.tokens,
                pg_json(c.metadata),
                vector,
            )
            for chunk_id, c, vector in zip(ids, chunks, arr, strict=True)
        ]
        sql = self._sql(
            "INSERT INTO {s}.chunks (site, chunk_id, path, ordinal, text, char_start, char_end, "
            "line_start, line_end, tokens, metadata, embedding) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s) "
            "ON CONFLICT (site, chunk_id) DO UPDATE SET path = excluded.path, "
            "ordinal = excluded.ordinal, text = excluded.text, "
            "char_start = excluded.char_start, char_end = excluded.char_end, "
            "line_start = excluded.line_start, line_end = excluded.line_end, "
            "tokens = excluded.tokens, metadata = excluded.metadata, "
            "embedding = excluded.embedding"
        )
        with self._session() as conn:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    self._sql("INSERT INTO {s}.sites (site) VALUES (%s) ON CONFLICT DO NOTHING"),
                    [site],
                )
                cur.executemany(sql, rows)
        return ids

    def delete(self, ids: Sequence[str], *, site: str) -> int:
        """Delete ``site``'s chunks with these ids (missing ids are fine); the number deleted."""
        check_site(site)
        sql = self._sql("DELETE FROM {s}.chunks WHERE site = %s AND chunk_id = ANY(%s)")
        with self._session() as conn:
            cur = conn.execute(sql, [site, list(ids)])
            return int(cur.rowcount)

    def delete_where(self, filter: Mapping[str, Any], *, site: str) -> int:
        """Delete ``site``'s chunks whose metadata matches ``filter``; the number deleted."""
        check_site(site)
        if not filter:
            msg = "delete_where needs a filter (an empty one would delete every chunk)"
            raise ValueError(msg)
        where, params = filters.compile_filter(filter)
        sql = self._sql(f"DELETE FROM {{s}}.chunks c WHERE c.site = %s AND {where}")
        with self._session() as conn:
            cur = conn.execute(sql, [site, *params])
            return int(cur.rowcount)
