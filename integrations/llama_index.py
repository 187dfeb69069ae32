"""LlamaIndex adapters: :class:`LocalEmbedding`, a LlamaIndex ``BaseEmbedding`` over a local model,
:class:`LokalVectorStore`, a LlamaIndex vector store over a lokal index file, and
:class:`LocalRerank`, a node postprocessor that reranks with a local cross-encoder.

>>> from llama_index.core import Settings, VectorStoreIndex
>>> from lokal.integrations.llama_index import LocalEmbedding, LokalVectorStore
>>> Settings.embed_model = embed = LocalEmbedding()
>>> store = LokalVectorStore("notes.db", embed_model=embed)
>>> index = VectorStoreIndex.from_vector_store(store, embed_model=embed)

Needs the ``llamaindex`` extra (``pip install 'lokal[llamaindex]'``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lokal.errors import IndexFileError, MissingDependency

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
    from llama_index.core.vector_stores.types import BasePydanticVectorStore, MetadataFilters
    from pydantic import ConfigDict, Field, PrivateAttr
except ImportError as exc:  # pragma: no cover - exercised in a bare environment
    raise MissingDependency(extra="llamaindex", feature="lokal.integrations.llama_index") from exc

from lokal.embedder import Embedder
from lokal.identity import ModelIdentity
from lokal.index import Index, IndexHandle, Record
from lokal.integrations import shared
from lokal.integrations.llama_index_store import FILTER_OPERATORS as FILTER_OPERATORS
from lokal.integrations.llama_index_store import REF_DOC_KEYS as REF_DOC_KEYS
from lokal.integrations.llama_index_store import (
    LlamaIndexStore,
    as_chunk,
    check_dimension,
    to_lokal_filter,
)
from lokal.integrations.shared import (
    EmbedderSettings,
    HandleOwner,
    RerankerSettings,
    vectors_as_lists,
)
from lokal.reranker import Reranker

if TYPE_CHECKING:
    from lokal.central.store import CentralIndex


class LocalEmbedding(EmbedderSettings, BaseEmbedding):
    """Local embeddings for LlamaIndex (``Settings.embed_model``, ``VectorStoreIndex``).

    Query and text embeddings use the model's own prefixes; over-long text follows
    ``truncation``; the model loads on first use, once per process. ``embed_batch_size``
    (LlamaIndex's name; ``batch_size`` is accepted too) sets texts per forward pass;
    ``model_name`` (BaseEmbedding's field) is an alias of ``model``. The other settings are
    :class:`lokal.integrations.shared.EmbedderSettings`' fields.
    """

    model_config = ConfigDict(
        protected_namespaces=("pydantic_model_",), arbitrary_types_allowed=True, extra="forbid"
    )

    BATCH_FIELD = "embed_batch_size"
    _embedder: Embedder = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._embedder = self.make_embedder(self.embed_batch_size, context)
        # BaseEmbedding's model_name is an alias of model (shared.FrameworkNames)
        self.model_name = self.model or self._embedder.profile.name

    @classmethod
    def class_name(cls) -> str:
        return "LokalLocalEmbedding"

    @property
    def embedder(self) -> Embedder:
        """The core :class:`lokal.Embedder` (token counts, identity, profile)."""
        return self._embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        return vectors_as_lists(self._embedder.embed_queries([query]).vectors)[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return vectors_as_lists((await self._embedder.aembed_queries([query])).vectors)[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return vectors_as_lists(self._embedder.embed_documents(texts).vectors)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return vectors_as_lists((await self._embedder.aembed_documents(texts)).vectors)

    def __repr__(self) -> str:
        return f"LocalEmbedding({self._embedder!r})"


# ---- vector store -----------------------------------------------------------------------------


def external_identity(embed_model: Any, dimension: int) -> ModelIdentity:
    """The identity lokal records for vectors from an embedding model it does not load itself:
    its class and model name (``model_name`` / ``model``; LlamaIndex's placeholder "unknown"
    counts as none) and the dimension."""
    return shared.external_identity("llama_index", embed_model, dimension, placeholder="unknown")


class LokalVectorStore(HandleOwner, LlamaIndexStore, BasePydanticVectorStore):
    """A LlamaIndex vector store over a lokal index file (the file ``lokal agent`` keeps).

    Text stays text and metadata stays metadata, so the same file serves LangChain, LlamaIndex
    and ``lokal search``. Filters (every LlamaIndex ``FilterOperator``, AND / OR / NOT, nested)
    run inside the index: ``k`` results whenever ``k`` chunks match. Query modes: default
    (vector), ``hybrid`` (vector + full text, needs ``query_str``) and ``mmr``. Scores are
    lokal's: in [0, 1], higher is better.

    The file records its model. Pass ``embed_model`` (a :class:`LocalEmbedding`, whose model
    is checked against the file, or any LlamaIndex embedding, identified by class and model
    name) or an explicit ``identity``; with neither, an existing file is used with the model it
    records. An index the agent manages is read-only here: writes raise ``IndexReadOnly``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")
    _NODE_IDS_ADVICE: ClassVar[str] = "restrict it with filters (or doc_ids) on the nodes' metadata"

    stores_text: bool = True
    is_embedding_query: bool = True
    path: str = Field(description="The index file; created on first use if it does not exist.")
    quantization: str = Field(
        "auto",
        description='Search copy of the vectors for a new file: "auto" (float while it fits '
        'the memory budget, else "bit"), "float", "int8", "bit".',
    )

    _handle: IndexHandle = PrivateAttr()
    _fixed: ModelIdentity | None = PrivateAttr(None)
    _external: Any = PrivateAttr(None)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        embed_model: BaseEmbedding | None = None,
        identity: ModelIdentity | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path=os.fspath(path), **kwargs)  # type: ignore[call-arg]
        if identity is None and isinstance(embed_model, LocalEmbedding):
            identity = embed_model.embedder.identity
        elif identity is None and embed_model is not None:
            self._external = embed_model
        self._fixed = identity
        self._handle = IndexHandle(
            self.path, self._identity, quantization=self.quantization, who="LlamaIndex"
        )
        if self._handle.reader() is not None:
            return
        if identity is not None:
            self._handle.create(identity.dimension)  # race-free: another creator's file is used
        elif embed_model is None:
            msg = (
                f"no index file at {self.path}; pass embed_model= (or identity=) to create one "
                "that records the model of its vectors"
            )
            raise IndexFileError(msg)
        # else: an external model of unknown dimension; the file is created at the first add.

    def _identity(self, dimension: int) -> ModelIdentity | None:
        """The model to check the file against (None: the one it records)."""
        if self._fixed is None and self._external is not None:
            return external_identity(self._external, dimension)
        return self._fixed

    @classmethod
    def class_name(cls) -> str:
        return "LokalVectorStore"

    @property
    def client(self) -> Index | None:
        """The core :class:`lokal.index.Index` (None until an external model's first add)."""
        return self._index

    def __repr__(self) -> str:
        return (
            f"LokalVectorStore({self._index!r})"
            if self._index
            else f"LokalVectorStore({self.path!r})"
        )

    # ---- writing ------------------------------------------------------------------------------

    def _writer(self, dimension: int | None = None) -> Index | None:
        """The index open for writing: created race-free on an external model's first add,
        opened writable on first write, which is when the core refuses agent-managed files
        (IndexReadOnly) and other variants (ModelMismatch)."""
        with self._lock:
            index = self._handle.reader()
            if index is None and dimension is not None:
                index = self._handle.create(dimension)
            if index is None:
                return None
            if dimension is not None:
                check_dimension(index, dimension, "node embeddings")
            return self._handle.writer(dimension)

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert nodes (node id = chunk id) with the embeddings they carry."""
        if not nodes:
            return []
        vectors = np.asarray([node.get_embedding() for node in nodes], dtype=np.float32)
        index = self._writer(dimension=vectors.shape[-1])
        assert index is not None
        return index.upsert([as_chunk(node) for node in nodes], vectors)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every chunk of the source document ``ref_doc_id`` (for a file the agent or
        the core wrote, that is the document's uri)."""
        index = self._writer()
        if index is None:
            return
        index.delete_where({"ref_doc_id": ref_doc_id})
        index.delete_document(ref_doc_id)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with these ids, those matching ``filters``, or (both given) those
        with these ids that match. Use :meth:`clear` to delete everything."""
        flt = to_lokal_filter(filters)
        if node_ids is None and flt is None:
            msg = "delete_nodes needs node_ids or filters; use clear() to delete every node"
            raise ValueError(msg)
        index = self._writer()
        if index is None:
            return
        if flt is None:
            index.delete(node_ids or [])
        elif node_ids is None:
            index.delete_where(flt)
        else:
            wanted = set(node_ids)
            index.delete([r.id for r in index.get(filter=flt) if r.id in wanted])

    def clear(self) -> None:
        index = self._writer()
        if index is not None:
            index.clear()

    # ---- reading (queries, node reads and async are LlamaIndexStore's) ----------------------

    def _matching(
        self, target: Index | CentralIndex, node_ids: list[str], flt: dict[str, Any]
    ) -> list[Record]:
        """In the order of ``node_ids``."""
        by_id = {r.id: r for r in target.get(filter=flt)}
        return [by_id[i] for i in node_ids if i in by_id]


def __getattr__(name: str) -> Any:
    """``LokalCentralVectorStore`` (the fleet's central store) from its own module, imported
    on first use."""
    if name == "LokalCentralVectorStore":
        from lokal.integrations.llama_index_central import LokalCentralVectorStore

        return LokalCentralVectorStore
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


# ---- reranker ----------------------------------------------------------------------------------


class LocalRerank(RerankerSettings, BaseNodePostprocessor):
    """Reranks retrieved nodes with a local cross-encoder; keeps the best ``top_n``.

    >>> rerank = LocalRerank(model="BAAI/bge-reranker-base", top_n=3)
    >>> index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])

    Returns new ``NodeWithScore`` objects, best first, whose ``score`` is the reranker's; the
    nodes themselves are shared, not copied (with ``keep_retrieval_score=True`` they are copied
    and the retrieval score goes into ``metadata["retrieval_score"]``). Node text is read as
    LlamaIndex's own ``SentenceTransformerRerank`` reads it (``MetadataMode.EMBED``), its
    first ``max_document_tokens`` (128, a MiniLM-size cross-encoder's CPU budget; None: all
    that fit).
    """

    model_config = ConfigDict(
        protected_namespaces=("pydantic_model_",), arbitrary_types_allowed=True, extra="forbid"
    )

    top_n: int | None = Field(2, ge=0, description="Nodes to keep; None keeps all.")
    keep_retrieval_score: bool = Field(
        False, description="Copy each node and keep its retrieval score in its metadata."
    )

    _reranker: Reranker = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._reranker = self.make_reranker()

    @classmethod
    def class_name(cls) -> str:
        return "LokalLocalRerank"

    @property
    def reranker(self) -> Reranker:
        """The core :class:`lokal.Reranker`."""
        return self._reranker

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            msg = "LocalRerank needs the query (query_bundle or query_str)"
            raise ValueError(msg)
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self._reranker.profile.name,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            ranked = self._reranker.rank(
                query_bundle.query_str,
                texts,
                self.top_n,
                max_document_tokens=self.max_document_tokens,
            )
            out = [self._scored(nodes[r.index], r.score) for r in ranked]
            event.on_end(payload={EventPayload.NODES: out})
        return out

    def _scored(self, hit: NodeWithScore, score: float) -> NodeWithScore:
        node = hit.node
        if self.keep_retrieval_score:
            node = node.model_copy(deep=True)
            node.metadata["retrieval_score"] = hit.score
        return NodeWithScore(node=node, score=score)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)

    def __repr__(self) -> str:
        return f"LocalRerank({self._reranker!r}, top_n={self.top_n})"
