"""LlamaIndex over the fleet's central store: :class:`LokalCentralVectorStore`, the PostgreSQL
+ pgvector collection every box's index syncs into, queried like
:class:`~lokal.integrations.llama_index.LokalVectorStore` queries one file.

>>> from llama_index.core import VectorStoreIndex
>>> from lokal.integrations.llama_index import LokalCentralVectorStore
>>> store = LokalCentralVectorStore("postgresql://reader@central/fleet")
>>> index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)

Needs the ``llamaindex`` and ``central`` extras.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from pydantic import ConfigDict, Field, PrivateAttr

from lokal.central.reader import describe, recorded_identity
from lokal.central.store import DEFAULT_SCHEMA, CentralHit, CentralIndex, CentralRecord
from lokal.embedder import options_for
from lokal.errors import IndexReadOnly, ModelMismatch
from lokal.identity import ModelIdentity
from lokal.integrations.llama_index import (
    LocalEmbedding,
    _both,
    _chunk,
    _node,
    external_identity,
    to_lokal_filter,
)

#: The metadata key under which a node from a box's chunk says where it came from (its
#: ``site`` and ``source``, the path on the box), as LangChain documents do.
LOKAL_METADATA_KEY = "lokal"


class LokalCentralVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over a lokal central store (``postgresql://...``).

    Filters (every LlamaIndex ``FilterOperator``, AND / OR / NOT, nested) run in PostgreSQL
    with two more keys: ``site`` and ``path``; ``k`` results whenever ``k`` nodes match.
    Query modes: default (vector), ``hybrid`` (needs ``query_str``) and ``mmr``. Scores are
    lokal's, in [0, 1].

    With no ``embed_model`` the collection's recorded model is loaded (``embed_model``
    property); a :class:`~lokal.integrations.llama_index.LocalEmbedding` is checked against
    it; any other embedding is identified by class, model name and the recorded dimension.
    Writes go to the application's own ``write_site`` only (``None``: read-only).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    stores_text: bool = True
    is_embedding_query: bool = True
    url: str = Field(description="The central store: postgresql://USER@HOST/DB.")
    db_schema: str = Field(DEFAULT_SCHEMA, description="The collection's schema.")
    write_site: str | None = Field("app", description="The site this application writes as.")

    _central: CentralIndex = PrivateAttr()
    _embed_model: Any = PrivateAttr(None)

    def __init__(
        self,
        url: str,
        *,
        embed_model: BaseEmbedding | None = None,
        schema: str = DEFAULT_SCHEMA,
        site: str | Sequence[str] | None = None,
        write_site: str | None = "app",
        password_file: str | None = None,
        password_env: str | None = None,
    ) -> None:
        super().__init__(url=url, db_schema=schema, write_site=write_site)  # type: ignore[call-arg]
        secrets = {"password_file": password_file, "password_env": password_env}
        if embed_model is None:
            identity = recorded_identity(url, schema=schema, **secrets)
            embed_model = LocalEmbedding(**options_for(identity, describe(url)))
        self._embed_model = embed_model
        self._central = CentralIndex.open(
            url, schema=schema, site=site, password_file=password_file, password_env=password_env
        )
        try:
            self._central.check_identity(self._identity())
        except BaseException:
            self._central.close()
            raise

    @classmethod
    def class_name(cls) -> str:
        return "LokalCentralVectorStore"

    @property
    def client(self) -> CentralIndex:
        """The core :class:`~lokal.central.store.CentralIndex`."""
        return self._central

    @property
    def embed_model(self) -> Any:
        """The embedding model queries must use (the recorded one unless one was given)."""
        return self._embed_model

    def _identity(self) -> ModelIdentity:
        if isinstance(self._embed_model, LocalEmbedding):
            return self._embed_model.embedder.identity
        return external_identity(self._embed_model, self._central.dimension)

    def close(self) -> None:
        self._central.close()

    def __enter__(self) -> LokalCentralVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LokalCentralVectorStore({self._central!r}, write_site={self.write_site!r})"

    # ---- writing ------------------------------------------------------------------------------

    def _site(self) -> str:
        if self.write_site is None:
            msg = "this LokalCentralVectorStore is read-only (write_site=None)"
            raise IndexReadOnly(msg)
        return self.write_site

    def _check_dimension(self, dimension: int, what: str) -> None:
        if dimension != self._central.dimension:
            msg = (
                f"{self._central.path} holds vectors from "
                f"{self._central.identity.describe()}; these {what} have {dimension} "
                "dimensions, so they come from another model"
            )
            raise ModelMismatch(msg)

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert nodes (node id = chunk id) into ``write_site``, with their embeddings."""
        if not nodes:
            return []
        site = self._site()
        self._central.check_identity(self._identity(), writing=True)
        vectors = np.asarray([node.get_embedding() for node in nodes], dtype=np.float32)
        self._check_dimension(vectors.shape[-1], "node embeddings")
        return self._central.upsert([_chunk(node) for node in nodes], vectors, site=site)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete ``write_site``'s nodes of the source document ``ref_doc_id``."""
        self._central.delete_where({"ref_doc_id": ref_doc_id}, site=self._site())

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete ``write_site``'s nodes with these ids, matching ``filters``, or both."""
        flt = to_lokal_filter(filters)
        if node_ids is None and flt is None:
            msg = "delete_nodes needs node_ids or filters; use clear() to delete every node"
            raise ValueError(msg)
        site = self._site()
        if flt is None:
            self._central.delete(node_ids or [], site=site)
        elif node_ids is None:
            self._central.delete_where(flt, site=site)
        else:
            wanted = set(node_ids)
            mine = self._central.get(filter=_both(flt, {"site": site}))
            self._central.delete([r.id for r in mine if r.id in wanted], site=site)

    def clear(self) -> None:
        """Delete every node of ``write_site`` (never a box's rows)."""
        site = self._site()
        self._central.delete_where({"site": site}, site=site)

    # ---- reading ------------------------------------------------------------------------------

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """Nodes by id (in the order given), by filter, or both."""
        flt = to_lokal_filter(filters)
        records: Sequence[CentralRecord]
        if node_ids is None:
            records = self._central.get(filter=flt)
        elif flt is None:
            records = self._central.get_by_ids(node_ids)
        else:
            wanted = set(node_ids)
            records = [r for r in self._central.get(filter=flt) if r.id in wanted]
        return [_central_node(r) for r in records]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Nearest nodes to ``query.query_embedding`` among those matching ``query.filters``
        (and ``query.doc_ids``); modes and MMR options as the file store's."""
        if query.node_ids:
            msg = "LokalCentralVectorStore cannot restrict a query to node_ids; use filters"
            raise NotImplementedError(msg)
        if query.query_embedding is None:
            msg = "LokalCentralVectorStore.query needs query.query_embedding"
            raise ValueError(msg)
        self._check_dimension(len(query.query_embedding), "query embeddings")
        doc_ids = {"ref_doc_id": {"$in": list(query.doc_ids)}} if query.doc_ids else None
        flt = _both(to_lokal_filter(query.filters), doc_ids)
        vector, k, mode = query.query_embedding, query.similarity_top_k, query.mode
        hits: list[CentralHit]
        if mode == VectorStoreQueryMode.DEFAULT:
            hits = self._central.search(vector, k, filter=flt)
        elif mode == VectorStoreQueryMode.HYBRID:
            if not query.query_str:
                msg = "hybrid mode needs query.query_str for the full-text half"
                raise ValueError(msg)
            k = query.hybrid_top_k or k
            fetch_k = max(query.sparse_top_k, k) if query.sparse_top_k else None
            hits = self._central.hybrid_search(
                vector, query.query_str, k, filter=flt, fetch_k=fetch_k
            )
        elif mode == VectorStoreQueryMode.MMR:
            threshold = query.mmr_threshold
            if threshold is None:
                threshold = kwargs.get("mmr_threshold")
            fetch_k = kwargs.get("mmr_prefetch_k") or int(
                k * float(kwargs.get("mmr_prefetch_factor", 4.0))
            )
            hits = self._central.mmr_search(
                vector,
                k,
                fetch_k=max(fetch_k, k),
                lambda_mult=0.5 if threshold is None else float(threshold),
                filter=flt,
            )
        else:
            msg = (
                f"LokalCentralVectorStore does not support query mode {mode.value!r}; use "
                "'default', 'hybrid' or 'mmr'"
            )
            raise NotImplementedError(msg)
        return VectorStoreQueryResult(
            nodes=[_central_node(h) for h in hits],
            similarities=[h.score for h in hits],
            ids=[h.id for h in hits],
        )

    # ---- async: the database round trips run in a worker thread -------------------------------

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


def _central_node(record: CentralRecord | CentralHit) -> TextNode:
    node = _node(record)
    if record.document is not None and LOKAL_METADATA_KEY not in node.metadata:
        node.metadata[LOKAL_METADATA_KEY] = {"site": record.site, "source": record.document}
    return node
