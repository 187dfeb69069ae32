"""The search copy's scan kernels side by side: numpy against NumKong for float, int8 and bit.

One query scored against every row of a copy of random unit vectors (384 dims), the engines
interleaved query by query in one process (a load change on a shared machine hits all alike);
p50 per scan and the ratio to numpy's float scan (lokal's exact copy). NumKong's int8 and
bit scores equal numpy's exactly (tests/test_index_vectors.py).

    .venv/bin/python benchmarks/scan_kernels.py [--sizes 100000,1000000] [--queries 30]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

DIM = 384


def kernels(n: int, rng: np.random.Generator) -> dict[str, Callable[[np.ndarray], object]]:
    import numkong as nk

    from lokal.index import vectors

    f = rng.standard_normal((n, DIM), dtype=np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    i8, bits = vectors.encode(f, "int8"), vectors.encode(f, "bit")
    block = 65_536

    def numpy_int8(q: np.ndarray) -> object:
        out = np.empty(n, dtype=np.float32)
        for s in range(0, n, block):
            out[s : s + block] = i8[s : s + block].astype(np.float32) @ (q * 127.0)
        return out

    def numpy_bit(q: np.ndarray) -> object:
        x = np.bitwise_xor(bits.view(np.uint64), np.packbits(q > 0).view(np.uint64))
        return np.bitwise_count(x).sum(axis=1, dtype=np.int32)

    return {
        "float numpy": lambda q: f @ q,
        "float numkong": lambda q: nk.cdist(f, q[None, :], "dot", out_dtype="float32"),
        "int8 numpy": numpy_int8,
        "int8 numkong": lambda q: nk.cdist(
            i8, vectors.encode(q[None, :], "int8"), "dot", out_dtype="float32"
        ),
        "bit numpy": numpy_bit,
        "bit numkong": lambda q: nk.cdist(
            bits, np.packbits(q > 0)[None, :], "hamming", dtype="uint1", out_dtype="float32"
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--queries", type=int, default=30)
    a = p.parse_args()
    rng = np.random.default_rng(20240611)
    print(f"load average at start {os.getloadavg()[0]:.1f}")
    print("| rows | kernel | p50 ms / scan | vs float numpy |")
    print("|---:|---|---:|---:|")
    for n in (int(s) for s in a.sizes.split(",")):
        ks = kernels(n, rng)
        times: dict[str, list[float]] = {k: [] for k in ks}
        queries = rng.standard_normal((a.queries + 1, DIM), dtype=np.float32)
        for i, q in enumerate(queries / np.linalg.norm(queries, axis=1, keepdims=True)):
            for name, fn in ks.items():
                t0 = time.perf_counter()
                fn(q)
                if i:  # the first query warms every kernel up
                    times[name].append(time.perf_counter() - t0)
        base = float(np.median(times["float numpy"]))
        for name, ts in times.items():
            p50 = float(np.median(ts))
            print(f"| {n:,} | {name} | {p50 * 1000:.1f} | {base / p50:.2f}x |")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
