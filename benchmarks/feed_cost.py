"""The index's write path without embedding: what the change feed's triggers cost.

400 documents of 20 chunks (384-dim random vectors) written with ``replace_document``, then a
quarter of them written again (their old chunks deleted, new ones inserted): wall time, this
process's CPU time, and the file's size. Run it with the lokal you want to measure, e.g. a
checkout from before migration 3 for the "before" row:

    PYTHONPATH=/path/to/old/lokal .venv/bin/python benchmarks/feed_cost.py before
    .venv/bin/python benchmarks/feed_cost.py after
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np

from lokal.identity import ModelIdentity
from lokal.index import Chunk, Index


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "run"
    identity = ModelIdentity.external("bench", "Hand", "hand", 384)
    path = os.path.join(tempfile.mkdtemp(prefix="lokal-feed-cost-"), "w.db")
    rng = np.random.default_rng(0)
    ix = Index.create(path, identity)
    text = "The quick brown fox jumps over the lazy dog near the river bank. " * 12
    t, cpu = time.perf_counter(), time.process_time()
    for rewrite, docs in ((0, range(400)), (1, range(0, 400, 4))):
        for doc in docs:
            v = rng.standard_normal((20, 384)).astype(np.float32)
            chunks = [Chunk(text + "x" * rewrite, ordinal=i) for i in range(20)]
            ix.replace_document(f"/srv/docs/some/dir/file-{doc:05d}.txt", chunks, v)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    ix.close()
    size = os.path.getsize(path)
    os.remove(path)
    print(
        json.dumps({"run": label, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "bytes": size})
    )


if __name__ == "__main__":
    main()
