"""Rerankers: both backends, the length policy, GGUF parity, packing, and the adapters.

These tests check plumbing and parity, NOT ranking quality. No reranker weights exist offline,
so the session builds one: a ``BertForSequenceClassification`` from the bundled all-MiniLM-L6-v2
encoder with a fresh one-logit head (scaled x20 so scores spread), saved with its tokenizer, and
packed once to a q8_0 GGUF with lokal's own packer. Its scores mean nothing; what is checked is
that lokal computes them the way sentence-transformers does, that the GGUF backend agrees with
PyTorch on the same weights, and that length, batching, ordering and errors behave.

Ranking quality is checked only with a real reranker named by ``LOKAL_TEST_RERANKER`` (a
directory, a .gguf or a cached hub id); that test is skipped when it is unset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from lokal import (
    Embedder,
    ModelNotFound,
    ProfileError,
    Ranked,
    Reranker,
    TextTooLong,
    gguf,
    models,
    packing,
    profiles,
)
from lokal.backends.rerank_llama_cpp import (
    LlamaCppRerankBackend,
    SegmentWarning,
    TensorInfo,
    read_tensor_table,
)
from lokal.embedder import Truncated, TruncationWarning
from lokal.errors import ModelLoadError
from lokal.reranker import (
    RERANKER_ENV,
    PairTooLong,
    ParityWarning,
    ScoreResult,
    cached_rerankers,
    default_model,
)
from lokal.retrieval import DOCUMENT_TOKENS

from .conftest import build_cross_encoder, paragraphs

# the installed console script, as a user runs it
LOKAL = str(Path(sys.executable).parent / "lokal")

QUERIES = [
    "how does a for loop iterate over a sequence",
    "what happens when an exception is raised",
    "defining a class with methods and attributes",
]


# ---- fixtures: one model build and one pack per run ------------------------------------------


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cross-encoder built from the real MiniLM encoder: a fresh classification head."""
    return build_cross_encoder(tmp_path_factory.mktemp("models") / "minilm-cross-encoder")


def lokal(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real `lokal` command in a subprocess (it inherits the session's LOKAL_HOME)."""
    proc = subprocess.run([LOKAL, *args], capture_output=True, text=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"lokal {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def packed_reranker(cross_encoder_dir: Path) -> Path:
    """Packed as a user packs one: `lokal models pack DIR --name ...` into the session's model
    cache (q8_0), where `lokal search --rerank` and ``Reranker()`` find it."""
    out = lokal(
        "models", "pack", str(cross_encoder_dir), "--name", "minilm-cross-encoder", "--json"
    )
    path = Path(json.loads(out.stdout)["path"])
    assert path == models.cached_gguf_path("minilm-cross-encoder", "q8_0")
    return path


@pytest.fixture(scope="session")
def st_reranker(cross_encoder_dir: Path) -> Reranker:
    return Reranker(str(cross_encoder_dir), backend="sentence-transformers")


@pytest.fixture(scope="session")
def gguf_reranker(packed_reranker: Path) -> Reranker:
    return Reranker(str(packed_reranker))


@pytest.fixture(params=["sentence-transformers", "gguf"])
def any_reranker(request: pytest.FixtureRequest) -> Reranker:
    name = "st_reranker" if request.param == "sentence-transformers" else "gguf_reranker"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def cross_encoder(cross_encoder_dir: Path) -> object:
    """sentence-transformers' own CrossEncoder on the same weights: the reference."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(cross_encoder_dir), device="cpu", local_files_only=True)


@pytest.fixture(scope="session")
def documents() -> list[str]:
    """Twelve real paragraphs of Python's language reference (short: the machine is small)."""
    return [p for p in paragraphs() if len(p) < 400][:12]


@pytest.fixture(scope="session")
def all_scores(
    st_reranker: Reranker, gguf_reranker: Reranker, documents: list[str]
) -> dict[str, np.ndarray]:
    """Scores of every (query, document) test pair on each backend, computed once."""
    return {
        r.backend_name: np.stack([r.score(q, documents).scores for q in QUERIES])
        for r in (st_reranker, gguf_reranker)
    }


# ---- scores: sentence-transformers, ordering, batching -------------------------------------


def test_st_scores_equal_cross_encoder_predict(
    all_scores: dict[str, np.ndarray], cross_encoder: object, documents: list[str]
) -> None:
    pairs = [(q, d) for q in QUERIES for d in documents]
    theirs = cross_encoder.predict(pairs)  # type: ignore[attr-defined]
    ours = all_scores["sentence-transformers"].ravel()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    # the scores spread enough to order (a fresh unscaled head gives 0.5238 vs 0.5239)
    assert np.ptp(ours) > 0.05


def test_rank_sorted_records_and_top_n(
    any_reranker: Reranker, all_scores: dict[str, np.ndarray], documents: list[str]
) -> None:
    documents = documents[:6]
    result = ScoreResult(all_scores[any_reranker.backend_name][1, :6], [])
    ranked = any_reranker.rank(QUERIES[1], documents)
    assert sorted(r.index for r in ranked) == list(range(len(documents)))
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    tolerance = _batch_tolerance(any_reranker)  # all_scores ranked 12 documents at once
    assert all(
        r.score == pytest.approx(float(result.scores[r.index]), abs=tolerance) for r in ranked
    )
    assert any_reranker.rank(QUERIES[1], documents, top_n=3) == ranked[:3]
    assert any_reranker.rank(QUERIES[1], documents, top_n=0) == []
    assert any_reranker.rank(QUERIES[1], documents, top_n=100) == ranked
    assert any_reranker.rank(QUERIES[1], []) == []
    assert isinstance(ranked[0], Ranked)
    assert all(0.0 < r.score < 1.0 for r in ranked)  # sigmoid: the model's config names none


def test_ties_keep_input_order() -> None:
    result = ScoreResult(np.array([0.5, 0.9, 0.5, 0.9], dtype=np.float32), [1, 1, 1, 1])
    assert [r.index for r in result.ranked()] == [1, 3, 0, 2]


def test_batching_gives_the_same_scores_as_one_by_one(
    any_reranker: Reranker, all_scores: dict[str, np.ndarray], documents: list[str]
) -> None:
    together = all_scores[any_reranker.backend_name][0]
    alone = np.array([any_reranker.score(QUERIES[0], [d]).scores[0] for d in documents[:6]])
    together = together[:6]
    np.testing.assert_allclose(together, alone, atol=_batch_tolerance(any_reranker))


def _batch_tolerance(reranker: Reranker) -> float:
    """sentence-transformers pads, nothing more. llama.cpp's q8_0 kernels round differently
    for different batch shapes: measured up to 0.02 in logits (0.0008 with f16), so about 0.005
    after the sigmoid; the same pair decoded twice alone is bit-identical."""
    return 2e-5 if reranker.backend_name == "sentence-transformers" else 0.01


def test_small_batches_give_the_same_scores(
    any_reranker: Reranker, all_scores: dict[str, np.ndarray], documents: list[str]
) -> None:
    small = Reranker(str(any_reranker.resolved.path), batch_size=3)
    assert small.backend is not any_reranker.backend  # several decodes / forward passes
    np.testing.assert_allclose(
        small.score(QUERIES[2], documents).scores,
        all_scores[any_reranker.backend_name][2],
        atol=_batch_tolerance(any_reranker),
    )


def test_rerankers_share_a_loaded_model(st_reranker: Reranker, cross_encoder_dir: Path) -> None:
    assert Reranker(str(cross_encoder_dir)).backend is st_reranker.backend


async def test_async_rank_matches(gguf_reranker: Reranker, documents: list[str]) -> None:
    ranked, result = await asyncio.gather(
        gguf_reranker.arank(QUERIES[2], documents, top_n=5),
        gguf_reranker.ascore(QUERIES[2], documents),
    )
    assert ranked == result.ranked(5)
    assert [r.index for r in ranked] == [
        r.index for r in gguf_reranker.rank(QUERIES[2], documents, 5)
    ]
    # the budget's cut goes through the async paths too
    cut, cut_result = await asyncio.gather(
        gguf_reranker.arank(QUERIES[2], documents, top_n=5, max_document_tokens=4),
        gguf_reranker.ascore(QUERIES[2], documents, max_document_tokens=4),
    )
    assert cut == gguf_reranker.rank(QUERIES[2], documents, 5, max_document_tokens=4)
    assert cut == cut_result.ranked(5) and cut != ranked


def test_bad_inputs(st_reranker: Reranker) -> None:
    with pytest.raises(TypeError, match="list of documents"):
        st_reranker.rank("q", "a single string")
    with pytest.raises(TypeError, match="document 1"):
        st_reranker.rank("q", ["fine", b"bytes"])  # type: ignore[list-item]
    with pytest.raises(ProfileError, match="top_n"):
        st_reranker.rank("q", ["a"], top_n=-1)
    with pytest.raises(ProfileError, match="truncation"):
        Reranker(str(st_reranker.resolved.path), truncation="cut")  # type: ignore[arg-type]


def test_nul_does_not_cut_the_document(
    any_reranker: Reranker, caplog: pytest.LogCaptureFixture
) -> None:
    """The embedder's policy, for the reranker too: a NUL becomes U+FFFD (llama.cpp reads C
    strings, so everything after a NUL would vanish) and the call logs how many texts changed."""
    doc = "pump manual\x00 reset by holding the red button for five seconds"
    with caplog.at_level(logging.WARNING, logger="lokal.loading"):
        got = any_reranker.score("how do I reset the pump?", [doc])
    same = any_reranker.score("how do I reset the pump?", [doc.replace("\x00", "\ufffd")])
    cut = any_reranker.score("how do I reset the pump?", ["pump manual"])
    assert got.token_counts == same.token_counts
    assert got.token_counts[0] > cut.token_counts[0] + 5
    assert abs(float(got.scores[0]) - float(same.scores[0])) < 1e-5
    assert "1 of 1 documents held NUL characters" in caplog.text


# ---- length: never silent, never a crash ----------------------------------------------------


def test_long_document_is_cut_on_the_document_side_with_one_warning(
    any_reranker: Reranker, long_text: str, documents: list[str]
) -> None:
    docs = [documents[0], long_text, documents[1]]
    cut: list[list[Truncated]] = []
    any_reranker.on_truncate = cut.append
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = any_reranker.score(QUERIES[0], docs)
    finally:
        any_reranker.on_truncate = None
    messages = [str(w.message) for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(messages) == 1, messages
    assert "1 of 3 documents" in messages[0] and "document side" in messages[0]
    limit = any_reranker.context_length
    assert limit == 512
    assert result.token_counts[1] > 5_000
    assert result.truncated == [Truncated(1, result.token_counts[1], limit)]
    assert cut == [result.truncated]
    assert np.isfinite(result.scores).all()
    # the short documents score as they do on their own
    alone = any_reranker.score(QUERIES[0], [documents[0], documents[1]]).scores
    np.testing.assert_allclose(result.scores[[0, 2]], alone, atol=_batch_tolerance(any_reranker))


def test_both_backends_cut_the_same_tokens(
    st_reranker: Reranker, gguf_reranker: Reranker, long_text: str
) -> None:
    """The query is kept whole and the document cut to fit: the same pair on both backends."""
    with pytest.warns(TruncationWarning):
        a = st_reranker.score(QUERIES[0], [long_text]).scores[0]
    with pytest.warns(TruncationWarning):
        b = gguf_reranker.score(QUERIES[0], [long_text]).scores[0]
    assert abs(a - b) < 0.01


def test_error_policy_names_the_document(
    any_reranker: Reranker, long_text: str, documents: list[str]
) -> None:
    strict = Reranker(str(any_reranker.resolved.path), truncation="error")
    with pytest.raises(PairTooLong, match="document 2 with the query") as info:
        strict.score(QUERIES[0], [documents[0], documents[1], long_text])
    assert isinstance(info.value, TextTooLong)
    assert (info.value.index, info.value.limit) == (2, 512)
    assert info.value.tokens > 5_000
    assert strict.rank(QUERIES[0], documents[:2])  # pairs that fit are scored


def test_max_document_tokens_scores_each_documents_first_tokens(
    any_reranker: Reranker, cross_encoder_dir: Path, long_text: str
) -> None:
    """Cohere's max_tokens_per_doc: the document's first N tokens (the model's own tokenizer)
    are scored, as if that were the whole document; a cut asked for is not a truncation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(cross_encoder_dir))
    n = 24
    ids = tokenizer(long_text, add_special_tokens=False)["input_ids"]
    head = tokenizer.decode(ids[:n])
    assert tokenizer(head, add_special_tokens=False)["input_ids"] == ids[:n]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        capped = any_reranker.score(QUERIES[0], [long_text], max_document_tokens=n)
        want = any_reranker.score(QUERIES[0], [head]).scores
    assert capped.truncated == [] and capped.token_counts[0] > 5_000
    # one pair alone decodes the same way each time: equal, not merely close
    np.testing.assert_allclose(capped.scores, want, rtol=1e-5, atol=1e-6)
    # a document shorter than the cap is whole; a cap above the context still cuts to it
    short = any_reranker.score(QUERIES[0], [head], max_document_tokens=n + 5).scores
    np.testing.assert_allclose(short, want, rtol=1e-5, atol=1e-6)
    with pytest.warns(TruncationWarning):
        over = any_reranker.score(QUERIES[0], [long_text], max_document_tokens=1_000)
    q_tokens = over.query_tokens
    assert over.truncated == [
        Truncated(0, any_reranker.backend.special_tokens + q_tokens + 1_000, 512)
    ]
    with pytest.raises(ProfileError, match="max_document_tokens"):
        any_reranker.score(QUERIES[0], ["a"], max_document_tokens=0)


def test_long_query_is_cut_to_half_the_context(
    any_reranker: Reranker, long_text: str, documents: list[str]
) -> None:
    with pytest.warns(TruncationWarning, match="query was cut") as record:
        result = any_reranker.score(long_text, documents[:2])
    assert len(record) == 1
    assert result.query_cut and result.query_tokens > 5_000
    assert any_reranker.max_query_tokens == (512 - 3) // 2
    assert np.isfinite(result.scores).all()
    strict = Reranker(str(any_reranker.resolved.path), truncation="error")
    with pytest.raises(PairTooLong, match="the query has") as info:
        strict.score(long_text, documents[:2])
    assert info.value.index is None


# ---- the GGUF backend: parity with PyTorch on the same weights ------------------------------


def test_gguf_agrees_with_torch(all_scores: dict[str, np.ndarray]) -> None:
    torch_scores = all_scores["sentence-transformers"].ravel()
    gguf_scores = all_scores["gguf"].ravel()
    rho = spearmanr(torch_scores, gguf_scores).statistic
    assert rho >= 0.95, rho
    assert np.abs(torch_scores - gguf_scores).max() < 0.02  # sigmoid scores, q8_0 weights


def _raw_logits(backend: LlamaCppRerankBackend, documents: list[str]) -> np.ndarray:
    return np.concatenate(
        [backend.score(q, documents, max_query_tokens=254, max_tokens=512) for q in QUERIES[:2]]
    )


def test_segment_b_emulation_is_what_makes_bert_match(
    cross_encoder: object, gguf_reranker: Reranker, packed_reranker: Path, documents: list[str]
) -> None:
    """llama.cpp's BERT graph puts every token in segment A. Zeroing PyTorch's token types
    reproduces llama.cpp's own behaviour; lokal's emulation reproduces PyTorch's."""
    import torch

    ce: object = cross_encoder
    pairs = [(q, d) for q in QUERIES[:2] for d in documents]
    hf = ce[0].model  # type: ignore[index]
    enc = ce.tokenizer(  # type: ignore[attr-defined]
        [p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        torch_logits = hf(**enc).logits[:, 0].numpy()
        enc["token_type_ids"] = torch.zeros_like(enc["token_type_ids"])
        segment_a_logits = hf(**enc).logits[:, 0].numpy()

    backend = gguf_reranker.backend
    assert isinstance(backend, LlamaCppRerankBackend)
    emulated = _raw_logits(backend, documents)
    plain = _raw_logits(LlamaCppRerankBackend(packed_reranker, token_types=False), documents)

    def err(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).mean())

    # measured here (q8_0, these 24 pairs): plain vs torch 0.025 mean (0.064 max) logits;
    # plain vs segment-A torch 0.010; emulated vs torch 0.012 (q8_0's own error)
    # without emulation llama.cpp computes PyTorch-with-segment-A, up to q8_0 noise ...
    assert err(plain, segment_a_logits) < 0.7 * err(plain, torch_logits)
    # ... and the emulation brings it back to PyTorch, up to the same noise
    assert err(emulated, torch_logits) < 0.7 * err(plain, torch_logits)
    assert spearmanr(emulated, torch_logits).statistic > spearmanr(plain, torch_logits).statistic


def test_token_rows_decode_like_the_reference(packed_reranker: Path) -> None:
    """lokal's q8_0 row decoder against the gguf package's dequantizer."""
    reference = pytest.importorskip("gguf")
    from lokal.backends.rerank_llama_cpp import SegmentInputs

    tensors = read_tensor_table(packed_reranker)
    ours = SegmentInputs(packed_reranker, tensors)
    reader = reference.GGUFReader(str(packed_reranker))
    table = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert table.tensor_type == 8  # q8_0
    full = reference.quants.dequantize(table.data, table.tensor_type).reshape(-1, ours.n_embd)
    ids = [101, 2023, 7592, 102, 0, 30521]
    np.testing.assert_allclose(ours.embed(ids, len(ids)), full[ids], atol=1e-6)


def test_pair_format_comes_from_the_gguf(gguf_reranker: Reranker) -> None:
    backend = gguf_reranker.backend
    assert isinstance(backend, LlamaCppRerankBackend)
    # BERT: [CLS] query [SEP] document [SEP]
    assert (backend._prefix, backend._middle, backend._suffix) == ([101], [102], [102])
    assert backend.special_tokens == 3


def _table(*names: str, types: int = 2) -> dict[str, TensorInfo]:
    tensors = {n: TensorInfo(n, (384, 1), 0, 0) for n in names}
    tensors["token_types.weight"] = TensorInfo("token_types.weight", (384, types), 0, 0)
    return tensors


def test_gguf_without_a_head_or_without_the_bert_pooler_is_refused(tmp_path: Path) -> None:
    meta = {"tokenizer.ggml.model": "bert"}
    check = LlamaCppRerankBackend._check_head
    with pytest.raises(ModelLoadError, match="no classification head"):
        check(tmp_path, "bert", meta, _table("token_embd.weight"))
    # what llama.cpp's own converter makes of a BERT cross-encoder: scores would be wrong
    with pytest.raises(ModelLoadError, match="without its pooler"):
        check(tmp_path, "bert", meta, _table("cls.output.weight"))
    check(tmp_path, "bert", meta, _table("cls.weight", "cls.output.weight"))  # lokal's pack
    check(tmp_path, "bert", {"tokenizer.ggml.model": "t5"}, _table("cls.output.weight"))


def test_unreadable_token_table_warns_that_segments_are_lost(packed_reranker: Path) -> None:
    tensors = read_tensor_table(packed_reranker)
    table = tensors["token_embd.weight"]
    tensors["token_embd.weight"] = TensorInfo(table.name, table.dims, 12, table.offset)  # q4_K
    with pytest.warns(SegmentWarning, match="segment A"):
        assert LlamaCppRerankBackend._segment_inputs(packed_reranker, tensors) is None
    one_type = _table("cls.weight", types=1)
    assert LlamaCppRerankBackend._segment_inputs(packed_reranker, one_type) is None


def test_family_profile_warns_or_refuses_on_gguf(packed_reranker: Path, tmp_path: Path) -> None:
    meta = gguf.read_metadata(packed_reranker)
    stored = json.loads(meta["lokal.reranker"])
    for support, note in (("warn", "parity unmeasured"), ("unsupported", "no converter")):
        variant = tmp_path / f"{support}.gguf"
        record = {**stored, "gguf": support, "gguf_note": note}
        gguf.add_metadata(packed_reranker, variant, {"lokal.reranker": json.dumps(record)})
        if support == "warn":
            with pytest.warns(ParityWarning, match=note):
                Reranker(str(variant))
        else:
            with pytest.raises(ProfileError, match=note):
                Reranker(str(variant))


@pytest.mark.slow
def test_xlm_roberta_pairs_and_parity(tmp_path: Path, documents: list[str]) -> None:
    """The XLM-R family (bge-reranker): pair format <s> q </s></s> d </s> read from the GGUF's
    add_bos / add_eos / add_sep flags, token ids equal to the Hugging Face tokenizer's, and
    scores equal to PyTorch's (XLM-R has one token type). A second, tiny model (230k random
    parameters, a SentencePiece vocabulary trained here on Python's reference) and a second
    pack: the only way to reach this code path without XLM-R weights."""
    spm = pytest.importorskip("sentencepiece")
    import torch
    from transformers import (
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
        XLMRobertaTokenizer,
    )

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(paragraphs()))
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    spm.SentencePieceTrainer.train(  # XLM-R's layout: unk 0, bos 1, eos 2, no pad
        input=str(corpus),
        model_prefix=str(vocab / "sentencepiece.bpe"),
        vocab_size=1000,
        model_type="unigram",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (vocab / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    tokenizer = XLMRobertaTokenizer.from_pretrained(str(vocab))
    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
        initializer_range=0.2,  # spreads the scores of a random model
    )
    source = tmp_path / "tiny-xlmr-cross-encoder"
    XLMRobertaForSequenceClassification(config).save_pretrained(str(source))
    tokenizer.save_pretrained(str(source))
    packed = packing.pack(str(source), quantization="f16", output=tmp_path / "x.f16.gguf").path

    st = Reranker(str(source))
    gg = Reranker(str(packed))
    assert st.profile.input_format == gg.profile.input_format == profiles.XLMR_PAIR
    backend = gg.backend
    assert isinstance(backend, LlamaCppRerankBackend)
    assert (backend._prefix, backend._middle, backend._suffix) == ([0], [2, 2], [2])
    query, doc = QUERIES[0], documents[0]
    ours = backend._prefix + backend._tokenize(query) + backend._middle
    ours += backend._tokenize(doc) + backend._suffix
    assert ours == tokenizer(query, doc)["input_ids"]
    a = np.concatenate([st.score(q, documents).scores for q in QUERIES])
    b = np.concatenate([gg.score(q, documents).scores for q in QUERIES])
    assert np.abs(a - b).max() < 2e-3
    assert spearmanr(a, b).statistic > 0.99


# ---- packing and profiles --------------------------------------------------------------------


def test_pack_keeps_the_pooler_and_records_a_reranker(
    packed_reranker: Path, cross_encoder_dir: Path
) -> None:
    tensors = read_tensor_table(packed_reranker)
    assert {"cls.weight", "cls.bias", "cls.output.weight"} <= set(tensors)
    meta = gguf.read_metadata(packed_reranker)
    assert meta["lokal.kind"] == "reranker"
    assert meta["lokal.source_sha256"] == models.weights_sha256(cross_encoder_dir)
    manifest = packing.verify(packed_reranker)
    assert manifest["kind"] == "reranker"
    assert manifest["reranker"]["architecture"] == "BertForSequenceClassification"
    # the source directory has no modules.json: detection still works, for both kinds
    assert not (cross_encoder_dir / "modules.json").exists()
    assert models.resolve(str(cross_encoder_dir)).backend == "sentence-transformers"
    assert profiles.from_sentence_transformers_dir(cross_encoder_dir).dimension == 384


def test_reranker_profile_of_the_built_model(
    st_reranker: Reranker, gguf_reranker: Reranker
) -> None:
    for p in (st_reranker.profile, gguf_reranker.profile):
        assert (p.architecture, p.context_length, p.activation) == (
            "BertForSequenceClassification",
            512,
            "sigmoid",
        )
        assert p.gguf == "ok" and "[CLS] query [SEP]" in p.input_format
    raw = Reranker(str(st_reranker.resolved.path), profile={"activation": "identity"})
    assert raw.backend is st_reranker.backend  # the activation is applied after the engine
    logit = raw.score(QUERIES[0], ["a document"]).scores[0]
    sig = st_reranker.score(QUERIES[0], ["a document"]).scores[0]
    assert sig == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-6)


@pytest.mark.parametrize(
    ("name", "family", "arch", "ctx", "activation", "support"),
    [
        ("BAAI/bge-reranker-base", "bge-reranker", "XLMRoberta", 512, "sigmoid", "ok"),
        ("BAAI/bge-reranker-large", "bge-reranker", "XLMRoberta", 512, "sigmoid", "ok"),
        ("BAAI/bge-reranker-v2-m3", "bge-reranker", "XLMRoberta", 8192, "sigmoid", "ok"),
        ("cross-encoder/ms-marco-MiniLM-L-6-v2", "ms-marco-minilm", "Bert", 512, "identity", "ok"),
        ("cross-encoder/ms-marco-MiniLM-L12-v2", "ms-marco-minilm", "Bert", 512, "identity", "ok"),
        (
            "mixedbread-ai/mxbai-rerank-base-v1",
            "mxbai-rerank",
            "DebertaV2",
            512,
            "sigmoid",
            "unsupported",
        ),
    ],
)
def test_builtin_reranker_profiles(
    name: str, family: str, arch: str, ctx: int, activation: str, support: str
) -> None:
    p = profiles.reranker_from_name(name)
    assert p.known and p.family == family
    assert p.architecture == f"{arch}ForSequenceClassification"
    assert (p.context_length, p.activation, p.gguf) == (ctx, activation, support)
    assert "assumed" in p.source or "verified" in p.source


def test_activation_saved_by_sentence_transformers(cross_encoder_dir: Path, tmp_path: Path) -> None:
    """sentence-transformers >= 4 saves the activation in config_sentence_transformers.json;
    older versions in config.json (``sbert_ce_default_activation_function``)."""
    for name, saved in (
        (
            "config_sentence_transformers.json",
            {"activation_fn": "torch.nn.modules.linear.Identity"},
        ),
        (
            "config.json",
            {"sbert_ce_default_activation_function": "torch.nn.modules.linear.Identity"},
        ),
    ):
        d = tmp_path / name.split(".")[0]
        d.mkdir()
        config = json.loads((cross_encoder_dir / "config.json").read_text())
        (d / "config.json").write_text(
            json.dumps({**config, **saved} if name == "config.json" else config)
        )
        if name != "config.json":
            (d / name).write_text(json.dumps(saved))
        p = profiles.reranker_from_dir(d)
        assert p.activation == "identity" and "Identity" in p.source
    assert profiles.reranker_from_dir(cross_encoder_dir).activation == "sigmoid"  # the default


def test_models_info_shows_the_reranker_profile(
    cross_encoder_dir: Path, packed_reranker: Path
) -> None:
    for model in (cross_encoder_dir, packed_reranker):
        info = json.loads(lokal("models", "info", str(model), "--json").stdout)
        want = Reranker(str(model)).profile  # what the library itself detects; loads nothing
        assert info["kind"] == "reranker"
        assert info["profile"]["activation"] == want.activation
        assert info["profile"]["context_length"] == want.context_length
        assert "query_prefix" not in info["profile"]  # not an embedding profile
    table = lokal("models", "info", str(packed_reranker)).stdout
    assert "reranker" in table and "activation" in table
    assert "query prefix" not in table and "dimension" not in table


def test_embedding_models_are_not_rerankers(packed_gguf: Path) -> None:
    bundled = models.bundled_default_dir()
    with pytest.raises(ProfileError, match="not a cross-encoder"):
        Reranker(str(bundled))
    assert not profiles.is_classifier_dir(bundled)  # type: ignore[arg-type]
    with pytest.raises(ProfileError, match="is an embedding model"):
        Reranker(str(packed_gguf))  # refused before llama.cpp loads it


def test_rerankers_are_not_embedding_models(
    cross_encoder_dir: Path, packed_reranker: Path, tmp_path: Path
) -> None:
    """sentence-transformers would mean-pool a cross-encoder into vectors without a word, and
    llama.cpp returns no vectors from a GGUF reranker (a NULL-pointer ValueError): refused."""
    for model in (cross_encoder_dir, packed_reranker):
        with pytest.raises(ProfileError, match="is a reranker"):
            Embedder(str(model))
    # sentence-transformers 6 saves a cross-encoder with a modules.json (no Pooling module)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.Transformer"}]
    (tmp_path / "config.json").write_text((cross_encoder_dir / "config.json").read_text())
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert profiles.is_cross_encoder_dir(tmp_path)
    pooling = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.Pooling"}
    (tmp_path / "modules.json").write_text(json.dumps([*modules, pooling]))
    assert not profiles.is_cross_encoder_dir(tmp_path)  # an embedding model after all


def test_default_reranker_is_named_or_the_only_one_packed(
    packed_reranker: Path, packed_gguf: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(RERANKER_ENV, raising=False)
    assert packed_gguf.parent == packed_reranker.parent  # the embedder is in the cache too
    assert cached_rerankers() == [packed_reranker]
    assert default_model() == str(packed_reranker)
    monkeypatch.setenv(RERANKER_ENV, "BAAI/bge-reranker-base")
    assert default_model() == "BAAI/bge-reranker-base"
    monkeypatch.delenv(RERANKER_ENV)
    monkeypatch.setenv("LOKAL_HOME", str(tmp_path))
    with pytest.raises(ModelNotFound, match=r"none packed.*lokal models pack"):
        Reranker()
    cache = models.models_dir()
    cache.mkdir(parents=True)
    (cache / "damaged.q8_0.gguf").write_bytes(b"GGUF" + b"\xff" * 20)  # skipped, not fatal
    for name in ("a", "b"):
        (cache / f"{name}.q8_0.gguf").symlink_to(packed_reranker)
    with pytest.raises(ModelNotFound, match=r"2 rerankers .*a\.q8_0\.gguf, b\.q8_0\.gguf"):
        Reranker()


def test_profile_overrides_are_checked(cross_encoder_dir: Path) -> None:
    with pytest.raises(ProfileError, match="activation"):
        Reranker(str(cross_encoder_dir), profile={"activation": "softmax"})
    with pytest.raises(ProfileError, match="unknown reranker profile field"):
        Reranker(str(cross_encoder_dir), profile={"query_prefix": "q: "})
    short = Reranker(str(cross_encoder_dir), profile={"context_length": 64})
    assert short.context_length == 64
    with pytest.warns(TruncationWarning, match="context of 64 tokens"):
        short.score("q", ["word " * 100])
    tiny = Reranker(str(cross_encoder_dir), profile={"context_length": 4})
    with pytest.raises(ProfileError, match="no room for a query and a document"):
        tiny.score("q", ["d"])
    assert Reranker(str(cross_encoder_dir), profile={"context_length": 5}).rank("q", ["d"])


def test_constructing_a_reranker_loads_nothing_heavy(cross_encoder_dir: Path) -> None:
    probe = (
        "import sys\nfrom lokal import Reranker\n"
        f"r = Reranker({str(cross_encoder_dir)!r})\n"
        "import lokal.integrations.langchain\n"
        "print([m for m in ('torch', 'llama_cpp', 'sentence_transformers') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ---- adapters ----------------------------------------------------------------------------------


def test_langchain_local_reranker(cross_encoder_dir: Path, documents: list[str]) -> None:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from lokal.integrations.langchain import LocalReranker

    docs = [
        Document(page_content=t, metadata={"n": i}, id=f"d{i}") for i, t in enumerate(documents)
    ]
    reranker = LocalReranker(model=str(cross_encoder_dir), top_n=3, max_document_tokens=6)
    out = reranker.compress_documents(docs, QUERIES[1])
    expected = reranker.reranker.rank(QUERIES[1], documents, top_n=3, max_document_tokens=6)
    whole = reranker.reranker.rank(QUERIES[1], documents, top_n=3)
    assert [r.score for r in expected] != [r.score for r in whole]  # the cut is read
    assert [d.metadata["n"] for d in out] == [r.index for r in expected]
    assert [d.metadata["relevance_score"] for d in out] == [r.score for r in expected]
    assert [d.id for d in out] == [f"d{r.index}" for r in expected]
    assert "relevance_score" not in docs[0].metadata  # the caller's documents are untouched
    assert asyncio.run(reranker.acompress_documents(docs, QUERIES[1])) == out

    class Paragraphs(BaseRetriever):
        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            return docs

    try:
        from langchain_classic.retrievers import ContextualCompressionRetriever
    except ImportError:  # pragma: no cover - langchain_classic is in the dev environment
        from langchain.retrievers import ContextualCompressionRetriever  # type: ignore
    retriever = ContextualCompressionRetriever(
        base_compressor=reranker, base_retriever=Paragraphs()
    )
    assert retriever.invoke(QUERIES[1]) == out
    with pytest.raises(ValueError, match="extra"):
        LocalReranker(model=str(cross_encoder_dir), top_k=3)  # type: ignore[call-arg]


async def test_llama_index_local_rerank(cross_encoder_dir: Path, documents: list[str]) -> None:
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from lokal.integrations.llama_index import LocalRerank

    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1.0 - i / 100)
        for i, t in enumerate(documents)
    ]
    rerank = LocalRerank(model=str(cross_encoder_dir), top_n=2, keep_retrieval_score=True)
    assert LocalRerank.class_name() == "LokalLocalRerank"
    out = rerank.postprocess_nodes(nodes, query_str=QUERIES[2])
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    assert rerank.max_document_tokens == DOCUMENT_TOKENS  # the CPU budget, as in lokal search
    expected = rerank.reranker.rank(QUERIES[2], texts, top_n=2, max_document_tokens=DOCUMENT_TOKENS)
    assert [n.node.node_id for n in out] == [f"n{r.index}" for r in expected]
    assert [n.score for n in out] == [r.score for r in expected]
    assert out[0].node.metadata["retrieval_score"] == nodes[expected[0].index].score
    assert "retrieval_score" not in nodes[0].node.metadata
    again = await rerank.apostprocess_nodes(nodes, query_str=QUERIES[2])
    assert [(n.node.node_id, n.score) for n in again] == [(n.node.node_id, n.score) for n in out]
    assert rerank.postprocess_nodes([], query_str="q") == []
    with pytest.raises(ValueError, match="needs the query"):
        rerank.postprocess_nodes(nodes)


# ---- the CLI: lokal search --rerank -----------------------------------------------------------


def test_cli_search_rerank(
    packed_reranker: Path, gguf_reranker: Reranker, packed_gguf: Path, tmp_path: Path
) -> None:
    """`lokal search --rerank` reorders the top max(2k, 20) chunks exactly as the library
    ranks them, shows the reranker's score, and refuses a wrong reranker before loading
    anything."""
    root = tmp_path / "docs"
    root.mkdir()
    for i, text in enumerate(paragraphs()[:40]):
        (root / f"p{i:02}.txt").write_text(text)
    db = str(tmp_path / "index.db")
    lokal("index", str(root), "--index", db, "--json")
    query = QUERIES[0]
    plain = json.loads(lokal("search", query, "--index", db, "-k", "20", "--json").stdout)
    assert len(plain) == 20
    texts = [h["text"] for h in plain]
    # each candidate read to its first DOCUMENT_TOKENS tokens, the CPU budget
    expected = gguf_reranker.rank(query, texts, top_n=3, max_document_tokens=DOCUMENT_TOKENS)
    # --rerank alone: the one reranker packed in the model cache
    out = json.loads(lokal("search", query, "--index", db, "-k", "3", "--rerank", "--json").stdout)
    assert [h["id"] for h in out] == [plain[r.index]["id"] for r in expected]
    assert [h["retrieval_rank"] for h in out] == [r.index + 1 for r in expected]
    assert [h["score"] for h in out] == [plain[r.index]["score"] for r in expected]
    assert [h["rerank_score"] for h in out] == pytest.approx([r.score for r in expected], abs=1e-4)
    # named from the model cache; the best 2 of the first 5 candidates; the table
    named = ("--rerank", "minilm-cross-encoder", "--candidates", "5")
    table = lokal("search", query, "--index", db, "-k", "2", *named).stdout
    few = gguf_reranker.rank(query, texts[:5], top_n=2, max_document_tokens=DOCUMENT_TOKENS)
    lines = [ln for ln in table.splitlines() if "(retrieved #" in ln]
    assert [ln.split("(retrieved #")[1].split(",")[0] for ln in lines] == [
        str(r.index + 1) for r in few
    ]
    assert lines[0].startswith(f"{few[0].score:.3f}  ")
    # wrong rerankers: one line naming the problem, exit 1, no traceback
    for model, error in (
        (str(tmp_path / "missing"), "ModelNotFound: no such file or directory"),
        (str(packed_gguf), "ProfileError"),
    ):
        bad = lokal("search", query, "--index", db, "--rerank", model, check=False)
        assert bad.returncode == 1 and error in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
    # --doc-tokens: each candidate cut to its first N tokens before it is scored
    short = ("--rerank", "minilm-cross-encoder", "--doc-tokens", "8", "--json")
    cut = json.loads(lokal("search", query, "--index", db, "-k", "3", *short).stdout)
    want = gguf_reranker.rank(query, texts, top_n=3, max_document_tokens=8)
    assert [h["id"] for h in cut] == [plain[r.index]["id"] for r in want]
    assert [h["rerank_score"] for h in cut] == pytest.approx([r.score for r in want], abs=1e-4)
    assert [h["rerank_score"] for h in cut] != [h["rerank_score"] for h in out]
    # --doc-tokens 0: whole candidates (all that fit the reranker's context)
    whole = ("--rerank", "minilm-cross-encoder", "--doc-tokens", "0", "--json")
    got = json.loads(lokal("search", query, "--index", db, "-k", "3", *whole).stdout)
    want = gguf_reranker.rank(query, texts, top_n=3)
    assert [h["rerank_score"] for h in got] == pytest.approx([r.score for r in want], abs=1e-4)
    for flag in ("--candidates", "--doc-tokens"):
        usage = lokal("search", query, "--index", db, flag, "5", check=False)
        assert usage.returncode == 2 and "only apply with --rerank" in usage.stderr


# ---- a real reranker, when one is available ------------------------------------------------


def test_real_reranker_ranks_the_obvious(request: pytest.FixtureRequest) -> None:
    """Ranking quality, on a few obvious pairs: only with a real reranker
    (LOKAL_TEST_RERANKER=a directory, a .gguf, or a hub id in the Hugging Face cache)."""
    model = os.environ.get("LOKAL_TEST_RERANKER")
    if not model:
        pytest.skip("set LOKAL_TEST_RERANKER to a real reranker to check ranking quality")
    reranker = Reranker(model)
    cases = [
        (
            "How many people live in Berlin?",
            [
                "Berlin is well known for its museums.",
                "Berlin had a population of 3,520,031 registered inhabitants in 2019.",
                "The capital of France is Paris.",
            ],
            1,
        ),
        (
            "how do I reset the pump?",
            [
                "The pump is painted blue and weighs 40 kg.",
                "Bananas are rich in potassium.",
                "To reset the pump, hold the red button for five seconds.",
            ],
            2,
        ),
        (
            "What does a Python list comprehension do?",
            [
                "A list comprehension builds a new list by applying an expression to each item.",
                "The Eiffel Tower was completed in 1889.",
                "Pythons are large constricting snakes.",
            ],
            0,
        ),
    ]
    for query, docs, best in cases:
        assert reranker.rank(query, docs, top_n=1)[0].index == best, (query, reranker)


def test_bench_measures_a_reranker_within_a_token_budget(
    cross_encoder_dir: Path, st_reranker: Reranker
) -> None:
    """`lokal bench --reranker`'s measure: candidates ranked per question, p50 latency and
    tokens read; a cut of each candidate (max_document_tokens) reads fewer tokens."""
    from lokal.benchmark import BenchSpec, measure

    def spec(cut: int | None) -> BenchSpec:
        return BenchSpec(
            str(cross_encoder_dir), "sentence-transformers", None, 6, 8, None, "reranker", 2, cut
        )

    full, cut = measure(spec(None)), measure(spec(32))
    assert (full["kind"], full["candidates"], full["queries"]) == ("reranker", 6, 2)
    assert full["backend"] == "sentence-transformers" and full["p50_ms"] > 0
    assert full["tokens"] > 2 * 6 * 100  # passages of about a chunk: 150-250 tokens each
    assert cut["max_document_tokens"] == 32
    assert cut["tokens"] <= 2 * 6 * (32 + 20) < full["tokens"]
