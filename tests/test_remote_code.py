"""``trust_remote_code``: a model whose config names Python code of its own (``auto_map``, as
Nomic's does) is refused with lokal's message unless the caller opts in, and loads when it
does. The models here are the bundled MiniLM weights under a config that names a subclass of
transformers' BERT classes, shipped beside them as Nomic ships its code."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from lokal import Embedder, Reranker, models
from lokal.errors import ModelLoadError

ST = "sentence-transformers"

CODE = """from transformers import BertConfig, BertForSequenceClassification, BertModel


class CustomBertConfig(BertConfig):
    model_type = "custom_bert"


class CustomBertModel(BertModel):
    config_class = CustomBertConfig


class CustomBertForSequenceClassification(BertForSequenceClassification):
    config_class = CustomBertConfig
"""


def minilm_variant(out: Path, *, cross_encoder: bool, custom_code: bool = True) -> Path:
    """The bundled MiniLM weights (linked, not copied) under another config: an embedding
    model or a cross-encoder (a fresh head), with or without code of its own."""
    source = models.bundled_default_dir()
    assert source is not None, "needs the bundled MiniLM weights (lokal[st])"
    out.mkdir()
    for item in source.iterdir():
        if item.name == "model.safetensors":
            os.symlink(item, out / item.name)
        elif item.is_dir():
            shutil.copytree(item, out / item.name)
        else:
            shutil.copy(item, out / item.name)
    config = json.loads((out / "config.json").read_text())
    if cross_encoder:
        config["architectures"] = ["BertForSequenceClassification"]
        config["num_labels"] = 1
        for name in (
            "modules.json",
            "sentence_bert_config.json",
            "config_sentence_transformers.json",
        ):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "1_Pooling", ignore_errors=True)
    if custom_code:
        (out / "custom_bert.py").write_text(CODE)
        config["model_type"] = "custom_bert"
        config["architectures"] = ["Custom" + config["architectures"][0]]
        auto = "AutoModelForSequenceClassification" if cross_encoder else "AutoModel"
        config["auto_map"] = {
            "AutoConfig": "custom_bert.CustomBertConfig",
            auto: "custom_bert." + config["architectures"][0],
        }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def test_embedder_refuses_custom_code_unless_trusted(tmp_path: Path, st_embedder: Embedder) -> None:
    model_dir = minilm_variant(tmp_path / "custom-minilm", cross_encoder=False)
    refused = Embedder(str(model_dir), backend=ST)
    with pytest.raises(ModelLoadError, match=r"needs trust_remote_code=True") as caught:
        refused.embed_query("hello")
    assert isinstance(caught.value.__cause__, ValueError)  # transformers' own refusal, chained

    trusted = Embedder(str(model_dir), backend=ST, trust_remote_code=True)
    text = "Hold the red button for five seconds."
    vector = trusted.embed_query(text)
    assert np.allclose(vector, st_embedder.embed_query(text), atol=1e-5)


def test_adapters_pass_trust_remote_code(tmp_path: Path) -> None:
    from lokal.integrations.langchain import LocalEmbeddings
    from lokal.integrations.llama_index import LocalEmbedding

    model_dir = str(minilm_variant(tmp_path / "custom-minilm", cross_encoder=False))
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        LocalEmbeddings(model=model_dir, backend=ST).embed_query("x")
    assert len(LocalEmbeddings(model=model_dir, trust_remote_code=True).embed_query("x")) == 384
    via_kwargs = LocalEmbedding(model_name=model_dir, model_kwargs={"trust_remote_code": True})
    assert via_kwargs.embedder.trust_remote_code
    assert len(via_kwargs.get_query_embedding("x")) == 384
    assert LocalEmbeddings.from_embedder(via_kwargs.embedder).trust_remote_code


def test_reranker_refuses_custom_code_unless_trusted(tmp_path: Path) -> None:
    from lokal.integrations.langchain import LocalReranker

    model_dir = str(minilm_variant(tmp_path / "custom-cross-encoder", cross_encoder=True))
    with pytest.raises(ModelLoadError, match=r"needs trust_remote_code=True"):
        Reranker(model_dir, backend=ST).rank("q", ["d"])
    from langchain_core.documents import Document

    reranker = LocalReranker(
        model_name=model_dir, model_kwargs={"trust_remote_code": True}, top_n=1
    )
    assert reranker.reranker.trust_remote_code
    docs = [Document(page_content="Hold the red button."), Document(page_content="Pumps are blue.")]
    kept = reranker.compress_documents(docs, "how do I reset the pump?")
    assert len(kept) == 1 and "relevance_score" in kept[0].metadata
