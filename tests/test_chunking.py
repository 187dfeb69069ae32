"""Chunk properties on real text with the real tokenizer."""

from __future__ import annotations

import base64
import itertools
import random
from collections.abc import Sequence

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


def _work(embedder: Embedder, text: str) -> tuple[int, list]:
    """Characters the chunker hands to the real tokenizer to chunk ``text``, and the chunks."""
    handed = [0]

    def count(texts: Sequence[str]) -> list[int]:
        handed[0] += sum(len(t) for t in texts)
        return embedder.count_tokens(texts)

    chunks = Chunker(count, embedder.context_length, prefix="passage: ").chunks(text)
    return handed[0], chunks


@pytest.mark.parametrize("shape", ["base64 line", "one-line prose", "paragraphs", "cjk"])
def test_chunking_work_is_linear_in_length(gguf_embedder: Embedder, shape: str) -> None:
    # Issue 12: one 5 MB line of base64 took hours (50k chars 5.2 s, 100k 20.8 s: the search
    # for each cut tokenized the whole rest of the line). The work, counted as characters
    # handed to the tokenizer, must grow like the text: 4x the text, about 4x the work.
    prose = " ".join(" ".join(_TOPICS[k] for k in sorted(_TOPICS)).split())
    make = {
        "base64 line": lambda n: base64.b64encode(random.Random(3).randbytes(n)).decode()[:n],
        "one-line prose": lambda n: prose[:n],
        "paragraphs": lambda n: "\n\n".join(_TOPICS[k] for k in sorted(_TOPICS))[:n],
        "cjk": lambda n: ("東京は日本の首都です" * (n // 10 + 1))[:n],
    }[shape]
    small, large = make(10_000), make(40_000)
    work_small, _ = _work(gguf_embedder, small)
    work_large, chunks = _work(gguf_embedder, large)
    assert work_large / work_small < 4 * 1.3, (work_small, work_large)
    assert work_large / len(large) < 12  # a few measures of each chunk, not of the rest
    assert all(large[c.char_start : c.char_end] == c.text for c in chunks)
