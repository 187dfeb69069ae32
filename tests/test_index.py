"""lokal's index file: a real sqlite-vec file, real embeddings of real text."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest

from lokal import Embedder, ModelMismatch
from lokal.errors import (
    FilterError,
    IndexFileError,
    IndexReadOnly,
    ModelVariantWarning,
    SQLiteUnavailable,
)
from lokal.index import Chunk, Index, compile_filter, matches
from lokal.index import sqlite as lokal_sqlite

from .conftest import paragraphs

N = 300


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [p[:700] for p in paragraphs()[:N]]


@pytest.fixture(scope="module")
def corpus_vectors(corpus: list[str], gguf_embedder: Embedder) -> np.ndarray:
    return gguf_embedder.embed_documents(corpus).vectors


def _meta(i: int) -> dict[str, object]:
    return {
        "n": i,
        "kind": ["manual", "faq", "log"][i % 3],
        "even": i % 2 == 0,
        "tags": [t for t, m in (("red", 2), ("blue", 3), ("green", 5)) if i % m == 0],
        "title": f"Section {i} of the Reference",
        **({"year": 2000 + i % 25} if i % 4 else {}),
        "nested": {"level": i % 7},
    }


@pytest.fixture
def index(
    tmp_path: Path, corpus: list[str], corpus_vectors: np.ndarray, gguf_embedder: Embedder
) -> Index:
    ix = Index.create(tmp_path / "index.db", gguf_embedder.identity)
    ix.upsert(
        [Chunk(t, metadata=_meta(i), id=f"c{i}") for i, t in enumerate(corpus)], corpus_vectors
    )
    yield ix
    ix.close()


def test_file_records_model_and_is_not_world_readable(
    index: Index, gguf_embedder: Embedder
) -> None:
    assert index.identity == gguf_embedder.identity
    mode = stat.S_IMODE(os.stat(index.path).st_mode)
    assert mode & 0o007 == 0, oct(mode)
    assert len(index) == N
    assert index.check().ok


# ---- exact filtered search ---------------------------------------------------------------

FILTERS = [
    None,
    {"kind": "faq"},
    {"even": True, "kind": {"$ne": "log"}},
    {"n": {"$gte": 100, "$lt": 140}},
    {"year": {"$in": [2003, 2007, 2011]}},
    {"year": {"$nin": [2003, 2007]}},
    {"tags": {"$contains": "green"}},
    {"tags": {"$any": ["green", "blue"]}},
    {"tags": {"$all": ["red", "blue"]}},
    {"$or": [{"kind": "log"}, {"nested.level": 3}]},
    {"$not": {"kind": "manual"}},
    {"title": {"$text_match": "Section 1"}},
    {"title": {"$text_match_insensitive": "section 2"}},
    {"year": {"$exists": False}},
    {"tags": {"$is_empty": True}},
    {"$and": [{"n": {"$lt": 60}}, {"$or": [{"even": False}, {"tags": {"$contains": "blue"}}]}]},
    {"n": 7},  # exactly one row matches: k results only when k rows match
]


@pytest.mark.parametrize("flt", FILTERS, ids=[str(f) for f in FILTERS])
def test_filtered_search_equals_numpy(
    index: Index, corpus_vectors: np.ndarray, gguf_embedder: Embedder, flt: dict | None
) -> None:
    q = gguf_embedder.embed_query("how are exceptions raised and handled?")
    allowed = [i for i in range(N) if matches(flt, _meta(i))]
    scores = corpus_vectors[allowed] @ q
    want = [f"c{allowed[j]}" for j in np.argsort(-scores, kind="stable")[:10]]
    hits = index.search(q, k=10, filter=flt)
    assert [h.id for h in hits] == want
    assert len(hits) == min(10, len(allowed))
    for h in hits:
        assert matches(flt, h.metadata)
        cos = 1 - h.distance
        assert h.score == pytest.approx((1 + cos) / 2, abs=1e-6)
        assert 0 <= h.score <= 1


def test_sql_filters_agree_with_the_reference(index: Index) -> None:
    for flt in FILTERS[1:]:
        got = {r.id for r in index.get(filter=flt)}
        assert got == {f"c{i}" for i in range(N) if matches(flt, _meta(i))}, flt


@pytest.mark.parametrize(
    "bad",
    [
        {"x') OR 1=1--": 1},
        {"a;DROP TABLE chunks": 1},
        {"": 1},
        {"$where": "1"},
        {"n": {"$regex": ".*"}},
        {"n": {"$gt": [1, 2]}},
        {"n": {"$in": "not a list"}},
        {"$or": []},
        {"n": {"$gt": True}},
        "kind = 'faq'",
    ],
)
def test_unsafe_or_malformed_filters_are_refused(index: Index, bad: object) -> None:
    with pytest.raises(FilterError):
        index.get(filter=bad)  # type: ignore[arg-type]
    assert len(index) == N


def test_injection_as_a_value_matches_nothing(index: Index, gguf_embedder: Embedder) -> None:
    q = gguf_embedder.embed_query("x")
    for value in ("x') OR 1=1--", "' OR '1'='1", '"; DELETE FROM chunks; --'):
        assert index.search(q, k=5, filter={"kind": value}) == []
        assert index.get(filter={"title": {"$text_match": value}}) == []
    assert len(index) == N and index.check().ok


def test_huge_in_list(index: Index) -> None:
    values = [*list(range(-200000, 0)), 5, 6]
    assert {r.id for r in index.get(filter={"n": {"$in": values}})} == {"c5", "c6"}
    _sql, params = compile_filter({"n": {"$in": values}})
    assert len(params) == 2  # one JSON parameter, not 200,002 variables


# ---- writes ------------------------------------------------------------------------------


def test_upsert_replaces_delete_and_get_by_ids(index: Index, gguf_embedder: Embedder) -> None:
    v = gguf_embedder.embed_documents(["a brand new text about pumps"]).vectors
    index.upsert([Chunk("a brand new text about pumps", metadata={"kind": "new"}, id="c3")], v)
    assert len(index) == N
    got = index.get_by_ids(["c4", "missing", "c3"])
    assert [r.id for r in got] == ["c4", "c3"]
    assert got[1].text == "a brand new text about pumps" and got[1].metadata == {"kind": "new"}
    assert index.search(v[0], k=1)[0].id == "c3"
    assert index.delete(["c3", "c4", "nope"]) == 2
    assert index.get_by_ids(["c3", "c4"]) == []
    faq = [i for i in range(N) if i % 3 == 1 and i != 4]  # c4 was just deleted
    assert index.delete_where({"kind": "faq"}) == len(faq)
    assert index.check().ok


def test_replace_document_is_all_or_nothing(index: Index, gguf_embedder: Embedder) -> None:
    texts = ["first part", "second part", "third part"]
    v = gguf_embedder.embed_documents(texts).vectors
    index.replace_document(
        "/data/a.txt",
        [Chunk(t, ordinal=i) for i, t in enumerate(texts)],
        v,
        content_hash="h1",
        size=30,
        mtime_ns=1,
        ctime_ns=1,
        inode=9,
    )
    assert [r.text for r in index.document_chunks("/data/a.txt")] == texts
    with pytest.raises(ValueError, match="expected 2 vectors"):
        index.replace_document("/data/a.txt", [Chunk("x", ordinal=0), Chunk("y", ordinal=1)], v)
    assert [r.text for r in index.document_chunks("/data/a.txt")] == texts  # untouched
    index.replace_document("/data/a.txt", [Chunk("only", ordinal=0)], v[:1], content_hash="h2")
    docs = {d.uri: d for d in index.documents()}
    assert docs["/data/a.txt"].chunks == 1 and docs["/data/a.txt"].content_hash == "h2"
    assert index.delete_document("/data/a.txt") == 1
    assert "/data/a.txt" not in {d.uri for d in index.documents()}
    assert index.check().ok


def test_bad_vectors_are_refused(index: Index) -> None:
    with pytest.raises(ValueError, match="dimension"):
        index.upsert([Chunk("x")], np.zeros((1, 10)))
    with pytest.raises(ValueError, match="NaN"):
        index.upsert([Chunk("x")], np.full((1, 384), np.nan))
    with pytest.raises(ValueError, match="finite"):
        index.search(np.zeros(10))
    assert len(index) == N


# ---- model identity ----------------------------------------------------------------------


def test_model_key_mismatch_is_an_error(index: Index) -> None:
    path = index.path
    index.close()
    other = Embedder(backend="gguf", document_prefix="passage: ").identity
    with pytest.raises(ModelMismatch, match="cannot be compared"):
        Index.open(path, other)


def test_variant_is_a_warning_and_results_agree(
    index: Index, st_embedder: Embedder, gguf_embedder: Embedder
) -> None:
    path = index.path
    index.close()
    with pytest.warns(ModelVariantWarning, match="same model"):
        reader = Index.open(path, st_embedder.identity)
    with pytest.raises(ModelMismatch, match="a writer must use exactly"):
        Index.open(path, st_embedder.identity, writable=True)
    questions = [
        "How are exceptions raised?",
        "What does the with statement do?",
        "How do I define a class?",
        "What is a generator?",
        "How does import work?",
    ]
    overlaps = []
    with reader, Index.open(path, gguf_embedder.identity) as same:
        for question in questions:
            a = {h.id for h in reader.search(st_embedder.embed_query(question), k=5)}
            b = {h.id for h in same.search(gguf_embedder.embed_query(question), k=5)}
            overlaps.append(len(a & b) / 5)
    assert np.mean(overlaps) >= 0.9, overlaps


def test_agent_managed_index_is_read_only_to_applications(
    tmp_path: Path, gguf_embedder: Embedder
) -> None:
    path = tmp_path / "agent.db"
    Index.create(path, gguf_embedder.identity, managed_by="agent").close()
    with pytest.raises(IndexReadOnly, match="managed by the lokal agent"):
        Index.open(path, gguf_embedder.identity, writable=True)
    with Index.open(path, gguf_embedder.identity, writable=True, agent=True) as writer:
        writer.upsert([Chunk("x")], gguf_embedder.embed_documents(["x"]).vectors)
    with Index.open(path) as reader:
        assert len(reader) == 1
        with pytest.raises(IndexReadOnly):
            reader.delete(["x"])


def test_not_an_index(tmp_path: Path, gguf_embedder: Embedder) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(5000))
    with pytest.raises(IndexFileError, match="not a SQLite database"):
        Index.open(junk)
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(IndexFileError, match="not a lokal index"):
        Index.open(plain)
    with pytest.raises(IndexFileError, match="no index file"):
        Index.open(tmp_path / "missing.db")
    with pytest.raises(IndexFileError, match="already exists"):
        Index.create(plain, gguf_embedder.identity)


# ---- hybrid, MMR, quantized ----------------------------------------------------------------


def test_hybrid_finds_identifiers_and_paraphrases(index: Index, gguf_embedder: Embedder) -> None:
    extra = [
        "Fault ERR-4711-PUMP: the coolant valve is stuck; replace the seal kit.",
        "If the machine gets too hot, stop it and let it cool before restarting.",
    ]
    index.upsert(
        [Chunk(t, id=f"x{i}") for i, t in enumerate(extra)],
        gguf_embedder.embed_documents(extra).vectors,
    )
    code = "ERR-4711-PUMP"
    hybrid = index.hybrid_search(gguf_embedder.embed_query(code), code, k=3)
    assert hybrid[0].id == "x0"
    assert 0 < hybrid[0].score <= 1
    paraphrase = "what to do when the equipment overheats"
    # first by vectors alone; fusion with the (noisy) word matches keeps it in the top 5
    assert index.search(gguf_embedder.embed_query(paraphrase), k=1)[0].id == "x1"
    assert "x1" in [
        h.id for h in index.hybrid_search(gguf_embedder.embed_query(paraphrase), paraphrase, k=5)
    ]
    assert (
        index.hybrid_search(gguf_embedder.embed_query(code), code, k=3, filter={"kind": "faq"})[
            0
        ].id
        != "x0"
    )


def test_mmr_drops_near_duplicates(index: Index, gguf_embedder: Embedder) -> None:
    base = "To reset the pump, hold the red button for five seconds."
    dupes = [base, base + " ", base.replace("five", "5"), base.lower()]
    other = "The pump's reset restores the factory pressure settings."
    index.upsert(
        [Chunk(t, id=f"d{i}") for i, t in enumerate([*dupes, other])],
        gguf_embedder.embed_documents([*dupes, other]).vectors,
    )
    q = gguf_embedder.embed_query("how do I reset the pump?")
    plain = [h.id for h in index.search(q, k=3)]
    assert sum(i.startswith("d") and i != "d4" for i in plain) >= 2
    diverse = [h.id for h in index.mmr_search(q, k=3, fetch_k=20, lambda_mult=0.3)]
    assert sum(i in {"d0", "d1", "d2", "d3"} for i in diverse) == 1


@pytest.mark.parametrize(("quantization", "min_recall"), [("int8", 0.95), ("bit", 0.85)])
def test_quantized_search_recall(
    tmp_path: Path,
    corpus: list[str],
    corpus_vectors: np.ndarray,
    gguf_embedder: Embedder,
    quantization: str,
    min_recall: float,
) -> None:
    ix = Index.create(
        tmp_path / f"{quantization}.db", gguf_embedder.identity, quantization=quantization
    )
    ix.upsert([Chunk(t, id=f"c{i}") for i, t in enumerate(corpus)], corpus_vectors)
    recalls = []
    for text in corpus[:30]:
        q = gguf_embedder.embed_query(text[:80])
        exact = {f"c{i}" for i in np.argsort(-(corpus_vectors @ q))[:10]}
        got = ix.search(q, k=10)
        recalls.append(len(exact & {h.id for h in got}) / 10)
        assert [h.score for h in got] == sorted((h.score for h in got), reverse=True)
    ix.close()
    assert np.mean(recalls) >= min_recall, np.mean(recalls)


# ---- upkeep --------------------------------------------------------------------------------


def test_check_finds_orphans(index: Index) -> None:
    index._conn.execute("DELETE FROM chunks_vec WHERE rowid = (SELECT min(id) FROM chunks)")
    report = index.check()
    assert not report.ok
    assert any("chunks without a vector: 1" in p for p in report.problems)


def test_snapshot_is_a_consistent_copy(index: Index, tmp_path: Path) -> None:
    out = index.snapshot(tmp_path / "snap.db")
    assert stat.S_IMODE(os.stat(out).st_mode) & 0o007 == 0
    with Index.open(out) as copy:
        assert len(copy) == N
        assert copy.check().ok


def test_extension_less_python_uses_another_sqlite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = lokal_sqlite.sqlite_module(tmp_path / "x.db")
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        assert module.__name__ != "sqlite3"  # this machine's python3 is such a Python
    monkeypatch.setattr(lokal_sqlite, "_CANDIDATES", ("sqlite3_not_here", "also_not_here"))
    with pytest.raises(SQLiteUnavailable, match="pip install sqlean-py"):
        lokal_sqlite.sqlite_module(tmp_path / "y.db")


def test_search_sees_other_connections_writes(index: Index, gguf_embedder: Embedder) -> None:
    q = gguf_embedder.embed_query("lighthouse keeper")
    with Index.open(index.path) as reader:
        reader.search(q, k=1)  # loads the reader's cache
        v = gguf_embedder.embed_documents(["The lighthouse keeper logs every ship."]).vectors
        index.upsert([Chunk("The lighthouse keeper logs every ship.", id="lh")], v)
        assert reader.search(q, k=1)[0].id == "lh"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert index.search(q, k=1)[0].id == "lh"


def test_a_remembered_filter_sees_later_writes(index: Index, gguf_embedder: Embedder) -> None:
    """Filtered searches remember which rows a filter matched; any write, from this
    connection or another process's, must be seen by the next search with that filter."""
    q = gguf_embedder.embed_query("lighthouse keeper")
    flt = {"kind": "faq"}
    text = "The lighthouse keeper logs every ship."
    v = gguf_embedder.embed_documents([text]).vectors
    with Index.open(index.path) as reader:
        before = reader.search(q, k=3, filter=flt)
        assert before == reader.search(q, k=3, filter=flt)
        index.upsert([Chunk(text, metadata={"kind": "faq"}, id="lh")], v)
        assert reader.search(q, k=1, filter=flt)[0].id == "lh"
        assert index.search(q, k=1, filter=flt)[0].id == "lh"
        index.upsert([Chunk(text, metadata={"kind": "log"}, id="lh")], v)
        for ix in (reader, index):
            assert [h.id for h in ix.search(q, k=3, filter=flt)] == [h.id for h in before]
            assert ix.search(q, k=1, filter={"kind": "log"})[0].id == "lh"


def test_cache_load_equals_the_stored_vectors(index: Index, corpus_vectors: np.ndarray) -> None:
    from lokal.index import search

    with lokal_sqlite.read(index._conn):
        for quantization in search.MODES:  # the search copies ("auto" picks one of them)
            cache = search.VectorCache.load(index._conn, index.dimension, quantization, (0, 0))
            assert len(cache.rowids) == N and np.all(np.diff(cache.rowids) > 0)
            want = search.encode(search.normalize(corpus_vectors), quantization)
            assert np.array_equal(cache.data, want), quantization
    sql = index._conn.execute("SELECT sql FROM sqlite_master WHERE name = 'chunks_vec'")
    assert "chunk_size=16" in sql.fetchone()[0]


TRICKY = [
    {},
    {"k": None},
    {"k": "a"},
    {"k": ["a", "b"]},
    {"k": {"x": "a"}},
    {"k": 12},
    {"k": True},
    {"k": 1},
    {"k": "12"},
    {"k": []},
    {"k": ""},
    {"k": 1.5},
    {"k": "A b"},
]
TRICKY_FILTERS = [
    {"k": None},
    {"k": {"$ne": None}},
    {"k": {"$contains": "a"}},
    {"k": {"$any": ["a"]}},
    {"k": {"$all": ["a"]}},
    {"k": {"$text_match": "1"}},
    {"k": {"$text_match_insensitive": "A"}},
    {"k": {"$gt": 1}},
    {"k": {"$gte": "1"}},
    {"k": 1},
    {"k": True},
    {"k": {"$in": [1, "a"]}},
    {"k": {"$nin": [1]}},
    {"k": {"$exists": True}},
    {"k": {"$is_empty": True}},
    {"k": {"$ne": 1}},
    {"k": {"$lt": 2}},
    {"k.x": "a"},
    {"$not": {"k": {"$exists": True}}},
]


def _unit(v: np.ndarray) -> np.ndarray:
    """Unit rows: the identity says the model normalizes, and the index holds it to that."""
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_sql_and_reference_agree_on_tricky_values(tmp_path: Path, gguf_embedder: Embedder) -> None:
    """Missing keys, nulls, arrays, objects, booleans vs numbers, text vs numbers."""
    with Index.create(tmp_path / "t.db", gguf_embedder.identity) as ix:
        ix.upsert(
            [Chunk(f"t{i}", metadata=m, id=str(i)) for i, m in enumerate(TRICKY)],
            _unit(np.eye(len(TRICKY), 384, dtype=np.float32) + 0.01),
        )
        for flt in TRICKY_FILTERS:
            got = {r.id for r in ix.get(filter=flt)}
            assert got == {str(i) for i, m in enumerate(TRICKY) if matches(flt, m)}, flt


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"n": 10**30}, "64 bits"),
        ({"n": {"$gt": -(10**30)}}, "64 bits"),
        ({"n": {"$in": [1, 10**30]}}, "64 bits"),
        ({"n": float("inf")}, "finite"),
        ({"n": {"$in": [float("nan")]}}, "finite"),
        ({"$or": [{"n": i} for i in range(2000)]}, "$in"),
    ],
    ids=["huge-int", "huge-negative", "huge-in-list", "inf", "nan-in-list", "2000-or"],
)
def test_filters_past_sqlites_limits_are_filter_errors(
    index: Index, gguf_embedder: Embedder, bad: dict[str, object], needle: str
) -> None:
    """Not OverflowError, nor SQLite's "Expression tree is too large": caught before SQL."""
    with pytest.raises(FilterError, match=re.escape(needle)):
        compile_filter(bad)
    q = gguf_embedder.embed_query("x")
    for call in (
        lambda: index.get(filter=bad),
        lambda: index.search(q, k=3, filter=bad),
        lambda: index.text_search("exception", k=3, filter=bad),
    ):
        with pytest.raises(FilterError):
            call()


def test_long_or_lists_within_the_limit_work(index: Index) -> None:
    """900 alternatives (above SQLite's expression depth of 1,000 if chained) match exactly."""
    flt = {"$or": [{"n": i} for i in range(900)]}
    assert {r.id for r in index.get(filter=flt)} == {f"c{i}" for i in range(N)}
    big = {"$and": [{"n": {"$gte": 0}}, {"$or": [{"n": 5}, {"n": 2**63 - 1}]}]}
    assert [r.id for r in index.get(filter=big)] == ["c5"]
