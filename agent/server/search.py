"""lokal's own API: /v1/search over an index and /v1/status."""

from __future__ import annotations

import asyncio
from typing import Any

from lokal import __version__
from lokal.agent.server.base import ServiceBase
from lokal.agent.server.protocol import (
    ApiError,
    bool_field,
    check_filter,
    int_field,
    str_field,
    truncated_report,
)
from lokal.errors import LokalError
from lokal.retrieval import DOCUMENT_TOKENS, candidate_depth, retrieve


class LokalApi(ServiceBase):
    """lokal's own API: /v1/search over an index, /v1/status."""

    async def search(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.index is None or self.index_embedder is None:
            raise ApiError(404, "no index is served: start lokal serve with --index FILE")
        query = str_field(body, "query", required=True)
        assert query is not None
        k = int_field(body, "k", 5, hi=self.settings.max_k)
        assert k is not None
        flt = body.get("filter")
        if flt is not None and not isinstance(flt, dict):
            raise ApiError(
                400, "'filter' must be an object (lokal's filter language)", param="filter"
            )
        check_filter(flt)
        hybrid = bool_field(body, "hybrid") is not False  # hybrid unless asked not to be
        rerank = bool(bool_field(body, "rerank"))
        fetch_k = int_field(body, "fetch_k", candidate_depth(k), lo=k, hi=self.settings.max_k)
        assert fetch_k is not None
        # each candidate's first N tokens (Cohere's name); 0: all that fit the reranker
        per_doc = int_field(body, "max_tokens_per_doc", DOCUMENT_TOKENS, lo=0)
        if rerank and self.rerank is None:
            raise ApiError(
                400,
                "'rerank' needs a reranker: start lokal serve with --reranker MODEL",
                param="rerank",
            )
        embedded = await self.embed(self.index_embedder, "query", [query], refuse_long=False)
        vector = embedded.vectors[0]
        worker, model = self.worker, self.rerank.model if self.rerank else None

        def rank(q: str, texts: list[str], top_n: int | None) -> list[Any]:
            # from retrieve's thread, through the model worker's queue
            scored = worker.rerank(model, q, texts, max_document_tokens=per_doc or None)
            return list(scored.result().ranked(top_n))

        try:
            found = await asyncio.to_thread(
                retrieve, self.index, query, k, vector=vector, hybrid=hybrid, filter=flt,
                reranker=rank if rerank else None, candidates=fetch_k,
            )  # fmt: skip
        except (ValueError, OverflowError) as exc:
            if not flt or isinstance(exc, LokalError):
                raise
            # a value the filter language took but SQLite cannot bind: the request's fault
            raise ApiError(400, f"'filter': {exc}", param="filter") from exc
        hits = [r.hit for r in found]
        rerank_scores: list[float | None] = [r.rerank_score for r in found]
        results = []
        for h, rerank_score in zip(hits, rerank_scores, strict=True):
            item: dict[str, Any] = {
                **(
                    {"site": site} if (site := getattr(h, "site", None)) else {}
                ),  # a central store's
                "id": h.id,
                "path": h.document,
                "lines": [h.line_start, h.line_end] if h.line_start is not None else None,
                "score": h.score,
                "text": h.text,
                "metadata": h.metadata,
            }
            if rerank_score is not None:
                item["retrieval_score"] = h.score
                item["score"] = rerank_score
            results.append(item)
        return {
            "results": results,
            "model": self.index_embedder.profile.name,
            "hybrid": hybrid,
            "reranked": rerank,
            "query_tokens": embedded.tokens,
            "truncated": truncated_report(embedded.truncated),
        }

    async def status(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": __version__,
            "models": [s.describe() for s in (self.embedding, self.rerank) if s is not None],
            "index": str(self.index.path) if self.index is not None else None,
            "queue": self.worker.pending,
            "max_batch": self.settings.max_batch,
            "workers": self.worker.workers,
            **self.stats.snapshot(),
        }
