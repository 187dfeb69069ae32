"""Search latency and recall: lokal's Index (float, int8, bit + float rescoring) against numpy
brute force, sqlite-vec's own vec0 KNN and langchain-community's SQLiteVec, on the same file.

Three parts:

1. **Latency** (synthetic vectors: random normal, normalized, 384 dims, k=10). For each size an
   index file is built through the public ``Index.upsert`` (timed). If that takes longer than
   ``--api-budget`` seconds the rest of the rows are inserted with plain SQL into the same
   tables (``chunks``, ``chunks_vec``, ``chunks_fts``), exactly as ``Index._insert`` does, and
   the report says so. Chunk texts are real texts (the recall corpus, cycled) so rows and the
   full-text index have a realistic size; metadata is ``{"group": 0..49}`` and the filtered
   runs use ``{"group": {"$in": [0, 1, 2, 3, 4]}}`` (10% of the rows). The three lokal modes
   run on the same file: the parent sets ``lokal_meta.quantization`` before each run (what
   ``Index.create(quantization=...)`` writes; the mode only changes the in-memory copy).
   Every engine runs in a fresh interpreter, one after another: its first search (which loads
   lokal's in-memory copy) is reported apart, then warm searches are timed one by one (p50 and
   p95), and peak memory (VmHWM) is that engine's alone. The numpy baseline is
   ``matrix @ q`` + argpartition over the same normalized float32 matrix; filtered, it selects
   the matching rows from an in-memory group array first (that cost included). Each lokal run
   also times numpy on the same queries interleaved with its own (``paired`` ratio), which is
   robust to the machine's load changing between runs.

2. **Recall@10** on real embeddings (random Gaussian vectors make 1-bit codes look useless):
   docstrings of the Python standard library, ``pydoc_data.topics`` paragraphs and docstrings
   of large third-party packages installed in this venv (numpy, scipy, torch, ...), read with
   ``ast`` (nothing is imported), deduplicated, 25-200 words. Embedded once with lokal's
   default model through the GGUF path (``LOKAL_HOME`` = ``WORK/home``, packed there if
   missing) and cached as .npy in ``--work``. Queries are the first sentence of held-out
   texts. Recall is measured through ``Index.search`` for each mode, and offline in numpy with
   lokal's own encoding (``lokal.index.search``) for other oversampling factors and corpus
   sizes.

    .venv/bin/python benchmarks/search_latency.py [--sizes 10000,100000,1000000] [--quick]
        [--queries 100] [--budget 60] [--corpus 24000] [--work /tmp/lokal-search-bench]
        [--skip langchain,recall,latency,coldopen] [--cold-sizes 100000,1000000]
        [--cold-samples 5] [--api-budget 600] [--rebuild] [--json FILE]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import random
import re
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _machine import peak_rss_mb

DIM = 384
K = 10
GROUPS = 50
FILTER_GROUPS = [0, 1, 2, 3, 4]  # 10% of the rows
FILTER = {"group": {"$in": FILTER_GROUPS}}
MODES = ("float", "int8", "bit")
ENGINES = ("lokal-float", "lokal-int8", "lokal-bit", "numpy", "vec0", "langchain")
SEED = 20240611
WARM = 3  # untimed searches after the first one
# Third-party packages whose docstrings extend the corpus beyond the standard library.
PACKAGES = (
    "numpy",
    "scipy",
    "sklearn",
    "sympy",
    "networkx",
    "torch",
    "transformers",
    "sqlalchemy",
    "nltk",
    "huggingface_hub",
    "pydantic",
    "setuptools",
    "pip",
    "rich",
    "pygments",
    "mpmath",
    "PIL",
)
MIN_WORDS, MAX_WORDS = 25, 200
TARGETS = {"ratio_100k": 1.5, "p50_100k_ms": 20.0, "p50_1m_ms": 150.0, "recall_1m": 0.95}


# ---- small helpers -----------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 2**20)


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def query_vectors(n: int) -> np.ndarray:
    """The latency queries: the same in every child."""
    return unit_rows(np.random.default_rng(SEED + 1), n)


def pct(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1000.0, q))


def numpy_topk(matrix: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k positions (best first) over a normalized float32 matrix."""
    scores = matrix @ q
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = np.arange(len(scores))
    return part[np.argsort(-scores[part], kind="stable")]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import psutil
    import sqlite_vec

    from lokal.index import sqlite

    mod = sqlite.sqlite_module()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sqlite_vec": getattr(sqlite_vec, "__version__", "?"),
        "sqlite": f"{mod.__name__} {mod.sqlite_version}",
        "load_avg": os.getloadavg(),
    }


# ---- the real-text corpus ----------------------------------------------------------------------


def _docstrings(root: Path) -> Iterator[str]:
    skip = {"test", "tests", "testing", "idlelib", "site-packages", "__pycache__"}
    for path in sorted(root.rglob("*.py")):
        if skip.intersection(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError, RecursionError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    yield doc


def collect_texts(n: int, work: Path) -> tuple[list[str], dict[str, int]]:
    """``n`` distinct real texts (25-200 words) in a fixed pseudo-random order, and how many
    came from each source; cached in ``work``."""
    cache = work / f"texts-{n}.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        return data["texts"], data["sources"]
    from pydoc_data.topics import topics

    seen: set[str] = set()
    found: list[tuple[str, str]] = []  # (source, text)

    def add(source: str, raw: str) -> None:
        words = raw.split()
        if len(words) < MIN_WORDS:
            return
        text = " ".join(words[:MAX_WORDS])
        if text not in seen:
            seen.add(text)
            found.append((source, text))

    log("collecting texts: standard library docstrings, pydoc_data.topics")
    for doc in _docstrings(Path(sysconfig.get_paths()["stdlib"])):
        add("stdlib docstrings", doc)
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            add("pydoc_data.topics paragraphs", para)
    for name in PACKAGES:
        if len(found) >= 1.3 * n:
            break
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        log(f"collecting texts: {name} docstrings ({len(found)} texts so far)")
        for loc in spec.submodule_search_locations:
            for doc in _docstrings(Path(loc)):
                add(f"{name} docstrings", doc)
    if len(found) < n:
        log(f"only {len(found)} texts found (wanted {n}); using them all")
    random.Random(SEED).shuffle(found)
    found = found[:n]
    sources: dict[str, int] = {}
    for source, _ in found:
        sources[source] = sources.get(source, 0) + 1
    texts = [t for _, t in found]
    work.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"texts": texts, "sources": sources}))
    return texts, sources


def first_sentence(text: str) -> str:
    sentence = re.split(r"(?<=[.!?:])\s+", text, maxsplit=1)[0]
    words = sentence.split()
    if len(words) < 4:
        words = text.split()[:15]
    return " ".join(words[:30])


def embed_corpus(
    texts: list[str], queries: list[str], work: Path, threads: int | None
) -> dict[str, Any]:
    """Document and query vectors with lokal's default model (GGUF q8_0), cached as .npy
    (resumable: finished batches are kept in a partial file)."""
    digest = hashlib.sha256("\x00".join([*texts, "\x01", *queries]).encode()).hexdigest()[:12]
    docs_file, query_file = work / f"emb-{digest}-docs.npy", work / f"emb-{digest}-queries.npy"
    info_file, partial = work / f"emb-{digest}.json", work / f"emb-{digest}-partial.npz"
    if docs_file.exists() and query_file.exists() and info_file.exists():
        info = json.loads(info_file.read_text())
        info.update(docs=np.load(docs_file), queries=np.load(query_file), cached=True)
        return info
    home = work / "home"
    os.environ["LOKAL_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lokal import Embedder, packing

    gguf = home / "models" / "all-MiniLM-L6-v2.q8_0.gguf"
    if not gguf.exists():
        log(f"packing all-MiniLM-L6-v2 into {gguf.parent}")
        packing.pack("all-MiniLM-L6-v2")
    emb = Embedder(backend="gguf", n_threads=threads)
    warnings.simplefilter("ignore")
    emb.embed_documents(texts[:4])  # load the model before the clock starts
    parts: list[np.ndarray] = []
    seconds, tokens, n_truncated = 0.0, 0, 0
    if partial.exists():
        saved = np.load(partial)
        parts = [saved["vectors"]]
        seconds, tokens, n_truncated = (float(x) for x in saved["stats"])
        log(f"resuming: {len(parts[0])} texts already embedded")
    done = sum(len(p) for p in parts)
    batch = 256
    for start in range(done, len(texts), batch):
        t0 = time.perf_counter()
        res = emb.embed_documents(texts[start : start + batch])
        seconds += time.perf_counter() - t0
        parts.append(res.vectors.astype(np.float32))
        tokens += res.tokens
        n_truncated += len(res.truncated)
        done += len(res.vectors)
        np.savez(partial, vectors=np.concatenate(parts), stats=[seconds, tokens, n_truncated])
        rate = done / seconds
        log(
            f"embedded {done}/{len(texts)} texts, {tokens / seconds:.0f} tokens/s, "
            f"eta {(len(texts) - done) / rate:.0f} s"
        )
    docs = np.concatenate(parts)
    qv = emb.embed_queries(queries).vectors.astype(np.float32)
    info = {
        "model": repr(emb),
        "threads": threads,
        "embed_seconds": seconds,
        "tokens": int(tokens),
        "truncated": int(n_truncated),
    }
    np.save(docs_file, docs)
    np.save(query_file, qv)
    info_file.write_text(json.dumps(info))
    partial.unlink(missing_ok=True)
    info.update(docs=docs, queries=qv, cached=False)
    return info


# ---- recall on real embeddings -----------------------------------------------------------------


def exact_top(matrix: np.ndarray, queries: np.ndarray, k: int) -> list[np.ndarray]:
    return [numpy_topk(matrix, q, k) for q in queries]


def quantized_top(
    matrix: np.ndarray, cache: Any, queries: np.ndarray, k: int, oversample: int
) -> list[np.ndarray]:
    """Candidates from lokal's own approximate scores, rescored with the float rows."""
    from lokal.index import search

    out = []
    for q in queries:
        cand = search.top_positions(search.approximate_scores(cache, q, None), k * oversample)
        exact = matrix[cand] @ q
        out.append(cand[np.lexsort((cand, -exact))][:k])
    return out


def recall(found: list[np.ndarray], truth: list[np.ndarray], k: int) -> float:
    hits = [
        len(set(f[:k].tolist()) & set(t[:k].tolist())) / k
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))


def run_recall(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    from lokal.identity import ModelIdentity
    from lokal.index import search
    from lokal.index.store import Chunk, Index

    texts, sources = collect_texts(a.corpus + a.recall_queries, work)
    held_out, corpus = texts[: a.recall_queries], texts[a.recall_queries :]
    queries = [first_sentence(t) for t in held_out]
    log(f"recall corpus: {len(corpus)} texts, {len(queries)} held-out queries")
    emb = embed_corpus(corpus, queries, work, a.embed_threads)
    docs, qv = search.normalize(emb["docs"]), search.normalize(emb["queries"])
    n = len(docs)
    out: dict[str, Any] = {
        "corpus": n,
        "queries": len(qv),
        "sources": sources,
        "embedding": {k: v for k, v in emb.items() if k not in ("docs", "queries")},
        "oversample": dict(search.OVERSAMPLE),
    }
    truth = exact_top(docs, qv, K)
    groups = np.arange(n) % GROUPS
    sel = np.flatnonzero(np.isin(groups, FILTER_GROUPS))
    truth_f = [sel[t] for t in exact_top(docs[sel], qv, K)]

    # through lokal's public API: one index per mode, built with Index.create + upsert
    identity = ModelIdentity.external("benchmark", "search_latency", "all-MiniLM-L6-v2", DIM)
    out["index"] = {}
    for mode in MODES:
        path = work / f"recall-{mode}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        with Index.create(path, identity, quantization=mode) as index:
            for start in range(0, n, 2000):
                stop = min(n, start + 2000)
                chunks = [
                    Chunk(text=corpus[i], id=str(i), metadata={"group": int(groups[i])})
                    for i in range(start, stop)
                ]
                index.upsert(chunks, docs[start:stop])
            got = [np.array([int(h.id) for h in index.search(q, K)]) for q in qv]
            got_f = [np.array([int(h.id) for h in index.search(q, K, filter=FILTER)]) for q in qv]
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        out["index"][mode] = {
            "oversample": search.OVERSAMPLE[mode],
            "recall": recall(got, truth, K),
            "recall_filtered": recall(got_f, truth_f, K),
        }
        log(f"recall@10 {mode}: {out['index'][mode]}")

    # offline, with lokal's encoding, other oversampling factors
    rowids = np.arange(n, dtype=np.int64)
    caches = {m: search.VectorCache(m, rowids, search.encode(docs, m), (0, 0)) for m in MODES}
    factors = {"int8": [1, 2, 4, 8], "bit": [1, 5, 10, 20, 40, 80, 160]}
    out["sweep"] = {
        m: {f: recall(quantized_top(docs, caches[m], qv, K, f), truth, K) for f in fs}
        for m, fs in factors.items()
    }
    # the proposal for bit: k*f bit candidates, reranked by the int8 copy, 2k of them rescored
    int8 = caches["int8"].data
    two_stage = {}
    for f in (10, 20, 40, 80):
        found = []
        for q in qv:
            cand = search.top_positions(search.approximate_scores(caches["bit"], q, None), K * f)
            keep = cand[search.top_positions(int8[cand].astype(np.float32) @ (q * 127.0), 2 * K)]
            found.append(keep[np.lexsort((keep, -(docs[keep] @ q)))][:K])
        two_stage[f] = recall(found, truth, K)
    out["two_stage"] = two_stage
    # how far down lokal's approximate ranking the true top-10 reach (per query: the worst rank)
    worst = {}
    for m in ("int8", "bit"):
        ranks = []
        for q, t in zip(qv, truth, strict=True):
            order = search.top_positions(search.approximate_scores(caches[m], q, None), n)
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n)
            ranks.append(int(rank[t].max()) + 1)
        r = np.asarray(ranks)
        worst[m] = {
            "p50": float(np.percentile(r, 50)),
            "p90": float(np.percentile(r, 90)),
            "p95": float(np.percentile(r, 95)),
            "max": int(r.max()),
        }
    out["depth"] = worst
    # does recall at a fixed oversampling hold as the corpus grows? (random subsets)
    rng = np.random.default_rng(SEED)
    scaling: dict[int, dict[int, float]] = {}
    for size in [s for s in (2500, 5000, 10000, 20000) if s < n] + [n]:
        sub = np.sort(rng.choice(n, size, replace=False)) if size < n else np.arange(n)
        m = docs[sub]
        t = exact_top(m, qv, K)
        c = search.VectorCache("bit", np.arange(size), search.encode(m, "bit"), (0, 0))
        scaling[size] = {f: recall(quantized_top(m, c, qv, K, f), t, K) for f in (10, 20, 40, 80)}
    out["scaling_bit"] = scaling
    return out


# ---- building the latency files ----------------------------------------------------------------


def _files(work: Path, n: int) -> dict[str, Path]:
    return {
        "db": work / f"lat-{n}.db",
        "vectors": work / f"lat-{n}-vectors.npy",
        "groups": work / f"lat-{n}-groups.npy",
        "info": work / f"lat-{n}.json",
        "lc": work / f"lc-{n}.db",
        "lc_info": work / f"lc-{n}.json",
        "plain": work / f"f32-{n}.db",
    }


def _unlink_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def build_latency_file(n: int, texts: list[str], a: argparse.Namespace, work: Path) -> dict:
    """lat-N.db through Index.upsert (timed), the rest by SQL if that exceeds the budget."""
    from lokal.identity import ModelIdentity
    from lokal.index import sqlite
    from lokal.index.store import Chunk, Index

    f = _files(work, n)
    if f["info"].exists() and f["db"].exists() and not a.rebuild:
        info: dict[str, Any] = json.loads(f["info"].read_text())
        if info.get("complete"):
            return info
    _unlink_db(f["db"])
    rng = np.random.default_rng(SEED)
    vectors = np.lib.format.open_memmap(f["vectors"], mode="w+", dtype=np.float32, shape=(n, DIM))
    for start in range(0, n, 100_000):
        vectors[start : start + 100_000] = unit_rows(rng, min(100_000, n - start))
    groups = rng.integers(0, GROUPS, n).astype(np.int16)
    np.save(f["groups"], groups)

    def chunk(i: int) -> Chunk:
        return Chunk(text=texts[i % len(texts)], id=f"c{i}", metadata={"group": int(groups[i])})

    identity = ModelIdentity.external("benchmark", "search_latency", "synthetic", DIM)
    batch = 1000
    t0 = time.perf_counter()
    done, rates = 0, []
    with Index.create(f["db"], identity, quantization="float") as index:
        while done < n and time.perf_counter() - t0 < a.api_budget:
            t1 = time.perf_counter()
            stop = min(n, done + batch)
            index.upsert([chunk(i) for i in range(done, stop)], vectors[done:stop])
            rates.append((stop - done) / (time.perf_counter() - t1))
            done = stop
            if done % 100_000 == 0:
                log(
                    f"lat-{n}: {done} rows through Index.upsert in {time.perf_counter() - t0:.0f}"
                    f" s (last batch {rates[-1]:.0f} rows/s)"
                )
    api_s = time.perf_counter() - t0
    info = {
        "rows": n,
        "api_rows": done,
        "api_seconds": api_s,
        "api_rows_per_s": done / api_s if api_s else None,
        "api_last_rows_per_s": float(np.mean(rates[-20:])) if rates else None,
        "sql_rows": n - done,
        "sql_seconds": 0.0,
    }
    if done < n:
        # Same rows as Index._insert writes, in large transactions.
        t1 = time.perf_counter()
        conn = sqlite.connect(f["db"])
        try:
            next_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchone()[0]) + 1
            for start in range(done, n, 50_000):
                stop = min(n, start + 50_000)
                ids = range(next_id + start - done, next_id + stop - done)
                with sqlite.write(conn):
                    conn.executemany(
                        "INSERT INTO chunks (id, chunk_id, document_id, ordinal, text, metadata) "
                        "VALUES (?, ?, NULL, 0, ?, ?)",
                        (
                            (
                                rid,
                                f"c{i}",
                                texts[i % len(texts)],
                                json.dumps({"group": int(groups[i])}),
                            )
                            for rid, i in zip(ids, range(start, stop), strict=True)
                        ),
                    )
                    conn.executemany(
                        "INSERT INTO chunks_vec (rowid, embedding) VALUES (?, ?)",
                        (
                            (rid, vectors[i].tobytes())
                            for rid, i in zip(ids, range(start, stop), strict=True)
                        ),
                    )
                    conn.executemany(
                        "INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)",
                        (
                            (rid, texts[i % len(texts)])
                            for rid, i in zip(ids, range(start, stop), strict=True)
                        ),
                    )
                log(
                    f"lat-{n}: {stop} rows ({stop - done} by SQL in "
                    f"{time.perf_counter() - t1:.0f} s)"
                )
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        info["sql_seconds"] = time.perf_counter() - t1
    vectors.flush()
    del vectors
    info["file_mb"] = f["db"].stat().st_size / 2**20
    info["complete"] = True
    f["info"].write_text(json.dumps(info))
    return info


class _Precomputed:
    """A LangChain ``Embeddings`` that hands out vectors computed elsewhere."""

    def __init__(self) -> None:
        self.pending: np.ndarray = np.zeros((0, DIM), dtype=np.float32)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        assert len(texts) == len(self.pending)
        return self.pending.tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return [0.0] * DIM


def _langchain_store(path: Path, embeddings: Any) -> Any:
    from langchain_community.vectorstores import SQLiteVec
    from langchain_core.embeddings import Embeddings

    from lokal.index import sqlite

    class Adapter(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embeddings.embed_documents(texts)  # type: ignore[no-any-return]

        def embed_query(self, text: str) -> list[float]:
            return embeddings.embed_query(text)  # type: ignore[no-any-return]

    # SQLiteVec's own create_connection needs stdlib sqlite3 with extension loading, which this
    # Python lacks; give it the connection lokal would use (sqlite-vec loaded), rows by name.
    conn = sqlite.connect(path)
    conn.row_factory = sqlite.sqlite_module(path).Row
    return conn, SQLiteVec(table="langchain", connection=conn, embedding=Adapter())


def build_langchain_file(n: int, texts: list[str], a: argparse.Namespace, work: Path) -> dict:
    f = _files(work, n)
    if f["lc_info"].exists() and f["lc"].exists() and not a.rebuild:
        info: dict[str, Any] = json.loads(f["lc_info"].read_text())
        return info
    _unlink_db(f["lc"])
    vectors = np.load(f["vectors"], mmap_mode="r")
    groups = np.load(f["groups"])
    emb = _Precomputed()
    conn, store = _langchain_store(f["lc"], emb)
    t0 = time.perf_counter()
    try:
        for start in range(0, n, 10_000):
            stop = min(n, start + 10_000)
            emb.pending = np.asarray(vectors[start:stop])
            conn.execute("BEGIN")  # add_texts commits
            store.add_texts(
                [texts[i % len(texts)] for i in range(start, stop)],
                metadatas=[{"group": int(groups[i])} for i in range(start, stop)],
            )
            if stop % 200_000 == 0:
                log(f"lc-{n}: {stop} rows through SQLiteVec.add_texts")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    seconds = time.perf_counter() - t0
    info = {"rows": n, "seconds": seconds, "rows_per_s": n / seconds}
    info["file_mb"] = f["lc"].stat().st_size / 2**20
    f["lc_info"].write_text(json.dumps(info))
    return info


def set_quantization(db: Path, mode: str) -> None:
    from lokal.index import sqlite

    conn = sqlite.connect(db)
    try:
        with sqlite.write(conn):
            conn.execute("UPDATE lokal_meta SET value = ? WHERE key = 'quantization'", (mode,))
    finally:
        conn.close()


# ---- one engine, in a child process ------------------------------------------------------------


def timed(
    fn: Callable[[np.ndarray], Any], queries: np.ndarray, budget: float, min_n: int
) -> list[float]:
    """Per-query seconds, until all queries ran or ``budget`` seconds passed (min ``min_n``)."""
    times: list[float] = []
    t_end = time.perf_counter() + budget
    for i, q in enumerate(queries):
        if i >= min_n and time.perf_counter() > t_end:
            break
        t = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t)
    return times


def stats(times: list[float]) -> dict[str, Any]:
    return {"p50": pct(times, 50), "p95": pct(times, 95), "n": len(times)}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    engine, db = spec["engine"], Path(spec["db"])
    qs = query_vectors(spec["queries"] + WARM + 1)
    first_q, warm_q, qs = qs[0], qs[1 : 1 + WARM], qs[1 + WARM :]
    budget, min_n = spec["budget"], spec["min_queries"]
    out: dict[str, Any] = {"engine": engine, "rss_start_mb": rss_mb()}
    filtered: Callable[[np.ndarray], Any] | None = None

    if engine.startswith("load-"):
        from lokal.index import search, sqlite

        conn = sqlite.connect(db, readonly=True)
        mode = engine.split("-", 1)[1]
        t = time.perf_counter()
        rowids, data = stream_load(conn, DIM, mode)
        out["seconds"] = time.perf_counter() - t
        out["rss_loaded_mb"] = rss_mb()
        out["peak_mb"] = peak_rss_mb()
        out["data_mb"] = (data.nbytes + rowids.nbytes) / 2**20
        if spec.get("check"):
            cache = search.VectorCache.load(conn, DIM, mode, (0, 0))
            out["same_as_lokal"] = bool(
                np.array_equal(cache.rowids, rowids) and np.array_equal(cache.data, data)
            )
        return out

    if engine.startswith("lokal-"):
        from lokal.index.store import Index

        index = Index.open(db)
        assert index.quantization == engine.split("-", 1)[1], index.quantization

        def plain(q: np.ndarray) -> Any:
            return index.search(q, K)

        def filtered(q: np.ndarray) -> Any:
            return index.search(q, K, filter=FILTER)

    elif engine == "numpy":
        matrix = np.load(spec["vectors"])
        groups = np.load(spec["groups"])
        wanted = np.asarray(FILTER_GROUPS, dtype=groups.dtype)

        def plain(q: np.ndarray) -> Any:
            return numpy_topk(matrix, q, K)

        def filtered(q: np.ndarray) -> Any:
            rows = np.flatnonzero(np.isin(groups, wanted))
            return rows[numpy_topk(matrix[rows], q, K)]

    elif engine == "vec0":
        from lokal.index import sqlite
        from lokal.index.filters import compile_filter

        conn = sqlite.connect(db, readonly=True)
        where, params = compile_filter(FILTER)
        knn = "SELECT rowid, distance FROM chunks_vec WHERE embedding MATCH ? AND k = ?"
        knn_f = f"{knn} AND rowid IN (SELECT c.id FROM chunks c WHERE {where})"

        def plain(q: np.ndarray) -> Any:
            return conn.execute(knn, (q.tobytes(), K)).fetchall()

        def filtered(q: np.ndarray) -> Any:
            return conn.execute(knn_f, [q.tobytes(), K, *params]).fetchall()

    elif engine == "langchain":
        try:
            conn, store = _langchain_store(db, _Precomputed())
        except ImportError as exc:
            return {"engine": engine, "skipped": f"not installed ({exc})"}

        def plain(q: np.ndarray) -> Any:
            return store.similarity_search_with_score_by_vector(q.tolist(), k=K)

    else:
        msg = f"unknown engine {engine}"
        raise ValueError(msg)

    t = time.perf_counter()
    plain(first_q)
    out["first_s"] = time.perf_counter() - t
    out["rss_loaded_mb"] = rss_mb()
    for q in warm_q:
        plain(q)
    out["plain"] = stats(timed(plain, qs, budget, min_n))
    if filtered is not None:
        t = time.perf_counter()
        filtered(first_q)
        out["first_filtered_s"] = time.perf_counter() - t
        out["filtered"] = stats(timed(filtered, qs, budget, min_n))
    out["rss_end_mb"] = rss_mb()
    out["peak_mb"] = peak_rss_mb()
    out["load_avg_1m"] = os.getloadavg()[0]  # the machine's load while this engine ran

    if engine.startswith("lokal-"):
        out["diagnostics"] = lokal_diagnostics(spec, index, plain, filtered, qs)
    return out


def stream_load(conn: Any, dim: int, quantization: str) -> tuple[np.ndarray, np.ndarray]:
    """A prototype of a faster, leaner cache load (not lokal's code): read sqlite-vec 0.1.9's
    own storage, one chunk of rows at a time (a blob of vectors, a validity bitmap and the
    rowids per chunk), normalizing and encoding each chunk straight into a preallocated array,
    instead of ``SELECT rowid, embedding FROM chunks_vec`` (one blob read per row) fetched
    whole. Gives the same rowids and data as ``VectorCache.load`` (checked by the test run)."""
    from lokal.index import search

    n = int(conn.execute("SELECT count(*) FROM chunks_vec_rowids").fetchone()[0])
    rowids = np.empty(n, dtype=np.int64)
    data: np.ndarray | None = None
    at = 0
    chunks = conn.execute(
        "SELECT c.size, c.validity, c.rowids, (SELECT v.vectors FROM "
        "chunks_vec_vector_chunks00 v WHERE v.rowid = c.chunk_id) FROM chunks_vec_chunks c "
        "ORDER BY c.chunk_id"
    )
    for size, validity, rids, vectors in chunks:
        bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")
        valid = bits[:size].astype(bool)
        block = np.frombuffer(vectors, np.float32).reshape(-1, dim)[:size][valid]
        encoded = search.encode(search.normalize(block), quantization)
        if data is None:
            data = np.empty((n, *encoded.shape[1:]), dtype=encoded.dtype)
        data[at : at + len(encoded)] = encoded
        rowids[at : at + len(encoded)] = np.frombuffer(rids, np.int64)[:size][valid]
        at += len(encoded)
    assert data is not None
    rowids, data = rowids[:at], data[:at]
    if np.any(np.diff(rowids) < 0):
        order = np.argsort(rowids, kind="stable")
        rowids, data = rowids[order], data[order]
    return rowids, data


def _median_ms(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return pct(times, 50)


def lokal_diagnostics(
    spec: dict[str, Any],
    index: Any,
    plain: Callable[[np.ndarray], Any],
    filtered: Callable[[np.ndarray], Any] | None,
    qs: np.ndarray,
) -> dict[str, Any]:
    """Where a lokal search spends its time (run after the memory figures are taken)."""
    from lokal.index import search, sqlite, vectors
    from lokal.index.filters import compile_filter

    mode = index.quantization
    d: dict[str, Any] = {}
    conn = sqlite.connect(spec["db"], readonly=True)
    n_q = min(len(qs), 20)
    n = int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
    # 1. the SQL filter alone (Index._filtered_rowids runs it on every filtered search)
    where, params = compile_filter(FILTER)
    sql = f"SELECT c.id FROM chunks c WHERE {where}"
    d["filter_sql_ms"] = _median_ms(lambda: conn.execute(sql, params).fetchall(), 5)
    # 2. the in-memory scan with lokal's own functions, on a copy built from the .npy
    matrix = search.normalize(np.load(spec["vectors"]))
    cache = search.VectorCache(mode, np.arange(1, n + 1), search.encode(matrix, mode), (0, 0))
    del matrix
    want = K * search.OVERSAMPLE[mode]

    def scan(q: np.ndarray, pos: np.ndarray | None = None) -> Any:
        return search.top_positions(search.approximate_scores(cache, q, pos), want)

    it = iter(np.resize(qs, (max(n_q, 1), DIM)))
    d["scan_ms"] = _median_ms(lambda: scan(next(it)), n_q)
    if mode == "int8":  # the same scan with smaller conversion blocks
        block = vectors._BLOCK
        vectors._BLOCK = 2048
        it = iter(np.resize(qs, (max(n_q, 1), DIM)))
        d["scan_ms_block_2048"] = _median_ms(lambda: scan(next(it)), n_q)
        vectors._BLOCK = block
    groups = np.load(spec["groups"])
    rows = np.flatnonzero(np.isin(groups, FILTER_GROUPS)) + 1
    it = iter(np.resize(qs, (max(n_q, 1), DIM)))
    d["scan_filtered_ms"] = _median_ms(lambda: scan(next(it), cache.positions(rows)), n_q)
    # 3. rescoring: one SELECT per candidate (Index._float_vectors), vs a plain rowid table
    if mode != "float":
        rng = np.random.default_rng(SEED)

        def lookups(c: Any, sql: str) -> None:
            for r in rng.integers(1, n + 1, want):
                c.execute(sql, (int(r),)).fetchone()

        vec_sql = "SELECT embedding FROM chunks_vec WHERE rowid = ?"
        d["rescore_lookups_ms"] = _median_ms(lambda: lookups(conn, vec_sql), 5)
        plain_db = Path(spec["plain_db"])
        if plain_db.exists():
            pconn = sqlite.connect(plain_db, readonly=True)
            plain_sql = "SELECT v FROM f32 WHERE id = ?"
            d["rescore_plain_table_ms"] = _median_ms(lambda: lookups(pconn, plain_sql), 5)
            pconn.close()
    # 4. a proposal for bit: rerank the k*40 candidates with an in-memory int8 copy, then
    #    fetch float vectors for the best 2k only (recall in the recall section)
    if mode == "bit":
        int8 = search.encode(search.normalize(np.load(spec["vectors"])), "int8")
        rng = np.random.default_rng(SEED)

        def two_stage(q: np.ndarray) -> None:
            cand = scan(q)
            s8 = int8[cand].astype(np.float32) @ (q * 127.0)
            keep = cand[search.top_positions(s8, 2 * K)]
            for r in keep:
                conn.execute(vec_sql, (int(r) + 1,)).fetchone()

        it = iter(np.resize(qs, (max(n_q, 1), DIM)))
        d["two_stage_ms"] = _median_ms(lambda: two_stage(next(it)), n_q)
        del int8
    conn.close()
    cache.data = cache.data[:0]  # free it before loading the numpy matrix
    # 5. paired with numpy on the same queries, interleaved (robust to load drift)
    matrix = np.load(spec["vectors"])
    wanted = np.asarray(FILTER_GROUPS, dtype=groups.dtype)
    ratios, ratios_f = [], []
    t_end = time.perf_counter() + spec["budget"] / 2
    for i, q in enumerate(qs):
        if i >= spec["min_queries"] // 2 and time.perf_counter() > t_end:
            break
        t = time.perf_counter()
        plain(q)
        t_l = time.perf_counter() - t
        t = time.perf_counter()
        numpy_topk(matrix, q, K)
        ratios.append(t_l / (time.perf_counter() - t))
        if filtered is not None:
            t = time.perf_counter()
            filtered(q)
            t_l = time.perf_counter() - t
            t = time.perf_counter()
            sel = np.flatnonzero(np.isin(groups, wanted))
            numpy_topk(matrix[sel], q, K)
            ratios_f.append(t_l / (time.perf_counter() - t))
    d["paired_ratio"] = float(np.median(ratios))
    d["paired_ratio_filtered"] = float(np.median(ratios_f)) if ratios_f else None
    d["paired_n"] = len(ratios)
    return d


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        return {"engine": spec["engine"], "skipped": f"crashed (exit {proc.returncode}): {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# ---- the parent --------------------------------------------------------------------------------


def build_plain_table(n: int, a: argparse.Namespace, work: Path) -> None:
    """The same float32 vectors in an ordinary rowid table (a separate file), to time the
    rescoring lookups against it."""
    from lokal.index import sqlite

    path = _files(work, n)["plain"]
    if path.exists() and not a.rebuild:
        return
    _unlink_db(path)
    vectors = np.load(_files(work, n)["vectors"], mmap_mode="r")
    conn = sqlite.connect(path)
    try:
        conn.execute("CREATE TABLE f32 (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        for start in range(0, n, 50_000):
            stop = min(n, start + 50_000)
            with sqlite.write(conn):
                conn.executemany(
                    "INSERT INTO f32 VALUES (?, ?)",
                    ((i + 1, vectors[i].tobytes()) for i in range(start, stop)),
                )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def covering_index_experiment(db: Path) -> dict[str, Any]:
    """The SQL filter with and without an index on chunks(metadata) that covers it (the index
    is dropped afterwards)."""
    from lokal.index import sqlite
    from lokal.index.filters import compile_filter

    where, params = compile_filter(FILTER)
    sql = f"SELECT c.id FROM chunks c WHERE {where}"
    conn = sqlite.connect(db)
    out: dict[str, Any] = {}
    try:
        out["filter_sql_ms"] = _median_ms(lambda: conn.execute(sql, params).fetchall(), 5)
        t = time.perf_counter()
        conn.execute("CREATE INDEX bench_chunks_metadata ON chunks(metadata)")
        out["index_build_s"] = time.perf_counter() - t
        plan = " ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        out["uses_covering_index"] = "COVERING INDEX" in plan
        out["filter_sql_covering_ms"] = _median_ms(lambda: conn.execute(sql, params).fetchall(), 5)
    finally:
        conn.execute("DROP INDEX IF EXISTS bench_chunks_metadata")
        conn.close()
    return out


def run_latency(n: int, texts: list[str], a: argparse.Namespace, work: Path) -> dict[str, Any]:
    f = _files(work, n)
    log(f"size {n}: building (or reusing) {f['db']}")
    build = build_latency_file(n, texts, a, work)
    log(f"size {n}: build {build}")
    result: dict[str, Any] = {"size": n, "build": build, "engines": {}}
    engines = [e for e in ENGINES if not (e == "langchain" and "langchain" in a.skip)]
    if "langchain" in engines:
        try:
            result["build_langchain"] = build_langchain_file(n, texts, a, work)
        except ImportError as exc:
            result["build_langchain"] = {"skipped": f"langchain-community not installed: {exc}"}
            engines.remove("langchain")
    build_plain_table(n, a, work)
    if a.build_only:
        return result
    spec = {
        "plain_db": str(f["plain"]),
        "db": str(f["db"]),
        "vectors": str(f["vectors"]),
        "groups": str(f["groups"]),
        "queries": a.queries,
        "budget": a.budget,
        "min_queries": a.min_queries,
    }
    try:
        for engine in engines:
            if engine.startswith("lokal-"):
                set_quantization(f["db"], engine.split("-", 1)[1])
            db = f["lc"] if engine == "langchain" else f["db"]
            log(f"size {n}: {engine}")
            r = run_child({**spec, "engine": engine, "db": str(db)})
            log(f"size {n}: {engine}: {json.dumps(r)}")
            result["engines"][engine] = r
    finally:
        set_quantization(f["db"], "float")
    result["load"] = {}
    for mode in MODES:
        log(f"size {n}: prototype load, {mode}")
        result["load"][mode] = run_child({**spec, "engine": f"load-{mode}", "check": n <= 100_000})
    result["covering_index"] = covering_index_experiment(f["db"])
    log(f"size {n}: covering index: {result['covering_index']}")
    return result


def fmt(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def latency_table(res: dict[str, Any]) -> str:
    head = (
        "| engine | first search (s) | p50 ms | p95 ms | n | filtered p50 ms | filtered p95 ms |"
        " RSS loaded MB | peak RSS MB | paired vs numpy (filtered) | load avg |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for engine, r in res["engines"].items():
        if "skipped" in r:
            rows.append(f"| {engine} | skipped: {r['skipped']} ||||||||||")
            continue
        p, flt = r["plain"], r.get("filtered")
        d = r.get("diagnostics", {})
        paired = (
            f"{d['paired_ratio']:.2f}x ({fmt(d.get('paired_ratio_filtered'), '.2f')}x)" if d else ""
        )
        rows.append(
            f"| {engine} | {r['first_s']:.2f} | {p['p50']:.1f} | {p['p95']:.1f} | {p['n']} | "
            f"{fmt(flt and flt['p50'])} | {fmt(flt and flt['p95'])} | {r['rss_loaded_mb']:.0f} |"
            f" {r['peak_mb']:.0f} | {paired} | {fmt(r.get('load_avg_1m'))} |"
        )
    return head + "\n".join(rows)


def diagnostics_table(res: dict[str, Any]) -> str:
    head = (
        "| mode | SQL filter ms | in-memory scan ms | scan, filtered rows ms | "
        "rescoring: vec0 lookups ms | rescoring: plain table ms | bit -> int8 -> 2k floats ms "
        "|\n|---|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for engine, r in res["engines"].items():
        d = r.get("diagnostics")
        if not d:
            continue
        scan = f"{d['scan_ms']:.1f}"
        if "scan_ms_block_2048" in d:
            scan += f" (block 2048: {d['scan_ms_block_2048']:.1f})"
        rows.append(
            f"| {engine} | {d['filter_sql_ms']:.0f} | {scan} | {d['scan_filtered_ms']:.1f} | "
            f"{fmt(d.get('rescore_lookups_ms'), '.0f')} | "
            f"{fmt(d.get('rescore_plain_table_ms'), '.0f')} | {fmt(d.get('two_stage_ms'))} |"
        )
    ci = res.get("covering_index")
    tail = ""
    if ci:
        tail = (
            f"\n\nSQL filter ({FILTER}) alone: {ci['filter_sql_ms']:.0f} ms; with an index on "
            f"chunks(metadata) (built in {ci['index_build_s']:.1f} s, covering: "
            f"{ci['uses_covering_index']}): {ci['filter_sql_covering_ms']:.0f} ms."
        )
    return head + "\n".join(rows) + tail


def load_table(res: dict[str, Any]) -> str:
    head = (
        "| mode | lokal: first search (s) | lokal: peak RSS MB | lokal: RSS after MB | "
        "prototype stream_load (s) | prototype: peak RSS MB | data MB | same result |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for mode, p in res.get("load", {}).items():
        r = res["engines"].get(f"lokal-{mode}", {})
        if "skipped" in p or "first_s" not in r:
            continue
        rows.append(
            f"| {mode} | {r['first_s']:.1f} | {r['peak_mb']:.0f} | {r['rss_loaded_mb']:.0f} | "
            f"{p['seconds']:.1f} | {p['peak_mb']:.0f} | {p['data_mb']:.0f} | "
            f"{p.get('same_as_lokal', 'not checked')} |"
        )
    return head + "\n".join(rows)


def recall_tables(rec: dict[str, Any]) -> str:
    sources = ", ".join(f"{k}: {v}" for k, v in rec["sources"].items())
    lines = [
        f"Corpus: {rec['corpus']} real texts; {rec['queries']} held-out queries (the first "
        "sentence of texts not in the corpus). Where all the texts come from: "
        f"{sources}. "
        f"Embedding: {rec['embedding'].get('model')}, "
        f"{rec['embedding'].get('embed_seconds', 0):.0f} s, "
        f"{rec['embedding'].get('truncated')} texts cut at the model's context.",
        "",
        "| mode | oversample (candidates = k x) | recall@10 | recall@10 filtered (10%) |",
        "|---|---:|---:|---:|",
    ]
    for mode, r in rec["index"].items():
        lines.append(
            f"| {mode} | {r['oversample']} | {r['recall']:.3f} | {r['recall_filtered']:.3f} |"
        )
    lines += ["", "Offline sweep (lokal's encoding and candidate ranking, float rescoring):", ""]
    for mode, sweep in rec["sweep"].items():
        lines.append(f"| {mode} oversample | " + " | ".join(str(f) for f in sweep) + " |")
        lines.append("|---|" + "---:|" * len(sweep))
        lines.append("| recall@10 | " + " | ".join(f"{v:.3f}" for v in sweep.values()) + " |")
        lines.append("")
    ts = rec.get("two_stage")
    if ts:
        lines.append("Proposal: bit candidates reranked by an int8 copy, 2k float lookups:")
        lines.append("")
        lines.append("| bit oversample | " + " | ".join(str(f) for f in ts) + " |")
        lines.append("|---|" + "---:|" * len(ts))
        lines.append("| recall@10 | " + " | ".join(f"{v:.3f}" for v in ts.values()) + " |")
        lines.append("")
    lines.append(
        "Depth of the true top-10 in the approximate ranking (worst rank per query, over "
        f"{rec['corpus']} rows):"
    )
    lines += ["", "| mode | p50 | p90 | p95 | max |", "|---|---:|---:|---:|---:|"]
    for mode, d in rec["depth"].items():
        lines.append(f"| {mode} | {d['p50']:.0f} | {d['p90']:.0f} | {d['p95']:.0f} | {d['max']} |")
    lines += ["", "bit recall@10 by corpus size (random subsets) and oversample:", ""]
    sizes = list(rec["scaling_bit"])
    factors = list(next(iter(rec["scaling_bit"].values())))
    lines.append("| rows | " + " | ".join(f"x{f}" for f in factors) + " |")
    lines.append("|---:|" + "---:|" * len(factors))
    for s in sizes:
        vals = rec["scaling_bit"][s]
        lines.append(f"| {s} | " + " | ".join(f"{vals[f]:.3f}" for f in factors) + " |")
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[str]:
    lines = []
    by_size = {r["size"]: r for r in results.get("latency", [])}
    rec = results.get("recall")

    def ok(cond: bool) -> str:
        return "PASS" if cond else "FAIL"

    r100 = by_size.get(100_000)
    if r100:
        lf, npy = r100["engines"].get("lokal-float", {}), r100["engines"].get("numpy", {})
        if "plain" in lf and "plain" in npy:
            ratio = lf["plain"]["p50"] / npy["plain"]["p50"]
            paired = lf["diagnostics"]["paired_ratio"]
            lines.append(
                f"{ok(ratio <= TARGETS['ratio_100k'])}: exact (lokal float) at 100k within 1.5x of "
                f"numpy: p50 {lf['plain']['p50']:.1f} / {npy['plain']['p50']:.1f} ms = "
                f"{ratio:.2f}x "
                f"(paired, interleaved: {paired:.2f}x)"
            )
            ratio_f = lf["filtered"]["p50"] / npy["filtered"]["p50"]
            lines.append(
                f"{ok(ratio_f <= TARGETS['ratio_100k'])}: same, filtered (10%): "
                f"{lf['filtered']['p50']:.1f} / {npy['filtered']['p50']:.1f} ms = {ratio_f:.2f}x"
            )
        for engine in ("lokal-float", "lokal-int8", "lokal-bit"):
            r = r100["engines"].get(engine, {})
            if "plain" in r:
                lines.append(
                    f"{ok(r['plain']['p50'] <= TARGETS['p50_100k_ms'])}: 100k p50 <= 20 ms, "
                    f"{engine}: {r['plain']['p50']:.1f} ms (filtered: "
                    f"{r['filtered']['p50']:.1f} ms, "
                    f"{ok(r['filtered']['p50'] <= TARGETS['p50_100k_ms'])})"
                )
    r1m = by_size.get(1_000_000)
    if r1m:
        for engine in ("lokal-float", "lokal-int8", "lokal-bit"):
            r = r1m["engines"].get(engine, {})
            if "plain" not in r:
                continue
            mode = engine.split("-", 1)[1]
            rc = rec["index"][mode]["recall"] if rec else None
            over = rec["index"][mode]["oversample"] if rec else "?"
            good = r["plain"]["p50"] <= TARGETS["p50_1m_ms"] and rc is not None and rc >= 0.95
            lines.append(
                f"{ok(good)}: 1M p50 <= 150 ms with recall@10 >= 0.95, {engine} (oversample "
                f"{over}): p50 {r['plain']['p50']:.1f} ms, recall@10 {fmt(rc, '.3f')} "
                f"(at {rec['corpus'] if rec else '?'} real rows); filtered p50 "
                f"{r['filtered']['p50']:.1f} ms; peak RSS {r['peak_mb']:.0f} MB"
            )
    return lines


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    parts = [
        f"Machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM; Python {m['python']},"
        f" numpy {m['numpy']}, sqlite-vec {m['sqlite_vec']}, {m['sqlite']}; load average at "
        f"start {', '.join(f'{x:.1f}' for x in m['load_avg'])}.",
        f"Command: {results['command']}  ({results['date']}, {results['seconds']:.0f} s)",
    ]
    for res in results.get("latency", []):
        b = res["build"]
        how = (
            f"{b['api_rows']} rows through Index.upsert in {b['api_seconds']:.0f} s "
            f"({fmt(b['api_rows_per_s'], '.0f')} rows/s"
        )
        how += f", last batches {fmt(b['api_last_rows_per_s'], '.0f')} rows/s)"
        if b["sql_rows"]:
            how += f", then {b['sql_rows']} rows by SQL in {b['sql_seconds']:.0f} s"
        lc = res.get("build_langchain", {})
        lc_s = f"; SQLiteVec.add_texts: {lc['seconds']:.0f} s" if "seconds" in lc else ""
        parts += [
            "",
            f"### {res['size']:,} chunks x {DIM} dims, k={K}",
            "",
            f"Build: {how}; file {b.get('file_mb', 0):.0f} MB{lc_s}.",
            "",
            latency_table(res),
            "",
            diagnostics_table(res),
            "",
            load_table(res),
        ]
    if results.get("cold_open"):
        from _cold_open import cold_open_table

        parts += ["", "### Cold open: the first search in a new process", ""]
        parts += [cold_open_table(results["cold_open"])]
    if results.get("recall"):
        parts += ["", "### Recall@10 on real embeddings", "", recall_tables(results["recall"])]
    parts += ["", "### Targets", "", *(f"- {t}" for t in targets(results))]
    return "\n".join(parts)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated row counts")
    p.add_argument("--quick", action="store_true", help="10k and 100k, 30 queries, short budgets")
    p.add_argument("--queries", type=int, default=100, help="timed queries per engine (100)")
    p.add_argument("--min-queries", type=int, default=20, help="even past the budget (20)")
    p.add_argument("--budget", type=float, default=60.0, help="seconds per engine and variant")
    p.add_argument("--corpus", type=int, default=24000, help="real texts for recall (24000)")
    p.add_argument("--recall-queries", type=int, default=200)
    p.add_argument(
        "--embed-threads", type=int, help="llama.cpp threads (default: lokal's; 1 on a busy box)"
    )
    p.add_argument("--api-budget", type=float, default=600.0, help="seconds of Index.upsert")
    p.add_argument("--skip", default="", help="any of: langchain,recall,latency,coldopen")
    p.add_argument(
        "--cold-sizes", default="100000,1000000", help="row counts of the cold-open rows"
    )
    p.add_argument("--cold-samples", type=int, default=5, help="fresh processes per mode (5)")
    p.add_argument("--rebuild", action="store_true", help="rebuild cached index files")
    p.add_argument("--build-only", action="store_true", help="build the files, measure nothing")
    p.add_argument(
        "--work",
        default=os.environ.get("LOKAL_BENCH_DIR", "/tmp/lokal-search-bench"),
        help="index files, texts and embedding caches (outside the repo)",
    )
    p.add_argument("--json", help="also write all results to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.quick:
        a.sizes, a.queries, a.budget, a.min_queries = "10000,100000", 30, 15.0, 10
    a.skip = set(filter(None, a.skip.split(",")))
    return a


def main() -> None:
    a = parse_args()
    if a.child:
        warnings.simplefilter("ignore")
        print(json.dumps(child(json.loads(a.child))))
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }
    texts, _ = collect_texts(a.corpus + a.recall_queries, work)
    if "coldopen" not in a.skip:
        from _cold_open import cold_open

        sizes = [int(n) for n in a.cold_sizes.split(",") if n.strip()]
        modes = [*MODES, "auto"]
        results["cold_open"] = cold_open(sizes, modes, a.cold_samples, work, rebuild=a.rebuild)
    if "recall" not in a.skip:
        results["recall"] = run_recall(a, work)
    if "latency" not in a.skip:
        results["latency"] = [
            run_latency(int(n), texts, a, work) for n in a.sizes.split(",") if n.strip()
        ]
    results["seconds"] = time.perf_counter() - t0
    text = report(results)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
