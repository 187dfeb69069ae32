"""LocalEmbedding inside LlamaIndex: Settings, VectorStoreIndex, a retriever."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from pydantic import ValidationError

from lokal.integrations.llama_index import LocalEmbedding

from .conftest import onnx_pack


@pytest.fixture(autouse=True)
def _models_loaded(st_embedder: object, gguf_embedder: object) -> None:
    """Keep both loaded models alive so every LocalEmbedding shares them."""


@pytest.mark.parametrize("backend", ["sentence-transformers", "gguf", "onnx"])
def test_vector_store_index_retrieves(backend: str, sentences: list[str]) -> None:
    model = str(onnx_pack("int8")) if backend == "onnx" else None
    embed = LocalEmbedding(model=model, backend=backend)
    docs = [Document(text=s, metadata={"source": f"topic-{i}"}) for i, s in enumerate(sentences)]
    index = VectorStoreIndex.from_documents(docs, embed_model=embed)
    nodes = index.as_retriever(similarity_top_k=3).retrieve(
        "How do I add debugging assertions to my program?"
    )
    assert any("assert" in n.get_content().lower() for n in nodes)


def test_settings_embed_model_and_batches(packed_gguf: Path, sentences: list[str]) -> None:
    embed = LocalEmbedding(batch_size=7)
    assert embed.embed_batch_size == 7
    assert embed.model_name == "all-MiniLM-L6-v2"
    assert LocalEmbedding.class_name() == "LokalLocalEmbedding"
    previous = Settings._embed_model
    try:
        Settings.embed_model = embed
        batch = Settings.embed_model.get_text_embedding_batch(sentences[:20])
    finally:
        Settings._embed_model = previous
    one = embed.get_text_embedding(sentences[0])
    assert len(batch) == 20 and len(batch[0]) == 384
    # batched (packed) vs alone on the q8_0 GGUF: equal up to kernel rounding
    assert float(np.dot(batch[0], one)) > 0.999


async def test_async_paths(packed_gguf: Path) -> None:
    embed = LocalEmbedding()
    q = await embed.aget_query_embedding("question")
    t = await embed.aget_text_embedding("text")
    assert len(q) == len(t) == 384


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        LocalEmbedding(modle="typo")  # type: ignore[call-arg]
