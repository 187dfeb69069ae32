"""The llama.cpp backend: GGUF embedding models through llama-cpp-python.

llama.cpp aborts the whole process (GGML_ASSERT, SIGABRT — Python cannot catch it) when a
sequence is longer than ``n_ubatch`` or the model's training context, and
``Llama.embed(truncate=True)`` cuts at ``n_batch`` and drops the closing separator. So this
backend tokenizes every text itself, cuts what is too long while keeping the closing special
tokens, and hands llama.cpp token lists that always fit. Short texts are packed several to a
decode (up to ``n_batch`` tokens and ``max_sequences`` sequences), which decides the speed for
queries and titles.

Settings are the ones measured fastest on CPU (MODELS.md): flash attention on,
``n_batch == n_ubatch``, context no larger than the model's training context.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lokal.errors import MissingDependency, ModelLoadError

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)

#: Physical batch size floor: measured fastest for ~200-token passages on 2 cores.
MIN_UBATCH = 256

_SEQUENCES_LOCK = threading.Lock()


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def sequence_slots(max_sequences: int, n_batch: int) -> int:
    """The smallest divisor of ``n_batch`` that is at least ``max_sequences``: llama.cpp
    reserves its graph with the batch split evenly over the sequence slots and aborts the
    process (GGML_ASSERT in build_pooling) when they do not divide it (10 slots of 256 do)."""
    wanted = max(1, max_sequences)
    return next((n for n in range(wanted, n_batch + 1) if n_batch % n == 0), n_batch)


def open_llama(llama_cpp: Any, *, max_sequences: int, **kwargs: Any) -> Llama:
    """``llama_cpp.Llama(embedding=True, **kwargs)`` with room for ``max_sequences`` per decode.

    llama-cpp-python gives every embedding context room for min(n_batch, 256) sequences (what
    ``llama_max_parallel_sequences()`` answers), and llama.cpp keeps state for each: about 26 MB
    more at 256 than at 32 for all-MiniLM-L6-v2, for sequences lokal never packs, in every
    context. Its constructor takes no ``n_seq_max``, so the answer is lowered while it runs.
    """
    low_level: Any = llama_cpp.llama_cpp  # the module llama_cpp.Llama asks
    with _SEQUENCES_LOCK:
        real = low_level.llama_max_parallel_sequences
        slots = sequence_slots(min(max_sequences, real()), kwargs["n_batch"])
        low_level.llama_max_parallel_sequences = lambda: slots
        try:
            llm: Llama = llama_cpp.Llama(embedding=True, **kwargs)
        finally:
            low_level.llama_max_parallel_sequences = real
    return llm


class LlamaCppBackend:
    name = "gguf"

    def __init__(
        self,
        path: str | Path,
        *,
        context_length: int | None = None,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        max_sequences: int = 64,
        contexts: int = 1,
    ) -> None:
        """``contexts`` llama.cpp contexts share the one loaded model. A call with several
        decodes spreads them over the idle contexts, each decoding on its own thread; calls
        from different threads run side by side (``lokal serve``'s model workers). The
        ``n_threads`` are shared out per decode: with k contexts decoding, each gets
        ``n_threads // k``. Two single-threaded decodes beat one two-threaded decode on a
        small CPU (llama.cpp's threads meet at a barrier after every operation, and wait there
        whenever one of them is off the CPU), at ~35 MB more memory per context for
        all-MiniLM-L6-v2 (its compute buffer)."""
        threads = n_threads or default_threads()
        if contexts < 1:
            msg = f"contexts must be at least 1, got {contexts}"
            raise ValueError(msg)
        try:
            import llama_cpp
        except ImportError as exc:
            raise MissingDependency(extra="gguf", feature="the GGUF (llama.cpp) backend") from exc
        from lokal.gguf import read_metadata
        from lokal.models import gguf_quantization

        meta = read_metadata(path)  # a malformed file fails here, clearly, not inside C
        arch = str(meta.get("general.architecture", ""))
        n_ctx_train = int(meta.get(f"{arch}.context_length") or 512)
        self.max_tokens = min(context_length or n_ctx_train, n_ctx_train)
        # Every sequence must fit in one ubatch, and n_batch == n_ubatch (else llama.cpp aborts).
        n_batch = max(self.max_tokens, min(MIN_UBATCH, n_ctx_train))
        self._llama_cpp = llama_cpp
        try:
            self._llm = open_llama(
                llama_cpp,
                max_sequences=max_sequences,
                model_path=str(path),
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
        self.n_batch = n_batch
        self.max_sequences = max(1, min(max_sequences, self._llm.context_params.n_seq_max))
        self.dimension = int(self._llm.n_embd())
        self.quantization = gguf_quantization(meta)
        self._lock = threading.Lock()  # the tokenizer's
        self._contexts: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        self._contexts.put((self._llm._ctx, self._llm._batch))
        for _ in range(contexts - 1):
            self._contexts.put(self._new_context())
        self.contexts = contexts
        self.threads = threads
        self._running = 0  # calls decoding now, under self._lock
        # The special tokens the tokenizer adds around a text ([CLS] ... [SEP] for BERT):
        # a cut text keeps its closing ones.
        empty = self._llm.tokenize(b"", add_bos=True, special=False)
        self._suffix = empty[1:] if len(empty) > 1 else []
        if self.max_tokens <= len(empty):
            msg = f"{path}: context of {self.max_tokens} tokens is too small to embed anything"
            raise ModelLoadError(msg)
        log.info(
            "loaded GGUF %s (%s, %d dims, context %d, n_batch %d, %d threads)",
            path,
            self.quantization,
            self.dimension,
            self.max_tokens,
            n_batch,
            threads,
        )

    def _new_context(self) -> tuple[Any, Any]:
        """Another context (and batch) over the same model, closed before the model is."""
        from llama_cpp._internals import LlamaBatch, LlamaContext

        llm: Any = self._llm
        ctx = LlamaContext(model=llm._model, params=llm.context_params, verbose=False)
        llm._stack.enter_context(contextlib.closing(ctx))
        batch = LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=self.n_batch, verbose=False)
        llm._stack.enter_context(contextlib.closing(batch))
        return ctx, batch

    def _tokenize(self, text: str) -> list[int]:
        raw = text.encode("utf-8", errors="replace")
        return self._llm.tokenize(raw, add_bos=True, special=False)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        with self._lock:
            return [len(self._tokenize(t)) for t in texts]

    def _fit(self, tokens: list[int], limit: int) -> list[int]:
        if len(tokens) <= limit:
            return tokens
        keep = limit - len(self._suffix)
        return tokens[:keep] + self._suffix

    def embed(self, texts: Sequence[str], max_tokens: int) -> tuple[np.ndarray, list[int]]:
        limit = min(max_tokens, self.max_tokens)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        counts: list[int] = []
        seqs = []
        with self._lock:
            for t in texts:
                tokens = self._tokenize(t)
                counts.append(len(tokens))
                seqs.append(self._fit(tokens, limit))
        groups = self._groups(seqs)
        contexts = [self._contexts.get()]  # waits while every context is in use
        while len(contexts) < min(self.contexts, len(groups)):  # and any idle ones
            try:
                contexts.append(self._contexts.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            self._running += len(contexts)
        try:
            if len(contexts) == 1:
                for group in groups:
                    self._decode(contexts[0], group, seqs, out)
            else:
                self._decode_in_parallel(contexts, groups, seqs, out)
        finally:
            with self._lock:
                self._running -= len(contexts)
            for context in contexts:
                self._contexts.put(context)
        return out, counts

    def _groups(self, seqs: list[list[int]]) -> list[list[int]]:
        """Consecutive texts packed per decode: up to n_batch tokens and max_sequences texts."""
        groups: list[list[int]] = []
        group: list[int] = []
        group_tokens = 0
        for i, tokens in enumerate(seqs):
            if group and (
                group_tokens + len(tokens) > self.n_batch or len(group) >= self.max_sequences
            ):
                groups.append(group)
                group, group_tokens = [], 0
            group.append(i)
            group_tokens += len(tokens)
        if group:
            groups.append(group)
        return groups

    def _decode_in_parallel(
        self,
        contexts: list[tuple[Any, Any]],
        groups: list[list[int]],
        seqs: list[list[int]],
        out: np.ndarray,
    ) -> None:
        """Context k decodes every k-th group, each on its own thread (this one the first);
        llama.cpp releases the GIL while it decodes, and each writes its own rows of out."""
        errors: list[BaseException] = []

        def work(k: int) -> None:
            try:
                for group in groups[k :: len(contexts)]:
                    self._decode(contexts[k], group, seqs, out)
            except BaseException as exc:  # re-raised in the caller's thread below
                errors.append(exc)

        helpers = [
            threading.Thread(target=work, args=(k,), name=f"lokal-decode-{k}")
            for k in range(1, len(contexts))
        ]
        for t in helpers:
            t.start()
        work(0)
        for t in helpers:
            t.join()
        if errors:
            raise errors[0]

    def _decode(
        self, context: tuple[Any, Any], group: list[int], seqs: list[list[int]], out: np.ndarray
    ) -> None:
        ctx, batch = context
        if self.contexts > 1:  # this call's share of the threads, as of now
            share = max(1, self.threads // max(1, self._running))
            self._llama_cpp.llama_set_n_threads(ctx.ctx, share, share)
        batch.reset()
        for seq_id, i in enumerate(group):
            batch.add_sequence(seqs[i], seq_id, True)
        ctx.kv_cache_clear()
        try:
            ctx.decode(batch)
        except RuntimeError as exc:
            msg = f"llama.cpp failed to decode a batch of {len(group)} texts: {exc}"
            raise ModelLoadError(msg) from exc
        get = self._llama_cpp.llama_get_embeddings_seq
        for seq_id, i in enumerate(group):
            ptr = get(ctx.ctx, seq_id)
            out[i] = np.ctypeslib.as_array(
                ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.dimension,)
            )
        batch.reset()
