"""Profile detection: built-in families, published sentence-transformers configs, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lokal import ProfileError, profiles
from lokal.profiles import BGE_EN_QUERY

CONFIGS = Path(__file__).parent / "data" / "st_configs"


@pytest.mark.parametrize(
    ("name", "family", "query", "document"),
    [
        ("BAAI/bge-small-en-v1.5", "bge", BGE_EN_QUERY, ""),
        ("BAAI/bge-m3", "bge-m3", "", ""),
        ("intfloat/e5-base-v2", "e5", "query: ", "passage: "),
        ("intfloat/multilingual-e5-large", "multilingual-e5", "query: ", "passage: "),
        ("nomic-ai/nomic-embed-text-v1.5", "nomic", "search_query: ", "search_document: "),
        ("thenlper/gte-small", "gte", "", ""),
        ("Snowflake/snowflake-arctic-embed-m-v1.5", "arctic", BGE_EN_QUERY, ""),
        ("mixedbread-ai/mxbai-embed-large-v1", "mxbai", BGE_EN_QUERY, ""),
        ("sentence-transformers/all-MiniLM-L6-v2", "minilm", "", ""),
        ("all-mpnet-base-v2", "mpnet", "", ""),
    ],
)
def test_builtin_families(name: str, family: str, query: str, document: str) -> None:
    p = profiles.from_name(name)
    assert p.known
    assert (p.family, p.query_prefix, p.document_prefix) == (family, query, document)
    assert p.source.startswith("built-in profile (https://huggingface.co/")


def test_unknown_model_says_so() -> None:
    p = profiles.from_name("acme/secret-encoder")
    assert not p.known
    assert (p.query_prefix, p.document_prefix) == ("", "")
    assert "unknown model" in p.source
    assert "UNKNOWN" in p.describe()


def test_matryoshka_listed_for_nomic_v15() -> None:
    assert profiles.from_name("nomic-embed-text-v1.5").matryoshka_dims == (768, 512, 256, 128, 64)
    assert profiles.from_name("all-MiniLM-L6-v2").matryoshka_dims == ()


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        (
            "BAAI__bge-small-en-v1.5",
            {"family": "bge", "query_prefix": BGE_EN_QUERY, "dimension": 384, "normalize": True},
        ),
        (
            "intfloat__e5-base-v2",
            {
                "family": "e5",
                "query_prefix": "query: ",
                "pooling": "mean",
                "document_prefix": "passage: ",
                "context_length": 512,
                "dimension": 768,
            },
        ),
        (
            "intfloat__multilingual-e5-small",
            {"family": "multilingual-e5", "dimension": 384, "query_prefix": "query: "},
        ),
        (
            "nomic-ai__nomic-embed-text-v1.5",
            {"family": "nomic", "context_length": 8192, "document_prefix": "search_document: "},
        ),
        ("sentence-transformers__all-MiniLM-L6-v2", {"family": "minilm", "context_length": 256}),
    ],
)
def test_published_configs(directory: str, expected: dict[str, object], tmp_path: Path) -> None:
    """Copies of the models' published configs (tests/data/st_configs/*/SOURCE.txt)."""
    p = profiles.from_sentence_transformers_dir(CONFIGS / directory)
    assert p.known
    for key, value in expected.items():
        assert getattr(p, key) == value, key


def test_prompts_in_config_win(tmp_path: Path) -> None:
    model = tmp_path / "models--acme--retriever" / "snapshots" / "0123abc"
    model.mkdir(parents=True)
    (model / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "prompts": {"query": "Represent the question: ", "document": "Doc: "},
                "default_prompt_name": None,
            }
        )
    )
    (model / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 384}))
    p = profiles.from_sentence_transformers_dir(model)
    assert p.name == "acme/retriever"
    assert (p.query_prefix, p.document_prefix, p.context_length) == (
        "Represent the question: ",
        "Doc: ",
        384,
    )
    assert p.known
    assert "prompts in config_sentence_transformers.json" in p.source


def test_hf_cache_layout_gives_the_hub_name(tmp_path: Path) -> None:
    model = tmp_path / "models--intfloat--e5-small-v2" / "snapshots" / "ffb93f3"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"hidden_size": 384}))
    p = profiles.from_sentence_transformers_dir(model)
    assert (p.name, p.family, p.query_prefix) == ("intfloat/e5-small-v2", "e5", "query: ")


def test_overrides() -> None:
    base = profiles.from_name("intfloat/e5-base-v2")
    p = base.with_overrides({"query_prefix": "", "context_length": 128, "document_prefix": None})
    assert (p.query_prefix, p.document_prefix, p.context_length) == ("", "passage: ", 128)
    assert p.overridden == ("context_length", "query_prefix")
    with pytest.raises(ProfileError, match="positive integer"):
        base.with_overrides({"context_length": -1})
    with pytest.raises(ProfileError, match="unknown profile field"):
        base.with_overrides({"qurey_prefix": "x"})


def test_broken_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ProfileError, match="cannot read"):
        profiles.from_sentence_transformers_dir(tmp_path)
