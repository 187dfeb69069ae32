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
from collections.abc import Sequence
from typing import Any

from langchain_core.embeddings import Embeddings
from typing_extensions import Self

from lokal.central.store import DEFAULT_SCHEMA, CentralIndex
from lokal.identity import ModelIdentity
from lokal.index import Chunk
from lokal.integrations.langchain import LocalEmbeddings, langchain_identity
from lokal.integrations.langchain_store import LangChainStore
from lokal.integrations.shared import CentralOwner, central_settings


class LokalCentralVectorStore(CentralOwner, LangChainStore):
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

    _NAME = "LokalCentralVectorStore"

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
            embedding = LocalEmbeddings(**central_settings(url, schema=schema, **secrets))
        self._embedding: Embeddings = embedding
        self.write_site = write_site
        self._lock = threading.RLock()
        self._open_central(url, schema=schema, site=site, **secrets)

    @property
    def central(self) -> CentralIndex:
        """The core :class:`~lokal.central.store.CentralIndex` (site, schema, identity)."""
        return self._central

    def _identity(self) -> ModelIdentity:
        if isinstance(self._embedding, LocalEmbeddings):
            return self._embedding.embedder.identity
        return langchain_identity(self._embedding, self._central.dimension)

    # ---- writing: into write_site only (the searches are LangChainStore's) ---------------------

    def _start_write(self) -> None:
        self._site()
        self._central.check_identity(self._identity(), writing=True)

    def _upsert(self, chunks: list[Chunk], vectors: list[list[float]]) -> list[str]:
        site = self._site()
        self._check_dimension(len(vectors[0]), self._central)
        with self._lock:
            return self._central.upsert(chunks, vectors, site=site)

    def _delete(self, ids: list[str] | None, filter: dict[str, Any] | None) -> None:
        site = self._site()
        with self._lock:
            if ids is not None:
                self._central.delete(ids, site=site)
            if filter:
                self._central.delete_where(filter, site=site)

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
        return cls(url, embedding, **kwargs)._added(texts, metadatas, ids)
