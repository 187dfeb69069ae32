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
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lokal.errors import FilterError, IndexFileError, MissingDependency, ModelMismatch

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import (
        BaseNode,
        MetadataMode,
        NodeRelationship,
        NodeWithScore,
        QueryBundle,
        RelatedNodeInfo,
        TextNode,
    )
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from pydantic import ConfigDict, Field, PrivateAttr
except ImportError as exc:  # pragma: no cover - exercised in a bare environment
    raise MissingDependency(extra="llamaindex", feature="lokal.integrations.llama_index") from exc

from lokal.embedder import Embedder
from lokal.identity import ModelIdentity
from lokal.index import Chunk, Hit, Index, IndexHandle, Record
from lokal.integrations import shared
from lokal.integrations.shared import (
    EmbedderSettings,
    HandleOwner,
    RerankerSettings,
    vectors_as_lists,
)
from lokal.reranker import Reranker
from lokal.retrieval import retrieve

log = logging.getLogger(__name__)


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

#: LlamaIndex filter operators and the lokal filter operators they map onto.
FILTER_OPERATORS: dict[str, str] = {
    FilterOperator.EQ.value: "$eq",
    FilterOperator.NE.value: "$ne",
    FilterOperator.GT.value: "$gt",
    FilterOperator.GTE.value: "$gte",
    FilterOperator.LT.value: "$lt",
    FilterOperator.LTE.value: "$lte",
    FilterOperator.IN.value: "$in",
    FilterOperator.NIN.value: "$nin",
    FilterOperator.ANY.value: "$any",
    FilterOperator.ALL.value: "$all",
    FilterOperator.CONTAINS.value: "$contains",
    FilterOperator.TEXT_MATCH.value: "$text_match",
    FilterOperator.TEXT_MATCH_INSENSITIVE.value: "$text_match_insensitive",
    FilterOperator.IS_EMPTY.value: "$is_empty",
}

#: Metadata keys a node's ``ref_doc_id`` is stored under (LlamaIndex's own convention), so
#: ``delete(ref_doc_id)`` and ``doc_ids`` work as metadata filters inside the index.
REF_DOC_KEYS = ("ref_doc_id", "doc_id", "document_id")


def to_lokal_filter(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex ``MetadataFilters`` as a lokal filter dict (None for no filter).

    Every :class:`FilterOperator` maps onto the lokal operator of the same meaning; AND and
    OR become ``$and`` / ``$or``; NOT means "none of the filters holds", as in LlamaIndex's
    own stores: ``{"$not": {"$or": [...]}}``. Nested ``MetadataFilters`` nest.
    """
    if filters is None or not filters.filters:
        return None
    return _filter_group(filters)


def _filter_group(filters: MetadataFilters) -> dict[str, Any]:
    if not filters.filters:
        msg = "a nested MetadataFilters has no filters; remove it or give it at least one"
        raise FilterError(msg)
    parts = [
        _filter_group(f) if isinstance(f, MetadataFilters) else _filter_one(f)
        for f in filters.filters
    ]
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"$and": parts}
    if condition == FilterCondition.OR:
        return {"$or": parts}
    if condition == FilterCondition.NOT:
        return {"$not": parts[0] if len(parts) == 1 else {"$or": parts}}
    msg = f"filter condition {condition!r} has no lokal equivalent"  # pragma: no cover
    raise FilterError(msg)  # pragma: no cover


def _filter_one(flt: MetadataFilter) -> dict[str, Any]:
    operator = getattr(flt.operator, "value", flt.operator)
    op = FILTER_OPERATORS.get(operator)
    if op is None:
        known = ", ".join(FilterOperator(o).name for o in FILTER_OPERATORS)
        msg = (
            f"LlamaIndex filter operator {operator!r} (on {flt.key!r}) has no lokal "
            f"equivalent; supported: {known}"
        )
        raise FilterError(msg)
    if op == "$is_empty":
        return {flt.key: {op: True}}
    return {flt.key: {op: flt.value}}


def external_identity(embed_model: Any, dimension: int) -> ModelIdentity:
    """The identity lokal records for vectors from an embedding model it does not load itself:
    its class and model name (``model_name`` / ``model``; LlamaIndex's placeholder "unknown"
    counts as none) and the dimension."""
    return shared.external_identity("llama_index", embed_model, dimension, placeholder="unknown")


def _chunk(node: BaseNode) -> Chunk:
    metadata = dict(node.metadata)
    if node.ref_doc_id is not None:
        metadata.update(dict.fromkeys(REF_DOC_KEYS, node.ref_doc_id))
    return Chunk(
        text=node.get_content(metadata_mode=MetadataMode.NONE),
        char_start=getattr(node, "start_char_idx", None),
        char_end=getattr(node, "end_char_idx", None),
        metadata=metadata,
        id=node.node_id,
    )


def _node(record: Record) -> TextNode:
    """A stored chunk as a TextNode: its text, its metadata, and its source document (the
    ``ref_doc_id`` LlamaIndex wrote, else the index's document uri, as the agent writes)."""
    metadata = dict(record.metadata)
    ref = metadata.get("ref_doc_id")
    if isinstance(ref, str):
        for key in REF_DOC_KEYS:
            if metadata.get(key) == ref:
                del metadata[key]
    else:
        ref = record.document
    relationships = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id=ref)} if ref else {}
    return TextNode(
        id_=record.id,
        text=record.text,
        metadata=metadata,
        start_char_idx=record.char_start,
        end_char_idx=record.char_end,
        relationships=relationships,
    )


def _both(*filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    parts = [dict(f) for f in filters if f]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


class LokalVectorStore(HandleOwner, BasePydanticVectorStore):
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
                self._check_dimension(index, dimension, "node embeddings")
            return self._handle.writer(dimension)

    @staticmethod
    def _check_dimension(index: Index, dimension: int, what: str) -> None:
        if dimension != index.dimension:
            msg = (
                f"{index.path} holds vectors from {index.identity.describe()}; these {what} "
                f"have {dimension} dimensions, so they come from another model"
            )
            raise ModelMismatch(msg)

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert nodes (node id = chunk id) with the embeddings they carry."""
        if not nodes:
            return []
        vectors = np.asarray([node.get_embedding() for node in nodes], dtype=np.float32)
        index = self._writer(dimension=vectors.shape[-1])
        assert index is not None
        return index.upsert([_chunk(node) for node in nodes], vectors)

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

    # ---- reading ------------------------------------------------------------------------------

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """Nodes by id (in the order given), by filter (in storage order), or both; every node
        with neither."""
        flt = to_lokal_filter(filters)
        with self._lock:  # a first write may swap in a writable connection
            index = self._handle.reader()
            if index is None:
                return []
            if node_ids is None:
                records = index.get(filter=flt)
            elif flt is None:
                records = index.get_by_ids(node_ids)
            else:
                by_id = {r.id: r for r in index.get(filter=flt)}
                records = [by_id[i] for i in node_ids if i in by_id]
        return [_node(r) for r in records]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Nearest nodes to ``query.query_embedding`` among those matching ``query.filters``
        (and ``query.doc_ids``). ``mmr`` reads ``mmr_threshold`` (0..1, 1 = relevance only),
        ``mmr_prefetch_k`` or ``mmr_prefetch_factor`` from the query or keyword arguments."""
        with self._lock:  # a first write may swap in a writable connection
            index = self._handle.reader()
            if index is None:
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            hits = self._search(index, query, **kwargs)
        return VectorStoreQueryResult(
            nodes=[_node(h) for h in hits],
            similarities=[h.score for h in hits],
            ids=[h.id for h in hits],
        )

    def _search(self, index: Index, query: VectorStoreQuery, **kwargs: Any) -> list[Hit]:
        if query.node_ids:
            msg = (
                "LokalVectorStore cannot restrict a query to node_ids; restrict it with "
                "filters (or doc_ids) on the nodes' metadata"
            )
            raise NotImplementedError(msg)
        if query.query_embedding is None:
            msg = "LokalVectorStore.query needs query.query_embedding"
            raise ValueError(msg)
        self._check_dimension(index, len(query.query_embedding), "query embeddings")
        doc_ids = {"ref_doc_id": {"$in": list(query.doc_ids)}} if query.doc_ids else None
        flt = _both(to_lokal_filter(query.filters), doc_ids)
        vector, k, mode = query.query_embedding, query.similarity_top_k, query.mode
        if mode == VectorStoreQueryMode.DEFAULT:
            hits = [r.hit for r in retrieve(index, "", k, vector=vector, filter=flt)]
        elif mode == VectorStoreQueryMode.HYBRID:
            if not query.query_str:
                msg = "hybrid mode needs query.query_str for the full-text half"
                raise ValueError(msg)
            if query.alpha is not None:
                log.warning(
                    "LokalVectorStore ignores alpha=%s: hybrid search fuses the vector and "
                    "full-text rankings with lokal's measured weights",
                    query.alpha,
                )
            k = query.hybrid_top_k or k
            fetch_k = max(query.sparse_top_k, k) if query.sparse_top_k else None
            found = retrieve(
                index, query.query_str, k, vector=vector, hybrid=True, filter=flt,
                fetch_k=fetch_k,
            )  # fmt: skip
            hits = [r.hit for r in found]
        elif mode == VectorStoreQueryMode.MMR:
            threshold = query.mmr_threshold
            if threshold is None:
                threshold = kwargs.get("mmr_threshold")
            fetch_k = kwargs.get("mmr_prefetch_k") or int(
                k * float(kwargs.get("mmr_prefetch_factor", 4.0))
            )
            hits = index.mmr_search(
                vector,
                k,
                fetch_k=max(fetch_k, k),
                lambda_mult=0.5 if threshold is None else float(threshold),
                filter=flt,
            )
        else:
            msg = (
                f"LokalVectorStore does not support query mode {mode.value!r}; use "
                "'default', 'hybrid' or 'mmr'"
            )
            raise NotImplementedError(msg)
        return hits

    # ---- async: local work runs in a worker thread, the event loop stays free -----------------

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)


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
