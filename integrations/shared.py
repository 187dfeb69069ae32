"""What the LangChain and LlamaIndex adapters share: one definition of the embedder and
reranker settings (pydantic fields with their documentation), how those settings become a
core :class:`~lokal.Embedder` / :class:`~lokal.Reranker`, and the identity recorded for an
embedding model lokal does not load itself.

Each framework's adapter adds only what its framework names differently (LangChain's
``batch_size``, LlamaIndex's ``embed_batch_size``; each one's ``top_n`` default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from pydantic import BaseModel, Field
from typing_extensions import Self

from lokal.embedder import Embedder
from lokal.identity import ModelIdentity
from lokal.index import Index, IndexHandle
from lokal.loading import TruncationPolicy
from lokal.reranker import Reranker

#: The validation-context key under which an adapter is handed an Embedder already built
#: (the recorded model of an index file, resolved once).
EMBEDDER_CONTEXT = "lokal_embedder"


class EmbedderSettings(BaseModel):
    """The settings of a local embedding model, as pydantic fields (see :class:`lokal.Embedder`)."""

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
    device: str | None = Field(None, description='torch device, e.g. "cpu", "cuda", "mps".')
    n_gpu_layers: int = Field(0, ge=0, description="Layers offloaded to a GPU (llama.cpp).")
    n_threads: int | None = Field(None, gt=0, description="CPU threads for llama.cpp.")
    profile: dict[str, Any] | None = Field(
        None, description="Overrides for any profile field, e.g. {'context_length': 512}."
    )
    allow_unknown_prefixes: bool = Field(
        False,
        description="Embed queries of an unknown model whose card or config asks for a query "
        "prefix lokal cannot map, without it (default: refuse until query_prefix is set).",
    )

    def make_embedder(self, batch_size: int, context: Any = None) -> Embedder:
        """The core Embedder these settings describe (or the one handed over in the
        validation context, see :data:`EMBEDDER_CONTEXT`)."""
        given = context.get(EMBEDDER_CONTEXT) if isinstance(context, dict) else None
        if isinstance(given, Embedder):
            return given
        return Embedder(
            self.model,
            backend=self.backend,
            query_prefix=self.query_prefix,
            document_prefix=self.document_prefix,
            truncation=cast(TruncationPolicy, self.truncation),
            normalize=self.normalize,
            dimensions=self.dimensions,
            force_dimensions=self.force_dimensions,
            batch_size=batch_size,
            device=self.device,
            n_gpu_layers=self.n_gpu_layers,
            n_threads=self.n_threads,
            profile=self.profile,
            allow_unknown_prefixes=self.allow_unknown_prefixes,
        )


class RerankerSettings(BaseModel):
    """The settings of a local cross-encoder, as pydantic fields (see :class:`lokal.Reranker`)."""

    model: str = Field(
        description="A cross-encoder directory, a packed .gguf, a name in lokal's model "
        "cache, or a hub id (offline first)."
    )
    backend: str = Field("auto", description='"auto", "sentence-transformers" or "gguf".')
    truncation: str = Field(
        "warn", description='Pairs longer than the context: "warn" (cut the document) or "error".'
    )
    batch_size: int = Field(32, gt=0, description="Pairs per forward pass / sequences per decode.")
    device: str | None = Field(None, description='torch device, e.g. "cpu", "cuda", "mps".')
    n_gpu_layers: int = Field(0, ge=0, description="Layers offloaded to a GPU (llama.cpp).")
    n_threads: int | None = Field(None, gt=0, description="CPU threads for llama.cpp.")
    profile: dict[str, Any] | None = Field(
        None, description="Overrides: {'context_length': 512, 'activation': 'identity'}."
    )

    def make_reranker(self) -> Reranker:
        """The core Reranker these settings describe."""
        return Reranker(
            self.model,
            backend=self.backend,
            truncation=cast(TruncationPolicy, self.truncation),
            batch_size=self.batch_size,
            device=self.device,
            n_gpu_layers=self.n_gpu_layers,
            n_threads=self.n_threads,
            profile=self.profile,
        )


def external_identity(
    framework: str,
    embedding: object,
    dimension: int,
    attributes: Sequence[str] = ("model_name", "model"),
    placeholder: str | None = None,
) -> ModelIdentity:
    """The identity lokal records for vectors from a framework's embedding object it does not
    load itself: its class, its model name (the first of ``attributes`` set to a non-empty
    string other than the framework's ``placeholder``) and the dimension."""
    names = (getattr(embedding, attr, None) for attr in attributes)
    model_name = next((n for n in names if isinstance(n, str) and n and n != placeholder), None)
    return ModelIdentity.external(framework, type(embedding).__name__, model_name, dimension)


def vectors_as_lists(vectors: Any) -> list[list[float]]:
    """A float32 matrix as the lists of floats the frameworks' interfaces return."""
    out: list[list[float]] = vectors.tolist()
    return out


class HandleOwner:
    """What both vector stores do with their :class:`~lokal.index.IndexHandle` (``_handle``):
    its lock, its open index, closing it, and the context-manager protocol."""

    _handle: IndexHandle

    @property
    def _lock(self) -> Any:
        return self._handle.lock

    @property
    def _index(self) -> Index | None:
        return self._handle.index

    def close(self) -> None:
        """Close the index file (the store cannot be used afterwards)."""
        self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
