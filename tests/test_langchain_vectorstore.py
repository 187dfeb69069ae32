"""LokalVectorStore: LangChain's own standard suites, and lokal's contract (the recorded model,
agent-managed files, filters, hybrid search, incremental indexing) on real index files with the
real default model."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.indexing import InMemoryRecordManager, index
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from lokal.embedder import Embedder
from lokal.errors import (
    IndexFileError,
    IndexReadOnly,
    ModelMismatch,
    ModelNotFound,
    ModelVariantWarning,
)
from lokal.index import Chunk, Index
from lokal.integrations.langchain import (
    LOKAL_METADATA_KEY,
    LocalEmbeddings,
    LokalVectorStore,
)

PUMP = "Pump fault ERR-4711-PUMP: the impeller is blocked. Clear it, then restart the unit."
LOOKALIKES = [
    "Valve fault ERR-4711-VALVE: the valve is stuck half open. Replace the actuator.",
    "Fan fault ERR-4712-FAN: the fan runs too slowly. Clean the filter and restart.",
    "Pump maintenance: grease the pump bearings every 500 hours of operation.",
]


def st_embeddings() -> LocalEmbeddings:
    """Shares the session's loaded sentence-transformers model (the st_embedder fixture)."""
    return LocalEmbeddings(backend="sentence-transformers")


@pytest.fixture(scope="module")
def manual_file(
    tmp_path_factory: pytest.TempPathFactory, st_embedder: Embedder, sentences: list[str]
) -> Path:
    """An index of forty real paragraphs (numbered, odd/even) and a few fault codes, embedded
    once with the real default model; closed, so tests can copy it."""
    texts = [*sentences[:40], PUMP, *LOOKALIKES]
    metadatas: list[dict[str, Any]] = [
        {"n": i, "parity": "even" if i % 2 == 0 else "odd"} for i in range(40)
    ] + [{"kind": "fault"}] * (1 + len(LOOKALIKES))
    ids = [f"p{i}" for i in range(40)] + ["pump", "valve", "fan", "grease"]
    path = tmp_path_factory.mktemp("manual") / "index.db"
    LokalVectorStore.from_texts(texts, st_embeddings(), metadatas, ids=ids, path=path).close()
    return path


@pytest.fixture
def manual(manual_file: Path, tmp_path: Path) -> Iterator[LokalVectorStore]:
    """A store over this test's own copy of ``manual_file``."""
    path = tmp_path / "index.db"
    shutil.copyfile(manual_file, path)
    store = LokalVectorStore(path, st_embeddings())
    try:
        yield store
    finally:
        store.close()


# ---- LangChain's standard suites -----------------------------------------------------------


class TestStandardVectorStore(VectorStoreIntegrationTests):
    """A fresh index file per test, with the suite's fake embeddings (a foreign Embeddings:
    the file is created, and its dimension learned, on the first add)."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:
        store = LokalVectorStore(tmp_path / "index.db", self.get_embeddings())
        try:
            yield store
        finally:
            store.close()


class TestStandardRetriever(RetrieversIntegrationTests):
    """LangChain's VectorStoreRetriever over a real index of real prose (``manual_file``),
    embedded with the default model. The suite passes the number of results to the
    constructor; through ``as_retriever`` that is ``search_kwargs={"k": k}``, so the
    constructor is a small factory."""

    store: LokalVectorStore

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _store(cls, manual_file: Path) -> Iterator[None]:
        cls.store = LokalVectorStore(manual_file, st_embeddings())
        yield
        cls.store.close()

    def _retriever(self, k: int = 4, **search_kwargs: Any) -> VectorStoreRetriever:
        return type(self).store.as_retriever(search_kwargs={"k": k, **search_kwargs})

    @property
    def retriever_constructor(self) -> Any:
        return self._retriever

    @property
    def retriever_query_example(self) -> str:
        return "How does a for loop iterate over a sequence?"


# ---- the index file's model ----------------------------------------------------------------


def test_no_embedding_loads_the_recorded_model(
    tmp_path: Path, gguf_embedder: Embedder, sentences: list[str]
) -> None:
    path = tmp_path / "index.db"
    ids = [f"s{i}" for i in range(8)]
    writer = LokalVectorStore.from_texts(
        sentences[:8], LocalEmbeddings(backend="gguf"), path=path, ids=ids
    )
    written = writer.similarity_search_with_score(sentences[5], k=3)
    writer.close()

    with LokalVectorStore(path) as reader:
        emb = reader.embeddings
        assert isinstance(emb, LocalEmbeddings)
        assert emb.embedder.backend_name == "gguf"
        assert emb.embedder.identity.compare(Index.recorded_identity(path)) == "same"
        found = reader.similarity_search_with_score(sentences[5], k=3)
    assert [d.id for d, _ in found] == [d.id for d, _ in written]
    assert found[0][0].id == "s5" and found[0][0].page_content == sentences[5]
    assert found[0][1] == pytest.approx(written[0][1])


def test_recorded_model_not_on_this_machine(tmp_path: Path, st_embedder: Embedder) -> None:
    path = tmp_path / "index.db"
    elsewhere = dataclasses.replace(
        st_embedder.identity, name="no-such-model", backend="gguf", quantization="q8_0"
    )
    Index.create(path, elsewhere).close()
    with pytest.raises(ModelNotFound, match="lokal models pack no-such-model --quantize q8_0"):
        LokalVectorStore(path)

    fake = tmp_path / "fake.db"
    LokalVectorStore.from_texts(["foo"], DeterministicFakeEmbedding(size=6), path=fake).close()
    with pytest.raises(ModelNotFound, match="pass that model as embedding="):
        LokalVectorStore(fake)

    with pytest.raises(IndexFileError, match="pass embedding="):
        LokalVectorStore(tmp_path / "missing.db")


def test_another_model_is_refused(tmp_path: Path, st_embedder: Embedder) -> None:
    fake = tmp_path / "fake.db"
    LokalVectorStore.from_texts(["foo"], DeterministicFakeEmbedding(size=6), path=fake).close()
    with pytest.raises(ModelMismatch, match="cannot be compared"):
        LokalVectorStore(fake, st_embeddings())

    # Same class, other dimension: the identity matches by name, the vectors do not.
    with LokalVectorStore(fake, DeterministicFakeEmbedding(size=8)) as store:
        with pytest.raises(ModelMismatch, match="8-dimensional"):
            store.similarity_search("foo")
        with pytest.raises(ModelMismatch, match="8-dimensional"):
            store.add_texts(["bar"])

    real = tmp_path / "real.db"
    LokalVectorStore.from_texts(["a pump manual"], st_embeddings(), path=real).close()
    with pytest.raises(ModelMismatch, match="cannot be compared"):
        LokalVectorStore(real, DeterministicFakeEmbedding(size=384))


def test_another_variant_reads_with_a_warning_but_does_not_write(
    tmp_path: Path, st_embedder: Embedder, gguf_embedder: Embedder, sentences: list[str]
) -> None:
    path = tmp_path / "index.db"
    ids = [f"s{i}" for i in range(6)]
    LokalVectorStore.from_texts(
        sentences[:6], LocalEmbeddings(backend="gguf"), path=path, ids=ids
    ).close()
    with pytest.warns(ModelVariantWarning, match="same model"):
        store = LokalVectorStore(path, st_embeddings())
    with store:
        assert store.similarity_search(sentences[4], k=1)[0].id == "s4"
        with pytest.raises(ModelMismatch, match="exactly that variant"):
            store.add_texts(["written by another variant"])
        assert store.get_by_ids(["s4"])[0].page_content == sentences[4]


def test_agent_managed_file_is_read_only(tmp_path: Path, st_embedder: Embedder) -> None:
    path = tmp_path / "index.db"
    texts = [PUMP, *LOOKALIKES]
    with Index.create(path, st_embedder.identity, managed_by="agent") as agent:
        chunks = [
            Chunk(t, ordinal=i, line_start=i + 1, line_end=i + 1) for i, t in enumerate(texts)
        ]
        agent.replace_document(
            "/srv/manuals/faults.txt", chunks, st_embedder.embed_documents(texts).vectors
        )

    for store in (LokalVectorStore(path), LokalVectorStore(path, st_embeddings())):
        with store:
            doc = store.similarity_search("the impeller is blocked", k=1)[0]
            assert doc.page_content == PUMP
            assert doc.metadata == {
                LOKAL_METADATA_KEY: {
                    "source": "/srv/manuals/faults.txt",
                    "ordinal": 0,
                    "line_start": 1,
                    "line_end": 1,
                }
            }
            with pytest.raises(IndexReadOnly, match="managed by the lokal agent"):
                store.add_texts(["an application's note"])
            with pytest.raises(IndexReadOnly, match="managed by the lokal agent"):
                store.delete([doc.id or ""])
    with Index.open(path) as check:
        assert len(check) == len(texts) and check.managed_by == "agent"


# ---- searching -----------------------------------------------------------------------------


def test_filters_through_the_retriever(manual: LokalVectorStore, sentences: list[str]) -> None:
    query = "What happens when an exception is raised?"
    window = {"n": {"$gte": 10, "$lt": 20}}
    docs = manual.as_retriever(search_kwargs={"k": 5, "filter": window}).invoke(query)
    assert len(docs) == 5 and all(10 <= d.metadata["n"] < 20 for d in docs)

    # k results whenever k chunks match, however far they are from the query
    faults = manual.as_retriever(search_kwargs={"k": 4, "filter": {"kind": "fault"}})
    assert {d.id for d in faults.invoke(query)} == {"pump", "valve", "fan", "grease"}

    odd = {"$and": [{"parity": "odd"}, {"n": {"$in": [1, 2, 3, 4, 5]}}]}
    assert {d.id for d in manual.similarity_search(query, k=10, filter=odd)} == {"p1", "p3", "p5"}
    assert manual.similarity_search(query, filter={"parity": "none"}) == []


def test_score_threshold_through_the_retriever(
    manual: LokalVectorStore, sentences: list[str]
) -> None:
    query = sentences[12]
    scored = manual.similarity_search_with_relevance_scores(query, k=10)
    scores = [s for _, s in scored]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert scored[0][0].id == "p12" and scores[0] > 0.99  # (1 + cosine) / 2 of the same text
    assert manual.similarity_search_with_score(query, k=10) == scored

    threshold = (scores[2] + scores[3]) / 2
    retriever = manual.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"k": 10, "score_threshold": threshold},
    )
    assert [d.id for d in retriever.invoke(query)] == [d.id for d, _ in scored[:3]]
    assert len(manual.similarity_search(query, k=10, score_threshold=threshold)) == 3


def test_hybrid_finds_an_exact_identifier(manual: LokalVectorStore) -> None:
    retriever = manual.as_retriever(search_kwargs={"k": 1, "hybrid": True})
    assert [d.id for d in retriever.invoke("ERR-4711-PUMP")] == ["pump"]
    hits = manual.similarity_search_with_score("ERR-4711-PUMP", k=3, hybrid=True)
    assert hits[0][0].page_content == PUMP and hits[0][1] == pytest.approx(1.0)
    assert all(0.0 <= s <= 1.0 for _, s in hits)
    # hybrid composes with filters and with the score threshold
    only_faults = {"kind": "fault", "n": {"$exists": False}}
    docs = manual.similarity_search("ERR-4711-PUMP", k=10, hybrid=True, filter=only_faults)
    assert docs[0].id == "pump" and {d.id for d in docs} == {"pump", "valve", "fan", "grease"}
    thresholded = manual.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"k": 5, "hybrid": True, "score_threshold": 0.99},
    )
    assert [d.id for d in thresholded.invoke("ERR-4711-PUMP")] == ["pump"]


def test_mmr_prefers_different_chunks(tmp_path: Path, st_embedder: Embedder) -> None:
    texts = [PUMP, PUMP, LOOKALIKES[0], LOOKALIKES[2]]
    with LokalVectorStore.from_texts(
        texts, st_embeddings(), path=tmp_path / "index.db", ids=["a", "b", "c", "d"]
    ) as store:
        plain = store.similarity_search("blocked pump impeller", k=2)
        assert {d.id for d in plain} == {"a", "b"}
        diverse = store.max_marginal_relevance_search("blocked pump impeller", k=2, fetch_k=4)
        assert diverse[0].id in {"a", "b"} and diverse[1].id not in {"a", "b"}
        mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4})
        assert [d.id for d in mmr.invoke("blocked pump impeller")] == [d.id for d in diverse]


async def test_async_paths(manual: LokalVectorStore) -> None:
    ids = await manual.aadd_documents([Document("Async note: the pump runs at night.", id="n1")])
    assert ids == ["n1"]
    assert (await manual.aget_by_ids(["n1"]))[0].page_content.startswith("Async note")
    docs = await manual.asimilarity_search("pump at night", k=2, filter={"kind": "fault"})
    assert len(docs) == 2 and "n1" not in {d.id for d in docs}
    scored = await manual.asimilarity_search_with_relevance_scores("pump at night", k=1)
    assert scored[0][0].id == "n1" and 0.0 <= scored[0][1] <= 1.0
    hybrid = await manual.as_retriever(search_kwargs={"k": 1, "hybrid": True}).ainvoke(
        "ERR-4711-PUMP"
    )
    assert [d.id for d in hybrid] == ["pump"]
    assert len(await manual.amax_marginal_relevance_search("pump", k=3)) == 3
    await manual.adelete(["n1"])
    assert await manual.aget_by_ids(["n1"]) == []


def test_mistakes_are_loud(manual: LokalVectorStore) -> None:
    with pytest.raises(TypeError, match="filters"):
        manual.similarity_search("pump", filters={"kind": "fault"})
    with pytest.raises(TypeError, match="hybrid"):
        manual.max_marginal_relevance_search("pump", hybrid=True)
    with pytest.raises(ValueError, match="delete needs ids or a filter"):
        manual.delete()
    assert len(manual.get_by_ids([f"p{i}" for i in range(40)])) == 40
    assert manual.delete(filter={"parity": "odd"}) is True
    assert len(manual.get_by_ids([f"p{i}" for i in range(40)])) == 20


# ---- writing -------------------------------------------------------------------------------


def test_upsert_and_get_by_ids(tmp_path: Path, st_embedder: Embedder) -> None:
    with LokalVectorStore(tmp_path / "index.db", st_embeddings()) as store:
        assert not (tmp_path / "index.db").exists()  # created on the first add
        docs = [Document("first", metadata={"v": 1}, id="a"), Document("second")]
        ids = store.add_documents(docs)
        assert ids[0] == "a" and len(ids[1]) == 36
        assert docs == [Document("first", metadata={"v": 1}, id="a"), Document("second")]
        store.add_texts(["first, rewritten"], [{"v": 2}], ids=["a"])
        got = store.get_by_ids(["missing", ids[1], "a"])
        assert got == [
            Document("second", id=ids[1]),
            Document("first, rewritten", metadata={"v": 2}, id="a"),
        ]
        with Index.open(tmp_path / "index.db") as check:
            assert len(check) == 2 and check.identity == st_embedder.identity


def test_indexing_api_incremental_cleanup(tmp_path: Path, st_embedder: Embedder) -> None:
    record_manager = InMemoryRecordManager(namespace="lokal/manuals")
    record_manager.create_schema()
    pump = [
        Document("Reset: hold the red button for five seconds.", metadata={"source": "pump.md"}),
        Document("Filters: change them every 500 hours.", metadata={"source": "pump.md"}),
    ]
    fan = [Document("The fan needs no maintenance.", metadata={"source": "fan.md"})]

    def run(docs: list[Document]) -> dict[str, int]:
        return dict(
            index(
                docs,
                record_manager,
                store,
                cleanup="incremental",
                source_id_key="source",
                key_encoder="sha256",  # the default (sha1) warns that it is not collision-safe
            )
        )

    with LokalVectorStore(tmp_path / "index.db", st_embeddings()) as store:
        assert run(pump + fan) == {
            "num_added": 3,
            "num_updated": 0,
            "num_skipped": 0,
            "num_deleted": 0,
        }
        changed = [
            pump[0],
            Document("Filters: change them every 250 hours.", metadata=pump[1].metadata),
        ]
        assert run(changed + fan) == {
            "num_added": 1,
            "num_updated": 0,
            "num_skipped": 2,
            "num_deleted": 1,
        }
        found = store.similarity_search("how often do the filters need changing?", k=10)
        texts = {d.page_content for d in found}
        assert texts == {
            "Reset: hold the red button for five seconds.",
            "Filters: change them every 250 hours.",
            "The fan needs no maintenance.",
        }
        assert set(record_manager.list_keys()) == {d.id for d in found}


def test_quantized_search_copy(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    texts = [f"note {i}: {word}" for i, word in enumerate(["pump", "valve", "fan", "filter"] * 8)]
    fake = DeterministicFakeEmbedding(size=64)
    with LokalVectorStore.from_texts(texts, fake, path=path, quantization="int8") as store:
        assert store.similarity_search(texts[5], k=1)[0].page_content == texts[5]
    with Index.open(path) as check:
        assert check.quantization == "int8" and len(check) == len(texts)
    with pytest.raises(ValueError, match="quantization"):
        LokalVectorStore(tmp_path / "other.db", fake, quantization="q8_0")
