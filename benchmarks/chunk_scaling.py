r"""Chunking time against text length, for text of every shape (issue 12).

One long line of base64 (no spaces, no newlines: what a log line with an embedded attachment
looks like), prose on one line (words, no newlines), and ordinary paragraphs, chunked with the
agent's chunker over the q8_0 MiniLM GGUF tokenizer (256-token chunks, the default overlap).
For each length: wall time, tokenizer calls and characters handed to the tokenizer (the
deterministic work measure the tests check). Near-linear chunking keeps chars/len flat.

    .venv/bin/python benchmarks/chunk_scaling.py [--lengths 50000,100000,200000,1000000] [--json]
    .venv/bin/python benchmarks/chunk_scaling.py --chunker-file /tmp/before.py \
        --lengths 50000,100000,200000
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import random
import sys
import time
from collections.abc import Sequence
from typing import Any


def texts(length: int) -> dict[str, str]:
    rng = random.Random(12)
    b64 = base64.b64encode(rng.randbytes(length)).decode()[:length]
    from pydoc_data.topics import topics

    prose = "\n\n".join(topics[k] for k in sorted(topics))
    prose = (prose * (length // len(prose) + 1))[:length]
    return {"base64 line": b64, "one-line prose": " ".join(prose.split()), "paragraphs": prose}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="50000,100000,200000,1000000")
    ap.add_argument("--shapes", default="")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--chunker-file",
        help="take Chunker from this file instead (e.g. the version before: "
        "git show 7876d36:core/chunking.py > /tmp/before.py)",
    )
    args = ap.parse_args()
    from lokal import packing
    from lokal.chunking import Chunker
    from lokal.embedder import Embedder

    if args.chunker_file:
        import importlib.util

        spec = importlib.util.spec_from_file_location("chunking_before", args.chunker_file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # for its dataclasses
        spec.loader.exec_module(module)
        Chunker = module.Chunker

    packing.pack("all-MiniLM-L6-v2")
    embedder = Embedder(backend="gguf")
    calls = [0, 0]

    def count(batch: Sequence[str]) -> list[int]:
        calls[0] += 1
        calls[1] += sum(len(t) for t in batch)
        return embedder.count_tokens(batch)

    chunker = Chunker(count, embedder.context_length, prefix=embedder.profile.document_prefix)
    rows: list[dict[str, Any]] = []
    for length in (int(x) for x in args.lengths.split(",")):
        for shape, text in texts(length).items():
            if args.shapes and shape not in args.shapes.split(","):
                continue
            calls[:] = [0, 0]
            t0 = time.perf_counter()
            chunks = chunker.chunks(text)
            seconds = time.perf_counter() - t0
            row = {
                "shape": shape,
                "chars": length,
                "seconds": round(seconds, 3),
                "chunks": len(chunks),
                "tokenizer_calls": calls[0],
                "chars_tokenized_per_char": round(calls[1] / length, 2),
            }
            rows.append(row)
            if not args.json:
                print(
                    f"{shape:15} {length:>9,} chars {seconds:8.2f} s {len(chunks):6} chunks "
                    f"{calls[0]:8} calls {calls[1] / length:7.2f} chars tokenized per char",
                    flush=True,
                )
    if args.json:
        print(json.dumps({"machine": platform.machine(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
