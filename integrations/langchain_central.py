"""LangChain over the fleet's central store: :class:`LokalCentralVectorStore`, the
PostgreSQL + pgvector collection every box's index syncs into, searched like
:class:`~lokal.integrations.langchain.LokalVectorStore` searches one file.

>>> from lokal.integrations.langchain import LokalCentralVectorStore
>>> store = LokalCentralVectorStore("postgresql://reader@central/fleet")   # its recorded model
>>> store.similarity_search("pump fault", k=5, filter={"site": "plant-7"})
>>> store.as_retriever(search_kwargs={"k": 5, "hybrid": True, "filter": {"kind": "manual"}})

Needs the ``langchain`` and ``central`` extras.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from typing_extensions import Self

from lokal.central.reader import describe, recorded_identity
from lokal.central.store import DEFAULT_SCHEMA, CentralHit, CentralIndex, CentralRecord
from lokal.embedder import options_for
from lokal.errors import IndexReadOnly, ModelMismatch
from lokal.identity import ModelIdentity
from lokal.index import Chunk
from lokal.integrations.langchain import (
    LOKAL_METADATA_KEY,
    LocalEmbeddings,
    langchain_identity,
)

_MMR_OPTIONS = "k, fetch_k, lambda_mult, filter (MMR ranks by vector only: no hybrid)"


class LokalCentralVectorStore(VectorStore):
    """A LangChain vector store over a lokal central store (``postgresql://...``).

    Searches take lokal's filter language (the same as an index file's) plus two keys for
    where a chunk came from: ``site`` (the box) and ``path`` (the document on it).
    ``k`` results come back whenever ``k`` chunks match a filter; ``hybrid=True`` fuses
    vector and full-text rankings; MMR and ``score_threshold`` work as on a file. Scores are
    lokal's relevance in [0, 1]: ``(1 + cosine) / 2``, or the fused score (hybrid).

    The collection records the model that made its vectors. ``embedding`` may be ``None`` (the
    recorded model is loaded), a :class:`~lokal.integrations.langchain.LocalEmbeddings`
    (checked: another model is :class:`~lokal.errors.ModelMismatch`, another variant warns),
    or any LangChain ``Embeddings`` (identified by class, model name and dimension).

    Documents from a box's chunks carry :data:`~lokal.integrations.langchain.LOKAL_METADATA_KEY`
    with ``site``, ``source`` (the path on the box), ``ordinal`` and line / character ranges.

    Writes (``add_texts``, ``add_documents``, ``delete``) go to one site of the application's
    own, ``write_site`` (default ``"app"``), never to a box's rows; ``write_site=None`` makes
    the store read-only. The collection itself is created by ``lokal central init`` or the
    first ``lokal sync``.

    Args:
        url: the central store, ``postgresql://USER@HOST/DB`` (the password from
            ``password_file``, the environment variable ``password_env``, ``PGPASSWORD`` or
            ``~/.pgpass``; TLS with ``?sslmode=verify-full``).
        embedding: see above.
        schema: the collection's schema (default ``lokal``).
        site: read only these sites (one name or several).
        write_site: the site this application writes as.
    """

    def __init__(
        self,
        url: str,
        embedding: Embeddings | None = None,
        *,
        schema: str = DEFAULT_SCHEMA,
        site: str | Sequence[str] | None = None,
        write_site: str | None = "app",
        password_file: str | None = None,
        password_env: str | None = None,
    ) -> None:
        secrets = {"password_file": password_file, "password_env": password_env}
        if embedding is None:
            identity = recorded_identity(url, schema=schema, **secrets)
            embedding = LocalEmbeddings(**options_for(identity, describe(url)))
        self._embedding: Embeddings = embedding
        self.write_site = write_site
        self._lock = threading.RLock()
        self._central = CentralIndex.open(
            url, schema=schema, site=site, password_file=password_file, password_env=password_env
        )
        try:
            self._central.check_identity(self._identity())
        except BaseException:
            self._central.close()
            raise

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def central(self) -> CentralIndex:
        """The core :class:`~lokal.central.store.CentralIndex` (site, schema, identity)."""
        return self._central

    def _identity(self) -> ModelIdentity:
        if isinstance(self._embedding, LocalEmbeddings):
            return self._embedding.embedder.identity
        return langchain_identity(self._embedding, self._central.dimension)

    def close(self) -> None:
        self._central.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LokalCentralVectorStore({self._central!r}, write_site={self.write_site!r})"

    # ---- writing -------------------------------------------------------------------------------

    def _site(self) -> str:
        if self.write_site is None:
            msg = "this LokalCentralVectorStore is read-only (write_site=None)"
            raise IndexReadOnly(msg)
        return self.write_site

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed ``texts`` and upsert them into ``write_site`` in one transaction (an id
        already there is replaced; None ids become UUIDs). Returns the ids in order."""
        _no_options("add_texts", kwargs, "ids, batch_size")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            msg = f"{len(metadatas)} metadatas for {len(texts)} texts"
            raise ValueError(msg)
        if ids is not None and len(ids) != len(texts):
            msg = f"{len(ids)} ids for {len(texts)} texts"
            raise ValueError(msg)
        if not texts:
            return []
        site = self._site()
        self._central.check_identity(self._identity(), writing=True)
        vectors = self._embedding.embed_documents(texts)
        if len(vectors) != len(texts):
            name = type(self._embedding).__name__
            msg = f"{name} returned {len(vectors)} vectors for {len(texts)} texts"
            raise ValueError(msg)
        self._check_dimension(len(vectors[0]))
        metas = metadatas or [{} for _ in texts]
        chunk_ids: Sequence[str | None] = ids or [None] * len(texts)
        chunks = [
            Chunk(text, metadata=dict(meta or {}), id=chunk_id)
            for text, meta, chunk_id in zip(texts, metas, chunk_ids, strict=True)
        ]
        with self._lock:
            return self._central.upsert(chunks, vectors, site=site)

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Upsert documents: ``ids=`` if given, else each ``Document.id`` (None: a new UUID)."""
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
        """Delete ``write_site``'s chunks with these ids (missing ids are fine), or those whose
        metadata matches ``filter``. With neither, nothing is guessed: ValueError."""
        _no_options("delete", kwargs, "ids, filter")
        if ids is None and not filter:
            msg = "delete needs ids or a filter (lokal never reads 'no ids' as 'delete all')"
            raise ValueError(msg)
        site = self._site()
        with self._lock:
            if ids is not None:
                self._central.delete(ids, site=site)
            if filter:
                self._central.delete_where(filter, site=site)
        return True

    # ---- reading -------------------------------------------------------------------------------

    def _check_dimension(self, dimension: int) -> None:
        if dimension != self._central.dimension:
            msg = (
                f"{type(self._embedding).__name__} gives {dimension}-dimensional vectors; "
                f"{self._central.path} holds {self._central.dimension}-dimensional ones from "
                f"{self._central.identity.describe()}"
            )
            raise ModelMismatch(msg)

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with these ids, in the order given; missing ids are skipped."""
        return [_document(r) for r in self._central.get_by_ids(list(ids))]

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
        """The ``k`` best chunks for ``query`` with lokal's relevance score in [0, 1]."""
        _no_options("similarity_search", kwargs, "k, filter, hybrid, score_threshold")
        vector = self._embedding.embed_query(query)
        self._check_dimension(len(vector))
        if hybrid:
            hits = self._central.hybrid_search(vector, query, k, filter=filter)
        else:
            hits = self._central.search(vector, k, filter=filter)
        return _scored(hits, score_threshold)

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
        _no_options("similarity_search_by_vector", kwargs, "k, filter, score_threshold")
        self._check_dimension(len(embedding))
        return _scored(self._central.search(list(embedding), k, filter=filter), score_threshold)

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
        _no_options("max_marginal_relevance_search", kwargs, _MMR_OPTIONS)
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query), k, fetch_k, lambda_mult, filter=filter
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
        _no_options("max_marginal_relevance_search_by_vector", kwargs, _MMR_OPTIONS)
        self._check_dimension(len(embedding))
        hits = self._central.mmr_search(
            embedding, k, fetch_k=fetch_k, lambda_mult=lambda_mult, filter=filter
        )
        return [_document(h) for h in hits]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        url: str | None = None,
        **kwargs: Any,
    ) -> Self:
        """Add ``texts`` to the central store at ``url`` (as ``write_site``) and return it."""
        if url is None:
            msg = "LokalCentralVectorStore.from_texts needs url=: the central store"
            raise TypeError(msg)
        store = cls(url, embedding, **kwargs)
        try:
            store.add_texts(texts, metadatas, ids=ids)
        except BaseException:
            store.close()
            raise
        return store


def _same_score(score: float) -> float:
    return score


def _no_options(method: str, kwargs: dict[str, Any], known: str) -> None:
    if kwargs:
        msg = f"LokalCentralVectorStore.{method} got unexpected {sorted(kwargs)}; it takes {known}"
        raise TypeError(msg)


def _scored(hits: Sequence[Any], threshold: float | None) -> list[tuple[Document, float]]:
    return [(_document(h), h.score) for h in hits if threshold is None or h.score >= threshold]


def _document(record: CentralRecord | CentralHit) -> Document:
    metadata = dict(record.metadata)
    if record.document is not None and LOKAL_METADATA_KEY not in metadata:
        origin = {
            "site": record.site,
            "source": record.document,
            "ordinal": record.ordinal,
            "line_start": record.line_start,
            "line_end": record.line_end,
            "char_start": record.char_start,
            "char_end": record.char_end,
        }
        metadata[LOKAL_METADATA_KEY] = {k: v for k, v in origin.items() if v is not None}
    return Document(id=record.id, page_content=record.text, metadata=metadata)
