"""`lokal sync` into a real PostgreSQL 16 + pgvector 0.6.2 (pgserver, a private server on this
machine), against a plain COPY of the same rows into the same table.

Index: ``--chunks`` chunks (default 100,000) of real prose (Python's language reference,
paragraphs cycled), in documents of 100 chunks, with random unit vectors of the bundled
model's dimension under its real identity (the vectors' values do not change what a sync
costs; embedding 100k chunks here would take an hour).

Rows, in one run:

- first sync: the whole index into an empty collection (batches of ``--batch-size``, each one
  transaction: COPY into a temporary table, then INSERT ... ON CONFLICT into ``chunks``);
- plain COPY: the same rows, read from the index beforehand (not timed), COPYed in one
  statement and one transaction into the same table in a second, empty collection: the floor.
  Both twice: ``--chunks`` rows into the table without its HNSW index (the GIN and btree
  indexes and the generated tsvector stay): what the sync itself costs; and ``--hnsw-chunks``
  rows with the HNSW index, whose graph inserts dominate everything on a small machine;
- the HNSW index built over the ``--chunks`` rows (``CREATE INDEX``, maintenance_work_mem 1GB);
- incremental syncs after 0.1% and 1% of the chunks changed (documents re-chunked: their old
  chunks deleted, new ones upserted), with the HNSW index, and a sync with nothing to send.

Target (issue 14): first sync >= 0.7x the plain COPY's rows/s; incremental syncs in seconds,
proportional to the change.

    .venv/bin/python benchmarks/fleet_sync.py [--chunks 100000] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split())  # type: ignore[union-attr]
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni") if f in flags]
    return f"{model.group(1) if model else platform.machine()}; SIMD: {' '.join(simd)}"


def prose() -> list[str]:
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            text = " ".join(block.split())
            if 80 <= len(text) <= 1200:
                out.append(text)
    return out


def build_index(path: Path, n: int, identity: Any) -> Any:
    from lokal.index import Chunk, Index

    texts = prose()
    rng = np.random.default_rng(0)
    ix = Index.create(path, identity)
    per_doc = 100
    for d in range(0, n, per_doc):
        m = min(per_doc, n - d)
        v = rng.standard_normal((m, identity.dimension)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        chunks = [
            Chunk(texts[(d + i) % len(texts)], ordinal=i, metadata={"doc": d // per_doc, "i": i})
            for i in range(m)
        ]
        ix.replace_document(f"/srv/docs/{d // per_doc:05d}.txt", chunks, v)
    return ix


def change(ix: Any, share: float, seed: int) -> int:
    """Re-chunk documents holding about ``share`` of the chunks; returns the changes made."""
    from lokal.index import Chunk

    rng = np.random.default_rng(seed)
    before = ix.last_seq
    docs = sorted(d.uri for d in ix.documents())
    want = max(1, round(len(ix) * share / 100 / 100))  # documents of 100 chunks
    for uri in rng.choice(docs, size=want, replace=False):
        n = int(rng.integers(95, 100))  # a few chunks fewer: deletes as well as upserts
        v = rng.standard_normal((n, ix.dimension)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        ix.replace_document(str(uri), [Chunk(f"edited {seed} {i}", ordinal=i) for i in range(n)], v)
    return ix.count_changes(before)


def plain_copy(
    url: str, schema_name: str, ix: Any, site: str, identity: Any, *, hnsw: bool
) -> float:
    from psycopg.types.json import Jsonb

    from lokal.central import schema
    from lokal.central.connect import connect

    rows = []
    after = 0
    while page := ix.changes(after, 5000):
        for c in page:
            if c.op == "upsert":
                rows.append(
                    (
                        site,
                        c.chunk_id,
                        c.document,
                        c.ordinal,
                        c.text,
                        c.char_start,
                        c.char_end,
                        c.line_start,
                        c.line_end,
                        c.tokens,
                        Jsonb(c.metadata),
                        c.vector,
                    )
                )
        after = page[-1].seq
    conn = connect(url)
    cols = ", ".join(schema.COLUMNS)
    t = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY {schema_name}.chunks ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(schema.COLUMN_TYPES)
            for r in rows:
                copy.write_row(r)
    took = time.perf_counter() - t
    conn.close()
    return took


def timed_sync(ix: Any, url: str, site: str, batch: int, s: str = "lokal") -> dict[str, Any]:
    from lokal.central.sync import sync

    load, t = os.getloadavg()[0], time.perf_counter()
    r = sync(ix, url, site, batch_size=batch, schema_name=s)
    return {"changes": r.sent, "seconds": time.perf_counter() - t, "load": load}


def timed_copy(url: str, s: str, ix: Any, identity: Any, *, hnsw: bool) -> dict[str, Any]:
    load = os.getloadavg()[0]
    took = plain_copy(url, s, ix, "plant-a", identity, hnsw=hnsw)
    return {"changes": len(ix), "seconds": took, "load": load}


def sql(url: str, statement: str) -> float:
    import psycopg

    t = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET maintenance_work_mem = '1GB'")
        c.execute(statement)
    return time.perf_counter() - t


HNSW = "CREATE INDEX chunks_embedding_hnsw ON {s}.chunks USING hnsw (embedding vector_cosine_ops)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chunks", type=int, default=100_000)
    p.add_argument("--hnsw-chunks", type=int, default=5_000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    from lokal import Embedder
    from lokal.central import schema
    from lokal.central.connect import connect

    identity = Embedder(backend="gguf").identity
    work = Path(tempfile.mkdtemp(prefix="lokal-fleet-bench-"))
    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    rows: dict[str, dict[str, Any]] = {}
    try:
        import psycopg

        with psycopg.connect(server.get_uri(), autocommit=True) as c:
            c.execute("CREATE DATABASE fleet")
        url = server.get_uri("fleet")
        for s in ("lokal", "lokal_copy", "lokal_h", "lokal_hcopy"):
            conn = connect(url, vector=False)
            schema.migrate(conn, s, identity)
            conn.close()
        for s in ("lokal", "lokal_copy"):  # the bulk rows: transfer cost alone, no HNSW
            sql(url, f"DROP INDEX {s}.chunks_embedding_hnsw")
        t = time.perf_counter()
        ix = build_index(work / "box.db", a.chunks, identity)
        small = build_index(work / "small.db", a.hnsw_chunks, identity)
        print(
            f"indexes: {len(ix)} and {len(small)} chunks built in {time.perf_counter() - t:.0f} s"
        )

        rows["first sync, no HNSW"] = timed_sync(ix, url, "plant-a", a.batch_size)
        rows["plain COPY, no HNSW (floor)"] = timed_copy(
            url, "lokal_copy", ix, identity, hnsw=False
        )
        print("bulk rows done", flush=True)
        rows["first sync, with HNSW"] = timed_sync(small, url, "plant-a", a.batch_size, "lokal_h")
        rows["plain COPY, with HNSW (floor)"] = timed_copy(
            url, "lokal_hcopy", small, identity, hnsw=True
        )
        print("HNSW rows done", flush=True)
        load = os.getloadavg()[0]
        build = sql(url, HNSW.format(s="lokal"))
        rows[f"HNSW build over {len(ix)} rows"] = {
            "changes": len(ix),
            "seconds": build,
            "load": load,
        }
        for share, seed in ((0.1, 1), (1.0, 2)):
            n = change(ix, share, seed)
            r = timed_sync(ix, url, "plant-a", a.batch_size)
            assert r["changes"] == n, (r, n)
            rows[f"incremental, {share}% of {a.chunks} chunks changed"] = r
        rows["nothing changed"] = timed_sync(ix, url, "plant-a", a.batch_size)
        ix.close()
        small.close()
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"Machine: {os.cpu_count()} cores, {cpu_flags()}; Python {platform.python_version()}; "
        f"load average at end {os.getloadavg()[0]:.1f}.",
        f"Command: python benchmarks/fleet_sync.py --chunks {a.chunks} --hnsw-chunks "
        f"{a.hnsw_chunks} --batch-size {a.batch_size}",
        "PostgreSQL 16.2 + pgvector 0.6.2 (pgserver), on this machine, over a Unix socket.",
        "",
        "| run | rows/changes | seconds | per second | load average before |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        rate = r["changes"] / r["seconds"] if r["seconds"] else 0
        lines.append(
            f"| {name} | {r['changes']} | {r['seconds']:.2f} | {rate:,.0f} | {r['load']:.1f} |"
        )

    def ratio(sync_row: str, copy_row: str) -> float:
        x, y = rows[sync_row], rows[copy_row]
        return (x["changes"] / x["seconds"]) / (y["changes"] / y["seconds"])

    bare = ratio("first sync, no HNSW", "plain COPY, no HNSW (floor)")
    with_hnsw = ratio("first sync, with HNSW", "plain COPY, with HNSW (floor)")
    inc = [r for k, r in rows.items() if k.startswith("incremental")]
    lines += [
        "",
        f"- {'PASS' if min(bare, with_hnsw) >= 0.7 else 'FAIL'}: first sync {bare:.2f}x the "
        f"plain COPY's rows/s without the HNSW index, {with_hnsw:.2f}x with it (target >= 0.7x)",
        f"- incremental: {inc[0]['changes']} changes in {inc[0]['seconds']:.2f} s, "
        f"{inc[1]['changes']} in {inc[1]['seconds']:.2f} s "
        f"({inc[1]['seconds'] / max(inc[0]['seconds'], 1e-9):.1f}x the time for "
        f"{inc[1]['changes'] / max(inc[0]['changes'], 1):.1f}x the changes)",
    ]
    print("\n".join(lines))
    if a.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
