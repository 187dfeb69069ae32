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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lokal.errors import IndexFileError, MissingDependency

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.embeddings import Embeddings
    from pydantic import ConfigDict, Field, PrivateAttr
    from typing_extensions import Self
except ImportError as exc:  # pragma: no cover - exercised in a bare environment
    raise MissingDependency(extra="langchain", feature="lokal.integrations.langchain") from exc

from lokal.embedder import Embedder
from lokal.identity import ModelIdentity
from lokal.index import Chunk, IndexHandle
from lokal.index.search import QUANTIZATIONS
from lokal.integrations.langchain_store import LOKAL_METADATA_KEY as LOKAL_METADATA_KEY
from lokal.integrations.langchain_store import LangChainStore
from lokal.integrations.shared import (
    EMBEDDER_CONTEXT,
    EmbedderSettings,
    HandleOwner,
    RerankerSettings,
    external_identity,
    vectors_as_lists,
)
from lokal.reranker import Reranker
from lokal.retrieval import open_recorded

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


class LokalVectorStore(HandleOwner, LangChainStore):
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

    _NAME = "LokalVectorStore"

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

    # ---- writing (the searches are LangChainStore's) -------------------------------------------

    def _start_write(self) -> None:
        with self._lock:
            self._handle.reader()
            self._handle.refuse_agent_managed()  # before any embedding work

    def _upsert(self, chunks: list[Chunk], vectors: list[list[float]]) -> list[str]:
        with self._lock:
            index = self._handle.writer(len(vectors[0]))
            assert index is not None
            self._check_dimension(len(vectors[0]), index)
            return index.upsert(chunks, vectors)

    def _delete(self, ids: list[str] | None, filter: dict[str, Any] | None) -> None:
        with self._lock:
            index = self._handle.writer(None)
            if index is None:
                return
            if ids is not None:
                index.delete(ids)
            if filter:
                index.delete_where(filter)

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
        cls._no_options("from_texts", kwargs, "metadatas, ids, path, quantization")
        if path is None:
            msg = "LokalVectorStore.from_texts needs path=: the index file to create or add to"
            raise TypeError(msg)
        return cls(path, embedding, quantization=quantization)._added(texts, metadatas, ids)


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
