"""LangChain adapters: :class:`LocalEmbeddings`, a LangChain ``Embeddings`` over a local model,
:class:`LokalVectorStore`, a LangChain ``VectorStore`` over a lokal index file, and
:class:`LocalReranker`, a document compressor that reranks with a local cross-encoder.

>>> from lokal.integrations.langchain import LocalEmbeddings, LokalVectorStore
>>> emb = LocalEmbeddings()                  # embedded default, offline, prefixes handled
>>> emb.embed_query("what is a coroutine?")[:3]
>>> store = LokalVectorStore("/var/lib/lokal/index.db")   # the agent's index, its own model
>>> store.as_retriever(search_kwargs={"k": 5, "hybrid": True}).invoke("ERR-4711")

Needs the ``langchain`` extra (``pip install 'lokal[langchain]'``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lokal.errors import IndexFileError, MissingDependency, ModelMismatch

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
    from pydantic import ConfigDict, Field, PrivateAttr
    from typing_extensions import Self
except ImportError as exc:  # pragma: no cover - exercised in a bare environment
    raise MissingDependency(extra="langchain", feature="lokal.integrations.langchain") from exc

from lokal.embedder import Embedder
from lokal.identity import ModelIdentity
from lokal.index import Chunk, Hit, Index, IndexHandle, Record
from lokal.index.search import QUANTIZATIONS
from lokal.integrations.shared import (
    EMBEDDER_CONTEXT,
    EmbedderSettings,
    HandleOwner,
    RerankerSettings,
    external_identity,
    vectors_as_lists,
)
from lokal.reranker import Reranker
from lokal.retrieval import open_recorded, retrieve

log = logging.getLogger(__name__)


class LocalEmbeddings(EmbedderSettings, Embeddings):
    """Local embeddings for LangChain: no API key, no network once the model is on disk.

    The model's query and document prefixes are applied for you (``embed_query`` vs
    ``embed_documents``); text longer than the model's context is never cut silently.
    The model loads on first use, once per process. The settings are
    :class:`lokal.integrations.shared.EmbedderSettings`' fields, and ``batch_size``;
    ``model_name``, ``model_kwargs`` and ``encode_kwargs`` as HuggingFaceEmbeddings takes them.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    batch_size: int = Field(32, gt=0, description="Texts per forward pass / per decode.")

    _embedder: Embedder = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._embedder = self.make_embedder(self.batch_size, context)

    @classmethod
    def from_embedder(cls, embedder: Embedder) -> LocalEmbeddings:
        """LocalEmbeddings over a core Embedder already built (its settings as fields)."""
        return cls.model_validate(cls.fields_of(embedder), context={EMBEDDER_CONTEXT: embedder})

    @property
    def embedder(self) -> Embedder:
        """The core :class:`lokal.Embedder` (token counts, identity, profile)."""
        return self._embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return vectors_as_lists(self._embedder.embed_documents(texts).vectors)

    def embed_query(self, text: str) -> list[float]:
        return vectors_as_lists(self._embedder.embed_queries([text]).vectors)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        result = await self._embedder.aembed_documents(texts)
        return vectors_as_lists(result.vectors)

    async def aembed_query(self, text: str) -> list[float]:
        result = await self._embedder.aembed_queries([text])
        return vectors_as_lists(result.vectors)[0]

    def __repr__(self) -> str:
        return f"LocalEmbeddings({self._embedder!r})"


# ---- vector store ----------------------------------------------------------------------------

#: Where a Document read from an agent-written chunk says where the chunk came from: the
#: document's uri (``source``), the chunk's ``ordinal`` and, when known, its ``line_start`` /
#: ``line_end`` / ``char_start`` / ``char_end``. Only present for chunks stored under a
#: document (as the agent writes them), and never over a metadata key of the same name.
LOKAL_METADATA_KEY = "lokal"


class LokalVectorStore(HandleOwner, VectorStore):
    """A LangChain vector store over a lokal index file (the single file ``lokal agent`` keeps).

    >>> store = LokalVectorStore("notes.db", LocalEmbeddings())   # created on the first add
    >>> store.add_texts(["Reset: hold the red button."], [{"kind": "manual"}], ids=["r1"])
    >>> store.similarity_search("how to reset?", k=1, filter={"kind": "manual"})
    >>> LokalVectorStore("/var/lib/lokal/index.db")        # loads the model the file records

    The file records the model that made its vectors. ``embedding`` may be:

    - ``None``: the file must exist; the model it records is loaded (a GGUF from lokal's model
      cache, or sentence-transformers weights), with its recorded prefixes;
    - a :class:`LocalEmbeddings`: checked against the file when it exists (another model is
      :class:`~lokal.errors.ModelMismatch`; another variant of the same model, e.g. the
      sentence-transformers weights reading what the q8_0 GGUF wrote, is a
      :class:`~lokal.errors.ModelVariantWarning` and may read but not write);
    - any other LangChain ``Embeddings``: identified by its class name and model name
      (``model`` / ``model_name``) plus the dimension, learned from the first texts added.

    Writes are upserts by id (``ids=`` or ``Document.id``; new ids are UUIDs). An index the
    agent manages is read-only here: writes raise :class:`~lokal.errors.IndexReadOnly`.

    Searches take lokal's filter language as ``filter=`` (LangChain-style dicts with
    ``$``-operators, evaluated inside the index: ``k`` results whenever ``k`` chunks match),
    ``hybrid=True`` for vector + full-text search fused (finds exact
    identifiers and error codes), and ``score_threshold=``. Scores are lokal's *relevance*, in
    [0, 1], higher is better: ``(1 + cosine) / 2`` for vector search, the fused score (1.0:
    first in both rankings) for hybrid search. Through a retriever::

        store.as_retriever(search_kwargs={"k": 5, "filter": {"kind": "manual"}, "hybrid": True})
        store.as_retriever(search_type="similarity_score_threshold",
                           search_kwargs={"score_threshold": 0.75})

    Document metadata is the chunk's metadata as stored; for chunks the agent wrote it also
    carries :data:`LOKAL_METADATA_KEY` (where the chunk came from).

    Args:
        path: the index file. Created on the first add if it does not exist.
        embedding: see above.
        quantization: search copy of the vectors for a new file: ``"auto"`` (exact float
            while it fits the memory budget, else 1-bit rescored exactly), ``"float"``
            (always exact), ``"int8"`` or ``"bit"``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        embedding: Embeddings | None = None,
        *,
        quantization: str = "auto",
    ) -> None:
        if quantization not in QUANTIZATIONS:
            msg = f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}"
            raise ValueError(msg)
        self.path = Path(path)
        self.quantization = quantization
        self._handle = IndexHandle(
            self.path, self._identity, quantization=quantization, who="LangChain"
        )
        if embedding is None:
            if not self.path.is_file():
                msg = (
                    f"no index file at {self.path}; pass embedding= to create one (it records "
                    "the embedding model on the first add)"
                )
                raise IndexFileError(msg)
            # the file opened once and its model resolved once (lokal.retrieval.open_recorded)
            index, embedder = open_recorded(self.path)
            self._handle.index = index
            embedding = LocalEmbeddings.from_embedder(embedder)
        self._embedding: Embeddings = embedding
        self._handle.reader()

    # ---- the file ------------------------------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    def __repr__(self) -> str:
        where = repr(self._index) if self._index is not None else repr(str(self.path))
        return f"LokalVectorStore({where}, embedding={type(self._embedding).__name__})"

    def _identity(self, dimension: int) -> ModelIdentity:
        """What the file records (or must record) for this store's embedding: a LangChain
        model's dimension is the one given (learned from its vectors, or the file's)."""
        if isinstance(self._embedding, LocalEmbeddings):
            return self._embedding.embedder.identity
        return langchain_identity(self._embedding, dimension)

    def _query_vector(self, query: str) -> Any:
        """The query's vector: lokal's own model's float32 array as it is (no round trip
        through a list of floats), another model's list."""
        if isinstance(self._embedding, LocalEmbeddings):
            return self._embedding.embedder.embed_query(query)
        return self._embedding.embed_query(query)

    def _check_dimension(self, dimension: int, index: Index) -> None:
        if dimension != index.dimension:
            msg = (
                f"{type(self._embedding).__name__} gives {dimension}-dimensional vectors; "
                f"{self.path} holds {index.dimension}-dimensional ones from "
                f"{index.identity.describe()}"
            )
            raise ModelMismatch(msg)

    # ---- writing -------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed ``texts`` and upsert them in one transaction: an id already in the file is
        replaced. Ids that are None are new UUIDs. Returns the ids in order.

        ``batch_size`` is accepted for LangChain's indexing API and not needed: the embedder
        batches on its own and the whole call is one transaction.
        """
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
        with self._lock:
            self._handle.reader()
            self._handle.refuse_agent_managed()  # before any embedding work
        vectors = self._embedding.embed_documents(texts)
        if len(vectors) != len(texts) or not vectors:
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
        with self._lock:
            index = self._handle.writer(len(vectors[0]))
            assert index is not None
            self._check_dimension(len(vectors[0]), index)
            return index.upsert(chunks, vectors)

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
        metadata matches ``filter``. With neither, nothing is guessed: ValueError."""
        _no_options("delete", kwargs, "ids, filter")
        if ids is None and not filter:
            msg = "delete needs ids or a filter (lokal never reads 'no ids' as 'delete all')"
            raise ValueError(msg)
        with self._lock:
            index = self._handle.writer(None)
            if index is None:
                return True
            if ids is not None:
                index.delete(ids)
            if filter:
                index.delete_where(filter)
        return True

    # ---- reading -------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with these ids, in the order given; missing ids are skipped."""
        with self._lock:
            index = self._handle.reader()
            return [] if index is None else [_document(r) for r in index.get_by_ids(list(ids))]

    def _has_file(self) -> bool:
        with self._lock:
            return self._handle.reader() is not None

    def _search(
        self,
        vector: Sequence[float] | np.ndarray,
        k: int,
        *,
        hybrid_text: str | None = None,
        filter: dict[str, Any] | None = None,
        score_threshold: float | None = None,
    ) -> list[tuple[Document, float]]:
        """Vector search, or hybrid search (vector + full text of ``hybrid_text``)."""
        with self._lock:
            index = self._handle.reader()
            if index is None:
                return []
            self._check_dimension(len(vector), index)
            found = retrieve(
                index, hybrid_text or "", k, vector=vector, hybrid=hybrid_text is not None,
                filter=filter,
            )  # fmt: skip
        hits: list[Hit] = [r.hit for r in found]
        return [
            (_document(h), h.score)
            for h in hits
            if score_threshold is None or h.score >= score_threshold
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
        _no_options("similarity_search", kwargs, "k, filter, hybrid, score_threshold")
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
        _no_options("similarity_search_by_vector", kwargs, "k, filter, score_threshold")
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
        _no_options("max_marginal_relevance_search", kwargs, _MMR_OPTIONS)
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
        _no_options("max_marginal_relevance_search_by_vector", kwargs, _MMR_OPTIONS)
        with self._lock:
            index = self._handle.reader()
            if index is None:
                return []
            self._check_dimension(len(embedding), index)
            hits = index.mmr_search(
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
        path: str | os.PathLike[str] | None = None,
        quantization: str = "auto",
        **kwargs: Any,
    ) -> Self:
        """Add ``texts`` to the index file ``path`` (created if needed) and return the store."""
        _no_options("from_texts", kwargs, "metadatas, ids, path, quantization")
        if path is None:
            msg = "LokalVectorStore.from_texts needs path=: the index file to create or add to"
            raise TypeError(msg)
        store = cls(path, embedding, quantization=quantization)
        try:
            store.add_texts(texts, metadatas, ids=ids)
        except BaseException:
            store.close()
            raise
        return store


def _same_score(score: float) -> float:
    return score


_MMR_OPTIONS = "k, fetch_k, lambda_mult, filter (MMR ranks by vector only: no hybrid)"


def _no_options(method: str, kwargs: dict[str, Any], known: str) -> None:
    """Unknown keyword arguments are mistakes (a misspelt ``filter`` would search everything)."""
    if kwargs:
        msg = f"LokalVectorStore.{method} got unexpected {sorted(kwargs)}; it takes {known}"
        raise TypeError(msg)


def _document(record: Record) -> Document:
    metadata = dict(record.metadata)
    if record.document is not None and LOKAL_METADATA_KEY not in metadata:
        origin = {
            "source": record.document,
            "ordinal": record.ordinal,
            "line_start": record.line_start,
            "line_end": record.line_end,
            "char_start": record.char_start,
            "char_end": record.char_end,
        }
        metadata[LOKAL_METADATA_KEY] = {k: v for k, v in origin.items() if v is not None}
    return Document(id=record.id, page_content=record.text, metadata=metadata)


def langchain_identity(embedding: Embeddings, dimension: int) -> ModelIdentity:
    """The identity lokal records for vectors from a LangChain ``Embeddings`` it does not load
    itself: its class and model name (``model`` / ``model_name``) and the dimension."""
    return external_identity("langchain", embedding, dimension, ("model", "model_name"))


def recorded_embeddings(path: str | os.PathLike[str]) -> LocalEmbeddings:
    """LocalEmbeddings for the model an index file records (see
    :func:`lokal.retrieval.open_recorded`); ModelNotFound says how to bring the model."""
    index, embedder = open_recorded(path)
    index.close()
    return LocalEmbeddings.from_embedder(embedder)


def __getattr__(name: str) -> Any:
    """``LokalCentralVectorStore`` (the fleet's central store) from its own module, imported
    on first use."""
    if name == "LokalCentralVectorStore":
        from lokal.integrations.langchain_central import LokalCentralVectorStore

        return LokalCentralVectorStore
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


# ---- reranker ----------------------------------------------------------------------------------

#: The metadata key under which :class:`LocalReranker` puts each document's score.
RELEVANCE_SCORE_KEY = "relevance_score"


class LocalReranker(RerankerSettings, BaseDocumentCompressor):
    """Reranks retrieved documents with a local cross-encoder; keeps the best ``top_n``.

    >>> from langchain_classic.retrievers import ContextualCompressionRetriever
    >>> reranker = LocalReranker(model="BAAI/bge-reranker-base", top_n=3)
    >>> retriever = ContextualCompressionRetriever(
    ...     base_compressor=reranker, base_retriever=store.as_retriever(search_kwargs={"k": 20})
    ... )

    Returned documents are copies, best first, with the score in
    ``metadata["relevance_score"]``. The reranker reads each document's first
    ``max_document_tokens`` (128, a MiniLM-size cross-encoder's CPU budget; None: all that
    fit); a pair still longer than the model's context is cut on the document side with a
    warning (``truncation="warn"``) or refused (``"error"``).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    top_n: int | None = Field(3, ge=0, description="Documents to keep; None keeps all.")

    _reranker: Reranker = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._reranker = self.make_reranker()

    @property
    def reranker(self) -> Reranker:
        """The core :class:`lokal.Reranker` (profile, context length, scores with counts)."""
        return self._reranker

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The ``top_n`` best documents for ``query``, best first, each with its score."""
        docs = list(documents)
        texts = [d.page_content for d in docs]
        ranked = self._reranker.rank(
            query, texts, self.top_n, max_document_tokens=self.max_document_tokens
        )
        return [
            Document(
                id=docs[r.index].id,
                page_content=docs[r.index].page_content,
                metadata={**docs[r.index].metadata, RELEVANCE_SCORE_KEY: r.score},
            )
            for r in ranked
        ]

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)

    def __repr__(self) -> str:
        return f"LocalReranker({self._reranker!r}, top_n={self.top_n})"
