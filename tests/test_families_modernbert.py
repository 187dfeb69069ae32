"""ModernBERT embedders (issue 17): granite-embedding-english-r2 / small-english-r2.

A small random ``ModernBertModel`` (global and sliding-window attention layers) with a
byte-level BPE trained here (tests/families.py) is packed by ``lokal models pack`` in a
subprocess, and its GGUF vectors are compared with ``SentenceTransformer.encode`` on real
sentences longer than its attention window. Two converter gaps are covered by lokal's pack:
the vocabulary is known by no hash (llama.cpp's ``modern-bert`` pre-tokenizer is pinned and the
file's token ids checked), and the converter writes ModernBERT's ``norm_eps`` under a key
llama.cpp's modern-bert does not read (the file would not load).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lokal import Embedder, architectures, gguf

from .conftest import paragraphs
from .families import build_granite_r2, multilingual_sentences

pytestmark = pytest.mark.slow  # model packing, subprocesses

LOKAL = str(Path(sys.executable).parent / "lokal")
NAME = "granite-embedding-small-english-r2-tiny"


@pytest.fixture(scope="module")
def modernbert(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny granite r2 model and its f16 / q8_0 GGUFs, packed by the CLI."""
    root = tmp_path_factory.mktemp("modernbert")
    out = {"source": build_granite_r2(root / NAME, root / "work")}
    for quant in ("f16", "q8_0"):
        dst = root / f"{NAME}.{quant}.gguf"
        cmd = [LOKAL, "models", "pack", str(out["source"]), "-q", quant, "-o", str(dst), "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr
        out[quant] = Path(json.loads(proc.stdout)["path"])
    return out


def _texts() -> list[str]:
    """Paragraphs past the 32-token attention window (up to ~300 tokens), the multilingual
    sentences, and the pack-time tokenizer check's texts."""
    return [*paragraphs()[:20], *multilingual_sentences(), *architectures.CHECK_TEXTS]


@pytest.mark.parametrize(("quant", "floor"), [("f16", 0.9999), ("q8_0", 0.995)])
def test_modernbert_gguf_vectors_match_sentence_transformers(
    modernbert: dict[str, Path], quant: str, floor: float
) -> None:
    """Measured: f16 min 0.9999976 / mean 0.9999993, q8_0 min 0.99868 / mean 0.99959."""
    from sentence_transformers import SentenceTransformer

    texts = _texts()
    reference = SentenceTransformer(str(modernbert["source"]), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    gg = Embedder(str(modernbert[quant]), backend="gguf")
    result = gg.embed_documents(texts)
    assert max(result.token_counts) > 4 * 32  # texts span several attention windows
    cosines = (result.vectors * reference).sum(axis=1)
    assert cosines.min() >= floor, (cosines.min(), texts[int(cosines.argmin())])
    meta = gguf.read_metadata(modernbert[quant])
    assert meta["general.architecture"] == "modern-bert"
    assert meta["tokenizer.ggml.pre"] == meta["lokal.pinned_pre_tokenizer"] == "modern-bert"
    assert meta["modern-bert.attention.sliding_window"] == 32
    assert (gg.profile.family, gg.profile.pooling) == ("granite-embedding", "cls")
    st = Embedder(str(modernbert["source"]), backend="sentence-transformers")
    assert gg.identity.key == st.identity.key
    assert float(np.min(reference @ reference.T)) < 0.9  # the comparison can fail


def test_modernbert_token_ids_equal_the_tokenizers(modernbert: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    # the converter's gap is real in the source: ModernBERT's config has norm_eps alone
    config = json.loads((modernbert["source"] / "config.json").read_text())
    assert "norm_eps" in config and "layer_norm_eps" not in config
    texts = _texts()
    tokenizer = AutoTokenizer.from_pretrained(str(modernbert["source"]))
    llama = Embedder(str(modernbert["f16"]), backend="gguf").backend
    assert [llama._tokenize(t) for t in texts] == [  # type: ignore[attr-defined]
        tokenizer(t)["input_ids"] for t in texts
    ]
