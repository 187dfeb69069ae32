"""XLM-RoBERTa and RoBERTa embedders (issue 17): granite-embedding-278m/107m-multilingual and
granite-embedding-125m-english.

A small random ``XLMRobertaModel`` with a SentencePiece unigram vocabulary trained here
(tests/families.py) is packed by ``lokal models pack`` in a subprocess, and its GGUF vectors
are compared with ``SentenceTransformer.encode`` on real sentences in 14 languages; a copy that
ships only ``tokenizer.json`` (the hub's layout for some XLM-R models) packs as well. A
``RobertaModel`` with a byte-level BPE vocabulary trained here is refused by ``pack`` before the
converter runs: llama.cpp's converter knows BPE pre-tokenizers only by a hash of the vocabulary.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from lokal import Embedder, ProfileError, TextTooLong, TruncationWarning, gguf, packing

from .families import (
    build_granite_english,
    build_granite_multilingual,
    eval_and_bench,
    multilingual_sentences,
)

pytestmark = pytest.mark.slow  # model packing, subprocesses

LOKAL = str(Path(sys.executable).parent / "lokal")
XLMR = "granite-embedding-278m-multilingual-tiny"


def _pack_cli(source: Path, quant: str, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [LOKAL, "models", "pack", str(source), "-q", quant, "-o", str(out), "--json"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny granite multilingual model and its f16 / q8_0 GGUFs, packed by the CLI."""
    root = tmp_path_factory.mktemp("xlmr")
    out = {"source": build_granite_multilingual(root / XLMR, root / "work")}
    for quant in ("f16", "q8_0"):
        proc = _pack_cli(out["source"], quant, root / f"{XLMR}.{quant}.gguf")
        assert proc.returncode == 0, proc.stderr
        out[quant] = Path(json.loads(proc.stdout)["path"])
    return out


def _texts() -> list[str]:
    """The multilingual sentences, and whitespace the tokenizers must treat alike."""
    return [
        *multilingual_sentences(),
        "  leading spaces, a tab\tand a newline\nin one text  ",
        "Zeile eins\n\nZeile zwei\t\tEnde",
    ]


def _cosines(embedder: Embedder, reference: np.ndarray, texts: list[str]) -> np.ndarray:
    return np.asarray((embedder.embed_documents(texts).vectors * reference).sum(axis=1))


@pytest.mark.parametrize(("quant", "floor"), [("f16", 0.999), ("q8_0", 0.995)])
def test_xlmr_gguf_vectors_match_sentence_transformers(
    xlmr: dict[str, Path], quant: str, floor: float
) -> None:
    """Measured: f16 min 0.999999 / mean 1.000000, q8_0 min 0.99958 / mean 0.99976."""
    from sentence_transformers import SentenceTransformer

    texts = _texts()
    reference = SentenceTransformer(str(xlmr["source"]), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    gg = Embedder(str(xlmr[quant]), backend="gguf")
    st = Embedder(str(xlmr["source"]), backend="sentence-transformers")
    for embedder in (gg, st):
        cosines = _cosines(embedder, reference, texts)
        assert cosines.min() >= floor, (embedder.backend_name, cosines.min(), cosines.mean())
    # the granite profile applies to both, and both share one model key
    assert (gg.profile.family, gg.profile.pooling) == ("granite-embedding", "cls")
    assert (gg.profile.query_prefix, gg.profile.document_prefix) == ("", "")
    assert gg.profile.context_length == st.profile.context_length == 512
    assert gg.identity.key == st.identity.key
    # the comparison can fail: the texts' vectors differ from one another
    assert float(np.min(reference @ reference.T)) < 0.9


def test_xlmr_token_counts_equal_the_tokenizers(xlmr: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    texts = _texts()
    tokenizer = AutoTokenizer.from_pretrained(str(xlmr["source"]))
    want = [tokenizer(t)["input_ids"] for t in texts]
    assert any(tokenizer.unk_token_id in ids for ids in want)  # held-out characters
    for model, backend in ((xlmr["source"], "sentence-transformers"), (xlmr["f16"], "gguf")):
        counts = Embedder(str(model), backend=backend).embed_documents(texts).token_counts
        assert counts == [len(ids) for ids in want], backend
    llama = Embedder(str(xlmr["f16"]), backend="gguf").backend
    assert [llama._tokenize(t) for t in texts] == want  # type: ignore[attr-defined]


def test_xlmr_truncation_at_the_profiles_context(xlmr: dict[str, Path]) -> None:
    """A text past 512 tokens is cut to its first 512 (closing ``</s>`` kept) on both backends
    with one warning, or refused with truncation='error'."""
    long_text = " ".join(multilingual_sentences())  # 1,886 tokens
    vectors = []
    for model, backend in ((xlmr["source"], "sentence-transformers"), (xlmr["f16"], "gguf")):
        embedder = Embedder(str(model), backend=backend)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = embedder.embed_documents([long_text, "kurz"])
        assert [w.category for w in caught if w.category is TruncationWarning] == [
            TruncationWarning
        ]
        (cut,) = result.truncated
        assert (cut.index, cut.limit) == (0, 512) and cut.tokens > 1000
        vectors.append(result.vectors[0])
        strict = Embedder(str(model), backend=backend, truncation="error")
        with pytest.raises(TextTooLong) as info:
            strict.embed_documents(["kurz", long_text])
        assert (info.value.index, info.value.limit) == (1, 512)
    assert float(vectors[0] @ vectors[1]) >= 0.999


def test_xlmr_from_tokenizer_json_alone(xlmr: dict[str, Path], tmp_path: Path) -> None:
    """The hub's layout without ``sentencepiece.bpe.model``: a normalizer chain (charsmap, then
    runs of spaces to one), on which the converter alone dies with a KeyError, and whose
    space-collapsing it would not record (cosine 0.93 on a text with runs of spaces)."""
    from sentence_transformers import SentenceTransformer

    source = tmp_path / "granite-embedding-278m-multilingual-json"
    shutil.copytree(xlmr["source"], source)
    (source / "sentencepiece.bpe.model").unlink()
    data = json.loads((source / "tokenizer.json").read_text())
    collapse = {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
    data["normalizer"] = {"type": "Sequence", "normalizers": [data["normalizer"], collapse]}
    (source / "tokenizer.json").write_text(json.dumps(data))
    packed = packing.pack(str(source), quantization="f16", output=tmp_path / "json.gguf").path
    assert gguf.read_metadata(packed)["tokenizer.ggml.remove_extra_whitespaces"] is True
    texts = _texts()
    reference = SentenceTransformer(str(source), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    gg = Embedder(str(packed), backend="gguf")
    cosines = _cosines(gg, reference, texts)
    assert cosines.min() >= 0.999, (cosines.min(), int(cosines.argmin()))
    reference_counts = Embedder(str(xlmr["f16"]), backend="gguf").embed_documents(texts)
    assert gg.embed_documents(texts).token_counts == reference_counts.token_counts
    # and without any SentencePiece normalization the converter has nothing to read
    data["normalizer"] = None
    (source / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="needs its SentencePiece normalization"):
        packing.pack(str(source), quantization="f16", output=tmp_path / "none.gguf")
    assert not (tmp_path / "none.gguf").exists()


def test_lokal_eval_and_bench_run_on_the_xlmr_model(xlmr: dict[str, Path], tmp_path: Path) -> None:
    """The paths run on granite multilingual's shapes (XLM-R, CLS pooling, no prompts)."""
    eval_and_bench(str(xlmr["q8_0"]), multilingual_sentences()[:12], tmp_path)


@pytest.fixture(scope="module")
def roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("roberta")
    return build_granite_english(root / "granite-embedding-125m-english-tiny", root / "work")


def test_roberta_with_an_unknown_bpe_vocabulary_is_refused(roberta: Path, tmp_path: Path) -> None:
    """The converter picks llama.cpp's pre-tokenizer by the sha256 of the token ids a fixed
    text gets; a vocabulary trained for the model has a hash it does not know. ``pack`` says so
    before the converter starts; the sentence-transformers backend serves the model."""
    out = tmp_path / "r.gguf"
    proc = _pack_cli(roberta, "f16", out)
    assert proc.returncode != 0
    assert "does not recognise its tokenizer" in proc.stderr, proc.stderr
    assert "backend='sentence-transformers'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    with pytest.raises(ProfileError, match=r"cannot pack granite-embedding-125m-english-tiny"):
        packing.pack(str(roberta), quantization="q8_0", output=out)
    # the converter itself fails on it the same way, and lokal names the reason then too
    with pytest.raises(ProfileError, match="does not recognise its tokenizer"):
        packing._convert(roberta, out, "f16", "granite-embedding-125m-english-tiny")
    st = Embedder(str(roberta), backend="sentence-transformers")
    assert (st.profile.family, st.profile.pooling) == ("granite-embedding", "cls")
    assert st.embed_documents(["hello world"]).vectors.shape == (1, 64)
