"""LlamaIndex's LokalCentralVectorStore on a real PostgreSQL + pgvector holding two sites' real
indexes embedded with the real default model: the recorded model, LlamaIndex filters with
``site``, k results, hybrid and MMR through VectorStoreIndex retrievers, writes confined to the
application's own site."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from lokal.embedder import Embedder
from lokal.errors import IndexReadOnly, ModelMismatch
from lokal.index import Chunk, Index
from lokal.integrations.llama_index import LocalEmbedding, LokalCentralVectorStore

from .central_schema import copy_index, create_collection
from .conftest import paragraphs

PUMP = "Pump fault ERR-4711-PUMP: the impeller is blocked. Clear it, then restart the unit."


@pytest.fixture(scope="module")
def url(_pg_server: Any, st_embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = "t_llama_index_central_" + os.urandom(3).hex()
    with psycopg.connect(_pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = str(_pg_server.get_uri(database=name))
    create_collection(dsn, st_embedder.identity)
    texts = [*[p for p in paragraphs() if len(p) < 500][:29], PUMP]
    vectors = st_embedder.embed_documents(texts).vectors
    for s, site in enumerate(("north", "south")):
        part = slice(15 * s, 15 * s + 15)
        path = tmp_path_factory.mktemp(site) / "index.db"
        with Index.create(path, st_embedder.identity) as index:
            chunks = [Chunk(t, ordinal=i, metadata={"n": i}) for i, t in enumerate(texts[part])]
            index.replace_document(f"/srv/{site}/manual.txt", chunks, vectors[part])
            copy_index(dsn, index, site)
    return dsn


@pytest.fixture
def store(url: str) -> Iterator[LokalCentralVectorStore]:
    with LokalCentralVectorStore(url) as s:  # the recorded model
        yield s


def site(name: str) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key="site", value=name)])


def test_recorded_model_and_mismatch(store: LokalCentralVectorStore, url: str) -> None:
    assert isinstance(store.embed_model, LocalEmbedding)
    assert store.embed_model.embedder.identity == store.client.identity
    from llama_index.core.embeddings import MockEmbedding

    with pytest.raises(ModelMismatch):
        LokalCentralVectorStore(url, embed_model=MockEmbedding(embed_dim=384))


def test_retrievers_filters_hybrid_mmr(store: LokalCentralVectorStore) -> None:
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    north = index.as_retriever(similarity_top_k=6, filters=site("north")).retrieve("loops")
    assert len(north) == 6
    assert {n.node.metadata["lokal"]["site"] for n in north} == {"north"}
    assert {n.node.ref_doc_id for n in north} == {"/srv/north/manual.txt"}
    few = MetadataFilters(
        filters=[
            MetadataFilter(key="site", value="south"),
            MetadataFilter(key="n", value=[3, 4], operator=FilterOperator.IN),
        ]
    )
    assert sorted(n.node.metadata["n"] for n in index.as_retriever(filters=few).retrieve("x")) == [
        3,
        4,
    ]
    hybrid = index.as_retriever(similarity_top_k=3, vector_store_query_mode="hybrid").retrieve(
        "ERR-4711-PUMP"
    )
    assert hybrid[0].node.get_content() == PUMP
    q = store.embed_model.get_query_embedding("a for loop")
    mmr = store.query(
        VectorStoreQuery(
            query_embedding=q,
            similarity_top_k=4,
            mode=VectorStoreQueryMode.MMR,
            filters=site("south"),
        ),
        mmr_threshold=0.3,
    )
    assert len(mmr.nodes) == 4 and all(n.metadata["lokal"]["site"] == "south" for n in mmr.nodes)


def test_writes_stay_in_the_applications_site(url: str) -> None:
    embed = LocalEmbedding(backend="sentence-transformers")
    with LokalCentralVectorStore(url, embed_model=embed, write_site="helpdesk") as store:
        node = TextNode(id_="note-1", text="Reset: hold the red button.", metadata={"n": 0})
        node.embedding = embed.get_text_embedding(node.text)
        assert store.add([node]) == ["note-1"]
        got = store.get_nodes(filters=site("helpdesk"))
        assert [n.node_id for n in got] == ["note-1"]
        store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="n", value=0)]))
        assert store.get_nodes(filters=site("helpdesk")) == []
        assert len(store.get_nodes(filters=site("north"))) == 15  # a box's n=0 row is kept
        store.clear()
        assert len(store.get_nodes()) == 30
    with LokalCentralVectorStore(url, embed_model=embed, write_site=None) as reader:
        with pytest.raises(IndexReadOnly):
            reader.clear()
