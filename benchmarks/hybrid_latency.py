"""What hybrid search's depth costs: Index.hybrid_search at the old depth (20 candidates per
ranking for k=5) against the new default (100), and plain vector and full-text search, on one
index of real text, interleaved in rounds.

The chunks are paragraphs of this machine's manual pages (real words for FTS5); the vectors
are random unit vectors (only the time is measured here, not the quality: for that see
benchmarks/hybrid_fusion.py). Questions are manual-page descriptions.

    python benchmarks/hybrid_latency.py [--chunks 50000] [--quantization float] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _machine import machine_busy_s

from lokal.identity import ModelIdentity
from lokal.index import Chunk, Index

DIM = 384


def paragraphs(n: int) -> list[str]:
    out: list[str] = []
    pages = sorted(p for p in Path("/usr/share/man/man1").glob("*.gz") if "gcloud" not in p.name)
    for page in pages:
        try:
            text = gzip.decompress(page.read_bytes()).decode("utf-8", "replace")
        except (OSError, EOFError):
            continue
        text = re.sub(r"\\f.|\\-|^\.\S+", " ", text, flags=re.M)
        for block in re.split(r"\n\s*\n|\n\.(?:PP|TP|SH)", text):
            words = block.split()
            if len(words) >= 12:
                out.append(" ".join(words[:200]))
                if len(out) >= n:
                    return out
    while len(out) < n:  # a small machine: the same texts again
        out.extend(out[: n - len(out)])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=50_000)
    ap.add_argument("--quantization", default="float", choices=("float", "int8", "bit"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--queries", type=int, default=40)
    args = ap.parse_args(argv)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.chunks} chunks, "
          f"{args.quantization}")  # fmt: skip
    texts = paragraphs(args.chunks)
    rng = np.random.default_rng(0)
    identity = ModelIdentity.external("bench", "Random", "all-MiniLM-L6-v2", DIM)
    questions = random.Random(0).sample(texts, args.queries)
    questions = [" ".join(q.split()[:8]) for q in questions]
    qvecs = rng.standard_normal((args.queries, DIM)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        with Index.create(Path(tmp) / "i.db", identity, quantization=args.quantization) as ix:
            for at in range(0, len(texts), 5000):
                batch = texts[at : at + 5000]
                v = rng.standard_normal((len(batch), DIM)).astype(np.float32)
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                ix.upsert([Chunk(t, id=str(at + i)) for i, t in enumerate(batch)], v)
            ix.search(qvecs[0], 5)  # load the search copy
            runs: dict[str, Callable[[int], object]] = {
                "vector k=5": lambda i: ix.search(qvecs[i], 5),
                "text k=5": lambda i: ix.text_search(questions[i], 5),
                "hybrid k=5, depth 20 (before)": lambda i: ix.hybrid_search(
                    qvecs[i], questions[i], 5, fetch_k=20
                ),
                "hybrid k=5, depth 100 (now)": lambda i: ix.hybrid_search(
                    qvecs[i], questions[i], 5
                ),
            }
            times: dict[str, list[float]] = {name: [] for name in runs}
            start, busy = time.monotonic(), machine_busy_s()
            for _ in range(args.rounds):
                for name, fn in runs.items():
                    for i in range(args.queries):
                        t0 = time.perf_counter()
                        fn(i)
                        times[name].append((time.perf_counter() - t0) * 1000)
            wall = time.monotonic() - start
    print("| search | p50 ms | p90 ms |\n|---|---|---|")
    for name, ts in times.items():
        ts.sort()
        print(f"| {name} | {statistics.median(ts):.1f} | {ts[int(0.9 * len(ts))]:.1f} |")
    print(f"other load while measuring: {(machine_busy_s() - busy) / wall - 1:.2f} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
