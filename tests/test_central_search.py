"""CentralIndex: the central store searched like an index file, on a real PostgreSQL + pgvector
(pgserver) filled from three real local indexes of real prose embedded with the real default
model. Filters are checked row for row against lokal's reference semantics
(:func:`lokal.index.matches`), including injection attempts."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from lokal.central.store import CentralHit, CentralIndex, CentralRecord
from lokal.embedder import Embedder
from lokal.errors import (
    CentralError,
    CentralUnreachable,
    FilterError,
    ModelMismatch,
    ModelVariantWarning,
)
from lokal.identity import ModelIdentity
from lokal.index import Chunk, Hit, Index, Record, matches

from .central_schema import copy_index, create_collection
from .conftest import paragraphs

SITES = ("north", "south", "east")
PER_SITE = 40
PUMP = "Pump fault ERR-4711-PUMP: the impeller is blocked. Clear it, then restart the unit."
TAGS = ["alpha", "beta", "gamma", "delta"]


def _metadata(i: int) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "n": i,
        "parity": "even" if i % 2 == 0 else "odd",
        "year": 2000 + i % 30,
        "ratio": i / 7,
        "tags": TAGS[: i % 5],
        "nested": {"level": i % 3},
        "name": ("Manual" if i % 3 == 0 else "guide") + f"-{i}",
    }
    if i % 5 == 0:
        meta["maybe"] = None
    elif i % 5 == 1:
        meta["maybe"] = "x"
    if i % 7 == 0:
        meta["empty"] = ""
    return meta


@pytest.fixture(scope="module", params=["pgvector-0.6", "pgvector-0.8"])
def module_dsn(request: pytest.FixtureRequest) -> str:
    """A fresh database for this module's tests (``pg_dsn`` is one per test; the fleet below
    is embedded once per server), on each server: PostgreSQL 16 + pgvector 0.6 (no iterative
    scans: the exact fallback) and PostgreSQL 18 + pgvector 0.8 (iterative scans)."""
    server = request.getfixturevalue(
        "_pg_server" if request.param == "pgvector-0.6" else "_pg18_server"
    )
    name = "t_central_search_" + os.urandom(3).hex()
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return str(server.get_uri(database=name))


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, st_embedder: Embedder, module_dsn: str
) -> dict[str, Any]:
    """Three sites' local indexes (the same document names on every site, so chunk ids repeat
    across sites) copied into a central store; returns the DSN and every row as the reference
    sees it."""
    texts = [p for p in paragraphs() if len(p) < 600][: PER_SITE * len(SITES)]
    texts[-1] = PUMP
    vectors = st_embedder.embed_documents(texts).vectors
    create_collection(module_dsn, st_embedder.identity)
    rows: list[dict[str, Any]] = []
    for s, site in enumerate(SITES):
        path = tmp_path_factory.mktemp(site) / "index.db"
        with Index.create(path, st_embedder.identity) as index:
            for doc in range(4):
                start = s * PER_SITE + doc * 10
                uri = f"/srv/{'manuals' if doc % 2 == 0 else 'logs'}/doc{doc}.txt"
                chunks = [
                    Chunk(texts[start + j], ordinal=j, metadata=_metadata(start + j))
                    for j in range(10)
                ]
                index.replace_document(uri, chunks, vectors[start : start + 10])
                for j, c in enumerate(chunks):
                    rows.append(
                        {
                            "site": site,
                            "id": f"{uri}#{j}",
                            "path": uri,
                            "metadata": dict(c.metadata),
                            "vector": vectors[start + j],
                            "text": c.text,
                        }
                    )
            copy_index(module_dsn, index, site)
    return {"dsn": module_dsn, "rows": rows, "embedder": st_embedder}


@pytest.fixture
def central(fleet: dict[str, Any]) -> Iterator[CentralIndex]:
    with CentralIndex.open(fleet["dsn"]) as index:
        yield index


def _reference(rows: list[dict[str, Any]], flt: dict[str, Any] | None) -> set[tuple[str, str]]:
    return {
        (r["site"], r["id"])
        for r in rows
        if matches(flt, {**r["metadata"], "site": r["site"], "path": r["path"]})
    }


def _exact(rows: list[dict[str, Any]], q: np.ndarray, flt: Any, k: int) -> list[tuple[str, str]]:
    keep = [r for r in rows if (r["site"], r["id"]) in _reference(rows, flt)]
    scores = [float(r["vector"] @ q) for r in keep]
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return [(keep[i]["site"], keep[i]["id"]) for i in order]


# ---- search results -----------------------------------------------------------------------------


def test_search_returns_hits_with_site_and_path(
    central: CentralIndex, fleet: dict[str, Any]
) -> None:
    q = fleet["embedder"].embed_query("How does a for loop iterate over a sequence?")
    hits = central.search(q, k=5)
    assert len(hits) == 5
    assert all(isinstance(h, Hit) and isinstance(h, CentralHit) for h in hits)
    assert all(h.site in SITES and h.document and h.document.startswith("/srv/") for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:
        cos = 1.0 - (h.distance or 0.0)
        assert h.score == pytest.approx((1.0 + cos) / 2.0, abs=1e-6)
    exact = _exact(fleet["rows"], q, None, 5)
    assert [(h.site, h.id) for h in hits] == exact
    assert len(central) == PER_SITE * len(SITES)


def test_same_chunk_id_on_every_site(fleet: dict[str, Any]) -> None:
    with CentralIndex.open(fleet["dsn"]) as central:
        records = central.get_by_ids(["/srv/manuals/doc0.txt#3", "missing"])
    assert all(isinstance(r, Record) and isinstance(r, CentralRecord) for r in records)
    assert sorted(r.site for r in records) == sorted(SITES)
    assert {r.id for r in records} == {"/srv/manuals/doc0.txt#3"}
    with CentralIndex.open(fleet["dsn"], site="south") as south:
        (only,) = south.get_by_ids(["/srv/manuals/doc0.txt#3"])
        assert only.site == "south" and only.document == "/srv/manuals/doc0.txt"
        assert only.ordinal == 3 and only.metadata == _metadata(PER_SITE + 3)
        assert len(south) == PER_SITE


def test_site_option_and_site_filter_agree(fleet: dict[str, Any]) -> None:
    q = fleet["embedder"].embed_query("exceptions raised by a function")
    with CentralIndex.open(fleet["dsn"], site=["north", "east"]) as two:
        by_option = [(h.site, h.id) for h in two.search(q, k=8)]
    with CentralIndex.open(fleet["dsn"]) as central:
        by_filter = central.search(q, k=8, filter={"site": {"$in": ["north", "east"]}})
    assert by_option == [(h.site, h.id) for h in by_filter]
    assert {s for s, _ in by_option} <= {"north", "east"}
    assert by_option == _exact(fleet["rows"], q, {"site": {"$in": ["north", "east"]}}, 8)


FILTERS: list[dict[str, Any]] = [
    {"parity": "even"},
    {"site": "south"},
    {"site": "south", "parity": "odd"},
    {"path": "/srv/logs/doc1.txt"},
    {"path": {"$text_match": "/manuals/"}},
    {"site": {"$ne": "north"}},
    {"site": {"$nin": ["north", "south"]}},
    {"n": {"$gte": 10, "$lt": 20}},
    {"n": {"$in": [1, 2, 3, 500]}},
    {"n": {"$nin": [1, 2, 3]}},
    {"ratio": {"$gt": 3.5}},
    {"name": {"$gt": "Manual-5"}},
    {"name": {"$text_match": "Manual"}},
    {"name": {"$text_match_insensitive": "MANUAL"}},
    {"tags": {"$contains": "gamma"}},
    {"tags": {"$any": ["delta", "nothing"]}},
    {"tags": {"$all": ["alpha", "beta", "gamma"]}},
    {"tags": {"$is_empty": True}},
    {"nested.level": 2},
    {"nested.level": {"$ne": 2}},
    {"maybe": None},
    {"maybe": {"$ne": None}},
    {"maybe": {"$exists": True}},
    {"maybe": {"$exists": False}},
    {"empty": {"$is_empty": True}},
    {"empty": {"$is_empty": False}},
    {"$or": [{"site": "east"}, {"n": {"$lt": 5}}]},
    {"$not": {"parity": "even"}},
    {"$and": [{"year": {"$gte": 2010}}, {"$not": {"tags": {"$contains": "alpha"}}}]},
    {"n": True},
    {"n": 3.0},
    {"year": {"$gt": "2000"}},  # text against numbers: nothing, as in Python
]


@pytest.mark.parametrize("flt", FILTERS, ids=[str(f) for f in FILTERS])
def test_filters_match_the_reference_semantics(
    central: CentralIndex, fleet: dict[str, Any], flt: dict[str, Any]
) -> None:
    q = fleet["embedder"].embed_query("a statement in Python")
    hits = central.search(q, k=len(fleet["rows"]), filter=flt)
    expected = _reference(fleet["rows"], flt)
    assert {(h.site, h.id) for h in hits} == expected
    assert len(hits) == len(expected)


def test_each_server_has_the_pgvector_it_is_named_for(
    central: CentralIndex, request: pytest.FixtureRequest
) -> None:
    """So that the pgvector-0.8 run really takes the iterative-scan path below."""
    named = request.node.callspec.params["module_dsn"]
    assert central.pgvector_version[:2] == ((0, 8) if named == "pgvector-0.8" else (0, 6))


def test_selective_filter_still_returns_k_exact(
    fleet: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """HNSW filters its candidates after the graph search: with few candidates and a filter
    matching 6 of 120 rows, the result comes back short, and the store falls back to an exact
    scan so that k rows come back whenever k match; on pgvector >= 0.8 the iterative scan
    (``hnsw.iterative_scan = strict_order``) finds them without the fallback. (The planner
    would scan a table this small sequentially: ``enable_seqscan=off`` makes it use the HNSW
    index as on a large one.)"""
    q = fleet["embedder"].embed_query("How does a for loop iterate over a sequence?")
    flt = {"n": {"$in": [7, 19, 33, 58, 90, 101]}}
    dsn = fleet["dsn"] + "&options=-c%20enable_seqscan%3Doff"
    with CentralIndex.open(dsn) as central:
        central.ef_search_filtered = 1
        with caplog.at_level(logging.DEBUG, logger="lokal.central.store"):
            hits = central.search(q, k=5, filter=flt)
        assert [(h.site, h.id) for h in hits] == _exact(fleet["rows"], q, flt, 5)
        if central.pgvector_version >= (0, 8):
            # the iterative scan walks on through the graph until 5 rows pass the filter
            assert "exact scan" not in caplog.text
        else:
            assert "exact scan" in caplog.text
        assert len(central.search(q, k=50, filter=flt)) == 6
        assert central.search(q, k=5, filter={"n": -1}) == []
        assert len(central.search(q, k=5, filter={"site": "east"})) == 5


# ---- hybrid, text, MMR --------------------------------------------------------------------------


def test_hybrid_finds_an_exact_code(central: CentralIndex, fleet: dict[str, Any]) -> None:
    query = "ERR-4711-PUMP"
    q = fleet["embedder"].embed_query(query)
    text = central.text_search(query, k=3)
    assert text[0].text == PUMP and text[0].score == 1.0 and text[0].distance is None
    hybrid = central.hybrid_search(q, query, k=4)
    assert hybrid[0].text == PUMP and hybrid[0].site == "east"
    assert all(0.0 < h.score <= 1.0 for h in hybrid)
    assert all(h.distance is not None for h in hybrid)
    assert central.hybrid_search(q, query, k=4, filter={"site": "north"})[0].site == "north"
    assert len(central.hybrid_search(q, query, k=4, filter={"site": "north"})) == 4


def test_mmr_diverse_and_filtered(central: CentralIndex, fleet: dict[str, Any]) -> None:
    q = fleet["embedder"].embed_query("How does a for loop iterate over a sequence?")
    plain = central.search(q, k=1)
    mmr = central.mmr_search(q, k=4, fetch_k=20, lambda_mult=0.3)
    assert len(mmr) == 4 and len({(h.site, h.id) for h in mmr}) == 4
    assert (mmr[0].site, mmr[0].id) == (plain[0].site, plain[0].id)
    south = central.mmr_search(q, k=4, filter={"site": "south", "parity": "odd"})
    assert len(south) == 4 and all(h.site == "south" for h in south)


# ---- safety ------------------------------------------------------------------------------------

BAD_FILTERS: list[Any] = [
    {"a'; DROP TABLE lokal.chunks; --": 1},
    {'x" OR 1=1 --': 1},
    {"site) OR (1=1": "north"},
    {"n": {"$where": "1=1"}},
    {"$where": "1=1"},
    {5: 1},
    {"n": {"$in": "abc"}},
    {"n": {"$in": [[1]]}},
    {"n": {"$gt": True}},
    {"n": {"$gt": None}},
    {"n": float("nan")},
    {"n": {"$lt": float("inf")}},
    {"n": 10**5000},
    {"name": "a\x00b"},
    {"name": "\ud800"},
    {"name": {"$text_match": 5}},
    {"n": {}},
    {"$or": []},
    [],
    "parity = 'even'",
]


def _id(flt: Any) -> str:
    try:
        return repr(flt)[:40]
    except (ValueError, RecursionError):  # an int too long to write, deep nesting
        return "unprintable"


def _nested(depth: int) -> dict[str, Any]:
    flt: dict[str, Any] = {"n": 1}
    for _ in range(depth):
        flt = {"$not": flt}
    return flt


@pytest.mark.parametrize("flt", [*BAD_FILTERS, _nested(40), _nested(5000)], ids=lambda f: _id(f))
def test_unsafe_filters_are_filter_errors(central: CentralIndex, flt: Any) -> None:
    q = np.ones(central.dimension, dtype=np.float32)
    with pytest.raises(FilterError):
        central.search(q, k=3, filter=flt)
    with pytest.raises(FilterError):
        central.text_search("loop", k=3, filter=flt)
    assert len(central) == PER_SITE * len(SITES)  # the connection still works, nothing dropped


SQL_VALUES: list[dict[str, Any]] = [
    {"name": "x'); DROP TABLE lokal.chunks; --"},
    {"site": "north' OR '1'='1"},
    {"path": {"$in": ["' OR 1=1 --", "/srv/logs/doc1.txt"]}},
    {"name": {"$text_match": "%"}},
    {"name": {"$text_match": "_"}},
    {"n": 10**40},
    {"n": {"$lt": 10**40}},
    {"n": {"$gt": -(10**300)}},
    {"ratio": {"$lt": 1e308}},
    {"tags": {"$contains": "'; SELECT pg_sleep(10); --"}},
    {"nested.level": {"$in": list(range(100_000))}},
]


@pytest.mark.parametrize("flt", SQL_VALUES, ids=lambda f: _id(f))
def test_sql_in_values_gives_correct_results(
    central: CentralIndex, fleet: dict[str, Any], flt: dict[str, Any]
) -> None:
    q = np.ones(central.dimension, dtype=np.float32)
    hits = central.search(q, k=len(fleet["rows"]), filter=flt)
    assert {(h.site, h.id) for h in hits} == _reference(fleet["rows"], flt)
    assert len(central) == PER_SITE * len(SITES)


# ---- the recorded model ------------------------------------------------------------------------


def test_recorded_identity_and_mismatch(fleet: dict[str, Any]) -> None:
    recorded: ModelIdentity = fleet["embedder"].identity
    with CentralIndex.open(fleet["dsn"]) as central:
        assert central.identity == recorded and central.dimension == recorded.dimension
    other = ModelIdentity.external("langchain", "FakeEmbeddings", "fake", recorded.dimension)
    with pytest.raises(ModelMismatch) as err:
        CentralIndex.open(fleet["dsn"], other)
    assert recorded.describe() in str(err.value) and other.describe() in str(err.value)
    variant = ModelIdentity(**{**recorded.__dict__, "backend": "gguf", "quantization": "q8_0"})
    with pytest.warns(ModelVariantWarning, match="same model"):
        CentralIndex.open(fleet["dsn"], variant).close()
    with pytest.raises(ModelMismatch, match="exactly that variant"):
        CentralIndex.open(fleet["dsn"], variant, writing=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CentralIndex.open(fleet["dsn"], recorded).close()


def test_missing_schema_and_bad_names(fleet: dict[str, Any]) -> None:
    with pytest.raises(CentralError, match="does not exist"):
        CentralIndex.open(fleet["dsn"], schema="nowhere")
    with pytest.raises(ValueError, match="invalid schema name"):
        CentralIndex.open(fleet["dsn"], schema='lokal"; DROP SCHEMA lokal; --')


# ---- an application's own site -----------------------------------------------------------------


def test_upsert_and_delete_own_site(fleet: dict[str, Any], pg_dsn: str, tmp_path: Path) -> None:
    emb = fleet["embedder"]
    create_collection(pg_dsn, emb.identity, schema="app_writes")
    texts = ["Reset: hold the red button.", "Filters: every 500 hours."]
    vectors = emb.embed_documents(texts).vectors
    with CentralIndex.open(pg_dsn, emb.identity, schema="app_writes", writing=True) as central:
        ids = central.upsert(
            [Chunk(t, metadata={"kind": "manual"}) for t in texts], vectors, site="app"
        )
        assert len(ids) == 2 and len(central) == 2
        central.upsert([Chunk("Reset: hold the blue button.", id=ids[0])], vectors[:1], site="app")
        assert central.get_by_ids(ids)[0].text == "Reset: hold the blue button."
        hit = central.search(emb.embed_query("how to reset?"), k=1, filter={"site": "app"})[0]
        assert hit.site == "app" and hit.id == ids[0]
        with pytest.raises(ValueError, match="NUL"):
            central.upsert([Chunk("a\x00b")], vectors[:1], site="app")
        with pytest.raises(ValueError, match="invalid site"):
            central.upsert([Chunk("x")], vectors[:1], site="bad site'")
        assert central.delete_where({"kind": "manual"}, site="other") == 0
        assert central.delete([ids[0], "missing"], site="app") == 1
        assert central.delete_where({"kind": "manual"}, site="app") == 1
        assert len(central) == 0
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT site FROM app_writes.sites").fetchall() == [("app",)]


def test_a_lost_connection_is_reported_then_reopened(fleet: dict[str, Any]) -> None:
    q = fleet["embedder"].embed_query("a statement in Python")
    with CentralIndex.open(fleet["dsn"]) as central:
        before = central.search(q, k=3)
        with psycopg.connect(fleet["dsn"], autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(CentralUnreachable, match="connection was lost"):
            central.search(q, k=3)
        assert central.search(q, k=3) == before
