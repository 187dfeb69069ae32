"""Cold open: the first search in a new process (search_latency.py's cold-open rows).

Each sample is a fresh interpreter that imports lokal, opens the index read-only, sets the
search copy (``float``, ``int8``, ``bit`` or the recorded ``auto``) and runs one search; the
parent times the whole process (interpreter start to exit) and the child reports its parts.
One more process per mode first searches 30 times after its first search: the p50 of a
search once the copy is loaded, and that process's peak RSS.
A mode ``float-rows`` (``bit-rows`` ...) is the baseline: that copy read through vec0 row by
row, as lokal did before it stored the copy. "Warm" samples follow an untimed one (the file
is in the page cache); "dropped" samples first drop this file's pages from the page cache
(``posix_fadvise(DONTNEED)``: only this file, nothing else on a shared machine).

The files are built cheaply: ``Index.create`` (the real schema and migrations), then rows by
plain SQL in 50k-row transactions — ``chunks`` (a short text, ``{"group": g}``),
``chunks_vec`` and ``chunks_fts`` exactly as ``Index._insert`` writes them — then the stored
compact copy in one pass (:func:`lokal.index.stored.rebuild_bits`, what migration 5 runs).
Vectors are random unit rows (the open's cost does not depend on them).

    .venv/bin/python benchmarks/_cold_open.py [--sizes 100000,1000000] [--samples 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384
SEED = 20240611
GROUPS = 50
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from lokal.index import Index
t1 = time.perf_counter()
spec = json.loads(sys.argv[1])
mode = spec["mode"]
if mode.endswith("-rows"):  # the baseline: the copy read row by row, as before migration 5
    from lokal.index import stored
    stored.read_floats = lambda *args: None
    stored.has_bits = lambda conn: False
    mode = mode[: -len("-rows")]
index = Index.open(spec["db"])
if mode != "auto":
    index.quantization = mode
t2 = time.perf_counter()
q = np.random.default_rng(1).standard_normal(index.dimension).astype(np.float32)
hits = index.search(q / np.linalg.norm(q), 10)
t3 = time.perf_counter()
warm = []
for row in np.random.default_rng(2).standard_normal((spec["warm"], index.dimension)):
    t4 = time.perf_counter()
    index.search((row / np.linalg.norm(row)).astype(np.float32), 10)
    warm.append(time.perf_counter() - t4)
from lokal.benchmark import peak_rss_mb
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_search_s": t3 - t2,
                  "hits": len(hits), "mode": index._cache.quantization,
                  "p50_ms": float(np.median(warm)) * 1000 if warm else None,
                  "peak_rss_mb": peak_rss_mb()}))
index.close()
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_open_file(n: int, work: Path, *, rebuild: bool = False) -> dict[str, Any]:
    """``open-N.db`` (see the module's docstring); cached with its build figures."""
    from lokal.identity import ModelIdentity
    from lokal.index import Index, sqlite, stored

    db, info_path = work / f"open-{n}.db", work / f"open-{n}.json"
    if db.exists() and info_path.exists() and not rebuild:
        cached: dict[str, Any] = json.loads(info_path.read_text())
        return cached
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    identity = ModelIdentity.external("benchmark", "cold_open", "synthetic", DIM)
    Index.create(db, identity).close()
    rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    conn = sqlite.connect(db)
    try:
        for start in range(0, n, 50_000):
            stop = min(n, start + 50_000)
            v = rng.standard_normal((stop - start, DIM), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            groups = rng.integers(0, GROUPS, stop - start)
            ids = range(start + 1, stop + 1)
            with sqlite.write(conn):
                conn.executemany(
                    "INSERT INTO chunks (id, chunk_id, document_id, ordinal, text, metadata) "
                    "VALUES (?, ?, NULL, 0, ?, ?)",
                    (
                        (i, f"c{i}", f"chunk {i}", json.dumps({"group": int(g)}))
                        for i, g in zip(ids, groups, strict=True)
                    ),
                )
                conn.executemany(
                    "INSERT INTO chunks_vec (rowid, embedding) VALUES (?, ?)",
                    ((i, row.tobytes()) for i, row in zip(ids, v, strict=True)),
                )
                conn.executemany(
                    "INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)",
                    ((i, f"chunk {i}") for i in ids),
                )
            log(f"open-{n}: {stop} rows in {time.perf_counter() - t0:.0f} s")
        t1 = time.perf_counter()
        with sqlite.write(conn):
            stored.rebuild_bits(conn, DIM)
        bits_s = time.perf_counter() - t1
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    info = {
        "rows": n,
        "build_s": time.perf_counter() - t0,
        "bits_s": bits_s,
        "file_mb": db.stat().st_size / 2**20,
    }
    info_path.write_text(json.dumps(info))
    return info


def drop_from_page_cache(path: Path) -> None:
    for p in (path, Path(f"{path}-wal")):
        if p.exists():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def sample(db: Path, mode: str, warm: int = 0) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps({"db": str(db), "mode": mode, "warm": warm})],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    wall = time.perf_counter() - t0
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def cold_open(
    sizes: list[int], modes: list[str], samples: int, work: Path, *, rebuild: bool = False
) -> list[dict[str, Any]]:
    """Rows of (size, mode): median figures of ``samples`` warm and dropped samples, the
    modes interleaved sample by sample (a load change hits every mode alike)."""
    rows = []
    for n in sizes:
        info = build_open_file(n, work, rebuild=rebuild)
        db = work / f"open-{n}.db"
        steady = {}
        for mode in modes:  # the file is now in the page cache; warm searches' p50
            steady[mode] = sample(db, mode, warm=30)["p50_ms"]
        warm: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        dropped: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for _ in range(samples):
            for mode in modes:
                warm[mode].append(sample(db, mode))
            for mode in modes:
                drop_from_page_cache(db)
                dropped[mode].append(sample(db, mode))
        for mode in modes:
            row = {"rows": n, "file_mb": info["file_mb"], "mode": mode, "samples": samples}
            for key, runs in (("warm", warm[mode]), ("dropped", dropped[mode])):
                for field in ("wall_s", "import_s", "first_search_s", "peak_rss_mb"):
                    row[f"{key}_{field}"] = float(np.median([r[field] for r in runs]))
            row["copy"] = warm[mode][0]["mode"]
            row["p50_ms"] = steady[mode]
            rows.append(row)
            log(
                f"cold open {n} {mode} ({row['copy']}): {row['warm_wall_s']:.2f} s warm, "
                f"{row['dropped_wall_s']:.2f} s dropped"
            )
    return rows


def cold_open_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| rows | mode (copy) | process, warm cache | of it: first search | process, file "
        "dropped from cache | of it: first search | peak RSS | then p50 / search |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['rows']:,} | {r['mode']} ({r['copy']}) | {r['warm_wall_s']:.2f} s | "
            f"{r['warm_first_search_s']:.2f} s | {r['dropped_wall_s']:.2f} s | "
            f"{r['dropped_first_search_s']:.2f} s | {r['warm_peak_rss_mb']:.0f} MB | "
            f"{r['p50_ms']:.1f} ms |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--modes", default="float,int8,bit,auto")
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--work", default="/tmp/lokal-search-bench")
    p.add_argument("--rebuild", action="store_true")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    before = os.getloadavg()
    rows = cold_open(
        [int(s) for s in a.sizes.split(",")], a.modes.split(","), a.samples, work, rebuild=a.rebuild
    )
    print(machine_line(before))
    print(cold_open_table(rows))


def machine_line(load_before: tuple[float, float, float]) -> str:
    from lokal import cpu

    flags = sorted(cpu.cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimddp"})
    after = os.getloadavg()
    return (
        f"{cpu.cpu_name()}, {os.cpu_count()} cores, flags {' '.join(flags)}; load average "
        f"{load_before[0]:.1f} at start, {after[0]:.1f} at the end; numkong "
        f"{'yes' if _has_numkong() else 'no'}"
    )


def _has_numkong() -> bool:
    try:
        import numkong  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
