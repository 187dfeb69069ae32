"""Every model argument the adapters are given is honoured or refused, never ignored.

- ``model_name`` (what HuggingFaceEmbeddings / HuggingFaceEmbedding / HuggingFaceCrossEncoder
  users write) is an alias of ``model``; both given and different is an error.
- ``model_kwargs`` / ``encode_kwargs`` map onto lokal's options where they mean the same,
  and anything else is refused by name.
- Every field the frameworks' base classes declare is in a table of how it is honoured (each
  with a check that fails if it is not) or refused: a framework version that adds a field
  fails :func:`test_every_base_embedding_field_is_honoured`.
- Ollama's names resolve to the catalog entries they denote.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from lokal import Embedder, catalog, models
from lokal.errors import ModelNotFound
from lokal.integrations.langchain import LocalEmbeddings
from lokal.integrations.llama_index import LocalEmbedding

ST = "sentence-transformers"
ADAPTERS = [LocalEmbeddings, LocalEmbedding]
Adapter = type[LocalEmbeddings] | type[LocalEmbedding]


@pytest.fixture(autouse=True)
def _model_loaded(st_embedder: Embedder) -> None:
    """Keep the loaded model alive so every adapter here shares it."""


def _batch(emb: Any) -> int:
    return int(emb.embedder.batch_size)


# ---- model_name -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ADAPTERS)
def test_model_name_is_an_alias_of_model(cls: Adapter) -> None:
    bundled = models.bundled_default_dir()
    assert bundled is not None
    emb = cls(model_name=str(bundled), backend=ST)
    assert emb.model == str(bundled) and emb.embedder.resolved.path == bundled
    # the line a HuggingFaceEmbedding user writes: that model, or an error naming it; never
    # the default loaded in its place
    with pytest.raises(ModelNotFound, match=r"BAAI/bge-small-en-v1\.5"):
        cls(model_name="BAAI/bge-small-en-v1.5")


@pytest.mark.parametrize("cls", ADAPTERS)
def test_model_and_model_name_that_differ_are_refused(cls: Adapter) -> None:
    with pytest.raises(ValidationError, match="model_name is an alias of model"):
        cls(model="all-MiniLM-L6-v2", model_name="BAAI/bge-small-en-v1.5")
    same = cls(model="all-MiniLM-L6-v2", model_name="all-MiniLM-L6-v2", backend=ST)
    assert same.embedder.profile.name == "all-MiniLM-L6-v2"


def test_llama_index_model_name_reports_the_model_loaded_and_round_trips() -> None:
    emb = LocalEmbedding(backend=ST)
    assert emb.model_name == "all-MiniLM-L6-v2"
    again = LocalEmbedding.from_dict(emb.to_dict())
    assert again.embedder.identity == emb.embedder.identity


# ---- model_kwargs / encode_kwargs ---------------------------------------------------------------


@pytest.mark.parametrize("cls", ADAPTERS)
def test_model_and_encode_kwargs_map_onto_lokal_options(cls: Adapter) -> None:
    emb = cls(
        backend=ST,
        model_kwargs={"device": "cpu", "trust_remote_code": False},
        encode_kwargs={"normalize_embeddings": False, "batch_size": 5, "prompt": "passage: "},
        query_encode_kwargs={"prompt": "query: "},
    )
    core = emb.embedder
    assert (core.device, core.trust_remote_code, core.normalize, _batch(emb)) == (
        "cpu",
        False,
        False,
        5,
    )
    assert (core.profile.query_prefix, core.profile.document_prefix) == ("query: ", "passage: ")
    # encode_kwargs' prompt applies to queries too when query_encode_kwargs names none (as
    # HuggingFaceEmbeddings does)
    both = cls(backend=ST, encode_kwargs={"prompt": "x: "}).embedder.profile
    assert (both.query_prefix, both.document_prefix) == ("x: ", "x: ")


@pytest.mark.parametrize("cls", ADAPTERS)
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"model_kwargs": {"torch_dtype": "float16"}}, r"model_kwargs\['torch_dtype'\]"),
        ({"encode_kwargs": {"prompt_name": "query"}}, r"encode_kwargs\['prompt_name'\]"),
        ({"encode_kwargs": {"convert_to_tensor": True}}, r"encode_kwargs\['convert_to_tensor'\]"),
        ({"query_encode_kwargs": {"precision": "int8"}}, r"query_encode_kwargs\['precision'\]"),
        ({"model_kwargs": {"device": "cpu"}, "device": "cuda"}, r"model_kwargs\['device'\]"),
        ({"encode_kwargs": {"normalize_embeddings": False}, "normalize": True}, "normalize"),
        ({"cache_folder": "/tmp/x"}, "cache_folder"),
    ],
)
def test_kwargs_without_an_equivalent_are_refused_by_name(
    cls: Adapter, kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        cls(backend=ST, **kwargs)


# ---- every field of the frameworks' base classes ------------------------------------------------


def _llama_model_name() -> None:
    with pytest.raises(ModelNotFound, match="bge-small"):
        LocalEmbedding(model_name="BAAI/bge-small-en-v1.5")


def _llama_embed_batch_size() -> None:
    emb = LocalEmbedding(backend=ST, embed_batch_size=3)
    assert emb.embedder.batch_size == 3


def _llama_callback_manager() -> None:
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler

    handler = LlamaDebugHandler()
    emb = LocalEmbedding(backend=ST, callback_manager=CallbackManager([handler]))
    emb.get_text_embedding_batch(["a", "b"])
    assert handler.get_event_pairs(CBEventType.EMBEDDING)


def _llama_num_workers() -> None:
    inflight = {"now": 0, "most": 0}

    class Counting(LocalEmbedding):
        async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            inflight["now"] += 1
            inflight["most"] = max(inflight["most"], inflight["now"])
            try:
                return await super()._aget_text_embeddings(texts)
            finally:
                inflight["now"] -= 1

    emb = Counting(backend=ST, embed_batch_size=1, num_workers=2)
    out = asyncio.run(emb.aget_text_embedding_batch([f"text {i}" for i in range(6)]))
    assert len(out) == 6 and inflight["most"] == 2


def _llama_embeddings_cache() -> None:
    from llama_index.core.storage.kvstore import SimpleKVStore

    cache = SimpleKVStore()
    emb = LocalEmbedding(backend=ST, embeddings_cache=cache)
    first = emb.get_text_embedding_batch(["cached text"])
    assert cache.get("cached text", collection="embeddings") is not None
    assert emb.get_text_embedding_batch(["cached text"]) == first


def _llama_rate_limiter() -> None:
    from llama_index.core.rate_limiter import BaseRateLimiter

    class Counting(BaseRateLimiter):
        calls = 0

        def acquire(self, num_tokens: int = 0) -> None:
            Counting.calls += 1

        async def async_acquire(self, num_tokens: int = 0) -> None:
            Counting.calls += 1

    emb = LocalEmbedding(backend=ST, rate_limiter=Counting())
    emb.get_query_embedding("q")
    assert Counting.calls == 1


#: Each field of LlamaIndex's BaseEmbedding and the check that it is honoured.
BASE_EMBEDDING_FIELDS: dict[str, Callable[[], None]] = {
    "model_name": _llama_model_name,
    "embed_batch_size": _llama_embed_batch_size,
    "callback_manager": _llama_callback_manager,
    "num_workers": _llama_num_workers,
    "embeddings_cache": _llama_embeddings_cache,
    "rate_limiter": _llama_rate_limiter,
}


def test_every_base_embedding_field_is_honoured() -> None:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    assert set(BaseEmbedding.model_fields) == set(BASE_EMBEDDING_FIELDS), (
        "LlamaIndex's BaseEmbedding declares fields this table does not cover: honour or "
        "refuse each in LocalEmbedding, and add its check here"
    )


@pytest.mark.parametrize("field", sorted(BASE_EMBEDDING_FIELDS))
def test_base_embedding_field(field: str) -> None:
    BASE_EMBEDDING_FIELDS[field]()


def test_langchain_embeddings_declares_no_fields() -> None:
    """LangChain's Embeddings is an interface, not a model: every LocalEmbeddings field is
    lokal's own (EmbedderSettings, checked above and in test_langchain.py)."""
    from langchain_core.embeddings import Embeddings

    assert not hasattr(Embeddings, "model_fields")
    from lokal.integrations.shared import EmbedderSettings

    assert set(LocalEmbeddings.model_fields) == set(EmbedderSettings.model_fields) | {"batch_size"}


# ---- Ollama's names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "hub_id"),
    [
        ("all-minilm", "sentence-transformers/all-MiniLM-L6-v2"),
        ("all-minilm:l6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        ("all-minilm:22m", "sentence-transformers/all-MiniLM-L6-v2"),
        ("nomic-embed-text", "nomic-ai/nomic-embed-text-v1.5"),
        ("nomic-embed-text:latest", "nomic-ai/nomic-embed-text-v1.5"),
        ("nomic-embed-text:v1.5", "nomic-ai/nomic-embed-text-v1.5"),
        ("mxbai-embed-large", "mixedbread-ai/mxbai-embed-large-v1"),
        ("mxbai-embed-large:335m", "mixedbread-ai/mxbai-embed-large-v1"),
        ("bge-m3", "BAAI/bge-m3"),
        ("bge-m3:567m", "BAAI/bge-m3"),
        ("bge-large", "BAAI/bge-large-en-v1.5"),
        ("snowflake-arctic-embed:s", "Snowflake/snowflake-arctic-embed-s"),
        ("snowflake-arctic-embed:33m", "Snowflake/snowflake-arctic-embed-s"),
    ],
)
def test_ollama_names_denote_catalog_entries(name: str, hub_id: str) -> None:
    assert catalog.ollama_hub_id(name) == hub_id
    assert hub_id in {e.hub_id for e in catalog.CATALOG}
    # where the model is named, the name resolves as its hub id does: offline and not on
    # this machine, the error names the hub id
    if hub_id == "sentence-transformers/all-MiniLM-L6-v2":
        assert models.resolve(name, ST).path == models.bundled_default_dir()
        return
    with pytest.raises(ModelNotFound, match=hub_id):
        models.resolve(name, ST, local_only=True)


def test_ollama_names_outside_the_catalog_and_unknown_tags() -> None:
    arctic = "Snowflake/snowflake-arctic-embed-"
    assert catalog.ollama_hub_id("snowflake-arctic-embed") == arctic + "l"
    assert catalog.ollama_hub_id("snowflake-arctic-embed:xs") == arctic + "xs"
    assert catalog.ollama_hub_id("all-minilm:l12-v2") == "sentence-transformers/all-MiniLM-L12-v2"
    assert catalog.ollama_hub_id("BAAI/bge-m3") is None
    assert catalog.ollama_hub_id("my-model") is None
    with pytest.raises(ModelNotFound, match=r"no tag 'l7'.*l6-v2"):
        catalog.ollama_hub_id("all-minilm:l7")


@pytest.mark.parametrize("cls", ADAPTERS)
def test_all_minilm_loads_the_bundled_model_offline(cls: Adapter, st_embedder: Embedder) -> None:
    emb = cls(model="all-minilm:l6-v2", backend=ST)
    assert emb.embedder.resolved.path == models.bundled_default_dir()
    assert "Ollama's name 'all-minilm:l6-v2'" in emb.embedder.resolved.reason
    assert emb.embedder.identity == st_embedder.identity
    vector = emb.embedder.embed_query("Where is the pump manual?")
    assert np.allclose(vector, st_embedder.embed_query("Where is the pump manual?"), atol=1e-6)


def test_a_packed_gguf_named_like_an_ollama_model_wins(tmp_path: Path, packed_gguf: Path) -> None:
    """A user's own `lokal models pack ... --name all-minilm` is found under that name."""
    own = models.cached_gguf_path("all-minilm")
    own.write_bytes(packed_gguf.read_bytes())
    try:
        found = models.resolve("all-minilm")
        assert found.path == own and "model cache" in found.reason
    finally:
        own.unlink()


# ---- the rerankers' adapters -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled MiniLM encoder under a cross-encoder config (a fresh head): enough to load
    and score, no weights written."""
    from tests.test_remote_code import minilm_variant

    out = tmp_path_factory.mktemp("rerankers") / "minilm-cross-encoder"
    return minilm_variant(out, cross_encoder=True, custom_code=False)


def test_reranker_adapters_take_model_name_and_model_kwargs(cross_encoder_dir: Path) -> None:
    from lokal.integrations.langchain import LocalReranker
    from lokal.integrations.llama_index import LocalRerank

    for cls in (LocalReranker, LocalRerank):
        adapter = cls(model_name=str(cross_encoder_dir), model_kwargs={"device": "cpu"})
        assert adapter.model == str(cross_encoder_dir)
        assert adapter.reranker.resolved.path == cross_encoder_dir
        assert adapter.reranker.device == "cpu"
        with pytest.raises(ValidationError, match="model_name is an alias of model"):
            cls(model=str(cross_encoder_dir), model_name="BAAI/bge-reranker-base")
        with pytest.raises(ValidationError, match=r"model_kwargs\['max_length'\]"):
            cls(model=str(cross_encoder_dir), model_kwargs={"max_length": 128})


def test_langchain_document_compressor_declares_no_fields() -> None:
    """BaseDocumentCompressor declares no fields: every LocalReranker field is lokal's own. A
    LangChain version that adds one fails here until LocalReranker honours or refuses it."""
    from langchain_core.documents import BaseDocumentCompressor

    from lokal.integrations.langchain import LocalReranker
    from lokal.integrations.shared import RerankerSettings

    assert set(BaseDocumentCompressor.model_fields) == set()
    assert set(LocalReranker.model_fields) == set(RerankerSettings.model_fields) | {"top_n"}


def test_every_node_postprocessor_field_is_honoured(cross_encoder_dir: Path) -> None:
    """BaseNodePostprocessor's fields: callback_manager, which gets LocalRerank's RERANKING
    events. A LlamaIndex version that adds a field fails here until LocalRerank honours or
    refuses it."""
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import NodeWithScore, TextNode

    from lokal.integrations.llama_index import LocalRerank

    assert set(BaseNodePostprocessor.model_fields) == {"callback_manager"}
    handler = LlamaDebugHandler()
    rerank = LocalRerank(
        model=str(cross_encoder_dir), top_n=1, callback_manager=CallbackManager([handler])
    )
    nodes = [NodeWithScore(node=TextNode(text=t)) for t in ("Hold the red button.", "Blue.")]
    assert len(rerank.postprocess_nodes(nodes, query_str="how do I reset the pump?")) == 1
    assert handler.get_event_pairs(CBEventType.RERANKING)


def test_lokal_serve_answers_to_ollama_names(st_embedder: Embedder) -> None:
    """An Ollama client names the model as it knows it: `lokal serve` answers to that name."""
    from lokal.agent.server.models import Served

    served = Served.of(st_embedder, [], "embedding")
    for name in ("all-minilm", "all-minilm:latest", "all-minilm:l6-v2", "all-MiniLM-L6-v2"):
        assert served.matches(name), name
    for name in ("all-minilm:l12-v2", "nomic-embed-text", "all-minilm:l7", "bge-m3"):
        assert not served.matches(name), name
