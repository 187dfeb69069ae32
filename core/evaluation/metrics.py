"""Ranking metrics: recall@k, MRR@k and nDCG@k for one query, and their means.

The definitions are trec_eval's, which BEIR and MTEB report (through pytrec_eval), and ranx's:

- a document is relevant when its judgment (grade) is above zero;
- ``recall@k``: relevant documents in the first ``k`` over all relevant documents;
- ``MRR@k``: one over the rank of the first relevant document, 0 when none is in the first ``k``;
- ``nDCG@k``: DCG of the first ``k`` (gain = the grade, discount ``log2(rank + 1)``: linear gain,
  as trec_eval's ``ndcg_cut``) over the DCG of the ideal order of every judged document.

Metrics take a *ranking*: document ids best first, each once. :func:`ranking` turns scores into
one with trec_eval's rule for ties (higher score first; equal scores: the greater document id
first), so a run scored here and by trec_eval agrees.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: The cut-offs ``lokal eval`` reports.
RECALL_KS = (1, 5, 10, 50)
MRR_K = 10
NDCG_K = 10
#: Metric names in report order.
NAMES = (*(f"recall@{k}" for k in RECALL_KS), f"mrr@{MRR_K}", f"ndcg@{NDCG_K}")
#: How deep a ranking must go for every metric above.
DEPTH = max(*RECALL_KS, MRR_K, NDCG_K)

Qrels = Mapping[str, int]


def ranking(scores: Mapping[str, float]) -> list[str]:
    """Document ids by score, best first; equal scores put the greater id first (trec_eval)."""
    return [d for d, _ in sorted(scores.items(), key=lambda t: (t[1], t[0]), reverse=True)]


def _relevant(qrels: Qrels) -> set[str]:
    return {d for d, grade in qrels.items() if grade > 0}


def _check(ranked: Sequence[str], k: int) -> None:
    if k <= 0:
        msg = f"k must be positive, got {k}"
        raise ValueError(msg)
    if len(set(ranked)) != len(ranked):
        msg = "a ranking lists each document once"
        raise ValueError(msg)


def recall(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Share of the relevant documents found in the first ``k`` (0 when none is relevant)."""
    _check(ranked, k)
    relevant = _relevant(qrels)
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def reciprocal_rank(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """One over the rank of the first relevant document in the first ``k``, else 0."""
    _check(ranked, k)
    relevant = _relevant(qrels)
    for rank, doc in enumerate(ranked[:k], start=1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def dcg(grades: Iterable[float]) -> float:
    """Discounted cumulative gain of grades in rank order (linear gain, log2(rank + 1))."""
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(grades, start=1) if g > 0)


def ndcg(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Normalized DCG of the first ``k``: graded judgments count by their grade."""
    _check(ranked, k)
    ideal = dcg(sorted((g for g in qrels.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg(max(qrels.get(d, 0), 0) for d in ranked[:k]) / ideal


def first_relevant(ranked: Sequence[str], qrels: Qrels) -> int | None:
    """Rank (1-based) of the best-placed relevant document, None when none was retrieved."""
    relevant = _relevant(qrels)
    return next((rank for rank, d in enumerate(ranked, start=1) if d in relevant), None)


@dataclass(frozen=True)
class QueryScores:
    """One query's metrics (:data:`NAMES`) and where its first relevant document came."""

    query_id: str
    values: dict[str, float]
    first_relevant: int | None


def score_query(query_id: str, ranked: Sequence[str], qrels: Qrels) -> QueryScores:
    """Every metric of :data:`NAMES` for one query."""
    values = {f"recall@{k}": recall(ranked, qrels, k) for k in RECALL_KS}
    values[f"mrr@{MRR_K}"] = reciprocal_rank(ranked, qrels, MRR_K)
    values[f"ndcg@{NDCG_K}"] = ndcg(ranked, qrels, NDCG_K)
    return QueryScores(query_id, values, first_relevant(ranked, qrels))


def mean(scores: Sequence[QueryScores]) -> dict[str, float]:
    """Each metric averaged over queries (every query weighs the same, as in BEIR)."""
    if not scores:
        msg = "no queries to average"
        raise ValueError(msg)
    return {name: sum(s.values[name] for s in scores) / len(scores) for name in NAMES}
