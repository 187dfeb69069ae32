"""`lokal serve`: the real server in a subprocess, talked to by real clients written elsewhere.

Two servers per run (module-scoped), each loading its models once:

- ``server``: the default GGUF embedder with query/document prefixes overridden (so the
  ``input_type`` path is visible in the vectors), a cross-encoder reranker built from the real
  MiniLM encoder (as in test_reranker.py: its scores mean nothing, they are compared with the
  in-process Reranker on the same weights), and a small lokal index for ``/v1/search``.
- ``keyed_server``: bound to 0.0.0.0 with an API key (a non-loopback bind must have one), and
  ``--force-dimensions`` for the Matryoshka slicing path.

The ``ollama``, ``openai`` and ``cohere`` packages talk to them, plus plain httpx for search and
malformed requests. Readiness is event-driven: the server prints its address once it accepts
connections, and the fixture reads that line.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import select
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from lokal import Reranker, __version__
from lokal.embedder import Embedder, TruncationWarning
from lokal.index import Chunk, Index
from lokal.integrations.langchain import LocalEmbeddings

from .conftest import build_cross_encoder, paragraphs

pytestmark = pytest.mark.slow

LOKAL = str(Path(sys.executable).parent / "lokal")
QUERY_PREFIX, DOC_PREFIX = "query: ", "passage: "
NAME = "minilm-test"
RERANKER_NAME = "minilm-cross-encoder"
#: httpx's own default (5 s) is too short on a busy shared machine
TIMEOUT = 120.0
# the clients must only ever talk to the local server
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


class Server:
    """``lokal serve`` in a subprocess; ready when it prints the address it listens on."""

    def __init__(self, *args: str, timeout: float = 240) -> None:
        env = {k: v for k, v in os.environ.items() if k != "LOKAL_API_KEY"}
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [LOKAL, "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while b"listening on " not in line:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            line = self.proc.stdout.readline() if ready else b""
            if not line and (self.proc.poll() is not None or left <= 0):
                self.stop()
                log = self.log()
                self.close()
                pytest.fail(f"lokal serve did not start:\n{log}")
        self.url = (
            line.decode().split("listening on ", 1)[1].strip().replace("0.0.0.0", "127.0.0.1")
        )

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def status(self, **headers: str) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/v1/status", headers=headers, timeout=TIMEOUT)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: uvicorn finishes in-flight requests, then exits
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.proc.returncode

    def close(self) -> None:
        self.stderr.close()


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cross-encoder from the real MiniLM encoder with a fresh head (test_reranker.py's recipe:
    the head scaled x20 so the scores spread enough to order)."""
    return build_cross_encoder(tmp_path_factory.mktemp("serve-models") / RERANKER_NAME)


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return [p for p in paragraphs() if len(p) < 500][:24]


@pytest.fixture(scope="module")
def index_file(
    gguf_embedder: Embedder, docs: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A lokal index of three 'files', chunks with line ranges and metadata."""
    path = tmp_path_factory.mktemp("serve-index") / "index.db"
    vectors = gguf_embedder.embed_documents(docs).vectors
    with Index.create(path, gguf_embedder.identity) as index:
        for f in range(3):
            part = slice(8 * f, 8 * f + 8)
            chunks = [
                Chunk(
                    text,
                    ordinal=i,
                    line_start=10 * i + 1,
                    line_end=10 * i + 9,
                    metadata={"file": f},
                )
                for i, text in enumerate(docs[part])
            ]
            index.replace_document(f"/srv/docs/file{f}.txt", chunks, vectors[part])
    return path


@pytest.fixture(scope="module")
def server(packed_gguf: Path, cross_encoder_dir: Path, index_file: Path) -> Iterator[Server]:
    s = Server(
        "--name", NAME,
        "--query-prefix", QUERY_PREFIX,
        "--document-prefix", DOC_PREFIX,
        "--reranker", str(cross_encoder_dir),
        "--reranker-name", RERANKER_NAME,
        "--index", str(index_file),
        "--no-key",  # the index is 0640: keyless only when told (test_serve_security.py)
        "--max-body-mb", "1",
        "--max-inputs", "64",
    )  # fmt: skip
    yield s
    code, log = s.stop(), s.log()
    s.close()
    assert code == 0, log
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def api_key() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def keyed_server(packed_gguf: Path, api_key: str) -> Iterator[Server]:
    s = Server("--host", "0.0.0.0", "--api-key", api_key, "--force-dimensions")
    yield s
    code, log = s.stop(), s.log()
    s.close()
    assert code == 0, log


@pytest.fixture(scope="module")
def local(gguf_embedder: Embedder) -> LocalEmbeddings:
    """In-process embeddings with the server's settings (shares the loaded GGUF)."""
    emb = LocalEmbeddings(query_prefix=QUERY_PREFIX, document_prefix=DOC_PREFIX)
    assert emb.embedder.backend_name == "gguf"
    return emb


@pytest.fixture(scope="module")
def local_reranker(cross_encoder_dir: Path) -> Reranker:
    return Reranker(str(cross_encoder_dir))


# ---- health, Ollama ---------------------------------------------------------------------------


def test_health_and_unknown_paths(server: Server) -> None:
    assert httpx.get(f"{server.url}/health", timeout=TIMEOUT).json() == {"status": "ok"}
    r = httpx.post(
        f"{server.url}/api/generate", json={"model": NAME, "prompt": "hi"}, timeout=TIMEOUT
    )
    assert r.status_code == 404 and "no such endpoint" in r.json()["error"]
    r = httpx.get(f"{server.url}/v1/embeddings", timeout=TIMEOUT)
    assert r.status_code == 405 and "GET is not allowed" in r.json()["error"]["message"]


def test_ollama_embed_equals_local_embeddings(
    server: Server, local: LocalEmbeddings, docs: list[str]
) -> None:
    import ollama

    texts = docs[:5]
    ours = np.array(local.embed_documents(texts))
    with ollama.Client(host=server.url) as client:
        _check_ollama(client, texts, ours, local)


def _check_ollama(client: Any, texts: list[str], ours: np.ndarray, local: LocalEmbeddings) -> None:
    resp = client.embed(model=NAME, input=texts)
    np.testing.assert_allclose(np.array(resp.embeddings), ours, rtol=1e-5, atol=1e-6)
    assert resp.model == NAME
    assert resp.prompt_eval_count == local.embedder.embed_documents(texts).tokens
    # a single string, Ollama's default tag, and the legacy endpoint (compared with the text
    # embedded alone: llama.cpp's numbers depend slightly on what shares the batch)
    alone = local.embed_documents(texts[:1])[0]
    one = client.embed(model=f"{NAME}:latest", input=texts[0])
    np.testing.assert_allclose(one.embeddings[0], alone, rtol=1e-5, atol=1e-6)
    legacy = client.embeddings(model=NAME, prompt=texts[0])
    np.testing.assert_allclose(legacy.embedding, alone, rtol=1e-5, atol=1e-6)
    # the model's own name works too; the listing names the served model
    assert len(client.embed(model="all-MiniLM-L6-v2", input="x").embeddings) == 1
    assert [m.model for m in client.list().models] == [f"{NAME}:latest"]


def test_ollama_model_not_found(server: Server) -> None:
    import ollama

    with ollama.Client(host=server.url) as client, pytest.raises(ollama.ResponseError) as err:
        client.embed(model="nomic-embed-text", input="hello")
    assert err.value.status_code == 404
    assert err.value.error == 'model "nomic-embed-text" not found, try pulling it first'


def test_ollama_show_ps_and_version(server: Server, local: LocalEmbeddings) -> None:
    import ollama

    with ollama.Client(host=server.url) as client:
        shown = client.show(NAME)
        with pytest.raises(ollama.ResponseError) as err:
            client.show("nomic-embed-text")
        running = client.ps().models
    info = shown.modelinfo
    assert info is not None
    arch = info["general.architecture"]
    assert arch == "bert"  # from the GGUF's own metadata
    assert info[f"{arch}.embedding_length"] == local.embedder.dimension == 384
    assert info[f"{arch}.context_length"] == local.embedder.context_length
    assert shown.capabilities == ["embedding"]
    assert shown.details is not None
    assert (shown.details.format, shown.details.quantization_level) == ("gguf", "Q8_0")
    # all-MiniLM-L6-v2 has 22.7M parameters (the pooler's 148k may be left out of a GGUF)
    assert 22.5e6 < info["general.parameter_count"] < 22.8e6
    assert shown.details.parameter_size in ("22.6M", "22.7M")
    assert err.value.status_code == 404
    assert err.value.error == "model 'nomic-embed-text' not found"
    # older clients send "name"; Ollama's default tag is implied
    legacy = httpx.post(
        f"{server.url}/api/show", json={"name": "all-MiniLM-L6-v2:latest"}, timeout=TIMEOUT
    )
    assert legacy.status_code == 200 and legacy.json()["model_info"] == info
    assert [m.model for m in running] == [f"{NAME}:latest"]
    assert running[0].size_vram == 0 and running[0].size == _listed_size(server)
    assert running[0].expires_at is not None and running[0].expires_at.year > 2200
    assert running[0].details == shown.details
    version = httpx.get(f"{server.url}/api/version", timeout=TIMEOUT)
    assert version.json() == {"version": __version__}


def _listed_size(server: Server) -> int:
    """The model's size as /api/tags lists it."""
    r = httpx.get(f"{server.url}/api/tags", timeout=TIMEOUT)
    return int(r.json()["models"][0]["size"])


def test_truncation_reported_or_refused(
    server: Server, local: LocalEmbeddings, long_text: str
) -> None:
    import ollama

    text = long_text[:4000]
    r = httpx.post(
        f"{server.url}/api/embed", json={"model": NAME, "input": ["short", text]}, timeout=TIMEOUT
    )
    assert r.status_code == 200
    (cut,) = r.json()["truncated"]
    limit = local.embedder.context_length
    assert cut["index"] == 1 and cut["limit"] == limit and cut["tokens"] > limit
    with pytest.warns(TruncationWarning):
        ours = local.embed_documents(["short", text])
    np.testing.assert_allclose(r.json()["embeddings"], ours, rtol=1e-5, atol=1e-6)
    with ollama.Client(host=server.url) as client, pytest.raises(ollama.ResponseError) as err:
        client.embed(model=NAME, input=["short", text], truncate=False)
    assert err.value.status_code == 400
    assert f"input 1 has {cut['tokens']} tokens" in err.value.error
    assert f"context is {limit}" in err.value.error


# ---- OpenAI -----------------------------------------------------------------------------------


def _openai(url: str, key: str = "not-needed") -> Any:
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_openai_embeddings_float_base64_and_input_type(
    server: Server, local: LocalEmbeddings, docs: list[str]
) -> None:
    texts = docs[5:9]
    ours = np.array(local.embed_documents(texts))
    with _openai(server.url) as client:
        _check_openai(client, texts, ours, local)


def _check_openai(client: Any, texts: list[str], ours: np.ndarray, local: LocalEmbeddings) -> None:
    floats = client.embeddings.create(model=NAME, input=texts, encoding_format="float")
    got = np.array([d.embedding for d in sorted(floats.data, key=lambda d: d.index)])
    np.testing.assert_allclose(got, ours, rtol=1e-5, atol=1e-6)
    assert floats.usage.prompt_tokens == local.embedder.embed_documents(texts).tokens
    # explicit base64 comes back as strings of little-endian float32
    b64 = client.embeddings.create(model=NAME, input=texts, encoding_format="base64")
    decoded = np.stack(
        [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in b64.data]
    )
    np.testing.assert_array_equal(decoded, got.astype(np.float32))
    # the client's own default asks for base64 and decodes it
    default = client.embeddings.create(model=NAME, input=texts)
    np.testing.assert_array_equal(np.array([d.embedding for d in default.data]), decoded)
    # input_type selects the query path (query prefix), which differs from the document one
    q = client.embeddings.create(
        model=NAME, input=texts[0], encoding_format="float", extra_body={"input_type": "query"}
    )
    np.testing.assert_allclose(
        q.data[0].embedding, local.embed_query(texts[0]), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(q.data[0].embedding, ours[0], atol=1e-3)


def test_openai_rejects_token_arrays_and_unknown_models(server: Server) -> None:
    with _openai(server.url) as client:
        _check_openai_errors(client)


def _check_openai_errors(client: Any) -> None:
    import openai

    for tokens in ([[101, 7592, 102]], [101, 7592, 102]):
        with pytest.raises(openai.BadRequestError) as err:
            client.embeddings.create(model=NAME, input=tokens)
        assert err.value.code == "token_arrays_not_supported"
        assert err.value.param == "input"
        assert "token array" in err.value.message
    with pytest.raises(openai.NotFoundError) as nf:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert nf.value.code == "model_not_found"
    ids = [m.id for m in client.models.list().data]
    assert ids == [NAME, RERANKER_NAME]


def test_dimensions_refused_where_the_profile_forbids(server: Server) -> None:
    import ollama
    import openai

    with _openai(server.url) as client, ollama.Client(host=server.url) as oclient:
        with pytest.raises(openai.BadRequestError) as err:
            client.embeddings.create(model=NAME, input="hi", dimensions=128)
        assert "Matryoshka" in err.value.message and "--force-dimensions" in err.value.message
        with pytest.raises(ollama.ResponseError) as oerr:
            oclient.embed(model=NAME, input="hi", dimensions=128)
        assert oerr.value.status_code == 400 and "Matryoshka" in oerr.value.error
        # the native size is always fine
        full = client.embeddings.create(model=NAME, input="hi", dimensions=384)
        assert len(full.data[0].embedding) == 384


def test_dimensions_slice_and_renormalize(
    keyed_server: Server, api_key: str, gguf_embedder: Embedder, docs: list[str]
) -> None:
    import ollama

    full = gguf_embedder.embed_documents(docs[:3]).vectors
    want = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    with _openai(keyed_server.url, api_key) as oa:
        got = oa.embeddings.create(model="all-MiniLM-L6-v2", input=docs[:3], dimensions=128)
    vecs = np.array([d.embedding for d in got.data])
    assert vecs.shape == (3, 128)
    np.testing.assert_allclose(vecs, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    auth = {"Authorization": f"Bearer {api_key}"}
    with ollama.Client(host=keyed_server.url, headers=auth) as client:
        resp = client.embed(model="all-MiniLM-L6-v2", input=docs[:3], dimensions=128)
    np.testing.assert_allclose(np.array(resp.embeddings), want, rtol=1e-5, atol=1e-6)


# ---- Cohere embed -----------------------------------------------------------------------------


def _cosines(got: Any, want: Any) -> np.ndarray:
    a, b = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert a.shape == b.shape
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # type: ignore[no-any-return]


def _cohere_v1(url: str, pool: ThreadPoolExecutor) -> Any:
    """cohere.Client splits embed calls into batches on a thread pool: ours, shut down after."""
    import cohere

    return cohere.Client(
        api_key="not-needed", base_url=url, max_retries=0, thread_pool_executor=pool
    )


def test_cohere_embed_v1_and_v2_equal_local_embeddings(
    server: Server, local: LocalEmbeddings, docs: list[str]
) -> None:
    import cohere
    from pydantic.warnings import PydanticDeprecationWarning

    texts = docs[9:13]
    documents = local.embed_documents(texts)
    queries = [local.embed_query(t) for t in texts[:2]]
    with (
        ThreadPoolExecutor(2) as pool,
        _cohere_v1(server.url, pool) as v1,
        cohere.ClientV2(api_key="not-needed", base_url=server.url, max_retries=0) as v2,
    ):
        d1 = v1.embed(texts=texts, input_type="search_document")
        with warnings.catch_warnings():
            # cohere's client merges its v1 by-type batches with pydantic calls deprecated in
            # pydantic 2 (the client's doing, not the answer's)
            warnings.simplefilter("ignore", PydanticDeprecationWarning)
            by_type = v1.embed(texts=texts, input_type="search_document", embedding_types=["float"])
        q2 = v2.embed(model=NAME, texts=texts[:2], input_type="search_query")
        c2 = v2.embed(
            model=NAME,
            texts=texts,
            input_type="clustering",
            embedding_types=["float", "ubinary", "binary", "base64"],
        )
    assert d1.response_type == "embeddings_floats" and d1.texts == texts
    assert _cosines(d1.embeddings, documents).min() >= 0.9995
    assert d1.meta.billed_units.input_tokens == local.embedder.embed_documents(texts).tokens
    assert d1.meta.api_version.version == "1"
    assert by_type.response_type == "embeddings_by_type"
    np.testing.assert_array_equal(by_type.embeddings.float_, d1.embeddings)
    # search_query takes the query prefix: the query path, not the document one
    assert q2.meta.api_version.version == "2"
    assert _cosines(q2.embeddings.float_, queries).min() >= 0.9995
    assert _cosines(q2.embeddings.float_, documents[:2]).max() < 0.999
    # clustering is the plain-text (document) path; the other types derive from the floats
    floats = np.array(c2.embeddings.float_, dtype=np.float32)
    assert _cosines(floats, documents).min() >= 0.9995
    ubinary = np.array(c2.embeddings.ubinary)
    np.testing.assert_array_equal(ubinary, np.packbits(floats > 0, axis=1))
    np.testing.assert_array_equal(np.array(c2.embeddings.binary), ubinary.astype(int) - 128)
    assert ubinary.shape == (len(texts), 384 // 8)
    decoded = [np.frombuffer(base64.b64decode(b), dtype="<f4") for b in c2.embeddings.base64]
    np.testing.assert_array_equal(np.stack(decoded), floats)


def test_cohere_embed_truncate_and_errors(
    server: Server, local: LocalEmbeddings, long_text: str
) -> None:
    import cohere
    from cohere.errors import BadRequestError, NotFoundError

    text = long_text[:4000]
    limit = local.embedder.context_length
    with (
        ThreadPoolExecutor(1) as pool,
        _cohere_v1(server.url, pool) as v1,
        cohere.ClientV2(api_key="not-needed", base_url=server.url, max_retries=0) as v2,
    ):
        with pytest.raises(BadRequestError) as none2:
            v2.embed(
                model=NAME, texts=["short", text], input_type="search_document", truncate="NONE"
            )
        with pytest.raises(BadRequestError) as none1:
            v1.embed(texts=["short", text], input_type="search_document", truncate="NONE")
        cut = v2.embed(
            model=NAME, texts=["short", text], input_type="search_document", truncate="END"
        )
        with pytest.raises(BadRequestError) as int8:
            v2.embed(
                model=NAME, texts=["a"], input_type="search_document", embedding_types=["int8"]
            )
        with pytest.raises(BadRequestError) as start:
            v2.embed(model=NAME, texts=["a"], input_type="search_document", truncate="START")
        with pytest.raises(NotFoundError) as nf:
            v2.embed(model="embed-english-v3.0", texts=["a"], input_type="search_document")
    for err in (none1, none2):
        assert err.value.status_code == 400
        message = err.value.body["message"]
        assert "texts[1] has" in message and f"context is {limit}" in message, message
        assert "truncate='END'" in message
    # END cuts the end, as the core does, and says so
    with pytest.warns(TruncationWarning):
        ours = local.embed_documents(["short", text])
    assert _cosines(cut.embeddings.float_, ours).min() >= 0.9995
    assert cut.meta.warnings and "1 texts were cut" in cut.meta.warnings[0]
    assert int8.value.status_code == 400
    assert "'int8'" in int8.value.body["message"] and "float" in int8.value.body["message"]
    assert "START is not supported" in start.value.body["message"]
    assert "embed-english-v3.0" in nf.value.body["message"]


# ---- Cohere rerank ----------------------------------------------------------------------------


def test_cohere_rerank_v1_and_v2_equal_local_reranker(
    server: Server, local_reranker: Reranker, docs: list[str]
) -> None:
    import cohere

    query = "how does a for loop iterate over a sequence"
    candidates = docs[:10]
    with (
        cohere.Client(api_key="not-needed", base_url=server.url, max_retries=0) as v1,
        cohere.ClientV2(api_key="not-needed", base_url=server.url, max_retries=0) as v2,
    ):
        _check_cohere(v1, v2, local_reranker, query, candidates)


def _check_cohere(
    v1: Any, v2: Any, local_reranker: Reranker, query: str, candidates: list[str]
) -> None:
    want = local_reranker.rank(query, candidates, top_n=4)
    r1 = v1.rerank(query=query, documents=candidates, top_n=4, return_documents=True)
    assert [r.index for r in r1.results] == [w.index for w in want]
    np.testing.assert_allclose(
        [r.relevance_score for r in r1.results], [w.score for w in want], rtol=1e-5, atol=1e-6
    )
    assert [r.document.text for r in r1.results] == [candidates[w.index] for w in want]
    r2 = v2.rerank(model=RERANKER_NAME, query=query, documents=candidates)
    assert [r.index for r in r2.results] == [
        w.index for w in local_reranker.rank(query, candidates)
    ]
    assert r2.meta.api_version.version == "2"
    # v1 documents may be objects with a text field
    objs = [{"text": d, "id": str(i)} for i, d in enumerate(candidates)]
    r3 = v1.rerank(query=query, documents=objs, top_n=2, return_documents=True)
    assert [r.index for r in r3.results] == [w.index for w in want[:2]]


def test_cohere_errors(server: Server, keyed_server: Server, api_key: str) -> None:
    import cohere
    from cohere.errors import NotFoundError

    with cohere.ClientV2(api_key="not-needed", base_url=server.url, max_retries=0) as v2:
        _check_cohere_errors(v2)
    # a server without --reranker says so, in Cohere's shape
    with (
        cohere.ClientV2(api_key=api_key, base_url=keyed_server.url, max_retries=0) as keyed,
        pytest.raises(NotFoundError) as none,
    ):
        keyed.rerank(model="any", query="q", documents=["a"])
    assert "--reranker" in none.value.body["message"]


def test_cohere_rerank_max_tokens_per_doc(
    server: Server, local_reranker: Reranker, cross_encoder_dir: Path, docs: list[str]
) -> None:
    import cohere
    from cohere.errors import BadRequestError
    from transformers import AutoTokenizer

    query = "how does a for loop iterate over a sequence"
    long_doc, short_doc = max(docs, key=len), "A for loop walks over a list."
    n = 16
    tokenizer = AutoTokenizer.from_pretrained(str(cross_encoder_dir))
    ids = tokenizer(long_doc, add_special_tokens=False)["input_ids"]
    head = tokenizer.decode(ids[:n])
    assert len(ids) > 4 * n and tokenizer(head, add_special_tokens=False)["input_ids"] == ids[:n]
    assert len(tokenizer(short_doc, add_special_tokens=False)["input_ids"]) < n
    want = local_reranker.score(query, [head, short_doc]).scores
    whole = local_reranker.score(query, [long_doc, short_doc]).scores
    with cohere.ClientV2(api_key="not-needed", base_url=server.url, max_retries=0) as v2:
        r = v2.rerank(
            model=RERANKER_NAME, query=query, documents=[long_doc, short_doc], max_tokens_per_doc=n
        )
        with pytest.raises(BadRequestError) as bad:
            v2.rerank(model=RERANKER_NAME, query=query, documents=[long_doc], max_tokens_per_doc=0)
    got = {x.index: x.relevance_score for x in r.results}
    # the long document scored as its first n tokens, the short one whole
    np.testing.assert_allclose([got[0], got[1]], want, rtol=1e-5, atol=1e-6)
    assert abs(got[0] - whole[0]) > 1e-4, "the cut made no difference: the test proves nothing"
    assert not r.meta.warnings
    assert bad.value.status_code == 400 and "max_tokens_per_doc" in bad.value.body["message"]


def _check_cohere_errors(v2: Any) -> None:
    from cohere.errors import BadRequestError, NotFoundError

    with pytest.raises(NotFoundError) as nf:
        v2.rerank(model="rerank-v3.5", query="q", documents=["a"])
    assert "rerank-v3.5" in nf.value.body["message"]
    with pytest.raises(BadRequestError) as bad:
        v2.rerank(model=RERANKER_NAME, query="q", documents=["a"], top_n=0)
    assert "top_n" in bad.value.body["message"]


# ---- search -----------------------------------------------------------------------------------


def test_search_equals_index_search(
    server: Server, index_file: Path, gguf_embedder: Embedder, local_reranker: Reranker
) -> None:
    query = "what happens when an exception is raised"
    with Index.open(index_file) as index:
        vector = gguf_embedder.embed_query(query)
        want = index.search(vector, 3)
        want_filtered = index.search(vector, 3, filter={"file": 2})
        want_hybrid = index.hybrid_search(vector, query, 3)
        candidates = index.hybrid_search(vector, query, 20)
    body = {"query": query, "k": 3, "hybrid": False}
    r = httpx.post(f"{server.url}/v1/search", json=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["hybrid"] is False
    hits = r.json()["results"]
    assert [h["id"] for h in hits] == [w.id for w in want]
    np.testing.assert_allclose([h["score"] for h in hits], [w.score for w in want], atol=1e-5)
    assert hits[0]["path"].startswith("/srv/docs/file")
    assert hits[0]["lines"] == [want[0].line_start, want[0].line_end]
    assert hits[0]["text"] == want[0].text
    flt = httpx.post(
        f"{server.url}/v1/search",
        json={"query": query, "k": 3, "filter": {"file": 2}, "hybrid": False},
        timeout=TIMEOUT,
    ).json()["results"]
    assert [h["id"] for h in flt] == [w.id for w in want_filtered]
    assert all(h["metadata"]["file"] == 2 for h in flt)
    for body in ({"query": query, "k": 3, "hybrid": True}, {"query": query, "k": 3}):
        hyb = httpx.post(f"{server.url}/v1/search", json=body, timeout=TIMEOUT).json()
        assert hyb["hybrid"] is True  # the default: vector and full text fused
        assert [h["id"] for h in hyb["results"]] == [w.id for w in want_hybrid]
    # rerank: the reranker orders the first fetch_k candidates of the (hybrid) retrieval
    rr = httpx.post(
        f"{server.url}/v1/search",
        json={"query": query, "k": 3, "rerank": True, "fetch_k": 20},
        timeout=TIMEOUT,
    ).json()
    order = local_reranker.rank(query, [c.text for c in candidates], top_n=3)
    assert [h["id"] for h in rr["results"]] == [candidates[o.index].id for o in order]
    np.testing.assert_allclose(
        [h["score"] for h in rr["results"]], [o.score for o in order], atol=1e-5
    )
    assert rr["reranked"] is True and "retrieval_score" in rr["results"][0]
    # each candidate's first max_tokens_per_doc tokens, as the library cuts them
    body = {"query": query, "k": 3, "rerank": True, "fetch_k": 20, "max_tokens_per_doc": 6}
    cut = httpx.post(f"{server.url}/v1/search", json=body, timeout=TIMEOUT).json()
    order = local_reranker.rank(query, [c.text for c in candidates], top_n=3, max_document_tokens=6)
    assert [h["id"] for h in cut["results"]] == [candidates[o.index].id for o in order]
    np.testing.assert_allclose(
        [h["score"] for h in cut["results"]], [o.score for o in order], atol=1e-5
    )
    body["max_tokens_per_doc"] = -1
    refused = httpx.post(f"{server.url}/v1/search", json=body, timeout=TIMEOUT)
    assert refused.status_code == 400 and "max_tokens_per_doc" in refused.text
    bad = httpx.post(
        f"{server.url}/v1/search", json={"query": query, "filter": {"$nope": 1}}, timeout=TIMEOUT
    )
    assert bad.status_code == 400 and bad.json()["error"]["message"]


@pytest.mark.parametrize(
    "flt",
    [{"file": 10**30}, {"$or": [{"file": i} for i in range(2000)]}],
    ids=["huge-int", "2000-or"],
)
def test_search_filters_past_sqlites_limits_are_400(server: Server, flt: dict[str, Any]) -> None:
    """Not a 500 from OverflowError or SQLite's "Expression tree is too large"."""
    r = httpx.post(
        f"{server.url}/v1/search", json={"query": "exceptions", "filter": flt}, timeout=TIMEOUT
    )
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "64 bits" in message or "conditions" in message, message


# ---- batching ---------------------------------------------------------------------------------


def test_concurrent_clients_are_batched(
    server: Server, local: LocalEmbeddings, docs: list[str]
) -> None:
    import ollama

    before = server.status()
    per_client, n_clients = 6, 8
    texts = [
        docs[(c * per_client + i) % len(docs)] for c in range(n_clients) for i in range(per_client)
    ]
    want = np.array(local.embed_documents(texts))
    got: dict[int, list[float]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_clients)

    def client_loop(c: int) -> None:
        try:
            with ollama.Client(host=server.url) as client:
                barrier.wait()
                for i in range(per_client):
                    k = c * per_client + i
                    got[k] = client.embed(model=NAME, input=texts[k]).embeddings[0]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # Texts shared model calls with other clients' texts, and llama.cpp's batched decode rounds
    # a little differently with different batch mates (measured here: cosine >= 0.99985 to the
    # same text in another batch), so compare directions, not digits.
    vectors = np.array([got[k] for k in range(len(texts))])
    cosine = (vectors * want).sum(axis=1) / np.linalg.norm(vectors, axis=1)
    assert cosine.min() > 0.9995, cosine.min()
    after = server.status()
    requests = after["embed_requests"] - before["embed_requests"]
    calls = after["embed_model_calls"] - before["embed_model_calls"]
    assert requests == n_clients * per_client
    assert calls < requests, (calls, requests)
    # two model workers, each in its own llama.cpp context, served these side by side
    assert after["workers"] == min(2, len(os.sched_getaffinity(0)))


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/api/embed", b"{not json", 400, "not valid JSON"),
        ("/api/embed", b"", 400, "empty"),
        ("/api/embed", b"[1, 2]", 400, "JSON object"),
        ("/api/embed", b'{"model": "\xff"}', 400, "not valid JSON"),
        ("/api/embed", b"[" * 100_000, 400, "nested too deeply"),
        ("/api/embed", json.dumps({"model": NAME, "input": 5}).encode(), 400, "'input'"),
        ("/api/embed", json.dumps({"model": NAME, "input": ["a", 1]}).encode(), 400, "input[1]"),
        ("/api/embed", json.dumps({"model": NAME, "input": "a\u0000b"}).encode(), 400, "NUL"),
        (
            "/api/embed",
            json.dumps({"model": NAME, "input": "a", "truncate": "no"}).encode(),
            400,
            "truncate",
        ),
        (
            "/api/embed",
            json.dumps({"model": NAME, "input": ["a"] * 65}).encode(),
            413,
            "at most 64",
        ),
        ("/api/embed", json.dumps({"input": "a"}).encode(), 400, "'model' is required"),
        (
            "/v1/embeddings",
            json.dumps({"model": NAME, "input": "a", "dimensions": "8"}).encode(),
            400,
            "dimensions",
        ),
        (
            "/v1/embeddings",
            json.dumps({"model": NAME, "input": "a", "dimensions": True}).encode(),
            400,
            "dimensions",
        ),
        (
            "/v1/embeddings",
            json.dumps({"model": NAME, "input": "a", "encoding_format": "int8"}).encode(),
            400,
            "encoding_format",
        ),
        ("/v1/embeddings", json.dumps({"model": NAME, "input": []}).encode(), 400, "empty"),
        (
            "/v1/embeddings",
            json.dumps({"model": NAME, "input": "a", "input_type": "x"}).encode(),
            400,
            "input_type",
        ),
        ("/v1/embeddings", b'{"model": 1}', 400, "'model' must be a string"),
        ("/v1/rerank", json.dumps({"query": "q", "documents": "a"}).encode(), 400, "documents"),
        (
            "/v1/rerank",
            json.dumps({"query": "q", "documents": [{"title": "a"}]}).encode(),
            400,
            "text",
        ),
        (
            "/v2/rerank",
            json.dumps({"model": RERANKER_NAME, "query": None, "documents": []}).encode(),
            400,
            "query",
        ),
        (
            "/v2/rerank",
            json.dumps(
                {"model": RERANKER_NAME, "query": "q", "documents": ["a"], "max_tokens_per_doc": -1}
            ).encode(),
            400,
            "max_tokens_per_doc",
        ),
        ("/v2/embed", json.dumps({"model": NAME, "texts": "a"}).encode(), 400, "list of strings"),
        ("/v2/embed", json.dumps({"texts": ["a"]}).encode(), 400, "'model' is required"),
        ("/v1/embed", json.dumps({"texts": []}).encode(), 400, "must not be empty"),
        ("/v1/embed", json.dumps({"texts": ["a", 2]}).encode(), 400, "texts[1]"),
        (
            "/v1/embed",
            json.dumps({"texts": ["a"], "input_type": "image"}).encode(),
            400,
            "input_type",
        ),
        (
            "/v2/embed",
            json.dumps(
                {"model": NAME, "texts": ["a"], "images": ["data:image/png;base64,"]}
            ).encode(),
            400,
            "'images' is not supported",
        ),
        (
            "/v2/embed",
            json.dumps({"model": NAME, "texts": ["a"], "embedding_types": ["uint8"]}).encode(),
            400,
            "'uint8'",
        ),
        (
            "/v2/embed",
            json.dumps({"model": NAME, "texts": ["a"], "embedding_types": "float"}).encode(),
            400,
            "embedding_types",
        ),
        (
            "/v2/embed",
            json.dumps({"model": NAME, "texts": ["a"], "truncate": "MIDDLE"}).encode(),
            400,
            "NONE, START or END",
        ),
        (
            "/v2/embed",
            json.dumps({"model": NAME, "texts": ["a"], "max_tokens": 8}).encode(),
            400,
            "max_tokens",
        ),
        ("/api/show", json.dumps({}).encode(), 400, "'model' is required"),
        ("/api/show", json.dumps({"model": 3}).encode(), 400, "'model' must be a string"),
        ("/v1/search", json.dumps({"query": "q", "k": 0}).encode(), 400, "'k'"),
        ("/v1/search", json.dumps({"query": "q", "filter": [1]}).encode(), 400, "filter"),
        ("/api/embed", b'{"model": "' + b"x" * (1024 * 1024 + 10) + b'"}', 413, "larger than"),
        # a lone surrogate ("\ud800" in JSON) is no text: UTF-8 cannot hold it
        ("/v1/embed", json.dumps({"texts": ["a\ud800b"]}).encode(), 400, "lone surrogate"),
        (
            "/v2/embed",
            json.dumps({"model": NAME, "texts": ["\udfff"]}).encode(),
            400,
            "lone surrogate",
        ),
        ("/api/embed", json.dumps({"model": NAME, "input": "\ud800"}).encode(), 400, "surrogate"),
        ("/api/embeddings", json.dumps({"model": NAME, "prompt": "\ud800"}).encode(), 400, "surr"),
        ("/v1/embeddings", json.dumps({"model": NAME, "input": ["\ud800"]}).encode(), 400, "surr"),
        ("/v1/rerank", json.dumps({"query": "q", "documents": ["\ud800"]}).encode(), 400, "surr"),
        ("/v1/search", json.dumps({"query": "\ud800"}).encode(), 400, "lone surrogate"),
        # filters SQLite cannot run: a number past 64 bits, an $or of 2,000 terms
        ("/v1/search", json.dumps({"query": "q", "filter": {"file": 10**30}}).encode(), 400, "64"),
        (
            "/v1/search",
            json.dumps({"query": "q", "filter": {"file": {"$in": [1, -(10**30)]}}}).encode(),
            400,
            "64 bits",
        ),
        (
            "/v1/search",
            json.dumps(
                {"query": "q", "filter": {"$or": [{"file": i} for i in range(2000)]}}
            ).encode(),
            400,
            "conditions",
        ),
    ],
)
def test_bad_requests_get_clear_errors_in_the_api_shape(
    server: Server, path: str, body: bytes, status: int, needle: str
) -> None:
    r = httpx.post(
        f"{server.url}{path}",
        content=body,
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )
    assert r.status_code == status, r.text
    data = r.json()
    if path.startswith("/api/"):
        message = data["error"]
        assert isinstance(message, str)
    elif path.endswith(("/rerank", "/embed")):
        message = data["message"]
    else:
        assert set(data["error"]) == {"message", "type", "param", "code"}
        message = data["error"]["message"]
    assert needle in message, message


def test_server_survives_bad_input(server: Server) -> None:
    """After every malformed request above, no 500 was answered and the server still embeds."""
    status = server.status()
    assert "500" not in status["errors_by_status"], status
    r = httpx.post(
        f"{server.url}/api/embed", json={"model": NAME, "input": "still here"}, timeout=TIMEOUT
    )
    assert r.status_code == 200


# ---- safety -----------------------------------------------------------------------------------


def test_non_loopback_bind_without_key_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LOKAL_API_KEY"}
    started = time.monotonic()
    proc = subprocess.run(
        [LOKAL, "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "not a loopback address" in proc.stderr and "API key" in proc.stderr
    assert "listening" not in proc.stdout
    assert time.monotonic() - started < 60  # refused before any model was loaded


def test_api_key_required_as_bearer_token(keyed_server: Server, api_key: str) -> None:
    import cohere
    import ollama
    import openai
    from cohere.errors import UnauthorizedError

    url = keyed_server.url
    assert httpx.get(f"{url}/health", timeout=TIMEOUT).status_code == 200  # health stays open
    with ollama.Client(host=url) as oc, pytest.raises(ollama.ResponseError) as oerr:
        oc.embed(model="all-MiniLM-L6-v2", input="hi")
    assert oerr.value.status_code == 401 and "API key" in oerr.value.error
    with _openai(url, "wrong-key") as oa, pytest.raises(openai.AuthenticationError) as aerr:
        oa.embeddings.create(model="all-MiniLM-L6-v2", input="hi")
    assert aerr.value.code == "invalid_api_key"
    with (
        cohere.ClientV2(api_key="wrong", base_url=url, max_retries=0) as co,
        pytest.raises(UnauthorizedError) as cerr,
    ):
        co.rerank(model="m", query="q", documents=["a"])
    assert "API key" in cerr.value.body["message"]
    for path in ("/v1/search", "/v1/status", "/api/tags", "/v1/models"):
        r = httpx.request(
            "POST" if path == "/v1/search" else "GET", f"{url}{path}", json={}, timeout=TIMEOUT
        )
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
    with _openai(url, api_key) as oa:
        ok = oa.embeddings.create(model="all-MiniLM-L6-v2", input="hi")
    assert len(ok.data[0].embedding) == 384
    assert keyed_server.status(authorization=f"Bearer {api_key}")["embed_requests"] >= 1
