"""What both LangChain vector stores share: LangChain's ``VectorStore`` interface written once
over a search target, an index file (:class:`~lokal.integrations.langchain.LokalVectorStore`)
or a central store (:class:`~lokal.integrations.langchain_central.LokalCentralVectorStore`).

Each store says only where it reads (``_reading``: the open index or the central store, None
while there is no file) and how it writes (``_start_write``, ``_upsert``, ``_delete``); the
searches, MMR, scores, argument checks and Documents are the same code for both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from typing_extensions import Self

from lokal.errors import ModelMismatch
from lokal.index import Chunk, Index, Record
from lokal.retrieval import retrieve

if TYPE_CHECKING:
    from lokal.central.store import CentralIndex

#: Where a Document read from an agent-written chunk says where the chunk came from: the
#: document's uri (``source``), the chunk's ``ordinal`` and, when known, its ``line_start`` /
#: ``line_end`` / ``char_start`` / ``char_end`` (and ``site``, the box, from a central store).
#: Only present for chunks stored under a document (as the agent writes them), and never over
#: a metadata key of the same name.
LOKAL_METADATA_KEY = "lokal"

_MMR_OPTIONS = "k, fetch_k, lambda_mult, filter (MMR ranks by vector only: no hybrid)"


class LangChainStore(VectorStore):
    """LangChain's vector-store methods over ``_reading()``'s target (an
    :class:`~lokal.index.Index` or a :class:`~lokal.central.store.CentralIndex`)."""

    #: The store's name in error messages.
    _NAME: ClassVar[str]
    _embedding: Embeddings

    # ---- what each store provides -------------------------------------------------------------

    def _reading(self) -> AbstractContextManager[Index | CentralIndex | None]:
        """The target searches read, held for one read (None: no index file yet)."""
        raise NotImplementedError

    def _start_write(self) -> None:
        """Refuse a write before any embedding work (read-only, another model)."""
        raise NotImplementedError

    def _upsert(self, chunks: list[Chunk], vectors: list[list[float]]) -> list[str]:
        raise NotImplementedError

    def _delete(self, ids: list[str] | None, filter: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def _query_vector(self, query: str) -> Any:
        return self._embedding.embed_query(query)

    def close(self) -> None:
        raise NotImplementedError

    # ---- the common parts ---------------------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @classmethod
    def _no_options(cls, method: str, kwargs: dict[str, Any], known: str) -> None:
        """Unknown keyword arguments are mistakes (a misspelt ``filter`` would search
        everything)."""
        if kwargs:
            msg = f"{cls._NAME}.{method} got unexpected {sorted(kwargs)}; it takes {known}"
            raise TypeError(msg)

    def _check_dimension(self, dimension: int, target: Index | CentralIndex) -> None:
        if dimension != target.dimension:
            msg = (
                f"{type(self._embedding).__name__} gives {dimension}-dimensional vectors; "
                f"{target.path} holds {target.dimension}-dimensional ones from "
                f"{target.identity.describe()}"
            )
            raise ModelMismatch(msg)

    def _has_file(self) -> bool:
        with self._reading() as target:
            return target is not None

    def _added(self, texts: list[str], metadatas: Any, ids: list[str] | None) -> Self:
        """This new store with ``texts`` added (closed again if adding fails)."""
        try:
            self.add_texts(texts, metadatas, ids=ids)
        except BaseException:
            self.close()
            raise
        return self

    # ---- writing ------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed ``texts`` and upsert them in one transaction (a central store: into
        ``write_site``): an id already there is replaced. Ids that are None are new UUIDs.
        Returns the ids in order.

        ``batch_size`` is accepted for LangChain's indexing API and not needed: the embedder
        batches on its own and the whole call is one transaction.
        """
        self._no_options("add_texts", kwargs, "ids, batch_size")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            msg = f"{len(metadatas)} metadatas for {len(texts)} texts"
            raise ValueError(msg)
        if ids is not None and len(ids) != len(texts):
            msg = f"{len(ids)} ids for {len(texts)} texts"
            raise ValueError(msg)
        if not texts:
            return []
        self._start_write()
        vectors = self._embedding.embed_documents(texts)
        if len(vectors) != len(texts):
            name = type(self._embedding).__name__
            msg = f"{name} returned {len(vectors)} vectors for {len(texts)} texts"
            raise ValueError(msg)
        none: list[None] = [None] * len(texts)
        metas: Sequence[dict[str, Any] | None] = metadatas or none
        chunk_ids: Sequence[str | None] = ids or none
        chunks = [
            Chunk(text, metadata=dict(meta or {}), id=chunk_id)
            for text, meta, chunk_id in zip(texts, metas, chunk_ids, strict=True)
        ]
        return self._upsert(chunks, vectors)

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Upsert documents: ``ids=`` if given, else each ``Document.id`` (None: a new UUID).
        The documents are not modified."""
        ids = kwargs.pop("ids", None)
        if ids is None and any(doc.id for doc in documents):
            ids = [doc.id for doc in documents]
        return self.add_texts(
            [doc.page_content for doc in documents],
            [doc.metadata for doc in documents],
            ids=ids,
            **kwargs,
        )

    def delete(
        self, ids: list[str] | None = None, *, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> bool:
        """Delete the chunks with these ids (missing ids are fine), or every chunk whose
        metadata matches ``filter`` (a central store: ``write_site``'s only). With neither,
        nothing is guessed: ValueError."""
        self._no_options("delete", kwargs, "ids, filter")
        if ids is None and not filter:
            msg = "delete needs ids or a filter (lokal never reads 'no ids' as 'delete all')"
            raise ValueError(msg)
        self._delete(ids, filter)
        return True

    # ---- reading ------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with these ids, in the order given; missing ids are skipped."""
        with self._reading() as target:
            return [] if target is None else [document(r) for r in target.get_by_ids(list(ids))]

    def _search(
        self,
        vector: Any,
        k: int,
        *,
        hybrid_text: str | None = None,
        filter: dict[str, Any] | None = None,
        score_threshold: float | None = None,
    ) -> list[tuple[Document, float]]:
        """Vector search, or hybrid search (vector + full text of ``hybrid_text``)."""
        with self._reading() as target:
            if target is None:
                return []
            self._check_dimension(len(vector), target)
            found = retrieve(
                target, hybrid_text or "", k, vector=vector, hybrid=hybrid_text is not None,
                filter=filter,
            )  # fmt: skip
        return [
            (document(r.hit), r.hit.score)
            for r in found
            if score_threshold is None or r.hit.score >= score_threshold
        ]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        *,
        filter: dict[str, Any] | None = None,
        hybrid: bool = False,
        score_threshold: float | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The ``k`` best chunks for ``query`` with lokal's relevance score: in [0, 1], higher is
        better (``(1 + cosine) / 2``; hybrid: the fused score, 1.0 for first in both
        rankings). Not a distance."""
        self._no_options("similarity_search", kwargs, "k, filter, hybrid, score_threshold")
        if not self._has_file():
            return []
        vector = self._query_vector(query)
        return self._search(
            vector,
            k,
            hybrid_text=query if hybrid else None,
            filter=filter,
            score_threshold=score_threshold,
        )

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        *,
        filter: dict[str, Any] | None = None,
        hybrid: bool = False,
        score_threshold: float | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` best chunks for ``query``; see :meth:`similarity_search_with_score`."""
        return [
            doc
            for doc, _ in self.similarity_search_with_score(
                query, k, filter=filter, hybrid=hybrid, score_threshold=score_threshold, **kwargs
            )
        ]

    def similarity_search_with_score_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        *,
        filter: dict[str, Any] | None = None,
        score_threshold: float | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The ``k`` chunks nearest to ``embedding`` with their relevance in [0, 1]."""
        self._no_options("similarity_search_by_vector", kwargs, "k, filter, score_threshold")
        return self._search(list(embedding), k, filter=filter, score_threshold=score_threshold)

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        *,
        filter: dict[str, Any] | None = None,
        score_threshold: float | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        return [
            doc
            for doc, _ in self.similarity_search_with_score_by_vector(
                embedding, k, filter=filter, score_threshold=score_threshold, **kwargs
            )
        ]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """lokal's scores already are relevance scores in [0, 1]: kept as they are."""
        return _same_score

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        *,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` chunks relevant to ``query`` and different from each other, chosen among the
        ``fetch_k`` nearest (``lambda_mult``: 1 = relevance only, 0 = diversity only)."""
        self._no_options("max_marginal_relevance_search", kwargs, _MMR_OPTIONS)
        if not self._has_file():
            return []
        return self.max_marginal_relevance_search_by_vector(
            self._query_vector(query), k, fetch_k, lambda_mult, filter=filter
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        *,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        self._no_options("max_marginal_relevance_search_by_vector", kwargs, _MMR_OPTIONS)
        with self._reading() as target:
            if target is None:
                return []
            self._check_dimension(len(embedding), target)
            hits = target.mmr_search(
                embedding, k, fetch_k=fetch_k, lambda_mult=lambda_mult, filter=filter
            )
        return [document(h) for h in hits]


def _same_score(score: float) -> float:
    return score


def document(record: Record) -> Document:
    """A stored chunk as a Document: its text, its metadata and, for a chunk stored under a
    document, :data:`LOKAL_METADATA_KEY` (a central store's records add their ``site``)."""
    metadata = dict(record.metadata)
    if record.document is not None and LOKAL_METADATA_KEY not in metadata:
        origin = {
            "site": getattr(record, "site", None),  # CentralRecord / CentralHit only
            "source": record.document,
            "ordinal": record.ordinal,
            "line_start": record.line_start,
            "line_end": record.line_end,
            "char_start": record.char_start,
            "char_end": record.char_end,
        }
        metadata[LOKAL_METADATA_KEY] = {k: v for k, v in origin.items() if v is not None}
    return Document(id=record.id, page_content=record.text, metadata=metadata)
