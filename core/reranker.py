"""The reranker: a local cross-encoder that reorders retrieved documents for one query.

>>> from lokal import Reranker
>>> rr = Reranker("BAAI/bge-reranker-base")      # or a directory, or a packed .gguf
>>> rr.rank("how do I reset the pump?", ["Hold the red button 5 s.", "Pumps are blue."], top_n=1)
[Ranked(index=0, score=0.97)]

- :meth:`Reranker.rank` returns ``(index, score)`` records, best first, like
  sentence-transformers' ``CrossEncoder.rank``; :meth:`Reranker.score` returns the scores in
  input order with the call's length accounting.
- Two backends behind one small seam (:class:`RerankBackend`): sentence-transformers
  ``CrossEncoder`` and GGUF rerankers through llama.cpp's rank pooling. Both return raw logits;
  the profile's activation (sigmoid or identity) turns them into scores, so the two backends
  give comparable numbers.
- Length is never silent. A query may take at most half the context. A pair longer than the
  context is cut on the DOCUMENT side: ``truncation="warn"`` cuts and emits one
  :class:`~lokal.embedder.TruncationWarning` per call with counts; ``"error"`` raises
  :class:`PairTooLong` naming the document before anything is scored. llama.cpp never sees a
  pair longer than it can take.
- Models load on first use, once per process: rerankers with the same model and engine settings
  share one loaded backend.
- lokal bundles no reranker weights. ``Reranker()`` with no model takes ``$LOKAL_RERANKER``, else
  the one reranker packed in lokal's model cache (:func:`default_model`), and says what to do
  when there is none or several.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lokal import gguf, models, profiles
from lokal.embedder import Truncated, TruncationWarning
from lokal.errors import LokalError, ModelNotFound, ProfileError, TextTooLong
from lokal.loading import LoadedModel, TruncationPolicy, check_options, clean_text, clean_texts
from lokal.models import ResolvedModel
from lokal.profiles import RerankerProfile

log = logging.getLogger(__name__)

#: Names the reranker that ``Reranker()`` and ``lokal search --rerank`` use when none is given.
RERANKER_ENV = "LOKAL_RERANKER"


class ParityWarning(UserWarning):
    """This reranker family may score differently on the GGUF backend than in PyTorch."""


class PairTooLong(TextTooLong):
    """``truncation="error"`` and a (query, document) pair exceeds the reranker's context.

    ``index`` is the document's position in the call, or ``None`` for the query itself (a
    query may take at most half the context).
    """

    def __init__(self, index: int | None, tokens: int, limit: int, model: str) -> None:
        super().__init__(-1 if index is None else index, tokens, limit)
        self.index: int | None = index  # type: ignore[assignment]
        if index is None:
            text = (
                f"the query has {tokens} tokens; {model} allows a query at most {limit} (half "
                "its context, so documents keep the other half). Shorten it, or use "
                "truncation='warn' to cut it."
            )
        else:
            text = (
                f"document {index} with the query is {tokens} tokens (special tokens "
                f"included); {model}'s context is {limit}. Split it into chunks, or use "
                "truncation='warn' to cut the document."
            )
        self.args = (text,)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Ranked:
    """One document's place in a ranking: its position in the input and its score."""

    index: int
    score: float


@dataclass(frozen=True)
class ScoreResult:
    """What one call produced: a score per document (input order) and its length accounting."""

    scores: np.ndarray
    #: Tokens per (query, document) pair, special tokens included, before any cut.
    token_counts: list[int]
    #: Pairs longer than the context, cut on the document side (``index`` is the document's
    #: position; ``tokens`` counts the document after any ``max_document_tokens`` cut).
    truncated: list[Truncated] = field(default_factory=list)
    #: Tokens of the query alone (no special tokens), and whether it was cut.
    query_tokens: int = 0
    query_cut: bool = False

    def ranked(self, top_n: int | None = None) -> list[Ranked]:
        """Records sorted by score, best first (ties keep input order)."""
        order = np.argsort(-self.scores, kind="stable")
        if top_n is not None:
            order = order[:top_n]
        return [Ranked(int(i), float(self.scores[i])) for i in order]


@runtime_checkable
class RerankBackend(Protocol):
    """What the reranker needs from an engine."""

    #: "sentence-transformers", "gguf" or "onnx".
    name: str
    #: The most tokens one pair may have on this engine, special tokens included.
    max_tokens: int
    #: Special tokens one pair adds around its two texts (3 for BERT, 4 for XLM-R).
    special_tokens: int
    quantization: str

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text with the model's tokenizer, without special tokens, uncut."""
        ...

    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        max_query_tokens: int,
        max_tokens: int,
        max_document_tokens: int | None = None,
    ) -> np.ndarray:
        """One raw logit per document. The query keeps at most ``max_query_tokens`` tokens;
        each document its first ``max_document_tokens`` (when given); then each pair is cut on
        the document side to ``max_tokens``. Never more reaches the engine."""
        ...


class Reranker(LoadedModel[RerankBackend]):
    """Scores documents against a query with a local cross-encoder.

    Args:
        model: a cross-encoder directory (Hugging Face / sentence-transformers), a ``.gguf``
            packed with ``lokal models pack``, a name in lokal's model cache, or a hub id
            (resolved offline first, as for embedders: see :mod:`lokal.models`). ``None``:
            :func:`default_model`.
        backend: ``"auto"``, ``"sentence-transformers"`` or ``"gguf"``.
        truncation: ``"warn"`` (cut the document, warn once per call) or ``"error"`` (raise
            :class:`PairTooLong`).
        batch_size: pairs per forward pass (sentence-transformers) or most sequences per
            decode (GGUF).
        device: torch device for sentence-transformers.
        trust_remote_code: let sentence-transformers run Python code the model ships (its
            config's ``auto_map``). Off unless asked; a GGUF runs no code.
        n_gpu_layers, n_threads: llama.cpp settings.
        profile: overrides for ``context_length`` and ``activation`` (``"sigmoid"`` or
            ``"identity"``).
        on_truncate: called with each call's list of :class:`~lokal.embedder.Truncated` records.
    """

    KIND = "rerank"

    def __init__(
        self,
        model: str | None = None,
        *,
        backend: str = "auto",
        truncation: TruncationPolicy = "warn",
        batch_size: int = 32,
        device: str | None = None,
        trust_remote_code: bool = False,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        profile: Mapping[str, Any] | None = None,
        on_truncate: Callable[[list[Truncated]], None] | None = None,
    ) -> None:
        if model is None:
            model = default_model()
        if not model:
            msg = (
                "a reranker needs a model: a cross-encoder directory, a packed .gguf, or a hub "
                "id such as 'BAAI/bge-reranker-base' (lokal bundles no reranker weights)"
            )
            raise ModelNotFound(msg)
        check_options(truncation, batch_size)
        super().__init__()
        self.resolved: ResolvedModel = models.resolve(model, backend)
        self._overrides = dict(profile or {})
        self.profile: RerankerProfile = self._detect_profile().with_overrides(self._overrides)
        self.truncation: TruncationPolicy = truncation
        self.batch_size = batch_size
        self.device = device
        self.trust_remote_code = trust_remote_code
        self.n_gpu_layers = n_gpu_layers
        self.n_threads = n_threads
        self.on_truncate = on_truncate
        if self.profile.scoring == "unsupported":
            msg = f"{self.profile.name} cannot be scored by lokal: {self.profile.gguf_note}"
            raise ProfileError(msg)
        if self.resolved.backend == models.GGUF:
            self._check_gguf_support()
        if not self.profile.known:
            log.info("%s", self.profile.describe())
        log.info(
            "lokal reranker %s via %s (%s)",
            self.profile.name,
            self.backend_name,
            self.resolved.reason,
        )

    # ---- public API --------------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        """Most tokens one (query, document) pair may have, special tokens included."""
        limit = self.backend.max_tokens
        if self.profile.context_length:
            limit = min(limit, self.profile.context_length)
        return limit

    @property
    def max_query_tokens(self) -> int:
        """Most tokens the query may have (half the room a pair leaves for text)."""
        return max(1, (self.context_length - self.backend.special_tokens) // 2)

    def score(
        self, query: str, documents: Sequence[str], *, max_document_tokens: int | None = None
    ) -> ScoreResult:
        """Scores of ``documents`` for ``query``, in input order, with length accounting.

        ``max_document_tokens``: score only each document's first this many tokens (the
        reranker's own tokenizer, no special tokens), as Cohere's ``max_tokens_per_doc``. A cut
        asked for is not a truncation: only pairs still longer than the context are reported.
        """
        if max_document_tokens is not None and max_document_tokens <= 0:
            msg = f"max_document_tokens must be positive, got {max_document_tokens}"
            raise ProfileError(msg)
        query, docs = _inputs(query, documents)
        backend = self.backend
        limit = self.context_length
        if limit < backend.special_tokens + 2:
            msg = (
                f"a context of {limit} tokens leaves no room for a query and a document "
                f"({backend.special_tokens} are special tokens); raise profile['context_length']"
            )
            raise ProfileError(msg)
        q_limit = self.max_query_tokens
        counts = backend.count_tokens([query, *docs])
        q_tokens, d_tokens = counts[0], counts[1:]
        if q_tokens > q_limit and self.truncation == "error":
            raise PairTooLong(None, q_tokens, q_limit, self.profile.name)
        kept_q = min(q_tokens, q_limit)
        pair_counts = [backend.special_tokens + q_tokens + n for n in d_tokens]
        kept_d = [
            n if max_document_tokens is None else min(n, max_document_tokens) for n in d_tokens
        ]
        truncated = [
            Truncated(i, backend.special_tokens + q_tokens + n, limit)
            for i, n in enumerate(kept_d)
            if backend.special_tokens + kept_q + n > limit
        ]
        if truncated and self.truncation == "error":
            first = truncated[0]
            raise PairTooLong(first.index, first.tokens, limit, self.profile.name)
        if docs:
            logits = backend.score(
                query,
                docs,
                max_query_tokens=q_limit,
                max_tokens=limit,
                max_document_tokens=max_document_tokens,
            )
        else:
            logits = np.zeros(0, dtype=np.float32)
        if logits.shape != (len(docs),):
            msg = f"backend returned {logits.shape} scores for {len(docs)} documents"
            raise RuntimeError(msg)
        if truncated or q_tokens > q_limit:
            self._warn(len(docs), truncated, q_tokens, q_limit, limit)
        return ScoreResult(
            self._activate(logits), pair_counts, truncated, q_tokens, q_tokens > q_limit
        )

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        max_document_tokens: int | None = None,
    ) -> list[Ranked]:
        """``(index, score)`` records of ``documents``, best first; the first ``top_n`` only
        when given. ``max_document_tokens`` as in :meth:`score`."""
        if top_n is not None and top_n < 0:
            msg = f"top_n must be >= 0, got {top_n}"
            raise ProfileError(msg)
        return self.score(query, documents, max_document_tokens=max_document_tokens).ranked(top_n)

    async def ascore(
        self, query: str, documents: Sequence[str], *, max_document_tokens: int | None = None
    ) -> ScoreResult:
        return await asyncio.to_thread(
            functools.partial(self.score, max_document_tokens=max_document_tokens),
            query,
            documents,
        )

    async def arank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        max_document_tokens: int | None = None,
    ) -> list[Ranked]:
        return await asyncio.to_thread(
            functools.partial(self.rank, max_document_tokens=max_document_tokens),
            query,
            documents,
            top_n,
        )

    def __repr__(self) -> str:
        return (
            f"Reranker(model={self.profile.name!r}, backend={self.backend_name!r}, "
            f"location={self.resolved.location!r}, reason={self.resolved.reason!r})"
        )

    # ---- internals ---------------------------------------------------------------------------

    def _detect_profile(self) -> RerankerProfile:
        r = self.resolved
        if profiles.model_kind(r) == profiles.EMBEDDING:
            # an embedding model (packed by lokal, pooled mean / cls, or no classifier): refuse
            # it now; a GGUF that says neither is checked for a classification head on load
            msg = (
                f"{r.path} is an embedding model, not a reranker: not a cross-encoder (its "
                "config.json names no *ForSequenceClassification architecture, or its GGUF an "
                "embedding pooling); embedding models go to lokal.Embedder"
            )
            raise ProfileError(msg)
        return profiles.reranker_profile(r)

    def _check_gguf_support(self) -> None:
        p = self.profile
        if p.gguf in ("refuse", "unsupported"):
            msg = f"{p.name} cannot be scored on the GGUF backend: {p.gguf_note}"
            raise ProfileError(msg)
        if p.gguf == "warn":
            warnings.warn(
                f"{p.name} on the GGUF backend may score differently from PyTorch: {p.gguf_note}",
                ParityWarning,
                stacklevel=3,
            )

    def _activate(self, logits: np.ndarray) -> np.ndarray:
        if self.profile.activation == "sigmoid":
            # the tanh form of the logistic function: no overflow for large logits
            x = logits.astype(np.float64)
            return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)
        return logits.astype(np.float32)

    def _warn(
        self, n_docs: int, truncated: list[Truncated], q_tokens: int, q_limit: int, limit: int
    ) -> None:
        parts = []
        if q_tokens > q_limit:
            parts.append(f"the query was cut from {q_tokens} to {q_limit} tokens (half a pair)")
        if truncated:
            cut = sum(t.tokens - t.limit for t in truncated)
            parts.append(
                f"{len(truncated)} of {n_docs} documents with the query were longer than "
                f"{self.profile.name}'s context of {limit} tokens and were cut on the document "
                f"side (about {cut} tokens dropped)"
            )
        warnings.warn(
            "; ".join(parts) + ". Chunk long documents, or pass truncation='error' to refuse.",
            TruncationWarning,
            stacklevel=4,
        )
        if truncated and self.on_truncate is not None:
            self.on_truncate(truncated)

    def _gguf_key(self) -> tuple[Any, ...]:
        return (self.profile.context_length,)

    def _gguf_backend(self, path: Path) -> RerankBackend:
        from lokal.backends.rerank_llama_cpp import LlamaCppRerankBackend

        return LlamaCppRerankBackend(path, **self._llama_options(self.profile.context_length))

    def _torch_backend(self, path: Path) -> RerankBackend:
        if self.profile.scoring == "yes-no":
            from lokal.backends.rerank_causal import CausalRerankBackend

            causal: RerankBackend = CausalRerankBackend(
                path, local=True, device=self.device, batch_size=self.batch_size
            )
            return causal
        from lokal.backends.rerank_st import CrossEncoderBackend

        return CrossEncoderBackend(
            path,
            local=True,
            device=self.device,
            batch_size=self.batch_size,
            trust_remote_code=self.trust_remote_code,
        )

    def _onnx_backend(self, path: Path) -> RerankBackend:
        from lokal.backends.onnx import OnnxRerankBackend

        return OnnxRerankBackend(path, n_threads=self.n_threads, batch_size=self.batch_size)

    def _downloaded(self, path: Path, hub_id: str) -> None:
        self.profile = profiles.reranker_from_dir(path, name=hub_id).with_overrides(self._overrides)


def cached_rerankers() -> list[Path]:
    """Rerankers packed in lokal's model cache (GGUFs whose metadata says ``lokal.kind =
    reranker``), by file name. Reads only the files' headers."""
    cache = models.models_dir()
    found = []
    for path in sorted(cache.glob("*.gguf")) if cache.is_dir() else []:
        try:
            kind = gguf.read_metadata(path).get(profiles.LOKAL_KEY_PREFIX + "kind")
        except (LokalError, OSError) as exc:  # a damaged file is not a candidate
            log.warning("%s: unreadable GGUF, not considered as a reranker: %s", path, exc)
            continue
        if kind == "reranker":
            found.append(path)
    return found


def default_model() -> str:
    """The reranker to use when none is named: ``$LOKAL_RERANKER``, else the only reranker
    packed in lokal's model cache. lokal bundles no reranker weights, so with none (or several)
    this raises :class:`~lokal.errors.ModelNotFound` saying how to name or pack one."""
    named = os.environ.get(RERANKER_ENV, "").strip()
    if named:
        return named
    packed = cached_rerankers()
    if len(packed) == 1:
        return str(packed[0])
    if packed:
        names = ", ".join(p.name for p in packed)
        msg = (
            f"{len(packed)} rerankers in lokal's model cache ({names}): name one, or set "
            f"{RERANKER_ENV}"
        )
        raise ModelNotFound(msg)
    msg = (
        "no reranker named and none packed in lokal's model cache "
        f"({models.models_dir()}); lokal bundles no reranker weights. Name one (a cross-encoder "
        f"directory, a .gguf, or a hub id in the Hugging Face cache), set {RERANKER_ENV}, or "
        f"get one on a connected machine: {models.bring_command('BAAI/bge-reranker-base')}"
    )
    raise ModelNotFound(msg)


def _inputs(query: str, documents: Sequence[str]) -> tuple[str, list[str]]:
    """Validate and clean a query and its documents (lokal's one policy:
    :func:`lokal.loading.clean_texts`)."""
    if not isinstance(query, str):
        msg = f"query is {type(query).__name__}, not str"
        raise TypeError(msg)
    return clean_text(query), clean_texts(documents, "document")
