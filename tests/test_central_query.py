"""A central store queried from where a local index is: the recorded model loaded for queries
(lokal.central.reader), ``lokal search --index postgresql://...`` and ``lokal serve --index
postgresql://...`` (``/v1/search``), on a real PostgreSQL with two sites' real indexes
embedded with the real GGUF model the agent uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from lokal.central.reader import open_for_search, open_index, recorded_identity
from lokal.central.store import CentralIndex
from lokal.embedder import Embedder
from lokal.errors import ModelMismatch, ModelVariantWarning
from lokal.identity import ModelIdentity
from lokal.index import Chunk, Index

from .central_schema import copy_index, create_collection
from .conftest import paragraphs

LOKAL = str(Path(sys.executable).parent / "lokal")
PUMP = "Pump fault ERR-4711-PUMP: the impeller is blocked. Clear it, then restart the unit."


@pytest.fixture(scope="module")
def store(
    _pg_server: Any, gguf_embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Two sites (``north``, ``south``) of twelve real paragraphs each, the pump fault on
    ``south``, written by the GGUF model (what the agent runs) into a fresh database."""
    name = "t_central_query_" + os.urandom(3).hex()
    with psycopg.connect(_pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = str(_pg_server.get_uri(database=name))
    create_collection(dsn, gguf_embedder.identity)
    texts = [*[p for p in paragraphs() if len(p) < 500][:23], PUMP]
    vectors = gguf_embedder.embed_documents(texts).vectors
    for s, site in enumerate(("north", "south")):
        path = tmp_path_factory.mktemp(site) / "index.db"
        part = slice(12 * s, 12 * s + 12)
        with Index.create(path, gguf_embedder.identity) as index:
            chunks = [
                Chunk(t, ordinal=i, line_start=i + 1, line_end=i + 1, metadata={"n": i})
                for i, t in enumerate(texts[part])
            ]
            index.replace_document(f"/srv/{site}/manual.txt", chunks, vectors[part])
            copy_index(dsn, index, site)
    return dsn


def lokal(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([LOKAL, *args], capture_output=True, text=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"lokal {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


# ---- the recorded model ------------------------------------------------------------------------


def test_a_reader_naming_no_model_loads_the_recorded_one(
    store: str, gguf_embedder: Embedder
) -> None:
    assert recorded_identity(store) == gguf_embedder.identity
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the exact recorded variant: no warning
        index, embedder = open_for_search(store, site="south")
    with index:
        assert isinstance(index, CentralIndex)
        assert embedder.identity == gguf_embedder.identity
        hits = index.hybrid_search(embedder.embed_query("ERR-4711-PUMP"), "ERR-4711-PUMP", k=3)
        assert hits[0].text == PUMP and {h.site for h in hits} == {"south"}


def test_another_model_key_is_refused_naming_both(
    store: str, gguf_embedder: Embedder, st_embedder: Embedder
) -> None:
    recorded = gguf_embedder.identity
    other = ModelIdentity.external("langchain", "OpenAIEmbeddings", "text-embedding-3-small", 384)
    with pytest.raises(ModelMismatch) as err:
        open_index(store, other)
    assert recorded.describe() in str(err.value) and other.describe() in str(err.value)
    # the sentence-transformers weights of the same model: another variant, a warning
    assert st_embedder.identity.compare(recorded) == "variant"
    with pytest.warns(ModelVariantWarning, match="slightly different vectors"):
        open_index(store, st_embedder.identity).close()


def test_site_and_schema_are_for_central_stores_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="central store"):
        open_index(tmp_path / "index.db", site="north")


# ---- lokal search ------------------------------------------------------------------------------


@pytest.mark.slow
def test_lokal_search_on_a_central_store(store: str) -> None:
    hits = json.loads(
        lokal("search", "ERR-4711-PUMP", "--index", store, "--hybrid", "-k", "3", "--json").stdout
    )
    assert hits[0]["site"] == "south" and hits[0]["text"] == PUMP
    assert hits[0]["path"] == "/srv/south/manual.txt" and hits[0]["lines"] == [12, 12]
    north = json.loads(
        lokal("search", "pump fault", "--index", store, "--site", "north", "--json").stdout
    )
    assert len(north) == 5 and {h["site"] for h in north} == {"north"}
    flt = json.loads(
        lokal(
            "search",
            "pump fault",
            "--index",
            store,
            "--filter",
            '{"site": "south", "n": 3}',
            "--json",
        ).stdout
    )
    assert [(h["site"], h["metadata"]["n"]) for h in flt] == [("south", 3)]
    text = lokal("search", "pump fault", "--index", store, "-k", "1", "--site", "south").stdout
    assert text.split()[1] == "south:/srv/south/manual.txt:12-12"
    bad = lokal("search", "x", "--index", store, "--filter", '{"a\') OR 1=1--": 1}', check=False)
    assert bad.returncode == 1 and "FilterError" in bad.stderr and "Traceback" not in bad.stderr
    missing = lokal("search", "x", "--index", store, "--schema", "nowhere", check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_lokal_search_site_needs_a_url(tmp_path: Path) -> None:
    proc = lokal("search", "x", "--index", str(tmp_path / "i.db"), "--site", "a", check=False)
    assert proc.returncode == 2 and "central store" in proc.stderr


# ---- lokal serve -------------------------------------------------------------------------------


@pytest.mark.slow
def test_lokal_serve_searches_a_central_store(store: str, packed_gguf: Path) -> None:
    from .test_serve import TIMEOUT, Server

    server = Server("--index", store, "--no-key")
    try:
        status = server.status()
        assert status["index"].startswith("postgresql://")
        body = {"query": "ERR-4711-PUMP", "k": 3, "hybrid": True}
        r = httpx.post(f"{server.url}/v1/search", json=body, timeout=TIMEOUT)
        r.raise_for_status()
        results = r.json()["results"]
        assert results[0]["site"] == "south" and results[0]["text"] == PUMP
        body = {"query": "pump", "k": 4, "filter": {"site": "north"}}
        r = httpx.post(f"{server.url}/v1/search", json=body, timeout=TIMEOUT)
        assert [x["site"] for x in r.json()["results"]] == ["north"] * 4
        body = {"query": "pump", "filter": {"a'b": 1}}
        r = httpx.post(f"{server.url}/v1/search", json=body, timeout=TIMEOUT)
        assert r.status_code == 400 and "invalid metadata key" in r.text
    finally:
        assert server.stop() == 0
        server.close()


def test_lokal_serve_lends_a_central_store_only_with_a_key(store: str) -> None:
    """The server reads the centre with its own credentials: keyless on loopback, it would
    lend them to every local user; it refuses before loading any model."""
    out = subprocess.run(
        [LOKAL, "serve", "--index", store], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert "central store is served over TCP only with a key" in out.stderr
