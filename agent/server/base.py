"""The service every API dialect extends: its state and the steps they share."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from lokal.agent.server.models import Served
from lokal.agent.server.protocol import INPUT_TYPES, ApiError, bool_field, int_field, str_field
from lokal.agent.server.settings import Api, ServeSettings
from lokal.agent.server.worker import Kind, ModelWorker, Stats
from lokal.embedder import Embedder, EmbedResult

#: Ollama says a model kept loaded "forever" (keep_alive < 0) expires in Go's longest duration.
FOREVER = timedelta(days=292 * 365)


class ServiceBase:
    """The state behind the routes (models, the index, the worker, the counters) and the
    steps every API dialect shares."""

    def __init__(
        self,
        settings: ServeSettings,
        embedder: Embedder,
        *,
        names: Sequence[str] = (),
        reranker: Any = None,
        reranker_names: Sequence[str] = (),
        index: Any = None,
        index_embedder: Embedder | None = None,
        agent_config: Any = None,
    ) -> None:
        self.settings = settings
        self.embedding = Served.of(embedder, names, "embedding")
        self.rerank = Served.of(reranker, reranker_names, "rerank") if reranker else None
        self.index = index
        self.index_embedder = index_embedder
        #: the agent's config (``lokal serve --config``): its roots and sync for the page
        self.agent_config = agent_config
        self.stats = Stats()
        self.worker = ModelWorker(
            self.stats,
            max_batch=settings.max_batch,
            max_pending=settings.max_queue,
            workers=settings.workers,
        )
        #: models stay loaded while the server runs: Ollama's "forever" from the start
        self.expires_at = (datetime.now(timezone.utc) + FOREVER).isoformat()

    def embedding_model_name(
        self, body: Mapping[str, Any], api: Api, *, required: bool = True
    ) -> str:
        name = str_field(body, "model", required=required)
        if name is None:
            return self.embedding.name
        if not self.embedding.matches(name):
            if api == "ollama":
                raise ApiError(404, f'model "{name}" not found, try pulling it first')
            served = ", ".join(self.embedding.names)
            raise ApiError(
                404,
                f"The model `{name}` does not exist on this server (it serves: {served})",
                param="model",
                code="model_not_found",
            )
        return name

    def input_kind(self, body: Mapping[str, Any]) -> Kind:
        value = str_field(body, "input_type")
        if value is None:
            return self.settings.input_type
        kind = INPUT_TYPES.get(value.lower())
        if kind is None:
            raise ApiError(
                400,
                "'input_type' must be 'query' or 'document' (or Cohere's 'search_query', "
                "'search_document', 'classification', 'clustering')",
                param="input_type",
            )
        return kind

    def refuse_long(self, body: Mapping[str, Any]) -> bool:
        truncate = bool_field(body, "truncate")
        if truncate is None:
            return self.settings.truncation == "error"
        return not truncate

    def requested_dimensions(self, body: Mapping[str, Any], key: str = "dimensions") -> int | None:
        dims = int_field(body, key, None)
        if dims is None:
            return None
        return self.embedding.check_dimensions(dims, self.settings.force_dimensions)

    def sliced(self, vectors: np.ndarray, dims: int | None) -> np.ndarray:
        """The first ``dims`` components, re-normalized if the model normalizes."""
        if dims is None:
            return vectors
        vectors = vectors[:, :dims]
        if self.embedding.model.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1.0, norms)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    async def embed(
        self, embedder: Embedder, kind: Kind, texts: Sequence[str], *, refuse_long: bool
    ) -> EmbedResult:
        return await asyncio.wrap_future(
            self.worker.embed(embedder, kind, texts, refuse_long=refuse_long)
        )

    async def embed_request(
        self, body: Mapping[str, Any], texts: list[str]
    ) -> tuple[np.ndarray, EmbedResult]:
        kind = self.input_kind(body)
        refuse_long = self.refuse_long(body)
        dims = self.requested_dimensions(body)
        result = await self.embed(self.embedding.model, kind, texts, refuse_long=refuse_long)
        return self.sliced(result.vectors, dims), result
