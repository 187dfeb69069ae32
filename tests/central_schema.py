"""Test helper: the central schema of the fleet contract (fleet-common.md), made by
``lokal.central.schema.migrate`` (fleet-sync's) where it exists, else by the contract's DDL
here; and filled from real local indexes."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from lokal.identity import ModelIdentity
from lokal.index import Index


def create_collection(
    dsn: str,
    identity: ModelIdentity,
    *,
    schema: str = "lokal",
    text_search_config: str = "english",
    hnsw: bool = True,
) -> None:
    """The contract's tables and indexes in ``schema`` (dropped first if it exists)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    if importlib.util.find_spec("lokal.central.schema") and not os.environ.get("LOKAL_TEST_DDL"):
        from lokal.central import schema as central_schema

        with psycopg.connect(dsn) as conn:
            central_schema.migrate(conn, schema, identity)
        return
    d = identity.dimension
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.meta (key text PRIMARY KEY, value jsonb NOT NULL)")
        conn.execute(
            f"CREATE TABLE {schema}.migrations (number int PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            f"CREATE TABLE {schema}.sites (site text PRIMARY KEY, generation text, "
            "applied_seq bigint NOT NULL DEFAULT 0, identity jsonb, db_role text, "
            "synced_at timestamptz)"
        )
        conn.execute(
            f"CREATE TABLE {schema}.chunks (site text NOT NULL, chunk_id text NOT NULL, "
            "path text, ordinal int NOT NULL DEFAULT 0, text text NOT NULL, char_start int, "
            "char_end int, line_start int, line_end int, tokens int, "
            "metadata jsonb NOT NULL DEFAULT '{}', "
            f"embedding vector({d}) NOT NULL, "
            "tsv tsvector GENERATED ALWAYS AS "
            f"(to_tsvector('{text_search_config}', text)) STORED, "
            "PRIMARY KEY (site, chunk_id))"
        )
        if hnsw:
            conn.execute(
                f"CREATE INDEX chunks_embedding_hnsw ON {schema}.chunks "
                "USING hnsw (embedding vector_cosine_ops)"
            )
        conn.execute(f"CREATE INDEX chunks_tsv ON {schema}.chunks USING gin (tsv)")
        conn.execute(
            f"CREATE INDEX chunks_metadata ON {schema}.chunks USING gin (metadata jsonb_path_ops)"
        )
        conn.execute(f"CREATE INDEX chunks_site_path ON {schema}.chunks (site, path)")
        meta = {
            "identity": identity.to_dict(),
            "dimension": d,
            "text_search_config": text_search_config,
        }
        conn.cursor().executemany(
            f"INSERT INTO {schema}.meta VALUES (%s, %s::jsonb)",
            [(k, json.dumps(v)) for k, v in meta.items()],
        )
        conn.execute(f"INSERT INTO {schema}.migrations (number, name) VALUES (1, 'initial')")


def copy_index(dsn: str, index: Index, site: str, *, schema: str = "lokal") -> int:
    """Every chunk of a local index into ``schema`` as ``site``'s rows; the number copied."""
    records = index.get()
    conn_local = index._reader()
    vectors = {
        r[0]: np.frombuffer(r[1], dtype=np.float32)
        for r in conn_local.execute(
            "SELECT c.chunk_id, v.embedding FROM chunks c JOIN chunks_vec v ON v.rowid = c.id"
        )
    }
    rows: list[tuple[Any, ...]] = [
        (
            site,
            r.id,
            r.document,
            r.ordinal,
            r.text,
            r.char_start,
            r.char_end,
            r.line_start,
            r.line_end,
            r.tokens,
            json.dumps(r.metadata),
            vectors[r.id],
        )
        for r in records
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO {schema}.sites (site, identity) VALUES (%s, %s::jsonb) "
                "ON CONFLICT DO NOTHING",
                [site, json.dumps(index.identity.to_dict())],
            )
            cur.executemany(
                f"INSERT INTO {schema}.chunks (site, chunk_id, path, ordinal, text, char_start, "
                "char_end, line_start, line_end, tokens, metadata, embedding) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
                rows,
            )
    return len(rows)
