"""The index's write path without embedding: what the change feed costs the file and the writes.

400 documents of 20 chunks (384-dim random vectors, ~720 characters of text each) written with
``replace_document``, then a quarter of them written again (their old chunks deleted, new ones
inserted): wall time, this process's CPU time, and the file's size. Chunk ids are the agent's:
``path#ordinal`` with absolute paths of 60-90 characters (``--short-ids``: ~35).

Three schemas side by side, interleaved ``--rounds`` times in this one process, all with the
same code: ``no feed`` (the index's migrations 1-2), ``feed, migration 3`` (the first feed: one
row per chunk id holding the id again, plus its unique index) and ``feed, migration 6`` (a
live chunk's feed row holds its rowid, a tombstone the deleted id). Target (issue 14): the feed
grows the file by 5% at most, and costs the agent's ingest less than 5%.

    .venv/bin/python benchmarks/feed_cost.py [--rounds 3] [--short-ids]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from typing import Any

import numpy as np
from fleet_sync import cpu_flags

from lokal.identity import ModelIdentity
from lokal.index import Chunk, Index, schema

ALL = list(schema.MIGRATIONS)
SCHEMAS = {"no feed": 2, "feed, migration 3": 3, "feed, migration 6": ALL[-1][0]}
TEXT = "The quick brown fox jumps over the lazy dog near the river bank. " * 11
PACKAGES = ("python3-packaging-tools", "libreoffice-common", "openssh-client", "gir1.2-glib-2.0")


def uri(doc: int, short: bool) -> str:
    if short:
        return f"/srv/docs/some/dir/file-{doc:05d}.txt"
    package = PACKAGES[doc % len(PACKAGES)]
    return f"/usr/share/doc/{package}/examples/section-{doc % 7}/notes-{doc:05d}.txt"


def run(upto: int, short: bool) -> dict[str, Any]:
    schema.MIGRATIONS = [m for m in ALL if m[0] <= upto]
    path = os.path.join(tempfile.mkdtemp(prefix="lokal-feed-cost-"), "w.db")
    try:
        identity = ModelIdentity.external("bench", "Hand", "hand", 384)
        rng = np.random.default_rng(0)
        ix = Index.create(path, identity)
        t, cpu = time.perf_counter(), time.process_time()
        for rewrite, docs in ((0, range(400)), (1, range(0, 400, 4))):
            for doc in docs:
                v = rng.standard_normal((20, 384)).astype(np.float32)
                chunks = [Chunk(TEXT + "x" * rewrite, ordinal=i) for i in range(20)]
                ix.replace_document(uri(doc, short), chunks, v)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        feed = ix._conn.execute(  # the feed's own pages: its table and indexes (dbstat)
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN "
            "(SELECT name FROM sqlite_master WHERE tbl_name = 'changes')"
        ).fetchone()[0]
        ix.close()
        size = os.path.getsize(path)
    finally:
        schema.MIGRATIONS = ALL
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    return {"wall": wall, "cpu": cpu, "bytes": size, "feed": feed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--short-ids", action="store_true")
    a = p.parse_args()
    load = os.getloadavg()[0]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEMAS}
    for _ in range(a.rounds):
        for name, upto in SCHEMAS.items():
            results[name].append(run(upto, a.short_ids))
    base = results["no feed"][0]["bytes"]
    base_cpu = min(r["cpu"] for r in results["no feed"])
    lines = [
        f"Machine: {os.cpu_count()} cores, {cpu_flags()}; Python {platform.python_version()}; "
        f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after.",
        f"Command: python benchmarks/feed_cost.py --rounds {a.rounds}"
        + (" --short-ids" if a.short_ids else ""),
        "",
        "| schema | wall s | CPU s | CPU vs no feed (best) | file bytes | vs no feed "
        "| feed's pages (dbstat) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in results.items():
        size = rows[0]["bytes"]
        cpu = min(r["cpu"] for r in rows)
        walls = " / ".join(f"{r['wall']:.2f}" for r in rows)
        cpus = " / ".join(f"{r['cpu']:.2f}" for r in rows)
        lines.append(
            f"| {name} | {walls} | {cpus} | {cpu / base_cpu:.2f}x | "
            f"{size:,} | {100 * (size / base - 1):+.1f}% | {rows[0]['feed']:,} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
