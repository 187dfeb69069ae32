"""LokalVectorStore: LlamaIndex's vector store interface over a real lokal index file, with real
embeddings of real text (the session's sentence-transformers model)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings.mock_embed_model import MockEmbedding
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from lokal.embedder import Embedder
from lokal.errors import (
    FilterError,
    IndexFileError,
    IndexReadOnly,
    ModelMismatch,
    ModelVariantWarning,
)
from lokal.index import Chunk, Index, matches
from lokal.integrations.llama_index import (
    FILTER_OPERATORS,
    LocalEmbedding,
    LokalVectorStore,
    to_lokal_filter,
)

GROUPS = ("red", "green", "blue")
N = 60
_MISSING = object()


@pytest.fixture(scope="module")
def embed(st_embedder: Embedder) -> LocalEmbedding:
    return LocalEmbedding(backend="sentence-transformers")


@pytest.fixture(scope="module")
def vectors(embed: LocalEmbedding, sentences: list[str]) -> list[list[float]]:
    return embed.get_text_embedding_batch(sentences)


def _meta(i: int) -> dict[str, Any]:
    group = GROUPS[i % 3]
    meta: dict[str, Any] = {
        "n": i,
        "group": group,
        "score": i / 2,
        "title": f"Topic {i:02d} of the {group.upper()} series",
        "tags": [f"t{i % 4}", f"u{i % 5}"] if i % 10 else [],
    }
    if i % 4 == 1:
        meta["note"] = ""
    elif i % 4 == 2:
        meta["note"] = f"Pump note {i}"
    elif i % 4 == 3:
        meta["note"] = None
    return meta


def _nodes(sentences: list[str], vectors: list[list[float]]) -> list[TextNode]:
    return [
        TextNode(
            id_=f"node-{i}",
            text=sentences[i],
            metadata=_meta(i),
            embedding=vectors[i],
            start_char_idx=0,
            end_char_idx=len(sentences[i]),
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{i // 10}")},
        )
        for i in range(N)
    ]


@pytest.fixture
def store(
    tmp_path: Path, embed: LocalEmbedding, sentences: list[str], vectors: list[list[float]]
) -> Iterator[LokalVectorStore]:
    s = LokalVectorStore(tmp_path / "index.db", embed_model=embed)
    s.add(_nodes(sentences, vectors))
    yield s
    s.close()


def _ids(nodes: list[Any]) -> set[int]:
    return {int(n.node_id.removeprefix("node-")) for n in nodes}


def _everything(store: LokalVectorStore, vector: list[float], flt: MetadataFilters) -> set[int]:
    result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=N, filters=flt))
    assert result.ids is not None
    return {int(i.removeprefix("node-")) for i in result.ids}


# ---- add, read, delete ----------------------------------------------------------------------


def test_round_trip_and_query(
    store: LokalVectorStore, sentences: list[str], embed: LocalEmbedding
) -> None:
    nodes = store.get_nodes()
    assert [n.node_id for n in nodes] == [f"node-{i}" for i in range(N)]
    for i, node in enumerate(nodes):
        assert isinstance(node, TextNode)
        assert node.text == sentences[i]
        assert node.metadata == _meta(i)  # bookkeeping keys are not shown to the LLM
        assert node.ref_doc_id == f"doc-{i // 10}"
        assert (node.start_char_idx, node.end_char_idx) == (0, len(sentences[i]))

    assert [n.node_id for n in store.get_nodes(node_ids=["node-7", "node-3", "nope"])] == [
        "node-7",
        "node-3",
    ]

    q = embed.get_query_embedding("How do I add debugging assertions to my program?")
    result = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3))
    assert result.nodes is not None and result.similarities is not None
    assert len(result.nodes) == 3 and result.ids == [n.node_id for n in result.nodes]
    assert "assert" in result.nodes[0].get_content().lower()
    assert result.similarities == sorted(result.similarities, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in result.similarities)


def test_upsert_delete_and_clear(
    store: LokalVectorStore, embed: LocalEmbedding, vectors: list[list[float]]
) -> None:
    store.add([TextNode(id_="node-0", text="replaced", metadata={"n": 0}, embedding=vectors[0])])
    assert len(store.get_nodes()) == N
    assert store.get_nodes(node_ids=["node-0"])[0].get_content() == "replaced"

    store.delete("doc-2")
    left = store.get_nodes()
    assert _ids(left) == set(range(N)) - set(range(20, 30))
    assert all(n.ref_doc_id != "doc-2" for n in left)

    store.delete_nodes(node_ids=["node-1", "node-2"])
    assert not store.get_nodes(node_ids=["node-1", "node-2"])

    red = MetadataFilters(filters=[MetadataFilter(key="group", value="red")])
    store.delete_nodes(node_ids=["node-3", "node-4", "node-5"], filters=red)  # only node-3 red
    assert _ids(store.get_nodes(node_ids=["node-3", "node-4", "node-5"])) == {4, 5}

    store.delete_nodes(filters=red)
    assert all(n.metadata.get("group") != "red" for n in store.get_nodes())
    with pytest.raises(ValueError, match="clear"):
        store.delete_nodes()

    store.clear()
    assert store.get_nodes() == []
    store.add([TextNode(id_="again", text="again", embedding=vectors[1])])
    assert [n.node_id for n in store.get_nodes()] == ["again"]
    assert store.client is not None and store.client.check().ok


def test_reopen_reads_the_same_file(
    store: LokalVectorStore, embed: LocalEmbedding, sentences: list[str]
) -> None:
    store.close()
    again = LokalVectorStore(store.path, embed_model=embed)
    try:
        assert len(again.get_nodes()) == N
        assert again.get_nodes(node_ids=["node-9"])[0].get_content() == sentences[9]
    finally:
        again.close()


# ---- filters ------------------------------------------------------------------------------


def F(key: str, op: FilterOperator, value: Any = None) -> MetadataFilter:
    return MetadataFilter(key=key, operator=op, value=value)


def G(cond: str, *filters: MetadataFilter | MetadataFilters) -> MetadataFilters:
    return MetadataFilters(filters=list(filters), condition=FilterCondition(cond))


def _get(m: dict[str, Any], key: str) -> Any:
    return m.get(key, _MISSING)


def _empty(v: Any) -> bool:
    return v is _MISSING or v is None or v == "" or v == []


Case = tuple[MetadataFilters, Callable[[dict[str, Any]], bool]]
EQ, NE, GT, GTE, LT, LTE = (
    FilterOperator.EQ,
    FilterOperator.NE,
    FilterOperator.GT,
    FilterOperator.GTE,
    FilterOperator.LT,
    FilterOperator.LTE,
)
IN, NIN, ANY, ALL = FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL
CONTAINS, IS_EMPTY = FilterOperator.CONTAINS, FilterOperator.IS_EMPTY
TEXT, ITEXT = FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE

CASES: dict[str, Case] = {
    "eq-str": (G("and", F("group", EQ, "red")), lambda m: m["group"] == "red"),
    "eq-int": (G("and", F("n", EQ, 7)), lambda m: m["n"] == 7),
    "eq-float": (G("and", F("score", EQ, 2.5)), lambda m: m["score"] == 2.5),
    "ne": (G("and", F("group", NE, "red")), lambda m: m["group"] != "red"),
    "ne-missing-key": (G("and", F("note", NE, "")), lambda m: _get(m, "note") != ""),
    "gt": (G("and", F("n", GT, 50)), lambda m: m["n"] > 50),
    "gt-text": (G("and", F("title", GT, "Topic 5")), lambda m: m["title"] > "Topic 5"),
    "gte": (G("and", F("score", GTE, 25.0)), lambda m: m["score"] >= 25.0),
    "lt": (G("and", F("n", LT, 5)), lambda m: m["n"] < 5),
    "lte": (G("and", F("score", LTE, 2.0)), lambda m: m["score"] <= 2.0),
    "in": (G("and", F("group", IN, ["red", "blue"])), lambda m: m["group"] in ("red", "blue")),
    "in-int": (G("and", F("n", IN, [1, 2, 3, 99])), lambda m: m["n"] in (1, 2, 3, 99)),
    "nin": (G("and", F("group", NIN, ["red"])), lambda m: m["group"] != "red"),
    "nin-missing-key": (
        G("and", F("note", NIN, ["", "x"])),
        lambda m: _get(m, "note") not in ("", "x"),
    ),
    "any": (G("and", F("tags", ANY, ["t1", "u2"])), lambda m: bool({"t1", "u2"} & {*m["tags"]})),
    "all": (G("and", F("tags", ALL, ["t1", "u1"])), lambda m: {"t1", "u1"} <= {*m["tags"]}),
    "contains": (G("and", F("tags", CONTAINS, "t2")), lambda m: "t2" in m["tags"]),
    "text-match": (G("and", F("title", TEXT, "RED s")), lambda m: "RED s" in m["title"]),
    "text-match-case": (G("and", F("title", TEXT, "red s")), lambda m: False),
    "text-match-insensitive": (
        G("and", F("title", ITEXT, "red SERIES")),
        lambda m: "red series" in m["title"].lower(),
    ),
    "text-match-skips-null": (
        G("and", F("note", TEXT, "Pump")),
        lambda m: isinstance(_get(m, "note"), str) and "Pump" in m["note"],
    ),
    "is-empty": (G("and", F("note", IS_EMPTY)), lambda m: _empty(_get(m, "note"))),
    "is-empty-list": (G("and", F("tags", IS_EMPTY)), lambda m: m["tags"] == []),
    "and": (
        G("and", F("group", EQ, "red"), F("n", GT, 30)),
        lambda m: m["group"] == "red" and m["n"] > 30,
    ),
    "or": (
        G("or", F("group", EQ, "red"), F("tags", CONTAINS, "t2")),
        lambda m: m["group"] == "red" or "t2" in m["tags"],
    ),
    "not-is-none-of": (
        G("not", F("group", EQ, "red"), F("n", LT, 10)),
        lambda m: not (m["group"] == "red" or m["n"] < 10),
    ),
    "not-one": (G("not", F("note", IS_EMPTY)), lambda m: not _empty(_get(m, "note"))),
    "nested": (
        G(
            "and",
            G("or", F("group", EQ, "red"), F("group", EQ, "blue")),
            G("not", F("n", LT, 20)),
            G("or", F("tags", ANY, ["t0", "u4"]), F("note", ITEXT, "pump")),
        ),
        lambda m: (
            m["group"] in ("red", "blue")
            and m["n"] >= 20
            and (bool({"t0", "u4"} & {*m["tags"]}) or "pump" in str(_get(m, "note")).lower())
        ),
    ),
    "nested-deep": (
        G(
            "or",
            G("and", F("score", GTE, 10.0), G("not", G("or", F("n", NIN, [25, 26, 27])))),
            G("and", F("tags", ALL, ["t3"]), G("not", F("note", IS_EMPTY)), F("n", LTE, 15)),
        ),
        lambda m: (
            (m["score"] >= 10.0 and m["n"] in (25, 26, 27))
            or ("t3" in m["tags"] and not _empty(_get(m, "note")) and m["n"] <= 15)
        ),
    ),
}


def test_every_llama_index_operator_is_mapped() -> None:
    assert set(FILTER_OPERATORS) == {op.value for op in FilterOperator}
    used = set()
    stack: list[Any] = [c[0] for c in CASES.values()]
    while stack:
        f = stack.pop()
        if isinstance(f, MetadataFilters):
            stack.extend(f.filters)
        else:
            used.add(f.operator)
    assert used == set(FilterOperator)
    conditions = {c[0].condition for c in CASES.values()}
    assert conditions == set(FilterCondition)


@pytest.mark.parametrize("name", CASES)
def test_filters_run_in_the_index_and_match_python(
    store: LokalVectorStore, vectors: list[list[float]], name: str
) -> None:
    filters, predicate = CASES[name]
    expected = {i for i in range(N) if predicate(_meta(i))}
    # lokal's reference evaluator agrees with the plain-Python meaning of the LlamaIndex filter
    translated = to_lokal_filter(filters)
    assert {i for i in range(N) if matches(translated, _meta(i))} == expected
    assert _ids(store.get_nodes(filters=filters)) == expected
    assert _everything(store, vectors[0], filters) == expected


def test_filtered_query_returns_k_when_k_match(
    store: LokalVectorStore, vectors: list[list[float]]
) -> None:
    late = MetadataFilters(filters=[MetadataFilter(key="n", operator=GTE, value=53)])
    assert len(store.get_nodes(filters=late)) == 7
    q = vectors[3]  # a node the filter excludes: its neighbours are mostly excluded too
    result = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=5, filters=late))
    assert result.nodes is not None and len(result.nodes) == 5
    assert all(n.metadata["n"] >= 53 for n in result.nodes)
    # exactly the 5 best of the 7 that match
    cos = {i: float(np.dot(vectors[i], q)) for i in range(53, 60)}
    assert result.ids == [f"node-{i}" for i in sorted(cos, key=lambda i: -cos[i])[:5]]


def test_filter_injection(store: LokalVectorStore, vectors: list[list[float]]) -> None:
    evil = "x') OR 1=1--"
    as_key = MetadataFilters(filters=[MetadataFilter(key=evil, value="red")])
    with pytest.raises(FilterError, match="invalid metadata key"):
        store.get_nodes(filters=as_key)
    with pytest.raises(FilterError, match="invalid metadata key"):
        store.query(VectorStoreQuery(query_embedding=vectors[0], filters=as_key))
    as_value = MetadataFilters(filters=[MetadataFilter(key="group", value=evil)])
    assert store.get_nodes(filters=as_value) == []
    assert _everything(store, vectors[0], as_value) == set()
    assert len(store.get_nodes()) == N


def test_unmapped_filters_are_clear_errors(store: LokalVectorStore) -> None:
    regex = MetadataFilter.model_construct(key="group", value="r.*", operator="regex")
    with pytest.raises(FilterError, match=r"'regex'.*no lokal equivalent"):
        store.get_nodes(filters=MetadataFilters(filters=[regex]))
    empty_group = G("or", F("n", EQ, 1), MetadataFilters(filters=[]))
    with pytest.raises(FilterError, match="nested MetadataFilters has no filters"):
        store.get_nodes(filters=empty_group)
    with pytest.raises(FilterError, match="takes a list"):
        store.get_nodes(filters=G("and", F("group", IN, "red")))
    assert len(store.get_nodes(filters=MetadataFilters(filters=[]))) == N


def test_contains_on_a_scalar_agrees_with_the_reference(
    tmp_path: Path, embed: LocalEmbedding, vectors: list[list[float]]
) -> None:
    with LokalVectorStore(tmp_path / "s.db", embed_model=embed) as s:
        s.add([TextNode(id_="s", text="scalar", metadata={"k": "a"}, embedding=vectors[0])])
        flt = G("and", F("k", CONTAINS, "a"))
        assert matches(to_lokal_filter(flt), {"k": "a"}) is False
        assert s.get_nodes(filters=flt) == []


# ---- query modes --------------------------------------------------------------------------


def test_hybrid_finds_an_exact_identifier(store: LokalVectorStore, embed: LocalEmbedding) -> None:
    text = "Fault code ERR-4711-PUMP: the controller stopped the line; check the coolant circuit."
    store.add(
        [
            TextNode(
                id_="fault",
                text=text,
                metadata={"group": "faults"},
                embedding=embed.get_text_embedding(text),
            )
        ]
    )
    query = "what does ERR-4711-PUMP mean"
    q = embed.get_query_embedding(query)
    hybrid = VectorStoreQueryMode.HYBRID
    result = store.query(
        VectorStoreQuery(query_embedding=q, query_str=query, similarity_top_k=5, mode=hybrid)
    )
    assert result.ids is not None and result.ids[0] == "fault" and len(result.ids) == 5
    red = G("and", F("group", EQ, "red"))
    result = store.query(
        VectorStoreQuery(
            query_embedding=q, query_str=query, similarity_top_k=5, mode=hybrid, filters=red
        )
    )
    assert result.nodes is not None and len(result.nodes) == 5
    assert all(n.metadata["group"] == "red" for n in result.nodes)
    with pytest.raises(ValueError, match="query_str"):
        store.query(VectorStoreQuery(query_embedding=q, mode=hybrid))


def test_mmr_and_unsupported_modes(store: LokalVectorStore, vectors: list[list[float]]) -> None:
    store.add([TextNode(id_="twin", text="twin", metadata={"n": 100}, embedding=vectors[0])])
    plain = store.query(VectorStoreQuery(query_embedding=vectors[0], similarity_top_k=3))
    assert plain.ids is not None and set(plain.ids[:2]) == {"node-0", "twin"}
    mmr = store.query(
        VectorStoreQuery(
            query_embedding=vectors[0], similarity_top_k=3, mode=VectorStoreQueryMode.MMR
        ),
        mmr_threshold=0.3,
    )
    assert mmr.ids is not None and len(mmr.ids) == 3
    assert not {"node-0", "twin"} <= set(mmr.ids)  # the near-duplicate is dropped
    with pytest.raises(NotImplementedError, match="'svm'"):
        store.query(VectorStoreQuery(query_embedding=vectors[0], mode=VectorStoreQueryMode.SVM))
    with pytest.raises(NotImplementedError, match="node_ids"):
        store.query(VectorStoreQuery(query_embedding=vectors[0], node_ids=["node-1"]))


async def test_async_methods(store: LokalVectorStore, vectors: list[list[float]]) -> None:
    await store.async_add([TextNode(id_="async", text="async", embedding=vectors[2])])
    result = await store.aquery(VectorStoreQuery(query_embedding=vectors[2], similarity_top_k=2))
    assert set(result.ids or []) == {"async", "node-2"}
    await store.adelete_nodes(node_ids=["async"])
    await store.adelete("doc-0")
    assert len(await store.aget_nodes()) == N - 10
    await store.aclear()
    assert await store.aget_nodes() == []


def test_doc_ids_restrict_the_query(store: LokalVectorStore, vectors: list[list[float]]) -> None:
    result = store.query(
        VectorStoreQuery(query_embedding=vectors[0], similarity_top_k=N, doc_ids=["doc-4"])
    )
    assert {int(i.removeprefix("node-")) for i in result.ids or []} == set(range(40, 50))


# ---- LlamaIndex pipelines -----------------------------------------------------------------


def test_vector_store_index_and_retriever(store: LokalVectorStore, embed: LocalEmbedding) -> None:
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed)
    found = index.as_retriever(similarity_top_k=3).retrieve(
        "How do I add debugging assertions to my program?"
    )
    assert "assert" in found[0].get_content().lower()
    assert found[0].node.ref_doc_id is not None

    index.insert(Document(text="The red button resets the coolant pump controller.", id_="manual"))
    red = MetadataFilters(filters=[MetadataFilter(key="ref_doc_id", value="manual")])
    hits = index.as_retriever(similarity_top_k=2, filters=red).retrieve("reset the pump")
    assert [h.node.ref_doc_id for h in hits] == ["manual"]
    index.delete_ref_doc("manual")
    assert store.get_nodes(filters=red) == []
    assert len(store.get_nodes()) == N


def test_plain_chunk_files_read_as_nodes(tmp_path: Path, embed: LocalEmbedding) -> None:
    """A file written without LlamaIndex (the agent, LangChain, the core) reads as TextNodes."""
    path = tmp_path / "plain.db"
    emb = embed.embedder
    texts = ["Hold the red button for five seconds to reset.", "Change the filter every 500 h."]
    with Index.create(path, emb.identity) as core:
        core.replace_document(
            "docs/pump.md",
            [Chunk(t, ordinal=i, metadata={"source": "pump.md"}) for i, t in enumerate(texts)],
            emb.embed_documents(texts).vectors,
        )
        core.upsert(
            [Chunk("loose chunk", metadata={"k": 1}, id="loose")],
            emb.embed_documents(["loose chunk"]).vectors,
        )
    with LokalVectorStore(path) as store:  # no model named: the recorded one
        nodes = store.get_nodes()
        assert [n.get_content() for n in nodes] == [*texts, "loose chunk"]
        assert [n.ref_doc_id for n in nodes] == ["docs/pump.md", "docs/pump.md", None]
        assert nodes[0].metadata == {"source": "pump.md"} and nodes[2].node_id == "loose"
        q = embed.get_query_embedding("how do I reset it?")
        top = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=1))
        assert top.nodes is not None and top.nodes[0].get_content() == texts[0]
        store.delete("docs/pump.md")
        assert [n.node_id for n in store.get_nodes()] == ["loose"]


def test_langchain_and_llama_index_share_a_file(tmp_path: Path, embed: LocalEmbedding) -> None:
    from lokal.integrations import langchain as lc

    path = tmp_path / "shared.db"
    lc_embed = lc.LocalEmbeddings(backend="sentence-transformers")
    texts = ["Hold the red button for five seconds to reset.", "Change the filter every 500 h."]
    with lc.LokalVectorStore(path, lc_embed) as lc_store:
        lc_store.add_texts(texts, [{"kind": "manual"}, {"kind": "service"}], ids=["r", "f"])
    with LokalVectorStore(path, embed_model=embed) as store:
        nodes = store.get_nodes()
        assert [(n.node_id, n.get_content(), n.metadata) for n in nodes] == [
            ("r", texts[0], {"kind": "manual"}),
            ("f", texts[1], {"kind": "service"}),
        ]
        q = embed.get_query_embedding("how often is the filter changed?")
        manual = G("and", F("kind", EQ, "manual"))
        assert store.query(VectorStoreQuery(query_embedding=q)).ids == ["f"]
        assert store.query(VectorStoreQuery(query_embedding=q, filters=manual)).ids == ["r"]
        text = "The pump restarts on its own after a power cut."
        store.add(
            [
                TextNode(
                    id_="p",
                    text=text,
                    metadata={"kind": "manual"},
                    embedding=embed.get_text_embedding(text),
                    relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="pump.md")},
                )
            ]
        )
    with lc.LokalVectorStore(path, lc_embed) as lc_store:
        found = lc_store.similarity_search("power cut", k=1, filter={"kind": "manual"})
        assert (found[0].id, found[0].page_content) == ("p", text)
        assert found[0].metadata["kind"] == "manual"
        assert found[0].metadata["ref_doc_id"] == "pump.md"
        assert len(lc_store.get_by_ids(["r", "f", "p"])) == 3


def test_written_files_are_plain_chunks(store: LokalVectorStore, sentences: list[str]) -> None:
    store.close()
    with Index.open(store.path) as core:
        records = core.get()
    assert len(records) == N
    assert records[5].text == sentences[5]
    assert records[5].metadata == {
        **_meta(5),
        **dict.fromkeys(("ref_doc_id", "doc_id", "document_id"), "doc-0"),
    }
    assert not any(k.startswith("_node") for r in records for k in r.metadata)


# ---- identity and ownership ---------------------------------------------------------------


def test_model_identity_is_checked(tmp_path: Path, embed: LocalEmbedding) -> None:
    ident = embed.embedder.identity
    other = dataclasses.replace(ident, source_sha256="0" * 64, name="other-model")
    Index.create(tmp_path / "other.db", other).close()
    with pytest.raises(ModelMismatch, match="other-model"):
        LokalVectorStore(tmp_path / "other.db", embed_model=embed)

    variant = dataclasses.replace(ident, backend="gguf", quantization="q8_0", file_sha256="1" * 64)
    with Index.create(tmp_path / "variant.db", variant) as core:
        core.upsert([Chunk("reset the pump", id="a")], embed.get_text_embedding_batch(["x"]))
    with pytest.warns(ModelVariantWarning):
        store = LokalVectorStore(tmp_path / "variant.db", embed_model=embed)
    with store:
        assert len(store.get_nodes()) == 1  # readable with the same model key
        with pytest.raises(ModelMismatch, match="writer"):
            store.add([TextNode(id_="b", text="b", embedding=[0.1] * ident.dimension)])

    with pytest.raises(IndexFileError, match="embed_model="):
        LokalVectorStore(tmp_path / "nothing.db")
    with LokalVectorStore(tmp_path / "explicit.db", identity=ident) as store:
        assert store.client is not None and store.client.identity == ident


def test_external_embed_model(tmp_path: Path, embed: LocalEmbedding) -> None:
    mock = MockEmbedding(embed_dim=8)
    path = tmp_path / "mock.db"
    with LokalVectorStore(path, embed_model=mock) as store:
        assert not path.exists() and store.get_nodes() == []  # dimension not known yet
        store.add([TextNode(id_="a", text="a", embedding=mock.get_text_embedding("a"))])
    ident = Index.recorded_identity(path)
    assert (ident.name, ident.backend, ident.dimension) == (
        "MockEmbedding",
        "llama_index:MockEmbedding",
        8,
    )
    index = VectorStoreIndex.from_vector_store(
        LokalVectorStore(path, embed_model=mock), embed_model=mock
    )
    assert [n.node_id for n in index.as_retriever(similarity_top_k=1).retrieve("a")] == ["a"]
    index.vector_store.close()  # type: ignore[attr-defined]
    with pytest.raises(ModelMismatch):
        LokalVectorStore(path, embed_model=embed)
    wider = MockEmbedding(embed_dim=16)
    with LokalVectorStore(path, embed_model=wider) as store:  # its dimension shows on use
        node = TextNode(id_="b", text="b", embedding=wider.get_text_embedding("b"))
        with pytest.raises(ModelMismatch, match="16 dimensions"):
            store.add([node])
        with pytest.raises(ModelMismatch, match="16 dimensions"):
            store.query(VectorStoreQuery(query_embedding=wider.get_query_embedding("b")))


def test_agent_managed_file_is_read_only(tmp_path: Path, embed: LocalEmbedding) -> None:
    path = tmp_path / "agent.db"
    with Index.create(path, embed.embedder.identity, managed_by="agent") as core:
        core.upsert([Chunk("reset the pump", id="a")], embed.get_text_embedding_batch(["x"]))
    with LokalVectorStore(path, embed_model=embed) as store:
        assert [n.node_id for n in store.get_nodes()] == ["a"]
        q = embed.get_query_embedding("pump")
        assert store.query(VectorStoreQuery(query_embedding=q)).ids == ["a"]
        node = TextNode(id_="b", text="b", embedding=q)
        for write in (
            lambda: store.add([node]),
            lambda: store.delete("x"),
            lambda: store.delete_nodes(node_ids=["a"]),
            store.clear,
        ):
            with pytest.raises(IndexReadOnly, match="managed by the lokal agent"):
                write()
        assert [n.node_id for n in store.get_nodes()] == ["a"]


def test_stores_created_at_once_share_one_file(tmp_path: Path) -> None:
    """Creating is race-free, as in the LangChain store: stores opened side by side on a path
    that does not exist yet all end up on the one file (a plain Index.create made the losers
    fail with 'already exists')."""
    import threading

    from lokal.identity import ModelIdentity

    path = tmp_path / "raced.db"
    ident = ModelIdentity.external("t", "T", "m", 4)
    barrier = threading.Barrier(6)
    stores: list[LokalVectorStore] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        barrier.wait()
        try:
            stores.append(LokalVectorStore(path, identity=ident))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        stores[0].add([TextNode(id_="a", text="a", embedding=[1.0, 0.0, 0.0, 0.0])])
        assert all(len(s.get_nodes()) == 1 for s in stores)
    finally:
        for s in stores:
            s.close()
