"""The 2025-2026 families (issue 17): profiles, packing, GGUF parity, refusals.

Profiles and refusals read config files only. The parity tests build a small random Qwen3-
Embedding and EmbeddingGemma from transformers' own configuration classes (tests/families.py),
pack them with lokal's packer, and compare the GGUF vectors with the model card's own recipe:
``SentenceTransformer.encode(texts, prompt_name="query" | "document")``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lokal import Embedder, ProfileError, Reranker, catalog, models, packing, profiles
from lokal.profiles.embedding import GEMMA_DOCUMENT, GEMMA_QUERY, QWEN3_QUERY

from .families import (
    build_embeddinggemma,
    build_qwen3_embedding,
    build_qwen3_reranker,
    eval_and_bench,
)

CONFIGS = Path(__file__).parent / "data" / "st_configs"


# ---- profiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "query", "document", "pooling", "dimension", "context"),
    [
        ("Qwen/Qwen3-Embedding-0.6B", "qwen3-embedding", QWEN3_QUERY, "", "lasttoken", 1024, 32768),
        ("Qwen/Qwen3-Embedding-4B", "qwen3-embedding", QWEN3_QUERY, "", "lasttoken", 2560, 32768),
        ("Qwen/Qwen3-Embedding-8B", "qwen3-embedding", QWEN3_QUERY, "", "lasttoken", 4096, 32768),
        (
            "google/embeddinggemma-300m",
            "embeddinggemma",
            GEMMA_QUERY,
            GEMMA_DOCUMENT,
            "mean",
            768,
            2048,
        ),
        ("ibm-granite/granite-embedding-english-r2", "granite-embedding", "", "", "cls", 768, 8192),
        ("granite-embedding-small-english-r2", "granite-embedding", "", "", "cls", 384, 8192),
        (
            "ibm-granite/granite-embedding-278m-multilingual",
            "granite-embedding",
            "",
            "",
            "cls",
            768,
            512,
        ),
        (
            "nomic-ai/nomic-embed-text-v2-moe",
            "nomic-v2-moe",
            "search_query: ",
            "search_document: ",
            "mean",
            768,
            512,
        ),
    ],
)
def test_family_by_name(
    name: str, family: str, query: str, document: str, pooling: str, dimension: int, context: int
) -> None:
    p = profiles.from_name(name)
    assert p.known
    assert (p.family, p.query_prefix, p.document_prefix) == (family, query, document)
    assert (p.pooling, p.dimension, p.context_length) == (pooling, dimension, context)
    assert p.source.startswith("built-in profile (https://huggingface.co/")


def test_matryoshka_sizes() -> None:
    assert profiles.from_name("embeddinggemma-300m").matryoshka_dims == (768, 512, 256, 128)
    assert profiles.from_name("Qwen3-Embedding-0.6B").matryoshka_dims[0] == 1024
    assert 32 in profiles.from_name("Qwen3-Embedding-0.6B").matryoshka_dims
    assert profiles.from_name("nomic-embed-text-v2-moe").matryoshka_dims == (768, 256)
    # v1 keeps its own rule: v2 is matched first, not swallowed by the v1 pattern
    assert profiles.from_name("nomic-embed-text-v1.5").family == "nomic"


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        (
            "Qwen__Qwen3-Embedding-0.6B",
            {
                "family": "qwen3-embedding",
                "query_prefix": QWEN3_QUERY,
                "document_prefix": "",
                "pooling": "lasttoken",
                "dimension": 1024,
            },
        ),
        (
            "google__embeddinggemma-300m",
            {
                "family": "embeddinggemma",
                "query_prefix": GEMMA_QUERY,
                "document_prefix": GEMMA_DOCUMENT,
                "pooling": "mean",
                "dimension": 768,  # the last Dense layer's output, not the 3072 between
                "context_length": 2048,
            },
        ),
    ],
)
def test_published_configs(directory: str, expected: dict[str, object]) -> None:
    """The families' sentence-transformers configs (tests/data/st_configs/*/SOURCE.txt)."""
    p = profiles.from_sentence_transformers_dir(CONFIGS / directory)
    assert p.known
    assert "prompts in config_sentence_transformers.json" in p.source
    for key, value in expected.items():
        assert getattr(p, key) == value, key


def test_last_token_pooling_from_gguf_metadata_names_it_as_sentence_transformers_does() -> None:
    """A Qwen3 GGUF lokal did not pack (llama.cpp's pooling type 3) gets the same pooling name
    as the sentence-transformers model, so both share one model key."""
    meta = {
        "general.architecture": "qwen3",
        "general.basename": "Qwen3-Embedding",
        "qwen3.pooling_type": 3,
        "qwen3.context_length": 32768,
        "qwen3.embedding_length": 1024,
    }
    p = profiles.from_gguf_metadata(meta, "qwen3-embedding-0.6b-q8_0")
    assert (p.family, p.pooling, p.query_prefix) == ("qwen3-embedding", "lasttoken", QWEN3_QUERY)
    st = profiles.from_sentence_transformers_dir(CONFIGS / "Qwen__Qwen3-Embedding-0.6B")
    assert p.pooling == st.pooling


def test_catalog_lists_the_families_with_sources() -> None:
    ids = {e.hub_id: e for e in catalog.CATALOG}
    for hub in (
        "Qwen/Qwen3-Embedding-0.6B",
        "google/embeddinggemma-300m",
        "ibm-granite/granite-embedding-english-r2",
        "nomic-ai/nomic-embed-text-v2-moe",
    ):
        entry = ids[hub]
        assert entry.source == "https://huggingface.co/" + hub
        assert profiles.from_name(hub).dimension == entry.dimension
        assert profiles.from_name(hub).context_length == entry.context
    assert ids["Qwen/Qwen3-Embedding-0.6B"].mteb_retrieval == 61.83


# ---- refusals: what llama.cpp cannot reproduce, and causal-LM rerankers ----------------------


def _config_dir(
    root: Path, name: str, arch: str, modules: list[tuple[str, dict[str, object]]]
) -> Path:
    """A model directory of config files only (refusals come before any weights are read)."""
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": [arch], "hidden_size": 32}))
    listed = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    ]
    for i, (kind, cfg) in enumerate(modules, start=1):
        path = f"{i}_{kind}"
        (d / path).mkdir()
        (d / path / "config.json").write_text(json.dumps(cfg))
        listed.append({"idx": i, "name": str(i), "path": path, "type": f"x.{kind}"})
    (d / "modules.json").write_text(json.dumps(listed))
    return d


@pytest.mark.parametrize(
    ("modules", "reason"),
    [
        ([("Pooling", {"pooling_mode_max_tokens": True})], r"pooling \(max\) has no llama.cpp"),
        (
            [("Pooling", {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True})],
            r"pooling \(cls \+ mean\)",
        ),
        (
            [("Pooling", {"pooling_mode": "mean", "include_prompt": False})],
            "include_prompt: false",
        ),
        (
            [("Pooling", {"pooling_mode": "mean"}), ("Dense", {"in_features": 32})],
            "Dense layer after the pooling",
        ),
    ],
)
def test_pack_refuses_what_llama_cpp_cannot_reproduce(
    tmp_path: Path, modules: list[tuple[str, dict[str, object]]], reason: str
) -> None:
    src = _config_dir(tmp_path, "odd-encoder", "BertModel", modules)
    with pytest.raises(ProfileError, match=f"cannot pack odd-encoder as a GGUF: .*{reason}"):
        packing.pack(str(src), quantization="f16", output=tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_qwen3_reranker_is_a_reranker_and_no_gguf(tmp_path: Path) -> None:
    """A causal-LM reranker is neither an embedding model nor a cross-encoder: the Embedder
    refuses it, and the packer refuses it with the reason (llama.cpp would score it otherwise)."""
    src = _config_dir(tmp_path, "Qwen3-Reranker-0.6B", "Qwen3ForCausalLM", [])
    (src / "modules.json").unlink()
    assert profiles.directory_kind(src) == profiles.RERANKER
    profile = profiles.reranker_from_dir(src)
    assert (profile.family, profile.scoring, profile.gguf) == ("qwen3-reranker", "yes-no", "refuse")
    with pytest.raises(ProfileError, match="two-output rank head on a fixed template"):
        packing.pack(str(src), quantization="f16", output=tmp_path / "r.gguf")
    with pytest.raises(ProfileError, match="is a reranker"):
        Embedder(str(src), backend="sentence-transformers")


def test_mxbai_rerank_v2_is_refused(tmp_path: Path) -> None:
    src = _config_dir(tmp_path, "mxbai-rerank-base-v2", "Qwen2ForCausalLM", [])
    with pytest.raises(
        ProfileError, match="cannot be scored by lokal: mxbai-rerank-v2 is a causal"
    ):
        Reranker(str(src), backend="sentence-transformers")


def test_a_sequence_classification_copy_of_qwen3_reranker_is_a_cross_encoder(
    tmp_path: Path,
) -> None:
    src = _config_dir(tmp_path, "Qwen3-Reranker-0.6B-seq-cls", "Qwen3ForSequenceClassification", [])
    (src / "modules.json").unlink()
    p = profiles.reranker_from_dir(src)
    assert (p.scoring, p.gguf) == ("cross-encoder", "unsupported")


# ---- the built models: GGUF parity with the model card's recipe -------------------------------

BUILDERS = {
    "qwen3": ("Qwen3-Embedding-tiny", build_qwen3_embedding),
    "gemma": ("embeddinggemma-tiny", build_embeddinggemma),
}


@pytest.fixture(scope="session")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Each family's model directory and its f16 and q8_0 GGUFs, built and packed once."""
    root = tmp_path_factory.mktemp("families")
    out: dict[str, dict[str, Path]] = {}
    for key, (name, build) in BUILDERS.items():
        source = build(root / name, root / f"{key}-work")
        out[key] = {"source": source}
        for quant in ("f16", "q8_0"):
            out[key][quant] = packing.pack(
                str(source), quantization=quant, output=root / f"{name}.{quant}.gguf"
            ).path
    return out


def _texts(sentences: list[str]) -> list[str]:
    return sentences[:16]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen3", "gemma"])
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_vectors_match_the_model_cards_recipe(
    family_models: dict[str, dict[str, Path]], sentences: list[str], family: str, quant: str
) -> None:
    from sentence_transformers import SentenceTransformer

    paths = family_models[family]
    texts = _texts(sentences)
    card = SentenceTransformer(str(paths["source"]), device="cpu")
    gg = Embedder(str(paths[quant]), backend="gguf")
    st = Embedder(str(paths["source"]), backend="sentence-transformers")
    floor = 0.99 if quant == "f16" else 0.97
    for side, prompt_name in (("queries", "query"), ("documents", "document")):
        reference = card.encode(texts, prompt_name=prompt_name, normalize_embeddings=True)
        for embedder in (gg, st):
            ours = getattr(embedder, f"embed_{side}")(texts).vectors
            cosines = (ours * reference).sum(axis=1)
            assert cosines.min() >= floor, (embedder.backend_name, side, cosines.min())
    # the test can fail: the query prompt matters to these models' vectors
    bare = card.encode(texts, prompt="", normalize_embeddings=True)
    with_prompt = gg.embed_queries(texts).vectors
    assert (bare * with_prompt).sum(axis=1).min() < 0.99


@pytest.mark.slow
def test_prompts_applied_exactly_once(
    family_models: dict[str, dict[str, Path]], sentences: list[str]
) -> None:
    """Token counts: the prompt once, on its own side only (both backends); and the GGUF's
    tokenizer adds the same special tokens as the source's (no extra start token)."""
    from transformers import AutoTokenizer

    texts = _texts(sentences)[:4]
    for family, (query, document) in {
        "qwen3": (QWEN3_QUERY, ""),
        "gemma": (GEMMA_QUERY, GEMMA_DOCUMENT),
    }.items():
        paths = family_models[family]
        tokenizer = AutoTokenizer.from_pretrained(str(paths["source"]))
        want_q = [len(tokenizer(query + t)["input_ids"]) for t in texts]
        want_d = [len(tokenizer(document + t)["input_ids"]) for t in texts]
        for model, backend in ((paths["source"], "sentence-transformers"), (paths["f16"], "gguf")):
            emb = Embedder(str(model), backend=backend)
            assert emb.embed_queries(texts).token_counts == want_q, (family, backend)
            assert emb.embed_documents(texts).token_counts == want_d, (family, backend)
        ids = Embedder(str(paths["f16"]), backend="gguf").backend._tokenize(query + texts[0])  # type: ignore[attr-defined]
        assert ids == tokenizer(query + texts[0])["input_ids"], family


@pytest.mark.slow
def test_packed_families_keep_their_profile_and_model_key(
    family_models: dict[str, dict[str, Path]],
) -> None:
    for family, pooling in (("qwen3", "lasttoken"), ("gemma", "mean")):
        paths = family_models[family]
        st = Embedder(str(paths["source"]), backend="sentence-transformers")
        gg = Embedder(str(paths["q8_0"]), backend="gguf")
        assert gg.profile.family == st.profile.family
        assert (gg.profile.query_prefix, gg.profile.document_prefix) == (
            st.profile.query_prefix,
            st.profile.document_prefix,
        )
        assert gg.profile.pooling == st.profile.pooling == pooling
        assert gg.identity.key == st.identity.key, family


@pytest.mark.slow
def test_the_sentence_transformers_backend_adds_no_default_prompt(
    family_models: dict[str, dict[str, Path]], sentences: list[str], tmp_path: Path
) -> None:
    """A model whose config names a default prompt: sentence-transformers would put it before
    every text, documents included; lokal applies the profile's prompts and nothing more."""
    import shutil

    from sentence_transformers import SentenceTransformer

    source = tmp_path / "Qwen3-Embedding-default-prompt"
    shutil.copytree(family_models["qwen3"]["source"], source)
    cfg_path = source / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["default_prompt_name"] = "query"
    cfg_path.write_text(json.dumps(cfg))
    texts = _texts(sentences)[:6]
    card = SentenceTransformer(str(source), device="cpu")
    reference = card.encode(texts, prompt_name="document", normalize_embeddings=True)
    ours = Embedder(str(source), backend="sentence-transformers").embed_documents(texts).vectors
    assert np.allclose(ours, reference, atol=1e-5)


@pytest.mark.slow
def test_lokal_eval_and_bench_run_on_a_family_model(
    family_models: dict[str, dict[str, Path]], sentences: list[str], tmp_path: Path
) -> None:
    """The paths run on EmbeddingGemma's shapes (prompts on both sides, Dense layers); the
    numbers of a random model mean nothing for quality."""
    eval_and_bench(str(family_models["gemma"]["q8_0"]), sentences[:12], tmp_path)


@pytest.mark.slow
def test_qwen3_reranker_scores_as_its_model_card_does(tmp_path: Path, sentences: list[str]) -> None:
    """lokal.Reranker on a Qwen3-Reranker equals the card's recipe: the formatted user turn
    between the chat scaffolding, left padding, softmax over the "no" / "yes" logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lokal.backends.rerank_causal import DEFAULT_TASK, PREFIX, SUFFIX

    source = build_qwen3_reranker(tmp_path / "Qwen3-Reranker-tiny", tmp_path / "work")
    query = "How are exceptions raised and handled?"
    docs = [" ".join(s.split()[:30]) for s in _texts(sentences)[:8]]  # pairs that fit
    tokenizer = AutoTokenizer.from_pretrained(str(source), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(source)).eval()
    pre = tokenizer.encode(PREFIX, add_special_tokens=False)
    suf = tokenizer.encode(SUFFIX, add_special_tokens=False)
    pairs = [f"<Instruct>: {DEFAULT_TASK}\n<Query>: {query}\n<Document>: {d}" for d in docs]
    enc = tokenizer(pairs, padding=False, truncation="longest_first", add_special_tokens=False,
                    max_length=512 - len(pre) - len(suf))  # fmt: skip
    batch = tokenizer.pad({"input_ids": [pre + ids + suf for ids in enc["input_ids"]]},
                          padding=True, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        last = model(**batch).logits[:, -1, :]
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    card = torch.log_softmax(torch.stack([last[:, no], last[:, yes]], dim=1), dim=1)[:, 1].exp()

    rr = Reranker(str(source))
    assert rr.profile.family == "qwen3-reranker" and rr.profile.activation == "sigmoid"
    ours = rr.score(query, docs).scores
    assert np.allclose(ours, card.numpy(), atol=1e-5)
    assert np.ptp(ours) > 1e-3  # the scores differ, so the comparison can fail
    order = [r.index for r in rr.rank(query, docs)]
    assert order == list(np.argsort(-card.numpy(), kind="stable"))
    with pytest.raises(ProfileError, match="two-output rank head"):
        packing.pack(str(source), quantization="f16", output=tmp_path / "r.gguf")
    # a GGUF made by llama.cpp's converter itself (a Qwen3-Reranker: rank pooling, "yes" and
    # "no" outputs) is refused by name before llama.cpp scores anything
    converted = tmp_path / "Qwen3-Reranker-tiny.f16.gguf"
    packing._convert(source, converted, "f16", "Qwen3-Reranker-tiny")
    assert profiles.model_kind(models.resolve(str(converted))) == profiles.RERANKER
    with pytest.raises(ProfileError, match="cannot be scored on the GGUF backend: Qwen3-Reranker"):
        Reranker(str(converted))
