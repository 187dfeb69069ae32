"""LangChain adapters: :class:`LocalEmbeddings`, a LangChain ``Embeddings`` over a local model.

>>> from lokal.integrations.langchain import LocalEmbeddings
>>> emb = LocalEmbeddings()                  # embedded default, offline, prefixes handled
>>> emb.embed_query("what is a coroutine?")[:3]

Needs the ``langchain`` extra (``pip install 'lokal[langchain]'``).
"""

from __future__ import annotations

from typing import Any

from lokal.errors import MissingDependency

try:
    from langchain_core.embeddings import Embeddings
    from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
except ImportError as exc:  # pragma: no cover - exercised in a bare environment
    raise MissingDependency(extra="langchain", feature="lokal.integrations.langchain") from exc

from lokal.embedder import Embedder


class LocalEmbeddings(BaseModel, Embeddings):
    """Local embeddings for LangChain: no API key, no network once the model is on disk.

    The model's query and document prefixes are applied for you (``embed_query`` vs
    ``embed_documents``); text longer than the model's context is never cut silently.
    The model loads on first use, once per process.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: str | None = Field(
        None,
        description="None for the embedded default (all-MiniLM-L6-v2), a .gguf path, a "
        "sentence-transformers directory, a name in lokal's model cache, or a hub id.",
    )
    backend: str = Field("auto", description='"auto", "sentence-transformers" or "gguf".')
    query_prefix: str | None = Field(
        None, description="Override the profile's query prefix; '' disables it."
    )
    document_prefix: str | None = Field(
        None, description="Override the profile's document prefix; '' disables it."
    )
    truncation: str = Field(
        "warn", description='Texts longer than the context: "warn" (cut, warn) or "error".'
    )
    normalize: bool = Field(True, description="L2-normalize the vectors.")
    dimensions: int | None = Field(
        None, gt=0, description="Matryoshka output dimension (one the profile lists)."
    )
    force_dimensions: bool = Field(False, description="Allow any dimensions (quality may drop).")
    batch_size: int = Field(32, gt=0, description="Texts per forward pass / per decode.")
    device: str | None = Field(None, description='torch device, e.g. "cpu", "cuda", "mps".')
    n_gpu_layers: int = Field(0, ge=0, description="Layers offloaded to a GPU (llama.cpp).")
    n_threads: int | None = Field(None, gt=0, description="CPU threads for llama.cpp.")
    profile: dict[str, Any] | None = Field(
        None, description="Overrides for any profile field, e.g. {'context_length': 512}."
    )

    _embedder: Embedder = PrivateAttr()

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
            batch_size=self.batch_size,
            device=self.device,
            n_gpu_layers=self.n_gpu_layers,
            n_threads=self.n_threads,
            profile=self.profile,
        )

    @property
    def embedder(self) -> Embedder:
        """The core :class:`lokal.Embedder` (token counts, identity, profile)."""
        return self._embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed_documents(texts).vectors.tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return self._embedder.embed_query(text).tolist()  # type: ignore[no-any-return]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        result = await self._embedder.aembed_documents(texts)
        return result.vectors.tolist()  # type: ignore[no-any-return]

    async def aembed_query(self, text: str) -> list[float]:
        result = await self._embedder.aembed_queries([text])
        return result.vectors[0].tolist()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"LocalEmbeddings({self._embedder!r})"
