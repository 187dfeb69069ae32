"""LocalEmbeddings against LangChain's own standard test suites, on every backend."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests
from pydantic import ValidationError

from lokal.integrations.langchain import LocalEmbeddings

from .conftest import onnx_pack


@pytest.fixture(autouse=True)
def _models_loaded(st_embedder: object, gguf_embedder: object) -> None:
    """Keep both loaded models alive so every LocalEmbeddings shares them."""


class TestSentenceTransformersUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"backend": "sentence-transformers"}


class TestSentenceTransformersIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"backend": "sentence-transformers"}


class TestGGUFUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"backend": "gguf"}


class TestGGUFIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"backend": "gguf"}


class TestOnnxUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": str(onnx_pack("int8")), "backend": "onnx"}


class TestOnnxIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": str(onnx_pack("int8")), "backend": "onnx"}


def test_no_arguments_works_offline(packed_gguf: Path) -> None:
    emb = LocalEmbeddings()
    v = emb.embed_query("Where is the pump manual?")
    assert len(v) == 384 and math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4)
    assert "backend='gguf'" in repr(emb)


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        LocalEmbeddings(modle="typo")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        LocalEmbeddings(batch_size=0)


def test_prefix_options_reach_the_model() -> None:
    emb = LocalEmbeddings(
        backend="sentence-transformers", query_prefix="query: ", document_prefix="passage: "
    )
    plain = LocalEmbeddings(backend="sentence-transformers")
    assert emb.embed_query("abc") == pytest.approx(
        plain.embed_documents(["query: abc"])[0], abs=1e-5
    )
    assert emb.embedder.profile.overridden == ("document_prefix", "query_prefix")


def test_retriever_finds_the_right_source(sentences: list[str]) -> None:
    docs = [
        Document(page_content=s, metadata={"source": f"topic-{i}"}) for i, s in enumerate(sentences)
    ]
    store = InMemoryVectorStore.from_documents(docs, LocalEmbeddings())
    retriever = store.as_retriever(search_kwargs={"k": 3})
    # a paraphrase of one paragraph should bring that paragraph back in the top 3
    target = next(
        d
        for d in docs
        if "assert statement" in d.page_content.lower() or "assertion" in d.page_content.lower()
    )
    found = retriever.invoke("How do I add debugging assertions to my program?")
    assert target.metadata["source"] in [d.metadata["source"] for d in found]
