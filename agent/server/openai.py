"""OpenAI's embedding API."""

from __future__ import annotations

from typing import Any

from lokal.agent.server.base import ServiceBase
from lokal.agent.server.protocol import (
    ApiError,
    is_tokens,
    str_field,
    texts_field,
    truncated_report,
    vector_rows,
)


class OpenAiApi(ServiceBase):
    """OpenAI's embedding API: /v1/embeddings, /v1/models."""

    async def openai_embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        name = self.embedding_model_name(body, "openai")
        raw = body.get("input")
        if raw is None:
            raise ApiError(400, "'input' is required", param="input")
        if is_tokens(raw):
            raise ApiError(
                400,
                "'input' is a token array: lokal serve embeds text only (it counts tokens with "
                "the model's own tokenizer, so token ids from another tokenizer would be wrong); "
                "send the text itself",
                param="input",
                code="token_arrays_not_supported",
            )
        texts = texts_field(raw, "input", self.settings.max_inputs)
        if not texts:
            raise ApiError(400, "'input' must not be an empty list", param="input")
        fmt = str_field(body, "encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise ApiError(
                400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
            )
        vectors, result = await self.embed_request(body, texts)
        data = await vector_rows(vectors, fmt)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)
            ],
            "model": name,
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
            "truncated": truncated_report(result.truncated),
        }

    async def openai_models(self, body: dict[str, Any]) -> dict[str, Any]:
        served = [self.embedding, *([self.rerank] if self.rerank else [])]
        return {
            "object": "list",
            "data": [
                {
                    "id": s.name,
                    "object": "model",
                    "created": s.describe()["created"],
                    "owned_by": "lokal",
                    "lokal": s.describe(),
                }
                for s in served
            ],
        }
