"""Question -> answer: open an index with the model it records, retrieve, rerank.

>>> from lokal.retrieval import open_recorded, retrieve
>>> index, embedder = open_recorded("index.db")     # the file opened once, the model resolved once
>>> with index:
...     results = retrieve(index, "how do I reset the pump?", 5, embedder=embedder, hybrid=True)

:func:`retrieve` is the one retrieve-then-rerank every caller uses (``lokal search``,
``lokal serve``'s ``/v1/search``, evaluation, the LangChain and LlamaIndex vector stores):
vector or hybrid search under a metadata filter, then, with a reranker, the best
:func:`candidate_depth` chunks reordered by it and the best ``k`` kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from lokal.index import Hit, Index
from lokal.index import search as search_module

if TYPE_CHECKING:
    from lokal.central.store import CentralIndex
    from lokal.embedder import Embedder
    from lokal.reranker import Ranked

log = logging.getLogger(__name__)

#: How many chunks a reranker reorders by default for ``k`` results: ``max(2 * k, 20)``.
CANDIDATE_FACTOR, CANDIDATE_MIN = search_module.CANDIDATE_FACTOR, search_module.CANDIDATE_MIN
#: Tokens of each candidate (the reranker's tokenizer) that ``lokal search --rerank`` and
#: ``lokal serve``'s ``/v1/search`` let a reranker read by default (``max_document_tokens``).
#: With :func:`candidate_depth`, the CPU budget: docs/benchmarks.md, "Reranking budget".
DOCUMENT_TOKENS = 128


def candidate_depth(k: int, candidates: int | None = None) -> int:
    """Chunks to retrieve for a reranker to reorder into ``k`` results: ``candidates`` when
    given, else ``max(2 * k, 20)``; never fewer than ``k``."""
    return search_module.candidate_depth(k, candidates)


class RankFn(Protocol):
    """What reranking needs: ``(query, texts, top_n) -> records best first`` (a
    :meth:`lokal.Reranker.rank`, or a server's model worker)."""

    def __call__(self, query: str, texts: list[str], top_n: int | None) -> Sequence[Ranked]: ...


@dataclass(frozen=True)
class Retrieved:
    """One result: the chunk with its retrieval score (``hit.score``), and when reranked the
    reranker's score and the chunk's place in the retrieval (1-based)."""

    hit: Hit
    rerank_score: float | None = None
    retrieval_rank: int | None = None

    @property
    def score(self) -> float:
        """The score this result is ranked by: the reranker's, else the retrieval's."""
        return self.hit.score if self.rerank_score is None else self.rerank_score


def search(
    index: Index | CentralIndex,
    vector: Any,
    query: str,
    n: int,
    *,
    hybrid: bool = False,
    filter: Mapping[str, Any] | None = None,
    fetch_k: int | None = None,
) -> Sequence[Hit]:
    """The first stage: the ``n`` best chunks by vector, or by vector and full text fused
    (``hybrid``; ``fetch_k`` from each ranking), among those matching ``filter``."""
    if hybrid:
        return index.hybrid_search(vector, query, n, filter=filter, fetch_k=fetch_k)
    return index.search(vector, n, filter=filter)


def rerank(hits: Sequence[Hit], ranked: Sequence[Ranked]) -> list[Retrieved]:
    """``hits`` in a reranker's order (``ranked`` indexes into them), with both scores."""
    return [Retrieved(hits[r.index], r.score, r.index + 1) for r in ranked]


def retrieve(
    index: Index | CentralIndex,
    query: str,
    k: int,
    *,
    embedder: Embedder | None = None,
    vector: Any = None,
    hybrid: bool = False,
    filter: Mapping[str, Any] | None = None,
    reranker: RankFn | Any = None,
    candidates: int | None = None,
    fetch_k: int | None = None,
) -> list[Retrieved]:
    """The ``k`` best chunks of ``index`` for ``query``.

    The query vector is ``vector`` when given (a caller that embedded it already), else
    ``embedder.embed_query(query)``. With ``reranker`` (a :class:`lokal.Reranker`, or any
    :class:`RankFn`), :func:`candidate_depth` chunks are retrieved and reordered by it.
    ``fetch_k``: hybrid search's depth in each of the two rankings it fuses.
    """
    if vector is None:
        if embedder is None:
            msg = "retrieve needs embedder= or vector="
            raise TypeError(msg)
        vector = embedder.embed_query(query)
    rank = _rank_fn(reranker)
    n = k if rank is None else candidate_depth(k, candidates)
    hits = search(index, vector, query, n, hybrid=hybrid, filter=filter, fetch_k=fetch_k)
    if rank is None or not hits:
        return [Retrieved(h) for h in hits[:k]]
    return rerank(hits, rank(query, [h.text for h in hits], k))


def _rank_fn(reranker: RankFn | Any) -> RankFn | None:
    if reranker is None:
        return None
    rank: Callable[..., Sequence[Ranked]] | None = getattr(reranker, "rank", None)
    if rank is not None:
        return rank
    if callable(reranker):
        return reranker
    msg = f"reranker must be a lokal.Reranker or a callable, not {type(reranker).__name__}"
    raise TypeError(msg)


def open_recorded(path: str | os.PathLike[str]) -> tuple[Index, Embedder]:
    """An index file open for reading, and an Embedder for the model it records (the same
    backend, file, prefixes, normalization and dimension), checked against the file.

    The file is opened once and the model resolved once. Raises
    :class:`~lokal.errors.ModelNotFound` saying how to bring the model to this machine.
    """
    from lokal.embedder import recorded_embedder

    index = Index.open(path)
    try:
        embedder = recorded_embedder(index.identity, str(path))
        index.check_identity(embedder.identity)
    except BaseException:
        index.close()
        raise
    log.info("%s: reading with its recorded model %s", path, index.identity.describe())
    return index, embedder
