"""What both LlamaIndex vector stores share: LlamaIndex's filters in lokal's filter language
(:func:`to_lokal_filter`), nodes as chunks and back, and the LlamaIndex interface written once
over a search target, an index file (:class:`~lokal.integrations.llama_index.LokalVectorStore`)
or a central store (:class:`~lokal.integrations.llama_index_central.LokalCentralVectorStore`).

Each store says where it reads (``_reading``: the open index or the central store, None while
there is no file) and how a record becomes a node (``_node``); queries in every mode, node
reads and the async methods are the same code for both. Writes stay each store's own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

from llama_index.core.schema import (
    BaseNode,
    MetadataMode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from lokal.errors import FilterError, ModelMismatch
from lokal.index import Chunk, Hit, Index, Record
from lokal.retrieval import retrieve

if TYPE_CHECKING:
    from lokal.central.store import CentralIndex

log = logging.getLogger("lokal.integrations.llama_index")

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


def as_chunk(node: BaseNode) -> Chunk:
    """A node as the chunk lokal stores (its ``ref_doc_id`` under :data:`REF_DOC_KEYS`)."""
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


def as_node(record: Record) -> TextNode:
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


def all_of(*filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The filters given (None skipped) joined by ``$and``; None for none."""
    parts = [dict(f) for f in filters if f]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def check_dimension(target: Index | CentralIndex, dimension: int, what: str) -> None:
    """Vectors of another dimension than ``target``'s come from another model."""
    if dimension != target.dimension:
        msg = (
            f"{target.path} holds vectors from {target.identity.describe()}; these {what} "
            f"have {dimension} dimensions, so they come from another model"
        )
        raise ModelMismatch(msg)


class LlamaIndexStore:
    """LlamaIndex's vector-store reads over ``_reading()``'s target (an
    :class:`~lokal.index.Index` or a :class:`~lokal.central.store.CentralIndex`), and the
    async methods (the work runs in a worker thread, the event loop stays free)."""

    #: What a query restricted to node ids is told to use instead.
    _NODE_IDS_ADVICE: ClassVar[str]

    # ---- what each store provides -------------------------------------------------------------

    @classmethod
    def class_name(cls) -> str:
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Index | CentralIndex | None]:
        """The target reads use, held for one read (None: no index file yet)."""
        raise NotImplementedError

    def _node(self, record: Record) -> TextNode:
        return as_node(record)

    def _matching(
        self, target: Index | CentralIndex, node_ids: list[str], flt: dict[str, Any]
    ) -> Sequence[Record]:
        """The records with these ids that match ``flt``."""
        raise NotImplementedError

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        raise NotImplementedError

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        raise NotImplementedError

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    # ---- reading ------------------------------------------------------------------------------

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """Nodes by id (in the order given), by filter (in storage order), or both; every node
        with neither."""
        flt = to_lokal_filter(filters)
        with self._reading() as target:
            if target is None:
                return []
            records: Sequence[Record]
            if node_ids is None:
                records = target.get(filter=flt)
            elif flt is None:
                records = target.get_by_ids(node_ids)
            else:
                records = self._matching(target, node_ids, flt)
        return [self._node(r) for r in records]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Nearest nodes to ``query.query_embedding`` among those matching ``query.filters``
        (and ``query.doc_ids``). ``mmr`` reads ``mmr_threshold`` (0..1, 1 = relevance only),
        ``mmr_prefetch_k`` or ``mmr_prefetch_factor`` from the query or keyword arguments."""
        with self._reading() as target:
            if target is None:
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            hits = self._search(target, query, **kwargs)
        return VectorStoreQueryResult(
            nodes=[self._node(h) for h in hits],
            similarities=[h.score for h in hits],
            ids=[h.id for h in hits],
        )

    def _search(
        self, target: Index | CentralIndex, query: VectorStoreQuery, **kwargs: Any
    ) -> Sequence[Hit]:
        name = self.class_name()
        if query.node_ids:
            msg = f"{name} cannot restrict a query to node_ids; {self._NODE_IDS_ADVICE}"
            raise NotImplementedError(msg)
        if query.query_embedding is None:
            msg = f"{name}.query needs query.query_embedding"
            raise ValueError(msg)
        check_dimension(target, len(query.query_embedding), "query embeddings")
        doc_ids = {"ref_doc_id": {"$in": list(query.doc_ids)}} if query.doc_ids else None
        flt = all_of(to_lokal_filter(query.filters), doc_ids)
        vector, k, mode = query.query_embedding, query.similarity_top_k, query.mode
        if mode == VectorStoreQueryMode.DEFAULT:
            return [r.hit for r in retrieve(target, "", k, vector=vector, filter=flt)]
        if mode == VectorStoreQueryMode.HYBRID:
            if not query.query_str:
                msg = "hybrid mode needs query.query_str for the full-text half"
                raise ValueError(msg)
            if query.alpha is not None:
                log.warning(
                    "%s ignores alpha=%s: hybrid search fuses the vector and "
                    "full-text rankings with lokal's measured weights",
                    name,
                    query.alpha,
                )
            k = query.hybrid_top_k or k
            fetch_k = max(query.sparse_top_k, k) if query.sparse_top_k else None
            found = retrieve(
                target, query.query_str, k, vector=vector, hybrid=True, filter=flt,
                fetch_k=fetch_k,
            )  # fmt: skip
            return [r.hit for r in found]
        if mode == VectorStoreQueryMode.MMR:
            threshold = query.mmr_threshold
            if threshold is None:
                threshold = kwargs.get("mmr_threshold")
            mmr_k = kwargs.get("mmr_prefetch_k") or int(
                k * float(kwargs.get("mmr_prefetch_factor", 4.0))
            )
            return target.mmr_search(
                vector,
                k,
                fetch_k=max(mmr_k, k),
                lambda_mult=0.5 if threshold is None else float(threshold),
                filter=flt,
            )
        msg = f"{name} does not support query mode {mode.value!r}; use 'default', 'hybrid' or 'mmr'"
        raise NotImplementedError(msg)

    # ---- async: the work runs in a worker thread, the event loop stays free -------------------

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
