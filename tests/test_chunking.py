"""Chunk properties on real text with the real tokenizer."""

from __future__ import annotations

import itertools

import pytest

from lokal import Embedder
from lokal.chunking import Chunker

from .conftest import _TOPICS


@pytest.fixture(scope="module")
def chunker(gguf_embedder: Embedder) -> Chunker:
    return Chunker(
        gguf_embedder.count_tokens,
        gguf_embedder.context_length,
        prefix="passage: ",
        chunk_tokens=120,
        overlap=24,
    )


TEXTS = {
    "reference": "\n\n".join(_TOPICS[k] for k in sorted(_TOPICS)[:40]),
    "cjk": (
        "東京は日本の首都です。人口は約一千四百万人です。" * 150
        + "\n\n"
        + "这是一个没有空格的很长的中文句子" * 120
    ),
    "no separators": "x" * 5000 + "🚀" * 300,
    "markdown": "# Title\n\nIntro line.\n\n## Part A\n\n"
    + "word " * 400
    + "\n\n## Part B\n\nShort.\n",
}


@pytest.mark.parametrize("name", list(TEXTS))
def test_chunks_fit_are_exact_and_cite_lines(
    chunker: Chunker, gguf_embedder: Embedder, name: str
) -> None:
    text = TEXTS[name]
    chunks = chunker.chunks(text)
    assert chunks
    counts = gguf_embedder.count_tokens(["passage: " + c.text for c in chunks])
    for c, n in zip(chunks, counts, strict=True):
        assert text[c.char_start : c.char_end] == c.text  # an exact slice of the source
        assert c.line_start == text.count("\n", 0, c.char_start) + 1
        assert c.line_end == c.line_start + c.text.count("\n")
        assert n == c.tokens <= gguf_embedder.context_length  # prefix + chunk fits
        assert c.tokens <= chunker.limit
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    # nothing is lost: every non-space character is in some chunk
    covered = bytearray(len(text))
    for c in chunks:
        covered[c.char_start : c.char_end] = b"\x01" * (c.char_end - c.char_start)
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))


def test_overlap_and_structure(chunker: Chunker, gguf_embedder: Embedder) -> None:
    chunks = chunker.chunks(TEXTS["reference"])
    text = TEXTS["reference"]
    shared = [
        text[b.char_start : a.char_end]
        for a, b in itertools.pairwise(chunks)
        if b.char_start < a.char_end
    ]
    # overlap is made of whole pieces (sentences, lines), up to 24 tokens: a piece longer than
    # that is not repeated, so only some neighbours share text
    assert len(shared) > len(chunks) // 4
    specials = gguf_embedder.count_tokens([""])[0]
    assert max(n - specials for n in gguf_embedder.count_tokens(shared)) <= 24 + 2
    md = chunker.chunks(TEXTS["markdown"])
    assert md[0].text.startswith("# Title")
    assert any(c.text.startswith("## Part B") for c in md)  # split at the heading


def test_no_text_no_chunks(chunker: Chunker) -> None:
    assert chunker.chunks("") == []
    assert chunker.chunks(" \n\t\n ") == []


def test_bad_settings(gguf_embedder: Embedder) -> None:
    with pytest.raises(ValueError, match="overlap"):
        Chunker(gguf_embedder.count_tokens, 256, overlap=300)
    with pytest.raises(ValueError, match="leaves"):
        Chunker(gguf_embedder.count_tokens, 256, prefix="word " * 300)
