"""Cohere's embed and rerank APIs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from lokal.agent.server.base import ServiceBase
from lokal.agent.server.models import Served
from lokal.agent.server.protocol import (
    ApiError,
    bool_field,
    cohere_rows,
    document_text,
    embedding_types,
    int_field,
    str_field,
    texts_field,
    truncated_report,
    vector_rows,
)


class CohereApi(ServiceBase):
    """Cohere's embed and rerank APIs: /v1/embed, /v2/embed, /v1/rerank, /v2/rerank."""

    async def cohere_embed_v1(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._cohere_embed(body, version="1")

    async def cohere_embed_v2(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._cohere_embed(body, version="2")

    async def _cohere_embed(self, body: dict[str, Any], *, version: str) -> dict[str, Any]:
        self.embedding_model_name(body, "cohere", required=version == "2")
        for key in ("images", "inputs"):
            if body.get(key):
                raise ApiError(400, f"'{key}' is not supported: lokal serve embeds 'texts' only")
        raw = body.get("texts")
        if not isinstance(raw, list):
            raise ApiError(400, "'texts' must be a list of strings", param="texts")
        texts = texts_field(raw, "texts", self.settings.max_inputs)
        if not texts:
            raise ApiError(400, "'texts' must not be empty", param="texts")
        kind = self.input_kind(body)
        refuse_long = self._cohere_truncate(body)
        types = embedding_types(body, version)
        dims = self.requested_dimensions(body, "output_dimension")
        max_tokens = int_field(body, "max_tokens", None)
        limit = self.embedding.model.context_length
        if max_tokens is not None and max_tokens < limit:
            raise ApiError(
                400,
                f"'max_tokens' below the model's context ({limit} tokens) is not supported: "
                "lokal cuts texts at the model's context only; leave it out",
                param="max_tokens",
            )
        result = await self.embed(self.embedding.model, kind, texts, refuse_long=refuse_long)
        vectors = self.sliced(result.vectors, dims)
        meta: dict[str, Any] = {
            "api_version": {"version": version},
            "billed_units": {"input_tokens": result.tokens},
        }
        if result.truncated:
            meta["warnings"] = [
                f"{len(result.truncated)} texts were cut to the model's context ({limit} tokens)"
            ]
        out: dict[str, Any] = {"id": str(uuid.uuid4())}
        if types is None:  # v1 without embedding_types: a plain list of float vectors
            out |= {"response_type": "embeddings_floats", "embeddings": await vector_rows(vectors)}
        else:
            by_type = {t: await cohere_rows(vectors, t) for t in types}
            out |= {"response_type": "embeddings_by_type", "embeddings": by_type}
        return out | {"texts": texts, "meta": meta, "truncated": truncated_report(result.truncated)}

    def _cohere_truncate(self, body: Mapping[str, Any]) -> bool:
        """Whether to refuse texts over the context: NONE refuses, END cuts; absent, the
        server's ``--truncation`` applies (cut unless told)."""
        value = str_field(body, "truncate")
        if value is None:
            return self.settings.truncation == "error"
        if value.upper() == "NONE":
            return True
        if value.upper() == "END":
            return False
        if value.upper() == "START":
            raise ApiError(
                400,
                "'truncate': START is not supported: lokal cuts long texts at the end; send END "
                "(cut the end) or NONE (refuse them)",
                param="truncate",
            )
        raise ApiError(400, "'truncate' must be NONE, START or END", param="truncate")

    async def cohere_rerank_v1(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._rerank(body, version="1")

    async def cohere_rerank_v2(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._rerank(body, version="2")

    async def _rerank(self, body: dict[str, Any], *, version: str) -> dict[str, Any]:
        served = self.rerank_model(body, required=version == "2")
        query = str_field(body, "query", required=True)
        assert query is not None
        raw = body.get("documents")
        if not isinstance(raw, list):
            raise ApiError(400, "'documents' must be a list", param="documents")
        if len(raw) > self.settings.max_inputs:
            raise ApiError(
                413,
                f"'documents' has {len(raw)} items; this server takes at most "
                f"{self.settings.max_inputs}",
            )
        fields = body.get("rank_fields")
        if fields is not None and (
            not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)
        ):
            raise ApiError(400, "'rank_fields' must be a list of strings")
        texts = [document_text(d, i, fields) for i, d in enumerate(raw)]
        top_n = int_field(body, "top_n", None)
        return_documents = bool(bool_field(body, "return_documents"))
        warns = []
        # each document's first N tokens, by the reranker's own tokenizer
        per_doc = int_field(body, "max_tokens_per_doc", None)
        if texts:
            scored = await asyncio.wrap_future(
                self.worker.rerank(served.model, query, texts, max_document_tokens=per_doc)
            )
            ranked = scored.ranked(top_n)
            truncated = scored.truncated
        else:
            ranked, truncated = [], []
        if truncated:
            warns.append(f"{len(truncated)} documents were cut to the model's context")
        results = []
        for r in ranked:
            item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
            if return_documents:
                doc = raw[r.index]
                item["document"] = doc if isinstance(doc, dict) else {"text": doc}
            results.append(item)
        meta: dict[str, Any] = {
            "api_version": {"version": version},
            "billed_units": {"search_units": 1},
        }
        if warns:
            meta["warnings"] = warns
        return {
            "id": str(uuid.uuid4()),
            "results": results,
            "meta": meta,
            "truncated": truncated_report(truncated),
        }

    def rerank_model(self, body: Mapping[str, Any], *, required: bool) -> Served:
        name = str_field(body, "model", required=required)
        if self.rerank is None:
            raise ApiError(
                404,
                "no reranker is loaded on this server: start it with "
                "`lokal serve --reranker MODEL`",
            )
        if name is not None and not self.rerank.matches(name):
            raise ApiError(
                404,
                f"model '{name}' not found: this server reranks with "
                f"{', '.join(self.rerank.names)}",
            )
        return self.rerank
