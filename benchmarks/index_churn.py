"""Months of churn: does the index file stay near the size of a fresh build?

The agent's life on a box with changing logs: FILES documents of CHUNKS chunks each are
written with ``Index.replace_document`` (one transaction per document, as the agent does);
then, CYCLES times, 10% of the documents (a fixed random choice per cycle) are replaced by new
versions. After some cycles the file's size is compared with a fresh index holding the same
documents as they are then (both after a WAL checkpoint; the WAL itself is bounded by
SQLite's auto-checkpoint and not counted).

Texts are real prose (Python's language reference) and their vectors real embeddings from the
packed q8_0 GGUF of all-MiniLM-L6-v2, computed once for a pool of paragraphs and reused (the
file sizes do not depend on which text a chunk holds, and embedding is not what is measured).

Runs without lokal's compaction (its thresholds out of reach: lokal before compaction) and
with it, and prints one table:

    python benchmarks/index_churn.py [--files 200] [--chunks 3] [--cycles 50]

Needs the packed GGUF in lokal's model cache (``lokal models pack all-MiniLM-L6-v2``).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def paragraphs(n: int) -> list[str]:
    from pydoc_data.topics import topics

    out = [
        " ".join(block.split())[:800]
        for key in sorted(topics)
        for block in re.split(r"\n\s*\n", topics[key])
        if len(block.split()) >= 12
    ]
    return out[:n]


def fresh_path(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def write_all(index: Any, docs: dict[int, list[int]], texts: list[str], vectors: Any) -> None:
    for i, pool in docs.items():
        write_doc(index, i, pool, texts, vectors)


def write_doc(index: Any, i: int, pool: list[int], texts: list[str], vectors: Any) -> None:
    from lokal.index import Chunk

    chunks = [Chunk(texts[p], ordinal=j) for j, p in enumerate(pool)]
    index.replace_document(f"/srv/logs/f{i:04d}.txt", chunks, vectors[pool])


def size_after_checkpoint(index: Any) -> int:
    index._reader().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    return index.path.stat().st_size  # type: ignore[no-any-return]


def run(
    files: int, chunks: int, cycles: int, compact: bool, texts: list[str], vectors: Any, work: Path
) -> list[dict[str, str]]:
    from lokal.identity import ModelIdentity
    from lokal.index import Index, compaction

    identity = ModelIdentity.from_dict(IDENTITY)
    saved = compaction.SLOT_WASTE, compaction.PAGE_WASTE
    if not compact:
        compaction.SLOT_WASTE = compaction.PAGE_WASTE = float("inf")
    rng = random.Random(0)
    docs = {i: rng.sample(range(len(texts)), chunks) for i in range(files)}
    report_at = {c for c in (1, 10, 20, 30, 50, cycles) if c <= cycles}
    rows = []
    started = time.perf_counter()
    try:
        with Index.create(fresh_path(work / "churn.db"), identity) as index:
            write_all(index, docs, texts, vectors)
            for cycle in range(1, cycles + 1):
                for i in rng.sample(range(files), max(1, files // 10)):
                    docs[i] = rng.sample(range(len(texts)), chunks)
                    write_doc(index, i, docs[i], texts, vectors)
                if cycle not in report_at:
                    continue
                size = size_after_checkpoint(index)
                with Index.create(fresh_path(work / "fresh.db"), identity) as fresh:
                    write_all(fresh, docs, texts, vectors)
                    fresh_size = size_after_checkpoint(fresh)
                rows.append(
                    {
                        "compaction": "on" if compact else "off",
                        "cycles": str(cycle),
                        "file MB": f"{size / 1e6:.2f}",
                        "fresh build MB": f"{fresh_size / 1e6:.2f}",
                        "ratio": f"{size / fresh_size:.2f}",
                        "seconds": f"{time.perf_counter() - started:.1f}",
                    }
                )
    finally:
        compaction.SLOT_WASTE, compaction.PAGE_WASTE = saved
    return rows


IDENTITY: dict[str, Any] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=3, help="chunks per document")
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--pool", type=int, default=600, help="paragraphs embedded once")
    args = parser.parse_args()
    from lokal.embedder import Embedder

    embedder = Embedder(backend="gguf")
    texts = paragraphs(args.pool)
    vectors = embedder.embed_documents(texts).vectors
    IDENTITY.update(embedder.identity.to_dict())
    rows = []
    with tempfile.TemporaryDirectory(prefix="lokal-churn-") as tmp:
        for compact in (False, True):
            rows += run(args.files, args.chunks, args.cycles, compact, texts, vectors, Path(tmp))
    print(
        f"{args.files} documents x {args.chunks} chunks, 10% replaced per cycle, "
        f"{len(texts)} real paragraphs and embeddings"
    )
    headers = list(rows[0])
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for r in rows:
        print("| " + " | ".join(r[h] for h in headers) + " |")


if __name__ == "__main__":
    main()
