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

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, TextNode
from llama_index.core.vector_stores.types import BasePydanticVectorStore, MetadataFilters
from pydantic import ConfigDict, Field, PrivateAttr

from lokal.central.store import DEFAULT_SCHEMA, CentralIndex
from lokal.identity import ModelIdentity
from lokal.index import Index, Record
from lokal.integrations.llama_index import LocalEmbedding, external_identity
from lokal.integrations.llama_index_store import (
    LlamaIndexStore,
    all_of,
    as_chunk,
    as_node,
    check_dimension,
    to_lokal_filter,
)
from lokal.integrations.shared import CentralOwner, central_settings

#: The metadata key under which a node from a box's chunk says where it came from (its
#: ``site`` and ``source``, the path on the box), as LangChain documents do.
LOKAL_METADATA_KEY = "lokal"


class LokalCentralVectorStore(CentralOwner, LlamaIndexStore, BasePydanticVectorStore):
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
    _NODE_IDS_ADVICE: ClassVar[str] = "use filters"

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
            embed_model = LocalEmbedding(**central_settings(url, schema=schema, **secrets))
        self._embed_model = embed_model
        self._open_central(url, schema=schema, site=site, **secrets)

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

    # ---- writing: into write_site only --------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert nodes (node id = chunk id) into ``write_site``, with their embeddings."""
        if not nodes:
            return []
        site = self._site()
        self._central.check_identity(self._identity(), writing=True)
        vectors = np.asarray([node.get_embedding() for node in nodes], dtype=np.float32)
        check_dimension(self._central, vectors.shape[-1], "node embeddings")
        return self._central.upsert([as_chunk(node) for node in nodes], vectors, site=site)

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
            mine = self._central.get(filter=all_of(flt, {"site": site}))
            self._central.delete([r.id for r in mine if r.id in wanted], site=site)

    def clear(self) -> None:
        """Delete every node of ``write_site`` (never a box's rows)."""
        site = self._site()
        self._central.delete_where({"site": site}, site=site)

    # ---- reading (queries, node reads and async are LlamaIndexStore's) ------------------------

    def _matching(
        self, target: Index | CentralIndex, node_ids: list[str], flt: dict[str, Any]
    ) -> list[Record]:
        """In storage order (an id may stand in several sites)."""
        wanted = set(node_ids)
        return [r for r in target.get(filter=flt) if r.id in wanted]

    def _node(self, record: Record) -> TextNode:
        node = as_node(record)
        if record.document is not None and LOKAL_METADATA_KEY not in node.metadata:
            site = getattr(record, "site", None)  # a CentralRecord / CentralHit
            node.metadata[LOKAL_METADATA_KEY] = {"site": site, "source": record.document}
        return node
