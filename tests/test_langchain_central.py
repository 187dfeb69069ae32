"""LokalCentralVectorStore: LangChain's own standard suite on a real PostgreSQL + pgvector
(each test a fresh database), and lokal's contract on a central store of two sites' real
indexes embedded with the real default model: the recorded model, filters with ``site``,
k results, hybrid search, MMR, writes confined to the application's own site."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from lokal.embedder import Embedder
from lokal.errors import FilterError, IndexReadOnly, ModelMismatch
from lokal.index import Chunk, Index
from lokal.integrations.langchain import (
    LOKAL_METADATA_KEY,
    LocalEmbeddings,
    LokalCentralVectorStore,
    langchain_identity,
)

from .central_schema import copy_index, create_collection
from .conftest import paragraphs

PUMP = "Pump fault ERR-4711-PUMP: the impeller is blocked. Clear it, then restart the unit."


class TestStandardVectorStore(VectorStoreIntegrationTests):
    """A fresh central store per test (``lokal central init`` recorded the suite's fake
    embeddings), written through the store as the site ``app``."""

    @pytest.fixture
    def vectorstore(self, pg_dsn: str) -> Iterator[VectorStore]:
        embeddings = self.get_embeddings()
        create_collection(pg_dsn, langchain_identity(embeddings, 6))
        store = LokalCentralVectorStore(pg_dsn, embeddings)
        try:
            yield store
        finally:
            store.close()


@pytest.fixture(scope="module")
def fleet_url(
    _pg_server: Any, st_embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Two sites of twenty real paragraphs each (the pump fault on ``south``), embedded with
    the default model (sentence-transformers), in a fresh database."""
    name = "t_langchain_central_" + os.urandom(3).hex()
    with psycopg.connect(_pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = str(_pg_server.get_uri(database=name))
    create_collection(url, st_embedder.identity)
    texts = [*[p for p in paragraphs() if len(p) < 500][:39], PUMP]
    vectors = st_embedder.embed_documents(texts).vectors
    for s, site in enumerate(("north", "south")):
        part = slice(20 * s, 20 * s + 20)
        path = tmp_path_factory.mktemp(site) / "index.db"
        with Index.create(path, st_embedder.identity) as index:
            chunks = [
                Chunk(t, ordinal=i, line_start=2 * i + 1, line_end=2 * i + 2, metadata={"n": i})
                for i, t in enumerate(texts[part])
            ]
            index.replace_document(f"/srv/{site}/manual.txt", chunks, vectors[part])
            copy_index(url, index, site)
    return url


@pytest.fixture
def fleet(fleet_url: str) -> Iterator[LokalCentralVectorStore]:
    store = LokalCentralVectorStore(fleet_url, LocalEmbeddings(backend="sentence-transformers"))
    try:
        yield store
    finally:
        store.close()


def test_the_recorded_model_is_loaded(fleet_url: str, st_embedder: Embedder) -> None:
    with LokalCentralVectorStore(fleet_url) as store:
        assert isinstance(store.embeddings, LocalEmbeddings)
        assert store.embeddings.embedder.identity == st_embedder.identity
        assert store.similarity_search("ERR-4711-PUMP", k=1, hybrid=True)[0].page_content == PUMP


def test_another_model_is_refused(fleet_url: str) -> None:
    with pytest.raises(ModelMismatch, match="all-MiniLM-L6-v2"):
        LokalCentralVectorStore(fleet_url, DeterministicFakeEmbedding(size=384))


def test_site_filter_k_and_origin(fleet: LokalCentralVectorStore) -> None:
    docs = fleet.similarity_search("how are exceptions handled?", k=7, filter={"site": "north"})
    assert len(docs) == 7
    for d in docs:
        origin = d.metadata[LOKAL_METADATA_KEY]
        assert origin["site"] == "north" and origin["source"] == "/srv/north/manual.txt"
        assert origin["line_start"] == 2 * d.metadata["n"] + 1
    few = fleet.similarity_search("loops", k=5, filter={"site": "south", "n": {"$in": [1, 2]}})
    assert sorted(d.metadata["n"] for d in few) == [1, 2]
    scored = fleet.similarity_search_with_score("loops", k=3, filter={"site": "south"})
    assert all(0.0 <= s <= 1.0 for _, s in scored)
    with pytest.raises(FilterError):
        fleet.similarity_search("loops", filter={"site'; --": "x"})


def test_hybrid_mmr_and_retriever(fleet: LokalCentralVectorStore) -> None:
    hybrid = fleet.similarity_search("ERR-4711-PUMP", k=3, hybrid=True)
    assert hybrid[0].page_content == PUMP
    assert hybrid[0].metadata[LOKAL_METADATA_KEY]["site"] == "south"
    mmr = fleet.max_marginal_relevance_search("for loop", k=4, fetch_k=12, lambda_mult=0.3)
    assert len(mmr) == 4 and len({d.id for d in mmr}) == 4
    retriever = fleet.as_retriever(
        search_kwargs={"k": 4, "hybrid": True, "filter": {"site": "south"}}
    )
    docs = retriever.invoke("ERR-4711-PUMP")
    assert docs[0].page_content == PUMP and len(docs) == 4
    mmr_retriever = fleet.as_retriever(
        search_type="mmr", search_kwargs={"k": 3, "filter": {"site": "north"}}
    )
    assert [d.metadata[LOKAL_METADATA_KEY]["site"] for d in mmr_retriever.invoke("loop")] == [
        "north"
    ] * 3


def test_writes_stay_in_the_applications_site(fleet_url: str) -> None:
    embeddings = LocalEmbeddings(backend="sentence-transformers")
    with LokalCentralVectorStore(fleet_url, embeddings, write_site="helpdesk") as store:
        (new_id,) = store.add_texts(["Reset: hold the red button."], [{"kind": "note"}])
        assert store.get_by_ids([new_id])[0].page_content == "Reset: hold the red button."
        hit = store.similarity_search("reset button", k=1, filter={"site": "helpdesk"})[0]
        assert hit.id == new_id
        # deleting by filter only touches the store's own site
        store.delete(filter={"n": {"$gte": 0}})
        assert len(store.similarity_search("loops", k=50, filter={"site": "north"})) == 20
        store.delete([new_id])
        assert store.get_by_ids([new_id]) == []
    with LokalCentralVectorStore(fleet_url, embeddings, write_site=None) as reader:
        with pytest.raises(IndexReadOnly):
            reader.add_texts(["x"])
        # the rows of a box cannot be deleted through a store: its ids are another site's
        chunk_id = "/srv/north/manual.txt#0"
        with LokalCentralVectorStore(fleet_url, embeddings) as app:
            app.delete([chunk_id])
        assert [d.id for d in reader.get_by_ids([chunk_id])] == [chunk_id]


def test_from_texts_needs_a_url(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="url="):
        LokalCentralVectorStore.from_texts(["x"], DeterministicFakeEmbedding(size=6))
