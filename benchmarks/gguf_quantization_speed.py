"""GGUF quantizations of the embedded default, through lokal's own Embedder, on one text set.

Packs each quantization into lokal's model cache if missing (lokal models pack), embeds the
same 150 passages of ~200 tokens (Python's language reference) twice and prints the faster
run's tokens/s. A quick check of which quantization a CPU runs fastest; `lokal bench` is the
full tool (load time, peak memory, several text sets).

    .venv/bin/python benchmarks/gguf_quantization_speed.py q8_0 f16 [q4_0 ...]
"""

from __future__ import annotations

import sys
import time
from pydoc_data.topics import topics

from lokal import models, packing
from lokal.embedder import Embedder


def main() -> None:
    text = " ".join(topics[k] for k in sorted(topics))
    passages = [text[i : i + 700] for i in range(0, 700 * 150, 700)]
    print("| quantization | tokens/s |\n|---|---:|")
    for q in sys.argv[1:] or ["q8_0", "f16"]:
        path = models.cached_gguf_path("all-MiniLM-L6-v2", q)
        if not path.exists():
            path = packing.pack("all-MiniLM-L6-v2", quantization=q).path
        e = Embedder(str(path))
        e.embed_documents(passages[:8])
        best = 0.0
        for _ in range(2):
            start = time.perf_counter()
            r = e.embed_documents(passages)
            best = max(best, sum(r.token_counts) / (time.perf_counter() - start))
        print(f"| {q} | {best:,.0f} |")


if __name__ == "__main__":
    main()
