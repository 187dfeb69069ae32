"""The embedder on real all-MiniLM-L6-v2 weights, through both backends."""

from __future__ import annotations

import asyncio
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from lokal import Embedder, ProfileError, TextTooLong, TruncationWarning
from lokal.embedder import EmbedResult
from lokal.errors import ModelNotFound


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


def test_one_normalized_vector_per_text(any_embedder: Embedder, sentences: list[str]) -> None:
    result = any_embedder.embed_documents(sentences)
    assert result.vectors.shape == (len(sentences), 384)
    assert result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert len(result.token_counts) == len(sentences)
    assert all(n > 2 for n in result.token_counts)
    assert result.truncated == []
    # distinct texts give distinct vectors
    sims = result.vectors @ result.vectors.T
    assert np.max(sims[~np.eye(len(sentences), dtype=bool)]) < 0.999


def test_empty_input_and_odd_text(any_embedder: Embedder) -> None:
    assert any_embedder.embed_documents([]).vectors.shape == (0, 384)
    odd = [
        "",
        " ",
        "\x00NUL\x00 bytes",
        "surrogate \udcff half",
        "日本語のテキストです。" * 5,
        "emoji 🚀🔥 mix",
    ]
    result = any_embedder.embed_documents(odd)
    assert result.vectors.shape == (len(odd), 384)
    assert np.all(np.isfinite(result.vectors))


def test_nul_does_not_cut_the_text(any_embedder: Embedder) -> None:
    """llama.cpp reads C strings: without care, everything after a NUL would vanish."""
    text = "pump manual\x00 reset by holding the red button for five seconds"
    got = any_embedder.embed_documents([text, text.replace("\x00", "\ufffd"), "pump manual"])
    assert got.token_counts[0] == got.token_counts[1] > got.token_counts[2] + 5
    assert float(got.vectors[0] @ got.vectors[1]) > 0.9999


def test_rejects_non_text(any_embedder: Embedder) -> None:
    with pytest.raises(TypeError, match="not a single string"):
        any_embedder.embed_documents("one string")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text 1 is int"):
        any_embedder.embed_documents(["ok", 3])  # type: ignore[list-item]


def test_batching_and_packing_do_not_change_vectors(
    any_embedder: Embedder, sentences: list[str]
) -> None:
    together = any_embedder.embed_documents(sentences[:12]).vectors
    alone = np.stack([any_embedder.embed_documents([s]).vectors[0] for s in sentences[:12]])
    # Packing changes only kernel shapes (q8_0 matmuls round differently): noise, not leakage
    # between sequences, which would show as cosines far below this.
    assert np.min(_cos(together, alone)) > 0.999


def test_gguf_concurrency_decodes_each_caller_in_its_own_context(
    packed_gguf: Path, sentences: list[str]
) -> None:
    single = Embedder(backend="gguf", concurrency=1)
    ref = single.embed_documents(sentences)
    shared = Embedder(backend="gguf", concurrency=2)
    assert shared.backend is not single.backend
    assert shared.backend.contexts == 2  # type: ignore[attr-defined]
    assert single.backend.contexts == 1  # type: ignore[attr-defined]
    # one call of many decodes, spread over both contexts: the same vectors, in order
    many = sentences * 8
    spread = shared.embed_documents(many)
    assert spread.token_counts == ref.token_counts * 8
    assert np.min(_cos(spread.vectors, np.tile(ref.vectors, (8, 1)))) > 0.999
    results: dict[int, EmbedResult] = {}
    start = threading.Barrier(4)

    def call(k: int) -> None:
        start.wait()
        for _ in range(3):
            results[k] = shared.embed_documents(sentences[k:] + sentences[:k])

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, r in results.items():  # each caller got its own texts' vectors, in its order
        assert r.token_counts == ref.token_counts[k:] + ref.token_counts[:k]
        assert np.min(_cos(r.vectors, np.roll(ref.vectors, -k, axis=0))) > 0.999
    with pytest.raises(ProfileError, match="concurrency"):
        Embedder(backend="gguf", concurrency=0)


@pytest.mark.parametrize("batch_size", [10, 7, 100])
def test_gguf_loads_with_any_batch_size(
    packed_gguf: Path, sentences: list[str], batch_size: int
) -> None:
    # llama.cpp aborts the process if its sequence slots do not divide the batch (10 of 256)
    r = Embedder(backend="gguf", batch_size=batch_size).embed_documents(sentences)
    assert r.vectors.shape == (len(sentences), 384)


def test_gguf_matches_sentence_transformers(
    st_embedder: Embedder, gguf_embedder: Embedder, sentences: list[str]
) -> None:
    a = st_embedder.embed_documents(sentences).vectors
    b = gguf_embedder.embed_documents(sentences).vectors
    cos = _cos(a, b)
    assert cos.min() >= 0.99, f"min cosine {cos.min():.4f}"
    # same token accounting on both backends (same tokenizer)
    assert (
        st_embedder.embed_documents(sentences[:5]).token_counts
        == gguf_embedder.embed_documents(sentences[:5]).token_counts
    )


@pytest.mark.parametrize("backend", ["sentence-transformers", "gguf"])
def test_prefixes_are_applied_per_side(
    backend: str, packed_gguf: object, sentences: list[str]
) -> None:
    prefixed = Embedder(backend=backend, query_prefix="query: ", document_prefix="passage: ")
    plain = Embedder(backend=backend, query_prefix="", document_prefix="")
    text = sentences[3]
    q = prefixed.embed_query(text)
    d = prefixed.embed_documents([text]).vectors[0]
    np.testing.assert_allclose(q, plain.embed_documents(["query: " + text]).vectors[0], atol=1e-5)
    np.testing.assert_allclose(d, plain.embed_documents(["passage: " + text]).vectors[0], atol=1e-5)
    assert _cos(q, d) < 0.9999  # the two sides really differ
    # the prefix counts against the context
    assert (
        prefixed.embed_queries([text]).token_counts[0] > plain.embed_queries([text]).token_counts[0]
    )


def test_long_text_warns_once_and_reports(any_embedder: Embedder, long_text: str) -> None:
    texts = [long_text, "short text", long_text[:20_000]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = any_embedder.embed_documents(texts)
    ours = [w for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "2 of 3 texts" in str(ours[0].message)
    assert result.vectors.shape == (3, 384)
    assert [t.index for t in result.truncated] == [0, 2]
    assert result.token_counts[0] > 5000
    assert all(t.limit == 256 for t in result.truncated)
    assert result.tokens_cut == sum(result.token_counts[i] - 256 for i in (0, 2))
    # a cut text embeds as its first 256 tokens: close to the embedding of its beginning
    head = any_embedder.embed_documents([long_text[:900]]).vectors[0]
    assert _cos(result.vectors[0], head) > 0.9


@pytest.mark.parametrize("backend", ["sentence-transformers", "gguf"])
def test_long_text_error_policy(backend: str, packed_gguf: object, long_text: str) -> None:
    strict = Embedder(backend=backend, truncation="error")
    with pytest.raises(TextTooLong) as info:
        strict.embed_documents(["fine", long_text])
    assert info.value.index == 1
    assert info.value.limit == 256
    assert info.value.tokens > 5000
    assert "text 1 has" in str(info.value)


# warnings.catch_warnings is process-global, not per thread: filter for the whole test instead.
@pytest.mark.filterwarnings("ignore::lokal.embedder.TruncationWarning")
def test_counts_reach_each_caller_under_threads(
    any_embedder: Embedder, long_text: str, sentences: list[str]
) -> None:
    """Concurrent calls each get their own truncation records (no shared state)."""
    results: dict[int, object] = {}
    seen: dict[int, list[int]] = {}

    def work(i: int) -> None:
        texts = [sentences[i]] + ([long_text] if i % 2 else [])
        r = any_embedder.embed_documents(texts)
        results[i] = r
        seen[i] = [t.index for t in r.truncated]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {i: ([1] if i % 2 else []) for i in range(6)}


def test_async_in_a_thread(any_embedder: Embedder, sentences: list[str]) -> None:
    async def main() -> list[np.ndarray]:
        results = await asyncio.gather(*(any_embedder.aembed_documents([s]) for s in sentences[:4]))
        return [r.vectors[0] for r in results]

    got = asyncio.run(main())
    want = any_embedder.embed_documents(sentences[:4]).vectors
    assert np.min(_cos(np.stack(got), want)) > 0.999


def test_dimensions_need_matryoshka_or_force(any_embedder: Embedder, sentences: list[str]) -> None:
    with pytest.raises(ProfileError, match="not trained for 128"):
        Embedder(backend=any_embedder.backend_name, dimensions=128)
    with pytest.raises(ProfileError, match="outside"):
        Embedder(backend=any_embedder.backend_name, dimensions=1000)
    sliced = Embedder(backend=any_embedder.backend_name, dimensions=128, force_dimensions=True)
    v = sliced.embed_documents(sentences[:3]).vectors
    assert v.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    full = any_embedder.embed_documents(sentences[:3]).vectors
    assert np.min(_cos(v, full[:, :128])) > 0.9999


def test_normalize_off_keeps_raw_scale(sentences: list[str], packed_gguf: object) -> None:
    raw = Embedder(backend="gguf", normalize=False).embed_documents(sentences[:3]).vectors
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)


def test_models_load_once_per_process(st_embedder: Embedder) -> None:
    again = Embedder(backend="sentence-transformers")
    assert again.backend is st_embedder.backend


def test_bad_options() -> None:
    with pytest.raises(ProfileError, match="truncation"):
        Embedder(truncation="silently")  # type: ignore[arg-type]
    with pytest.raises(ProfileError, match="backend"):
        Embedder(backend="openvino")
    # a real backend with nothing packed for it says how to make it
    with pytest.raises(ModelNotFound, match="--format onnx"):
        Embedder(backend="onnx")
    with pytest.raises(ProfileError, match="unknown profile field"):
        Embedder(profile={"prefix": "x"})
