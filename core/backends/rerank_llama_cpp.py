"""The llama.cpp reranker backend: GGUF cross-encoders through rank pooling.

llama.cpp scores a pair with ``LLAMA_POOLING_TYPE_RANK``: the classification head runs on the
first token and ``llama_get_embeddings_seq`` returns ``n_cls_out`` floats (raw logits).
llama-cpp-python has no ``rank()``, so this backend builds each pair as ONE token list with the
model's own special tokens, read from the GGUF's vocabulary: ``bos`` if the tokenizer adds it,
the query, ``eos`` if it adds that, ``sep`` if it adds a separator between a pair's texts, the
document, ``eos``. For BERT that is ``[CLS] q [SEP] d [SEP]``, for XLM-R
``<s> q </s></s> d </s>`` (llama.cpp's server builds pairs the same way).

As with embeddings, llama.cpp aborts the process on a sequence longer than ``n_ubatch`` or the
training context, so every pair is tokenized and cut here, on the document side, before
llama.cpp sees it.

Token types. llama.cpp's BERT graph adds token-type row 0 to every token, while a BERT
cross-encoder's tokenizer marks the document as segment B (row 1). Measured on the tests'
cross-encoder built from MiniLM weights (36 pairs, f16): that alone moves logits by up to 0.06
and drops the Spearman correlation with PyTorch from 1.0000 to 0.974 (docs/benchmarks.md).
When the GGUF has two token types and its token table is f32, f16, bf16 or q8_0, this
backend feeds llama.cpp input embeddings instead of token ids — the token's row plus, for segment
B, ``type[1] - type[0]`` (llama.cpp still adds ``type[0]``, the positions and the norm) — which
is exactly what PyTorch computes. Other quantizations fall back to token ids with a warning.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lokal import gguf, profiles
from lokal.backends.llama_cpp import MIN_UBATCH, default_threads
from lokal.errors import MissingDependency, ModelLoadError
from lokal.gguf import TensorInfo, read_tensor_table

log = logging.getLogger(__name__)

LLAMA_POOLING_TYPE_RANK = profiles.RANK_POOLING


class SegmentWarning(UserWarning):
    """A BERT cross-encoder runs on llama.cpp without segment-B token types: scores may differ
    from PyTorch (the ranking usually stays close)."""


# ggml types whose rows numpy decodes here: f32, f16, q8_0 (blocks of 32: f16 scale, 32 int8), bf16
_F32, _F16, _Q8_0, _BF16 = 0, 1, 8, 30
_ROW_BYTES = {_F32: 4, _F16: 2, _BF16: 2}
_Q8_BLOCK, _Q8_BYTES = 32, 34


def _row_bytes(ggml_type: int, n: int) -> int | None:
    if ggml_type in _ROW_BYTES:
        return n * _ROW_BYTES[ggml_type]
    if ggml_type == _Q8_0 and n % _Q8_BLOCK == 0:
        return n // _Q8_BLOCK * _Q8_BYTES
    return None


def _decode_rows(raw: np.ndarray, ggml_type: int, n: int) -> np.ndarray:
    """float32 rows from their stored bytes (``raw``: uint8, one row per line)."""
    if ggml_type == _F32:
        return raw.view(np.float32).reshape(-1, n)
    if ggml_type == _F16:
        return raw.view(np.float16).astype(np.float32).reshape(-1, n)
    if ggml_type == _BF16:
        bits = raw.view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(-1, n)
    blocks = raw.reshape(raw.shape[0], -1, _Q8_BYTES)
    scale = np.ascontiguousarray(blocks[:, :, :2]).view(np.float16).astype(np.float32)
    quants = blocks[:, :, 2:].view(np.int8).astype(np.float32)
    return (quants * scale).reshape(-1, n)


class SegmentInputs:
    """Input embeddings with BERT token types, read straight from the GGUF (memory-mapped:
    only the rows of tokens in use are touched)."""

    def __init__(self, path: Path, tensors: dict[str, TensorInfo]) -> None:
        tok = tensors["token_embd.weight"]
        types = tensors["token_types.weight"]
        self.n_embd, n_vocab = tok.dims[0], tok.dims[1]
        row = _row_bytes(tok.ggml_type, self.n_embd)
        type_row = _row_bytes(types.ggml_type, self.n_embd)
        if row is None or type_row is None:
            msg = f"token table type {tok.ggml_type} is not decoded by lokal"
            raise ValueError(msg)
        self._type = tok.ggml_type
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        self._table = mm[tok.offset : tok.offset + n_vocab * row].reshape(n_vocab, row)
        type_rows = np.array(mm[types.offset : types.offset + 2 * type_row]).reshape(2, type_row)
        decoded = _decode_rows(type_rows, types.ggml_type, self.n_embd)
        self._segment_b = (decoded[1] - decoded[0]).astype(np.float32)

    def embed(self, tokens: list[int], n_first: int) -> np.ndarray:
        """Rows for ``tokens``; those from ``n_first`` on (segment B) get the type difference."""
        rows = _decode_rows(np.asarray(self._table[tokens]), self._type, self.n_embd)
        rows[n_first:] += self._segment_b
        return rows


class LlamaCppRerankBackend:
    name = "gguf"

    def __init__(
        self,
        path: str | Path,
        *,
        context_length: int | None = None,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        max_sequences: int = 64,
        token_types: bool = True,
    ) -> None:
        """``token_types=False`` scores BERT pairs as llama.cpp does on its own (every token in
        segment A): for measuring what the emulation changes, not for use."""
        try:
            import llama_cpp
        except ImportError as exc:
            raise MissingDependency(extra="gguf", feature="the GGUF reranker backend") from exc
        from lokal.models import gguf_quantization

        path = Path(path)
        meta = gguf.read_metadata(path)  # a malformed file fails here, clearly, not inside C
        tensors = read_tensor_table(path)
        arch = str(meta.get("general.architecture", ""))
        self._check_head(path, arch, meta, tensors)
        n_ctx_train = int(meta.get(f"{arch}.context_length") or 512)
        self.max_tokens = min(context_length or n_ctx_train, n_ctx_train)
        n_batch = max(self.max_tokens, min(MIN_UBATCH, n_ctx_train))
        threads = n_threads or default_threads()
        self._llama_cpp = llama_cpp
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                embedding=True,
                pooling_type=LLAMA_POOLING_TYPE_RANK,
                # the GGUF's own default, so llama.cpp does not log a mismatch
                kv_overrides={f"{arch}.pooling_type": LLAMA_POOLING_TYPE_RANK},
                n_ctx=n_batch,
                n_batch=n_batch,
                n_ubatch=n_batch,
                flash_attn=True,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=n_gpu_layers,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            msg = f"llama.cpp could not load {path}: {exc}"
            raise ModelLoadError(msg) from exc
        n_labels = int(llama_cpp.llama_model_n_cls_out(self._llm._model.model))
        if n_labels != 1:
            msg = (
                f"{path} has {n_labels} classifier outputs; lokal's rerankers score with one "
                "relevance logit (a cross-encoder with num_labels=1)"
            )
            raise ModelLoadError(msg)
        self.n_batch = n_batch
        self.max_sequences = max(1, min(max_sequences, self._llm.context_params.n_seq_max))
        self.quantization = gguf_quantization(meta)
        self._lock = threading.Lock()
        self._pair_tokens()
        if self.max_tokens <= self.special_tokens + 2:
            msg = f"{path}: context of {self.max_tokens} tokens is too small to score a pair"
            raise ModelLoadError(msg)
        self._segments = self._segment_inputs(path, tensors) if token_types else None
        self._embd_batch: Any = None
        if self._segments is not None:
            from llama_cpp._internals import LlamaBatch

            self._embd_batch = LlamaBatch(
                n_tokens=n_batch, embd=self._segments.n_embd, n_seq_max=1, verbose=False
            )
        log.info(
            "loaded GGUF reranker %s (%s, context %d, n_batch %d, %d threads, segment B %s)",
            path,
            self.quantization,
            self.max_tokens,
            n_batch,
            threads,
            "emulated" if self._segments is not None else "not needed or not available",
        )

    # ---- setup ---------------------------------------------------------------------------------

    @staticmethod
    def _check_head(
        path: Path, arch: str, meta: dict[str, Any], tensors: dict[str, TensorInfo]
    ) -> None:
        if "cls.output.weight" not in tensors and "cls.weight" not in tensors:
            msg = (
                f"{path} has no classification head (no cls.* tensors): it is not a reranker. "
                "Embedding models go to lokal.Embedder."
            )
            raise ModelLoadError(msg)
        if (
            arch == "bert"
            and "cls.output.weight" in tensors
            and "cls.weight" not in tensors
            and meta.get("tokenizer.ggml.model") == "bert"
        ):
            # llama.cpp's converter drops BertForSequenceClassification's pooler: its classifier
            # would read the raw [CLS] state. Measured: Spearman -0.29 against PyTorch on the
            # tests' 36 pairs (docs/benchmarks.md).
            msg = (
                f"{path} is a BERT cross-encoder converted without its pooler layer (llama.cpp's "
                "converter drops it), so its scores would be wrong. Pack the original weights "
                "with `lokal models pack`, which keeps it."
            )
            raise ModelLoadError(msg)

    def _pair_tokens(self) -> None:
        """The pair's special tokens, from the GGUF's vocabulary and its add_* flags."""
        lc = self._llama_cpp
        vocab = lc.llama_model_get_vocab(self._llm._model.model)

        def token(tok: int) -> list[int]:
            return [tok] if tok >= 0 else []

        eos = lc.llama_vocab_eos(vocab)
        if eos < 0:
            eos = lc.llama_vocab_sep(vocab)
        add_eos = token(eos) if lc.llama_vocab_get_add_eos(vocab) else []
        self._prefix = token(lc.llama_vocab_bos(vocab)) if lc.llama_vocab_get_add_bos(vocab) else []
        self._middle = add_eos + (
            token(lc.llama_vocab_sep(vocab)) if lc.llama_vocab_get_add_sep(vocab) else []
        )
        self._suffix = list(add_eos)
        self.special_tokens = len(self._prefix) + len(self._middle) + len(self._suffix)

    @staticmethod
    def _segment_inputs(path: Path, tensors: dict[str, TensorInfo]) -> SegmentInputs | None:
        types = tensors.get("token_types.weight")
        if types is None or len(types.dims) < 2 or types.dims[1] < 2:
            return None  # one token type (XLM-R, RoBERTa): llama.cpp computes what PyTorch does
        try:
            return SegmentInputs(path, tensors)
        except (ValueError, OSError) as exc:
            warnings.warn(
                f"{path.name}: a BERT cross-encoder whose token table lokal cannot read ({exc}); "
                "llama.cpp will score the document as segment A, so scores may differ from "
                "PyTorch. Pack it as f16 or q8_0 for exact segments.",
                SegmentWarning,
                stacklevel=4,
            )
            return None

    # ---- scoring -------------------------------------------------------------------------------

    def _tokenize(self, text: str) -> list[int]:
        raw = text.encode("utf-8", errors="replace")
        return self._llm.tokenize(raw, add_bos=False, special=False)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, without special tokens, uncut."""
        with self._lock:
            return [len(self._tokenize(t)) for t in texts]

    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        max_query_tokens: int,
        max_tokens: int,
        max_document_tokens: int | None = None,
    ) -> np.ndarray:
        """Raw logits (first label), one per document; cut as the sentence-transformers backend
        cuts: the query to ``max_query_tokens``, each document to its first
        ``max_document_tokens`` (when given), then each document so the pair fits."""
        limit = min(max_tokens, self.max_tokens)
        out = np.empty(len(documents), dtype=np.float32)
        with self._lock:
            # the query never takes the whole context: at least one document token fits
            keep = min(max_query_tokens, limit - self.special_tokens - 1)
            head = self._prefix + self._tokenize(query)[:keep] + self._middle
            room = limit - len(head) - len(self._suffix)
            if max_document_tokens is not None:
                room = min(room, max_document_tokens)
            pairs = [(head + self._tokenize(d)[:room] + self._suffix, len(head)) for d in documents]
            group: list[int] = []
            group_tokens = 0
            for i, (tokens, _) in enumerate(pairs):
                if group and (
                    group_tokens + len(tokens) > self.n_batch or len(group) >= self.max_sequences
                ):
                    self._decode(group, pairs, out)
                    group, group_tokens = [], 0
                group.append(i)
                group_tokens += len(tokens)
            if group:
                self._decode(group, pairs, out)
        return out

    def _decode(
        self, group: list[int], pairs: list[tuple[list[int], int]], out: np.ndarray
    ) -> None:
        llm: Any = self._llm
        ctx = llm._ctx
        if self._segments is None:
            batch = llm._batch
            batch.reset()
            for seq_id, i in enumerate(group):
                batch.add_sequence(pairs[i][0], seq_id, True)
        else:
            batch = self._embd_batch
            self._fill_embeddings(batch, [pairs[i] for i in group])
        ctx.kv_cache_clear()
        try:
            ctx.decode(batch)
        except RuntimeError as exc:
            msg = f"llama.cpp failed to score a batch of {len(group)} pairs: {exc}"
            raise ModelLoadError(msg) from exc
        get = self._llama_cpp.llama_get_embeddings_seq
        for seq_id, i in enumerate(group):
            ptr = get(ctx.ctx, seq_id)
            if not ptr:  # no pooled output: the context was not made for rank pooling
                msg = f"llama.cpp returned no score for sequence {seq_id} (is this a reranker?)"
                raise ModelLoadError(msg)
            out[i] = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float))[0]
        batch.reset()

    def _fill_embeddings(self, batch: Any, pairs: list[tuple[list[int], int]]) -> None:
        """Put the pairs into ``batch`` as input embeddings (token row + segment)."""
        assert self._segments is not None
        rows = np.concatenate([self._segments.embed(tokens, n_a) for tokens, n_a in pairs])
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        b = batch.batch
        n = rows.shape[0]
        ctypes.memmove(b.embd, rows.ctypes.data, rows.nbytes)
        j = 0
        for seq_id, (tokens, _) in enumerate(pairs):
            for pos in range(len(tokens)):
                b.pos[j] = pos
                b.n_seq_id[j] = 1
                b.seq_id[j][0] = seq_id
                b.logits[j] = 1
                j += 1
        b.n_tokens = n
