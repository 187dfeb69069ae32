"""XLM-RoBERTa and RoBERTa embedders (issue 17): granite-embedding-278m/107m-multilingual and
granite-embedding-125m-english.

A small random ``XLMRobertaModel`` with a SentencePiece unigram vocabulary trained here
(tests/families.py) is packed by ``lokal models pack`` in a subprocess, and its GGUF vectors
are compared with ``SentenceTransformer.encode`` on real sentences in 14 languages; a copy that
ships only ``tokenizer.json`` (the hub's layout for some XLM-R models) packs as well. A
``RobertaModel`` with a byte-level BPE vocabulary trained here (one llama.cpp's converter knows
by no hash) packs with llama.cpp's ``roberta-bpe`` pre-tokenizer pinned, checked token by token;
a tokenizer llama.cpp would split otherwise, or of another shape, is refused and leaves no file.
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

from lokal import (
    Embedder,
    ProfileError,
    TextTooLong,
    TruncationWarning,
    architectures,
    gguf,
    packing,
)

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


ROBERTA = "granite-embedding-125m-english-tiny"


@pytest.fixture(scope="module")
def roberta(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny granite English model (a byte-level BPE vocabulary the converter does not know
    by hash) and its f16 / q8_0 GGUFs, packed by the CLI."""
    root = tmp_path_factory.mktemp("roberta")
    out = {"source": build_granite_english(root / ROBERTA, root / "work")}
    for quant in ("f16", "q8_0"):
        proc = _pack_cli(out["source"], quant, root / f"{ROBERTA}.{quant}.gguf")
        assert proc.returncode == 0, proc.stderr
        out[quant] = Path(json.loads(proc.stdout)["path"])
    return out


@pytest.mark.parametrize(("quant", "floor"), [("f16", 0.9999), ("q8_0", 0.995)])
def test_roberta_bpe_gguf_vectors_match_sentence_transformers(
    roberta: dict[str, Path], quant: str, floor: float
) -> None:
    """Packed with llama.cpp's roberta-bpe pre-tokenizer pinned (the converter knows the
    vocabulary by no hash). Measured: f16 min 0.9999993, q8_0 min 0.99952."""
    from sentence_transformers import SentenceTransformer

    texts = _texts()
    reference = SentenceTransformer(str(roberta["source"]), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    gg = Embedder(str(roberta[quant]), backend="gguf")
    cosines = _cosines(gg, reference, texts)
    assert cosines.min() >= floor, (cosines.min(), texts[int(cosines.argmin())])
    meta = gguf.read_metadata(roberta[quant])
    assert meta["tokenizer.ggml.pre"] == meta["lokal.pinned_pre_tokenizer"] == "roberta-bpe"
    assert (gg.profile.family, gg.profile.pooling) == ("granite-embedding", "cls")
    st = Embedder(str(roberta["source"]), backend="sentence-transformers")
    assert gg.identity.key == st.identity.key
    assert float(np.min(reference @ reference.T)) < 0.9  # the comparison can fail


def test_roberta_bpe_token_ids_equal_the_tokenizers(roberta: dict[str, Path]) -> None:
    """The multilingual sentences and the pack-time check's own texts split alike."""
    from transformers import AutoTokenizer

    texts = [*_texts(), *architectures.CHECK_TEXTS]
    tokenizer = AutoTokenizer.from_pretrained(str(roberta["source"]))
    llama = Embedder(str(roberta["f16"]), backend="gguf").backend
    assert [llama._tokenize(t) for t in texts] == [  # type: ignore[attr-defined]
        tokenizer(t)["input_ids"] for t in texts
    ]
    architectures.verify_tokenization(roberta["f16"], roberta["source"], ROBERTA, texts)


def _variant(
    source: Path, out: Path, *, tokenizer: dict[str, object], config: dict[str, object]
) -> Path:
    """A copy of ``source`` whose tokenizer.json and tokenizer_config.json are updated."""
    shutil.copytree(source, out)
    for file, changes in (("tokenizer.json", tokenizer), ("tokenizer_config.json", config)):
        data = json.loads((out / file).read_text())
        (out / file).write_text(json.dumps({**data, **changes}))
    return out


def test_roberta_bpe_that_llama_cpp_splits_otherwise_is_refused(
    roberta: dict[str, Path], tmp_path: Path
) -> None:
    """A tokenizer of the right shape that adds a space before the text (add_prefix_space, as
    some RoBERTa configs ask) converts, and the check of its token ids refuses the file: the
    error names the first differing text, and no file or manifest is left."""
    source = _variant(
        roberta["source"], tmp_path / "prefixed", tokenizer={}, config={"add_prefix_space": True}
    )
    out = tmp_path / "prefixed.gguf"
    proc = _pack_cli(source, "f16", out)
    assert proc.returncode == 1, proc.stderr
    assert "ProfileError: cannot pack prefixed as a GGUF: llama.cpp's tokenizer" in proc.stderr
    assert repr(architectures.CHECK_TEXTS[0]) in proc.stderr  # the first text that differs
    assert "nothing was written" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.glob("prefixed.gguf*")) == []
    assert [p.name for p in tmp_path.iterdir()] == ["prefixed"]  # no temporary left either


def test_roberta_without_tokenizer_json(roberta: dict[str, Path], tmp_path: Path) -> None:
    """vocab.json and merges.txt alone (the slow tokenizer's files): the converter alone
    would read the byte-level BPE as BERT's WordPiece (nearly every token unknown); lokal
    converts from a copy with the tokenizer.json the source's tokenizer makes."""
    source = tmp_path / "slow"
    shutil.copytree(roberta["source"], source)
    merges = json.loads((source / "tokenizer.json").read_text())["model"]["merges"]
    lines = ["#version: 0.2", *(" ".join(pair) for pair in merges)]
    (source / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (source / "tokenizer.json").unlink()
    packed = packing.pack(str(source), quantization="f16", output=tmp_path / "slow.gguf").path
    assert gguf.read_metadata(packed)["tokenizer.ggml.model"] == "gpt2"
    assert not (source / "tokenizer.json").exists()  # the source is left as it was
    texts = _texts()
    want = Embedder(str(roberta["f16"]), backend="gguf").embed_documents(texts)
    got = Embedder(str(packed), backend="gguf").embed_documents(texts)
    assert got.token_counts == want.token_counts
    assert float((got.vectors * want.vectors).sum(axis=1).min()) >= 0.99999


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"normalizer": {"type": "Lowercase"}}, r"it has a normalizer \(Lowercase\)"),
        (
            {
                "pre_tokenizer": {
                    "type": "Metaspace",
                    "replacement": "\u2581",
                    "prepend_scheme": "always",
                }
            },
            "its pre-tokenizer is Metaspace, not GPT-2's ByteLevel split",
        ),
    ],
)
def test_roberta_vocabulary_of_another_shape_is_refused(
    roberta: dict[str, Path], tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    """A vocabulary the converter does not know by hash and that is no byte-level BPE of
    RoBERTa's shape is refused before the converter starts, with the reason and what to do
    (tokenizer.json as it stands: the generic tokenizer class, not RoBERTa's, which rebuilds
    its own pipeline)."""
    source = _variant(
        roberta["source"],
        tmp_path / "other",
        tokenizer=change,
        config={"tokenizer_class": "TokenizersBackend"},
    )
    out = tmp_path / "other.gguf"
    with pytest.raises(ProfileError, match=reason) as info:
        packing.pack(str(source), quantization="f16", output=out)
    assert "does not recognise its tokenizer" in str(info.value)
    assert "backend='sentence-transformers'" in str(info.value)
    assert list(tmp_path.glob("other.gguf*")) == []
    # the converter itself fails on such a vocabulary, and lokal names the reason then too
    with pytest.raises(ProfileError, match="does not recognise its tokenizer"):
        packing._convert(source, out, "f16", "other")
    assert not out.exists()
