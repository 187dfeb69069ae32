"""The ONNX Runtime backend: a pack made by ``lokal models pack --format onnx``.

No torch and no transformers at run time: the pack's ``tokenizer.json`` runs in the
``tokenizers`` library, its ``model.onnx`` in ``onnxruntime``. Texts are tokenized uncut (the
counts), cut where too long the way sentence-transformers cuts (the tokenizer's own truncation,
which keeps the closing special tokens), sorted by length and run ``batch_size`` at a time with
the least padding; the last hidden states are pooled by the profile's pooling (mean over the
attention mask, the first token, or the last real token). The embedder normalizes.

The reranker half (:class:`OnnxRerankBackend`) scores pairs the way the sentence-transformers
cross-encoder does: the query cut at a token boundary of its own text, each pair cut on the
document side (``only_second``), raw logits out.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lokal.errors import MissingDependency, ModelLoadError

log = logging.getLogger(__name__)

_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")
#: Most padded tokens in one run. A run's attention scores take rows x heads x width^2 floats:
#: all-MiniLM-L6-v2 on 256-token passages peaked at 739 MB in runs of 32, 253 MB in runs of
#: 512 tokens, which ran as fast (docs/benchmarks.md).
BATCH_TOKENS = 512


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def position_limit(pack_dir: Path) -> int:
    """The most tokens the pack's model takes: sentence-transformers' ``max_seq_length`` (else
    the tokenizer's ``model_max_length``), never more than its position table holds."""
    config = _read(pack_dir / "config.json")
    positions = int(config.get("max_position_embeddings") or 512)
    if config.get("model_type") in _ROBERTA_LIKE:
        positions -= int(config.get("pad_token_id", 1)) + 1
    limit = _read(pack_dir / "sentence_bert_config.json").get("max_seq_length")
    if not isinstance(limit, int) or limit <= 0:
        limit = _read(pack_dir / "tokenizer_config.json").get("model_max_length")
    if not isinstance(limit, int) or not 0 < limit < 1_000_000:
        limit = positions
    return min(limit, positions)


class _Session:
    """What both ONNX backends share: the pack's manifest, tokenizer and ONNX Runtime session."""

    name = "onnx"
    #: One session runs on all its threads: calls are serialized by lokal's callers.
    contexts = 1

    def __init__(self, pack_dir: str | Path, *, n_threads: int | None, batch_size: int) -> None:
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependency(extra="onnx", feature="the ONNX backend") from exc
        from lokal.backends.llama_cpp import default_threads
        from lokal.packing_onnx import MODEL_FILE, read_manifest

        self.pack_dir = Path(pack_dir)
        self.manifest = read_manifest(self.pack_dir)
        self.quantization = str(self.manifest.get("quantization", "fp32"))
        self.inputs = [str(n) for n in self.manifest.get("inputs", [])]
        self.batch_size = batch_size
        try:
            tokenizer = Tokenizer.from_file(str(self.pack_dir / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises a bare Exception for a damaged file
            msg = f"{self.pack_dir}: cannot read tokenizer.json: {exc}"
            raise ModelLoadError(msg) from exc
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self._cutters: dict[tuple[int, str], Any] = {}
        self._lock = threading.Lock()
        self.pad_id = int(_read(self.pack_dir / "config.json").get("pad_token_id") or 0)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = n_threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # no arena: it keeps the largest run's buffers for the life of the session
        options.enable_cpu_mem_arena = False
        try:
            self._session = onnxruntime.InferenceSession(
                str(self.pack_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            msg = f"cannot load ONNX model {self.pack_dir / MODEL_FILE}: {exc}"
            raise ModelLoadError(msg) from exc
        self.max_tokens = position_limit(self.pack_dir)
        log.info("loaded ONNX pack %s (%s)", self.pack_dir, self.quantization)

    def _cutter(self, max_tokens: int, strategy: str = "longest_first") -> Any:
        """A copy of the tokenizer that cuts to ``max_tokens`` (special tokens included)."""
        with self._lock:
            cutter = self._cutters.get((max_tokens, strategy))
            if cutter is None:
                from tokenizers import Tokenizer

                cutter = Tokenizer.from_str(self._tokenizer.to_str())
                cutter.enable_truncation(max_tokens, strategy=strategy)
                self._cutters[(max_tokens, strategy)] = cutter
        return cutter

    def _batches(self, encodings: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """Consecutive runs of at most ``batch_size`` encodings and :data:`BATCH_TOKENS` padded
        tokens (the encodings come sorted by length: the last one is the widest)."""
        start = 0
        while start < len(encodings):
            end = min(start + self.batch_size, len(encodings))
            while end - start > 1 and (end - start) * len(encodings[end - 1].ids) > BATCH_TOKENS:
                end -= 1
            yield encodings[start:end]
            start = end

    def _run(self, encodings: Sequence[Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The model's output for each batch of encodings (in order), with its attention mask."""
        for batch in self._batches(encodings):
            width = max(len(e.ids) for e in batch)
            ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            types = np.zeros((len(batch), width), dtype=np.int64)
            for row, enc in enumerate(batch):
                n = len(enc.ids)
                ids[row, :n] = enc.ids
                mask[row, :n] = 1
                types[row, :n] = enc.type_ids
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            result = self._session.run(None, {n: feed[n] for n in self.inputs})[0]
            yield np.asarray(result, dtype=np.float32), mask


class OnnxBackend(_Session):
    """An embedding pack: pooled last hidden states."""

    def __init__(
        self, pack_dir: str | Path, *, n_threads: int | None = None, batch_size: int = 32
    ) -> None:
        super().__init__(pack_dir, n_threads=n_threads, batch_size=batch_size)
        profile = self.manifest.get("profile") or {}
        self.pooling = str(profile.get("pooling") or "mean")
        self.dimension = int(profile.get("dimension") or 0)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str], max_tokens: int) -> tuple[np.ndarray, list[int]]:
        texts = list(texts)
        encodings = self._tokenizer.encode_batch(texts)
        counts = [len(e.ids) for e in encodings]
        limit = min(max_tokens, self.max_tokens)
        long = [i for i, n in enumerate(counts) if n > limit]
        if long:
            cut = self._cutter(limit).encode_batch([texts[i] for i in long])
            for i, enc in zip(long, cut, strict=True):
                encodings[i] = enc
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        vectors = np.zeros((len(texts), self.dimension or 1), dtype=np.float32)
        done = 0
        for states, mask in self._run([encodings[i] for i in order]):
            pooled = self._pool(states, mask)
            if vectors.shape[1] != pooled.shape[1]:
                vectors = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            rows = order[done : done + len(pooled)]
            vectors[rows] = pooled
            done += len(pooled)
        return vectors, counts

    def _pool(self, states: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.pooling == "cls":
            return np.asarray(states[:, 0])
        if self.pooling == "lasttoken":
            last = mask.sum(axis=1) - 1
            return np.asarray(states[np.arange(len(states)), last])
        weights = mask[..., None].astype(np.float32)
        return np.asarray((states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9))


class OnnxRerankBackend(_Session):
    """A cross-encoder pack: one logit per (query, document) pair."""

    def __init__(
        self, pack_dir: str | Path, *, n_threads: int | None = None, batch_size: int = 32
    ) -> None:
        super().__init__(pack_dir, n_threads=n_threads, batch_size=batch_size)
        pair = self._tokenizer.encode("a", "b")
        single = self._tokenizer.encode("a", add_special_tokens=False).ids
        self.special_tokens = len(pair.ids) - 2 * len(single)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, without special tokens, uncut."""
        encoded = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encoded]

    def _cut_text(self, text: str, n_tokens: int) -> str:
        enc = self._tokenizer.encode(text, add_special_tokens=False)
        return text[: enc.offsets[n_tokens - 1][1]] if n_tokens <= len(enc.ids) else text

    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        max_query_tokens: int,
        max_tokens: int,
        max_document_tokens: int | None = None,
    ) -> np.ndarray:
        """Raw logits, one per document, cut as the sentence-transformers cross-encoder
        backend cuts them."""
        if not documents:
            return np.zeros(0, dtype=np.float32)
        if self.count_tokens([query])[0] > max_query_tokens:
            query = self._cut_text(query, max_query_tokens)
        docs = list(documents)
        if max_document_tokens is not None:
            counts = self.count_tokens(docs)
            docs = [
                self._cut_text(d, max_document_tokens) if n > max_document_tokens else d
                for d, n in zip(docs, counts, strict=True)
            ]
        limit = min(max_tokens, self.max_tokens)
        encodings = self._cutter(limit, "only_second").encode_batch([(query, d) for d in docs])
        order = sorted(range(len(docs)), key=lambda i: len(encodings[i].ids))
        scores = np.zeros(len(docs), dtype=np.float32)
        done = 0
        for logits, _mask in self._run([encodings[i] for i in order]):
            rows = order[done : done + len(logits)]
            scores[rows] = logits.reshape(len(logits), -1)[:, 0]
            done += len(logits)
        return scores
