"""Why hybrid search wins or loses: its two halves and their fusion, taken apart on eval sets.

For each BEIR set given (the make_*_eval.py scripts write them), with the default model's
cached corpus vectors (the same eval cache ``lokal eval`` uses: nothing is embedded twice):

- the vector ranking (``Index.search``) and lokal's own full-text ranking
  (``Index.text_search``, whatever the index file's tokenizer is);
- plain FTS5 rankings of the same texts in memory, one per tokenizer (``unicode61
  remove_diacritics 2``: lokal's tokenizer before migration 4; ``porter unicode61
  remove_diacritics 2``; ``trigram``), with the question's words OR-ed, and the same with the
  words in more than 5% of the texts dropped (what lokal did before);
- reciprocal rank fusion of the vector ranking with each full-text ranking, over a grid of
  candidate depths and RRF constants, and a min-max normalized score fusion;

and prints nDCG@10 for each (documents: a text's document at the rank of its best text).

    python benchmarks/hybrid_fusion.py /tmp/mp900 /tmp/debian /tmp/pydoc [--json out.json]
        [--backend sentence-transformers]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _machine import machine_busy_s

from lokal.embedder import TruncationWarning
from lokal.evaluation import data, metrics, runner
from lokal.index import search as search_module
from lokal.index import sqlite

TOKENIZERS = {
    "unicode61": "unicode61 remove_diacritics 2",
    "porter": "porter unicode61 remove_diacritics 2",
    "trigram": "trigram",
}
DEPTHS = (20, 40, 50, 100, 200)
RRF_KS = (5, 10, 20, 40, 60, 100)
COMMON = 0.05
Ranking = list[str]


def words(text: str) -> list[str]:
    return list(dict.fromkeys(w.lower() for w in re.findall(r"\w+", text)))[:64]


def quoted(ws: Sequence[str]) -> str:
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in ws)


class PlainFts:
    """One in-memory FTS5 table of the set's texts per tokenizer."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.conn = sqlite.sqlite_module().connect(":memory:")
        self.total = len(texts)
        for name, tok in TOKENIZERS.items():
            self.conn.execute(f"CREATE VIRTUAL TABLE t_{name} USING fts5(text, tokenize='{tok}')")
            self.conn.execute(f"CREATE VIRTUAL TABLE v_{name} USING fts5vocab(t_{name}, 'row')")
            self.conn.executemany(
                f"INSERT INTO t_{name}(rowid, text) VALUES (?, ?)", enumerate(texts)
            )

    def rank(self, name: str, question: str, depth: int, drop_common: bool) -> list[int]:
        ws = words(question)
        if name == "trigram":
            ws = [w for w in ws if len(w) >= 3]
        if drop_common and ws:
            counts = dict(
                self.conn.execute(
                    f"SELECT term, doc FROM v_{name} WHERE term IN "
                    "(SELECT value FROM json_each(?))",
                    (json.dumps(ws),),
                ).fetchall()
            )
            limit = max(COMMON * self.total, 3)
            rare = [w for w in ws if counts.get(w, 0) <= limit]
            ws = rare or sorted(ws, key=lambda w: counts.get(w, 0))[:1]
        if not ws:
            return []
        sql = f"SELECT rowid FROM t_{name} WHERE t_{name} MATCH ? ORDER BY bm25(t_{name}) LIMIT ?"
        return [r[0] for r in self.conn.execute(sql, (quoted(ws), depth))]


def rrf_fuse(lists: Sequence[Sequence[str]], k: int, depth: int) -> Ranking:
    fused: dict[str, float] = {}
    for ranking in lists:
        for r, item in enumerate(ranking[:depth]):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + r + 1)
    return [i for i, _ in sorted(fused.items(), key=lambda t: (-t[1], t[0]))]


def minmax_fuse(scored: Sequence[Sequence[tuple[str, float]]], alpha: float, depth: int) -> Ranking:
    """alpha * vector + (1 - alpha) * text, each min-max normalized over its own top depth."""
    fused: dict[str, float] = {}
    for weight, ranking in zip((alpha, 1 - alpha), scored, strict=True):
        top = ranking[:depth]
        if not top:
            continue
        hi, lo = top[0][1], top[-1][1]
        for item, s in top:
            norm = 1.0 if hi == lo else (s - lo) / (hi - lo)
            fused[item] = fused.get(item, 0.0) + weight * norm
    return [i for i, _ in sorted(fused.items(), key=lambda t: (-t[1], t[0]))]


def to_documents(units: Sequence[str], owner: dict[str, str]) -> Ranking:
    return list(dict.fromkeys(owner.get(u, u) for u in units))[: metrics.DEPTH]


def ndcg(rankings: dict[str, Ranking], qrels: dict[str, dict[str, int]]) -> list[float]:
    name = f"ndcg@{metrics.NDCG_K}"
    return [metrics.score_query(q, r, qrels[q]).values[name] for q, r in rankings.items()]


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def paired_2se(a: Sequence[float], b: Sequence[float]) -> float:
    d = [x - y for x, y in zip(a, b, strict=True)]
    m = mean(d)
    var = sum((x - m) ** 2 for x in d) / max(1, len(d) - 1)
    return 2 * math.sqrt(var / max(1, len(d)))


def analyse(path: Path, backend: str) -> dict[str, Any]:
    es = data.load(path)
    embedder = runner.make_embedder(runner.Setup(backend=backend))
    index, stats = runner.corpus_index(es, embedder)
    units = [u.id for u in es.units]
    owner = {u.id: u.document for u in es.units}
    qids = list(es.queries)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        vectors = embedder.embed_queries([es.queries[q] for q in qids]).vectors
    deepest = max(DEPTHS)
    fts = PlainFts([u.text for u in es.units])
    lists: dict[str, dict[str, list[tuple[str, float]]]] = {"vector": {}, "lokal text": {}}
    for name in TOKENIZERS:
        lists[name] = {}
        lists[name + " (common dropped)"] = {}
    with index:
        for qid, v in zip(qids, vectors, strict=True):
            text = es.queries[qid]
            lists["vector"][qid] = [(h.id, h.score) for h in index.search(v, deepest)]
            lists["lokal text"][qid] = [(h.id, h.score) for h in index.text_search(text, deepest)]
            for name in TOKENIZERS:
                for drop, label in ((False, name), (True, name + " (common dropped)")):
                    rows = fts.rank(name, text, deepest, drop)
                    lists[label][qid] = [(units[r], -float(n)) for n, r in enumerate(rows)]
            lokal_h = index.hybrid_search(v, text, metrics.DEPTH, fetch_k=None)
            lists.setdefault("lokal hybrid (default)", {})[qid] = [(h.id, h.score) for h in lokal_h]

    def score(make: Callable[[str], Ranking]) -> list[float]:
        return ndcg({q: to_documents(make(q), owner) for q in qids}, es.qrels)

    rows: dict[str, list[float]] = {}
    for label, by_q in lists.items():
        rows[label] = score(lambda q, b=by_q: [u for u, _ in b[q]])
    fusions: dict[str, list[float]] = {}
    for text_side in ("lokal text", "porter", "unicode61", "unicode61 (common dropped)", "trigram"):
        for depth in DEPTHS:
            for k in RRF_KS:
                fusions[f"rrf k={k} depth={depth} vector+{text_side}"] = score(
                    lambda q, t=text_side, d=depth, kk=k: rrf_fuse(
                        [[u for u, _ in lists["vector"][q]], [u for u, _ in lists[t][q]]], kk, d
                    )
                )
        for alpha in (0.3, 0.5, 0.7):
            fusions[f"minmax alpha={alpha} depth=100 vector+{text_side}"] = score(
                lambda q, t=text_side, a=alpha: minmax_fuse(
                    [lists["vector"][q], lists[t][q]], a, 100
                )
            )
    best_part = max(mean(rows["vector"]), mean(rows["lokal text"]))
    return {
        "set": str(path),
        "queries": len(qids),
        "texts": len(units),
        "corpus": stats.source,
        "model": embedder.identity.describe(),
        "fulltext": search_module.__name__,
        "rankings": {k: round(mean(v), 4) for k, v in rows.items()},
        "fusions": {k: round(mean(v), 4) for k, v in fusions.items()},
        "best_part": round(best_part, 4),
        "per_query": {**rows, **fusions},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", type=Path, help="BEIR directories")
    ap.add_argument("--json", type=Path, help="write every number (and per-query nDCG) here")
    ap.add_argument("--backend", default="auto", help="the default model's backend (auto)")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0]
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; CPU flags: "
          f"{' '.join(f for f in wanted if f' {f} ' in flags + ' ')}")  # fmt: skip
    start, busy = time.monotonic(), machine_busy_s()
    results = [analyse(p, args.backend) for p in args.sets]
    for r in results:
        print(f"\n## {r['set']}: {r['queries']} questions, {r['texts']} texts ({r['model']})")
        print("| ranking | nDCG@10 |\n|---|---|")
        for label, value in r["rankings"].items():
            print(f"| {label} | {value:.4f} |")
        print("best fusions:")
        for label, value in sorted(r["fusions"].items(), key=lambda t: -t[1])[:12]:
            print(f"  {value:.4f}  {label}")
        for label in ("rrf k=60 depth=40 vector+lokal text", "rrf k=60 depth=100 vector+porter"):
            print(f"  {r['fusions'][label]:.4f}  {label}")
    if len(results) > 1:  # the fusion that is best on average, and its worst margin
        names = list(results[0]["fusions"])
        avg = {n: mean([r["fusions"][n] - r["best_part"] for r in results]) for n in names}
        print("\nfusions by mean margin over the better part, across the sets:")
        for n in sorted(names, key=lambda n: -avg[n])[:15]:
            worst = min(r["fusions"][n] - r["best_part"] for r in results)
            print(f"  {avg[n]:+.4f} (worst {worst:+.4f})  {n}")
    wall = time.monotonic() - start
    print(f"\n{wall:.0f} s; the machine was busy {(machine_busy_s() - busy) / wall:.2f} cores")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
