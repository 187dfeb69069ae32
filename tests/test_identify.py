"""Knowing a model whatever its folder is called (issue 21): evidence from its files, a GGUF that
carries its own profile, and the refusal of an unknown model's queries when its files ask for a
prefix lokal cannot map.

Real parts: the bundled all-MiniLM-L6-v2 copied under a meaningless name; a small random-weight
BertModel with BGE's real config files and model card (tests/data/model_cards); one real
``lokal models pack`` in a subprocess; the real ``lokal models info``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lokal import catalog, gguf, models, profiles
from lokal.embedder import Embedder
from lokal.errors import ProfileError, UnknownPrefix
from lokal.profiles import BGE_EN_QUERY, cards, checkpoints, evidence

LOKAL = str(Path(sys.executable).parent / "lokal")
BGE_FILES = Path(__file__).parent / "data" / "model_cards" / "BAAI__bge-small-en-v1.5"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
QUERY = "how do I reset the pump after a power cut?"


def lokal(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([LOKAL, *args], capture_output=True, text=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"lokal {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def info(model: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(lokal("models", "info", str(model), "--json").stdout)
    return data


def bundled() -> Path:
    path = models.bundled_default_dir()
    assert path is not None, "needs the bundled MiniLM weights (lokal[st])"
    return path


def sha256_cache() -> str:
    cache = models.lokal_home() / "sha256-cache.json"
    return cache.read_text() if cache.exists() else ""


# ---- the bundled model under a meaningless name ------------------------------------------------


@pytest.fixture(scope="module")
def mymodel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real copy of the bundled all-MiniLM-L6-v2 in a folder called ``mymodel``."""
    return Path(shutil.copytree(bundled(), tmp_path_factory.mktemp("copies") / "mymodel"))


def test_copy_is_recognized_by_its_card_without_hashing(mymodel: Path) -> None:
    data = info(mymodel)
    profile, ident = data["profile"], data["identification"]
    assert isinstance(profile, dict) and isinstance(ident, dict)
    assert (profile["family"], profile["known"], profile["name"]) == ("minilm", True, "mymodel")
    assert ident["decided_by"]["kind"] == "card"
    assert ident["decided_by"]["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert ident["conflicts"] == []
    human = lokal("models", "info", str(mymodel)).stdout
    assert "identified as     sentence-transformers/all-MiniLM-L6-v2, by card" in human


def test_copy_without_card_is_recognized_by_its_weights_hash(
    mymodel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nocard = Path(shutil.copytree(mymodel, tmp_path / "embedder"))
    (nocard / "README.md").unlink()
    key = str((nocard / "model.safetensors").resolve())
    assert key not in sha256_cache()

    p = profiles.from_sentence_transformers_dir(nocard)
    assert (p.family, p.known, p.context_length) == ("minilm", True, 256)
    assert p.identification is not None and p.identification.decided_by is not None
    decided = p.identification.decided_by
    assert (decided.kind, decided.model_id) == ("weights", "sentence-transformers/all-MiniLM-L6-v2")
    assert "identified by the weights' sha256" in p.source
    assert key in sha256_cache(), "the hash is remembered in lokal's cache"

    # remembered: a second identification reads no weights at all
    def no_hashing(*_a: object, **_k: object) -> None:
        raise AssertionError("hashed the weights again")

    monkeypatch.setattr(models.hashlib, "sha256", no_hashing)
    again = profiles.from_sentence_transformers_dir(nocard)
    assert again.identification is not None and again.identification.decided_by == decided

    monkeypatch.undo()
    data = info(nocard)
    assert data["identification"]["decided_by"]["kind"] == "weights"  # type: ignore[index]


def test_card_present_means_no_hash(mymodel: Path, tmp_path: Path) -> None:
    fresh = Path(shutil.copytree(mymodel, tmp_path / "fresh"))
    profiles.from_sentence_transformers_dir(fresh)
    assert str((fresh / "model.safetensors").resolve()) not in sha256_cache()


def test_checkpoint_table_covers_the_catalog() -> None:
    table = {c.hub_id: c for c in checkpoints.checkpoints()}
    assert {e.hub_id for e in catalog.CATALOG} <= set(table)
    for entry in table.values():
        if entry.sha256 is None:
            assert "no sha256 verified" in entry.verified
        else:
            assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
    minilm = table["sentence-transformers/all-MiniLM-L6-v2"]
    assert minilm.sha256 == MINILM_SHA256 == models.file_sha256(bundled() / "model.safetensors")
    assert checkpoints.by_sha256(MINILM_SHA256) == minilm
    assert checkpoints.by_sha256("0" * 64) is None


# ---- a BGE-shaped directory under a meaningless name ------------------------------------------


@pytest.fixture(scope="module")
def random_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight BertModel with BGE-small's width (384) and the bert-base-uncased
    vocabulary (the bundled MiniLM tokenizer, which BGE shares), saved once."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=768,
        max_position_embeddings=512,
    )
    out = tmp_path_factory.mktemp("random-bert") / "weights"
    BertModel(config).save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(bundled() / name, out / name)
    return out


def model_dir(random_bert: Path, where: Path, extra: Path | None = None) -> Path:
    """The random model in ``where``, with the files of ``extra`` (configs, card) added."""
    shutil.copytree(random_bert, where)
    if extra is not None:
        shutil.copytree(extra, where, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.txt"))
    return where


@pytest.fixture(scope="module")
def bge_dir(random_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_dir(random_bert, tmp_path_factory.mktemp("opt") / "encoder-7", BGE_FILES)


@pytest.fixture(scope="module")
def bge_st(bge_dir: Path) -> Embedder:
    return Embedder(str(bge_dir), backend="sentence-transformers")


def test_bge_copy_gets_bge_query_instruction(bge_st: Embedder) -> None:
    p = bge_st.profile
    assert (p.family, p.known, p.query_prefix, p.document_prefix) == ("bge", True, BGE_EN_QUERY, "")
    assert (p.pooling, p.context_length, p.dimension) == ("cls", 512, 384)
    assert p.identification is not None and p.identification.decided_by is not None
    assert p.identification.decided_by.where == "model-index name in README.md"
    assert p.identification.conflicts == ()
    # the instruction really goes in front of the query, and not in front of documents
    q = bge_st.embed_query(QUERY)
    plain = Embedder(bge_st.resolved, query_prefix="", backend="sentence-transformers")
    assert np.allclose(q, plain.embed_documents([BGE_EN_QUERY + QUERY]).vectors[0], atol=1e-6)
    assert not np.allclose(q, plain.embed_query(QUERY), atol=1e-3)


@pytest.mark.slow
def test_packed_gguf_carries_its_profile_without_manifest(
    bge_dir: Path, bge_st: Embedder, tmp_path: Path
) -> None:
    out = tmp_path / "packed" / "encoder.gguf"
    lokal("models", "pack", str(bge_dir), "-o", str(out), "--quantize", "f16")
    meta = gguf.read_metadata(out)
    stored = json.loads(meta["lokal.profile"])
    assert (stored["family"], stored["query_prefix"], stored["pooling"]) == (
        "bge",
        BGE_EN_QUERY,
        "cls",
    )
    assert (stored["normalize"], stored["context_length"], stored["dimension"]) == (True, 512, 384)
    assert meta["lokal.source_id"] == "bge-small-en-v1.5"
    assert meta["lokal.source_sha256"] == models.weights_sha256(bge_dir)
    assert json.loads(meta["lokal.evidence"])["decided_by"]["kind"] == "card"

    # renamed, moved elsewhere, without its manifest and far from the source directory
    moved = tmp_path / "elsewhere" / "x17.gguf"
    moved.parent.mkdir()
    shutil.move(out, moved)
    models.manifest_path(out).unlink()
    assert not models.manifest_path(moved).exists()
    emb = Embedder(str(moved), backend="gguf")
    assert (emb.profile.family, emb.profile.query_prefix) == ("bge", BGE_EN_QUERY)
    assert emb.profile.identification is not None
    assert emb.profile.identification.name == "bge-small-en-v1.5"
    q = emb.embed_query(QUERY)
    plain = Embedder(emb.resolved, query_prefix="", backend="gguf")
    assert np.allclose(q, plain.embed_documents([BGE_EN_QUERY + QUERY]).vectors[0], atol=1e-4)
    # the same vectors as the sentence-transformers model the file was packed from (f16)
    assert float(q @ bge_st.embed_query(QUERY)) > 0.99
    data = info(moved)
    assert data["identification"]["name"] == "bge-small-en-v1.5"  # type: ignore[index]


# ---- what a GGUF made elsewhere says ------------------------------------------------------------


def test_foreign_gguf_metadata_is_evidence_too() -> None:
    meta = {
        "general.architecture": "bert",
        "general.name": "My Embedder",
        "general.base_model.0.repo_url": "https://huggingface.co/BAAI/bge-small-en-v1.5",
        "bert.context_length": 512,
        "bert.pooling_type": 2,
    }
    p = profiles.from_gguf_metadata(meta, "model-q8")
    assert (p.name, p.family, p.query_prefix, p.pooling) == (
        "My Embedder",
        "bge",
        BGE_EN_QUERY,
        "cls",
    )
    assert p.identification is not None and p.identification.decided_by is not None
    assert p.identification.decided_by.where == "general.base_model.0.repo_url"

    conflicting = {**meta, "general.name": "e5-small-v2"}
    ident = profiles.from_gguf_metadata(conflicting, "model-q8").identification
    assert ident is not None and ident.family == "bge"
    assert any("e5-small-v2 (family e5)" in c and "bge" in c for c in ident.conflicts)
    # with no evidence but the file's name, today's name detection stands
    by_name = profiles.from_gguf_metadata({"general.architecture": "bert"}, "nomic-embed-text-v1.5")
    assert (by_name.family, by_name.query_prefix) == ("nomic", "search_query: ")


# ---- conflicts ----------------------------------------------------------------------------------


def test_card_and_config_disagreeing_is_reported(tmp_path: Path) -> None:
    shutil.copytree(BGE_FILES, tmp_path / "m")
    (tmp_path / "m" / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}})
    )
    p = profiles.from_sentence_transformers_dir(tmp_path / "m")
    assert p.query_prefix == "query: "  # the config's prompts are what sentence-transformers uses
    assert p.identification is not None
    (conflict,) = p.identification.conflicts
    assert "'query: '" in conflict and "bge" in conflict and "README.md" in conflict
    human = lokal("models", "info", str(tmp_path / "m")).stdout
    assert "CONFLICT" in human and "source_sha256     none (no weights file" in human


def test_name_against_card_is_a_conflict(mymodel: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "e5-small-v2"
    renamed.mkdir()
    shutil.copy(mymodel / "README.md", renamed / "README.md")
    ident = profiles.from_sentence_transformers_dir(renamed).identification
    assert ident is not None and ident.family == "minilm"
    assert any("e5-small-v2 (family e5)" in c for c in ident.conflicts)


# ---- the refusal --------------------------------------------------------------------------------


def test_unknown_model_whose_card_names_a_prefix_is_refused(
    random_bert: Path, tmp_path: Path
) -> None:
    enc = model_dir(random_bert, tmp_path / "enc")
    (enc / "README.md").write_text(
        "# Acme retriever\n\nFor retrieval, prefix each query with the instruction "
        '`"Represent this sentence for searching relevant passages: "`; documents need none.\n'
    )
    emb = Embedder(str(enc), backend="sentence-transformers")
    assert not emb.profile.known
    assert emb.profile.identification is not None
    assert any("no known checkpoint's size" in n for n in emb.profile.identification.notes)
    assert str(enc) not in sha256_cache(), "weights of no known size are not hashed"
    with pytest.raises(UnknownPrefix, match="Represent this sentence") as caught:
        emb.embed_query(QUERY)
    assert isinstance(caught.value, ProfileError)
    assert caught.value.asked == (BGE_EN_QUERY,)
    assert emb.embed_documents(["a passage"]).vectors.shape == (1, 384)  # documents are fine

    chosen = Embedder(str(enc), backend="sentence-transformers", query_prefix=BGE_EN_QUERY)
    assert np.allclose(
        chosen.embed_query(QUERY), emb.embed_documents([BGE_EN_QUERY + QUERY]).vectors[0], atol=1e-6
    )
    none = Embedder(str(enc), backend="sentence-transformers", query_prefix="")
    allowed = Embedder(str(enc), backend="sentence-transformers", allow_unknown_prefixes=True)
    assert np.allclose(none.embed_query(QUERY), allowed.embed_query(QUERY))

    data = info(enc)
    assert data["identification"]["asked_prefixes"] == [BGE_EN_QUERY]  # type: ignore[index]


def test_unmappable_config_prompt_is_refused_and_adapters_can_allow(
    random_bert: Path, tmp_path: Path
) -> None:
    enc = model_dir(random_bert, tmp_path / "enc2")
    prompt = "Given a web search query, retrieve relevant passages: "
    (enc / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"s2p_query": prompt, "sts": "Retrieve similar text: "}})
    )
    with pytest.raises(UnknownPrefix, match="Given a web search"):
        Embedder(str(enc), backend="sentence-transformers").embed_query(QUERY)
    pytest.importorskip("langchain_core")
    from lokal.integrations.langchain import LocalEmbeddings

    with pytest.raises(UnknownPrefix):
        LocalEmbeddings(model=str(enc), backend="sentence-transformers").embed_query(QUERY)
    allowed = LocalEmbeddings(
        model=str(enc), backend="sentence-transformers", allow_unknown_prefixes=True
    )
    assert len(allowed.embed_query(QUERY)) == 384
    pytest.importorskip("llama_index.core")
    from lokal.integrations.llama_index import LocalEmbedding

    with pytest.raises(UnknownPrefix):
        LocalEmbedding(model=str(enc), backend="sentence-transformers").get_query_embedding(QUERY)
    chosen = LocalEmbedding(model=str(enc), backend="sentence-transformers", query_prefix="")
    assert chosen.get_query_embedding(QUERY) == allowed.embed_query(QUERY)


def test_mapped_config_prompt_is_used_not_refused(tmp_path: Path) -> None:
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps(
            {"prompts": {"retrieval": "Query for retrieval: "}, "default_prompt_name": "retrieval"}
        )
    )
    p = profiles.from_sentence_transformers_dir(tmp_path)
    assert (p.query_prefix, p.document_prefix, p.known) == (
        "Query for retrieval: ",
        "Query for retrieval: ",
        True,
    )


# ---- reading model cards ------------------------------------------------------------------------


def test_bge_card_reads_as_published(tmp_path: Path) -> None:
    card = cards.read_card(BGE_FILES)
    assert card is not None
    assert card.index_names == ("bge-small-en-v1.5",)
    assert card.title == "FlagEmbedding"
    assert card.usage_ids == ("BAAI/bge-large-zh-v1.5", "BAAI/bge-large-en-v1.5")
    assert BGE_EN_QUERY in card.asked_prefixes
    minilm = cards.read_card(bundled())
    assert minilm is not None and minilm.title == "all-MiniLM-L6-v2"
    assert minilm.asked_prefixes == ()

    (tmp_path / "README.md").write_text(
        "---\nbase_model: [unclosed\n---\n# BAAI/bge-base-en-v1.5\n"
    )
    broken = cards.read_card(tmp_path)
    assert broken is not None and broken.problems and broken.title == "BAAI/bge-base-en-v1.5"
    ident = evidence.identify_dir(tmp_path, profiles.family_of)
    assert ident.family == "bge" and any("not valid YAML" in n for n in ident.notes)


def test_identification_round_trips(bge_dir: Path) -> None:
    ident = profiles.from_sentence_transformers_dir(bge_dir).identification
    assert ident is not None
    assert evidence.Identification.from_dict(json.loads(json.dumps(ident.to_dict()))) == ident
    assert os.fspath(bge_dir).endswith("encoder-7")


def test_reranker_copy_is_recognized_by_its_card(tmp_path: Path) -> None:
    """The Reranker's profile goes through the same evidence (config files only, no weights)."""
    ce = tmp_path / "scorer"
    ce.mkdir()
    (ce / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["BertForSequenceClassification"],
                "model_type": "bert",
                "num_labels": 1,
            }
        )
    )
    (ce / "README.md").write_text(
        "# Cross-Encoder for MS Marco\n\n```python\n"
        "from sentence_transformers import CrossEncoder\n"
        "model = CrossEncoder('cross-encoder/ms-marco-MiniLM-L6-v2')\n```\n"
    )
    assert profiles.reranker_from_name("scorer").known is False
    p = profiles.reranker_from_dir(ce)
    assert (p.name, p.known, p.family) == (
        "scorer",
        True,
        profiles.reranker_from_name("cross-encoder/ms-marco-MiniLM-L6-v2").family,
    )


def test_packed_evidence_keeps_the_asked_prefix_for_the_refusal() -> None:
    """A GGUF packed from an unknown model whose card asks for a prefix keeps that in its own
    metadata, so the file alone is refused the same way (Embedder reads this identification)."""
    ident = evidence.Identification(
        name="enc", asked_prefixes=(BGE_EN_QUERY,), asked_where="README.md"
    )
    meta = {
        "general.architecture": "bert",
        "lokal.name": "enc",
        "lokal.profile": json.dumps({"family": "unknown", "query_prefix": "", "known": False}),
        evidence.EVIDENCE_KEY: json.dumps(ident.to_dict()),
    }
    p = profiles.from_gguf_metadata(meta, "x17")
    assert p.identification is not None
    assert (p.known, p.identification.family, p.identification.asked_prefixes) == (
        False,
        None,
        (BGE_EN_QUERY,),
    )
    assert any(evidence.EVIDENCE_KEY in n for n in p.identification.notes)
