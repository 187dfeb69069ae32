"""`lokal sync` into a real PostgreSQL 16 + pgvector 0.6.2 (pgserver, a private server on this
machine), against a plain COPY of the same rows into the same table.

Index: ``--chunks`` chunks (default 100,000) of real prose (Python's language reference,
paragraphs cycled), in documents of 100 chunks, with random unit vectors of the bundled
model's dimension under its real identity (the vectors' values do not change what a sync
costs; embedding 100k chunks here would take an hour).

Rows, in one run:

- first sync: the whole index into an empty collection (batches of ``--batch-size``, each one
  transaction: for the owner a binary COPY straight into ``chunks``, encoded by
  ``lokal.central.wire``);
- plain COPY: the same rows, read from the index beforehand (not timed), COPYed in one
  statement and one transaction into the same table in a second, empty collection with
  psycopg's ``write_row`` and pgvector's own dumper: the floor. Both ``--rounds`` times,
  interleaved, each into a fresh collection: ``--chunks`` rows into the table without its HNSW
  index (the GIN and btree indexes and the generated tsvector stay): what the sync itself
  costs; then once with ``--hnsw-chunks`` rows and the HNSW index, whose graph inserts dominate
  everything on a small machine. Each row also shows the CPU seconds of the client (this
  process) and of the PostgreSQL server: on a shared machine they say more than wall time;
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


def copy_rows(ix: Any, site: str) -> list[tuple[Any, ...]]:
    """The index's rows as a plain COPY sends them (read beforehand: not timed)."""
    from psycopg.types.json import Jsonb

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
    return rows


def plain_copy(url: str, schema_name: str, rows: list[tuple[Any, ...]]) -> int:
    """One COPY, one transaction, psycopg's binary rows with pgvector's own dumper."""
    from lokal.central import schema
    from lokal.central.connect import connect

    conn = connect(url)
    cols = ", ".join(schema.COLUMNS)
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY {schema_name}.chunks ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(schema.COLUMN_TYPES)
            for r in rows:
                copy.write_row(r)
    conn.close()
    return len(rows)


#: the data directory of the benchmark's server, for its CPU time (set in main)
PGDATA: Path | None = None


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process (the client: the sync runs in it) and by the
    PostgreSQL server (the postmaster, its live backends and those it has reaped)."""
    import psutil

    t = os.times()
    client = t.user + t.system
    if PGDATA is None:
        return client, 0.0
    postmaster = psutil.Process(int((PGDATA / "postmaster.pid").read_text().split()[0]))
    p = postmaster.cpu_times()
    server = p.user + p.system + p.children_user + p.children_system
    for child in postmaster.children():
        try:
            c = child.cpu_times()
        except psutil.Error:
            continue
        server += c.user + c.system
    return client, server


def _timed(run: Any) -> dict[str, Any]:
    load, (client, server), t = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
    changes = run()
    seconds = time.perf_counter() - t
    time.sleep(0.2)  # the backend closed with the connection: let the postmaster reap it
    client2, server2 = cpu_seconds()
    return {
        "changes": changes,
        "seconds": seconds,
        "load": load,
        "client_cpu": client2 - client,
        "server_cpu": server2 - server,
    }


def timed_sync(ix: Any, url: str, site: str, batch: int, s: str = "lokal") -> dict[str, Any]:
    from lokal.central.sync import sync

    return _timed(lambda: sync(ix, url, site, batch_size=batch, schema_name=s).sent)


def timed_copy(url: str, s: str, ix: Any) -> dict[str, Any]:
    rows = copy_rows(ix, "plant-a")
    return _timed(lambda: plain_copy(url, s, rows))


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
    p.add_argument(
        "--rounds", type=int, default=2, help="first sync / plain COPY pairs, interleaved"
    )
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    from lokal import Embedder
    from lokal.central import schema
    from lokal.central.connect import connect

    global PGDATA
    identity = Embedder(backend="gguf").identity
    work = Path(tempfile.mkdtemp(prefix="lokal-fleet-bench-"))
    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    PGDATA = work / "pg"
    bulk = [(f"lokal{i or ''}", f"lokal_copy{i or ''}") for i in range(a.rounds)]
    rows: dict[str, dict[str, Any]] = {}
    try:
        import psycopg

        with psycopg.connect(server.get_uri(), autocommit=True) as c:
            c.execute("CREATE DATABASE fleet")
        url = server.get_uri("fleet")
        for s in (*(s for pair in bulk for s in pair), "lokal_h", "lokal_hcopy"):
            conn = connect(url, vector=False)
            schema.migrate(conn, s, identity)
            conn.close()
        for pair in bulk:  # the bulk rows: transfer cost alone, no HNSW
            for s in pair:
                sql(url, f"DROP INDEX {s}.chunks_embedding_hnsw")
        t = time.perf_counter()
        ix = build_index(work / "box.db", a.chunks, identity)
        small = build_index(work / "small.db", a.hnsw_chunks, identity)
        print(
            f"indexes: {len(ix)} and {len(small)} chunks built in {time.perf_counter() - t:.0f} s"
        )

        for i, (sync_schema, copy_schema) in enumerate(bulk):
            rows[f"first sync, no HNSW, round {i + 1}"] = timed_sync(
                ix, url, "plant-a", a.batch_size, sync_schema
            )
            rows[f"plain COPY, no HNSW (floor), round {i + 1}"] = timed_copy(url, copy_schema, ix)
            print(f"bulk rows, round {i + 1} done", flush=True)
        rows["first sync, with HNSW"] = timed_sync(small, url, "plant-a", a.batch_size, "lokal_h")
        rows["plain COPY, with HNSW (floor)"] = timed_copy(url, "lokal_hcopy", small)
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
        f"{a.hnsw_chunks} --batch-size {a.batch_size} --rounds {a.rounds}",
        "PostgreSQL 16.2 + pgvector 0.6.2 (pgserver), on this machine, over a Unix socket.",
        "",
        "| run | rows/changes | seconds | per second | client CPU s | server CPU s "
        "| load average before |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        rate = r["changes"] / r["seconds"] if r["seconds"] else 0
        cpu = f"{r['client_cpu']:.2f} | {r['server_cpu']:.2f}" if "client_cpu" in r else "- | -"
        lines.append(
            f"| {name} | {r['changes']} | {r['seconds']:.2f} | {rate:,.0f} | {cpu} "
            f"| {r['load']:.1f} |"
        )

    def best(prefix: str) -> str:
        return min((k for k in rows if k.startswith(prefix)), key=lambda k: rows[k]["seconds"])

    def ratio(sync_row: str, copy_row: str) -> float:
        x, y = rows[sync_row], rows[copy_row]
        return (x["changes"] / x["seconds"]) / (y["changes"] / y["seconds"])

    bare = ratio(best("first sync, no HNSW"), best("plain COPY, no HNSW"))
    with_hnsw = ratio("first sync, with HNSW", "plain COPY, with HNSW (floor)")
    inc = [r for k, r in rows.items() if k.startswith("incremental")]
    lines += [
        "",
        f"- {'PASS' if min(bare, with_hnsw) >= 0.7 else 'FAIL'}: first sync {bare:.2f}x the "
        f"plain COPY's rows/s without the HNSW index (best of {a.rounds} each), "
        f"{with_hnsw:.2f}x with it (target >= 0.7x)",
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
