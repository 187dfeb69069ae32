"""LlamaIndex adapters: :class:`LocalEmbedding`, a LlamaIndex ``BaseEmbedding`` over a local model.

>>> from llama_index.core import Settings
>>> from lokal.integrations.llama_index import LocalEmbedding
>>> Settings.embed_model = LocalEmbedding()

Needs the ``llamaindex`` extra (``pip install 'lokal[llamaindex]'``).
"""

from __future__ import annotations

from typing import Any

from lokal.errors import MissingDependency

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import ConfigDict, Field, PrivateAttr, model_validator
except ImportError as exc:  # pragma: no cover - exercised in a bare environment
    raise MissingDependency(extra="llamaindex", feature="lokal.integrations.llama_index") from exc

from lokal.embedder import Embedder


class LocalEmbedding(BaseEmbedding):
    """Local embeddings for LlamaIndex (``Settings.embed_model``, ``VectorStoreIndex``).

    Query and text embeddings use the model's own prefixes; over-long text follows
    ``truncation``; the model loads on first use, once per process. ``embed_batch_size``
    (LlamaIndex's name; ``batch_size`` is accepted too) sets texts per forward pass.
    """

    model_config = ConfigDict(
        protected_namespaces=("pydantic_model_",), arbitrary_types_allowed=True, extra="forbid"
    )

    model: str | None = Field(
        None,
        description="None for the embedded default (all-MiniLM-L6-v2), a .gguf path, a "
        "sentence-transformers directory, a name in lokal's model cache, or a hub id.",
    )
    backend: str = Field("auto", description='"auto", "sentence-transformers" or "gguf".')
    query_prefix: str | None = Field(None, description="Override the query prefix; '' disables.")
    document_prefix: str | None = Field(
        None, description="Override the document prefix; '' disables."
    )
    truncation: str = Field("warn", description='"warn" (cut and warn) or "error".')
    normalize: bool = Field(True, description="L2-normalize the vectors.")
    dimensions: int | None = Field(None, gt=0, description="Matryoshka output dimension.")
    force_dimensions: bool = Field(False, description="Allow any dimensions (quality may drop).")
    device: str | None = Field(None, description='torch device, e.g. "cpu", "cuda".')
    n_gpu_layers: int = Field(0, ge=0, description="Layers offloaded to a GPU (llama.cpp).")
    n_threads: int | None = Field(None, gt=0, description="CPU threads for llama.cpp.")
    profile: dict[str, Any] | None = Field(None, description="Overrides for profile fields.")

    _embedder: Embedder = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _batch_size_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "batch_size" in data:
            data = dict(data)
            data.setdefault("embed_batch_size", data.pop("batch_size"))
        return data

    def model_post_init(self, context: Any, /) -> None:
        self._embedder = Embedder(
            self.model,
            backend=self.backend,
            query_prefix=self.query_prefix,
            document_prefix=self.document_prefix,
            truncation=self.truncation,  # type: ignore[arg-type]
            normalize=self.normalize,
            dimensions=self.dimensions,
            force_dimensions=self.force_dimensions,
            batch_size=self.embed_batch_size,
            device=self.device,
            n_gpu_layers=self.n_gpu_layers,
            n_threads=self.n_threads,
            profile=self.profile,
        )
        if self.model_name == "unknown":
            self.model_name = self._embedder.profile.name

    @classmethod
    def class_name(cls) -> str:
        return "LokalLocalEmbedding"

    @property
    def embedder(self) -> Embedder:
        """The core :class:`lokal.Embedder` (token counts, identity, profile)."""
        return self._embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.embed_query(query).tolist()  # type: ignore[no-any-return]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._embedder.aembed_queries([query])).vectors[0].tolist()  # type: ignore[no-any-return]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed_documents(texts).vectors.tolist()  # type: ignore[no-any-return]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return (await self._embedder.aembed_documents(texts)).vectors.tolist()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"LocalEmbedding({self._embedder!r})"
