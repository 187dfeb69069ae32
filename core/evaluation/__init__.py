"""Measure retrieval before you trust it: ``lokal eval`` as a library.

>>> from lokal.evaluation import Setup, evaluate, load_beir
>>> evalset = load_beir(Path("manpages"), split="test")
>>> report = evaluate(evalset, [Setup(), Setup(search="hybrid", label="hybrid")])
>>> report.results[0].metrics["ndcg@10"]
0.61...

- :mod:`~lokal.evaluation.metrics`: recall@k, MRR@10, nDCG@10 (trec_eval's definitions);
- :mod:`~lokal.evaluation.data`: BEIR directories, questions files, lokal indexes;
- :mod:`~lokal.evaluation.runner`: setups (model, backend, quantization, prefixes, dimensions,
  hybrid, reranker), cached corpus embeddings, scoring;
- :mod:`~lokal.evaluation.report`: advice, table, PNG chart, TREC run files.
"""

from __future__ import annotations

from lokal.evaluation.data import (
    EvalSet,
    Unit,
    index_corpus,
    load,
    load_beir,
    load_questions,
    read_corpus,
)
from lokal.evaluation.runner import Report, Setup, SetupResult, evaluate, parse_setup

__all__ = [
    "EvalSet",
    "Report",
    "Setup",
    "SetupResult",
    "Unit",
    "evaluate",
    "index_corpus",
    "load",
    "load_beir",
    "load_questions",
    "parse_setup",
    "read_corpus",
]
