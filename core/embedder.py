"""The embedder: a resolved model, its profile, a backend, and the rules that keep them honest.

- Queries and documents take separate paths (:meth:`Embedder.embed_queries`,
  :meth:`Embedder.embed_documents`), each applying its own prefix from the profile.
- Length is never silent: every text is measured with the model's own tokenizer (prefix
  included). Longer than the model's context, it follows ``truncation``: ``"warn"`` cuts it and
  emits one :class:`TruncationWarning` per call; ``"error"`` raises :class:`TextTooLong` before
  anything is embedded. Each call's counts come back in its own :class:`EmbedResult`.
- Exactly one vector per text, float32, normalized unless ``normalize=False``; ``dimensions``
  slices to a Matryoshka size and re-normalizes.
- Models load on first use, once per process: embedders with the same model and engine
  settings share one loaded backend.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lokal import models, profiles
from lokal.backends import Backend
from lokal.errors import ModelNotFound, ProfileError, TextTooLong, UnknownPrefix
from lokal.identity import ModelIdentity
from lokal.loading import (
    TRUNCATION_POLICIES,
    LoadedModel,
    TruncationPolicy,
    check_options,
    clean_texts,
)
from lokal.models import ResolvedModel
from lokal.profiles import Profile

log = logging.getLogger(__name__)

__all__ = [
    "TRUNCATION_POLICIES",
    "EmbedResult",
    "Embedder",
    "Truncated",
    "TruncationPolicy",
    "TruncationWarning",
    "options_for",
    "recorded_embedder",
]


class TruncationWarning(UserWarning):
    """Texts were longer than the model's context and were cut (``truncation="warn"``)."""


@dataclass(frozen=True)
class Truncated:
    """One text that was cut: its position in the call, its length and the limit (tokens)."""

    index: int
    tokens: int
    limit: int


@dataclass(frozen=True)
class EmbedResult:
    """What one call produced: vectors (one row per input text) and its length accounting."""

    vectors: np.ndarray
    #: Tokens per text, prefix and special tokens included, before any cut.
    token_counts: list[int]
    truncated: list[Truncated] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(self.token_counts)

    @property
    def tokens_cut(self) -> int:
        return sum(t.tokens - t.limit for t in self.truncated)

    def tolist(self) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.vectors]


class Embedder(LoadedModel[Backend]):
    """Embeds queries and documents with a local model.

    >>> emb = Embedder()                     # the embedded default, offline
    >>> q = emb.embed_query("how do I reset the pump?")
    >>> docs = emb.embed_documents(["Reset: hold the red button for 5 s."]).vectors

    Args:
        model: ``None`` (the embedded default), a ``.gguf`` path, a sentence-transformers
            directory, a name in lokal's model cache, or a hub id (see :mod:`lokal.models`);
            or a :class:`~lokal.models.ResolvedModel` already resolved.
        backend: ``"auto"``, ``"sentence-transformers"``, ``"gguf"`` or ``"onnx"`` (an ONNX
            pack, ``lokal models pack --format onnx``). ``auto`` is deterministic and says why
            it chose (``repr`` and a log line).
        query_prefix, document_prefix: override the profile's prefixes; ``""`` disables.
        truncation: ``"warn"`` (cut and warn) or ``"error"`` (raise :class:`TextTooLong`).
        normalize: L2-normalize output vectors.
        dimensions: Matryoshka output size; must be one the profile lists unless
            ``force_dimensions=True``.
        batch_size: texts per forward pass (sentence-transformers) or sequences per decode (GGUF).
        device: torch device for sentence-transformers (``"cpu"``, ``"cuda"``, ``"mps"``).
        trust_remote_code: let sentence-transformers run Python code the model ships (its
            config's ``auto_map``; Nomic needs it). Off unless asked; a GGUF runs no code.
        n_gpu_layers: layers to offload to a GPU with llama.cpp (0: CPU only).
        n_threads: CPU threads for llama.cpp and ONNX Runtime (default: the CPUs this process
            may use).
        concurrency: GGUF only: llama.cpp contexts over the one loaded model. With 2, a call
            with several decodes spreads them over both, each on its share of ``n_threads``,
            and calls from different threads run side by side: 1.15-1.25x the throughput on
            ~200-token passages on 2 cores, for ~35 MB more memory (docs/benchmarks.md).
            Ignored by sentence-transformers.
        profile: overrides for any profile field (``context_length``, ``pooling``, ...).
        on_truncate: called with each call's list of :class:`Truncated` records when any.
        allow_unknown_prefixes: embed queries of an unknown model whose card or config asks
            for a query prefix lokal cannot map, without that prefix. By default
            :meth:`embed_query` raises :class:`~lokal.errors.UnknownPrefix` for such a model
            until ``query_prefix`` is set (``""`` for none).
    """

    KIND = "embed"

    def __init__(
        self,
        model: str | ResolvedModel | None = None,
        *,
        backend: str = "auto",
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        truncation: TruncationPolicy = "warn",
        normalize: bool = True,
        dimensions: int | None = None,
        force_dimensions: bool = False,
        batch_size: int = 32,
        device: str | None = None,
        trust_remote_code: bool = False,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        concurrency: int = 1,
        profile: Mapping[str, Any] | None = None,
        on_truncate: Callable[[list[Truncated]], None] | None = None,
        allow_unknown_prefixes: bool = False,
    ) -> None:
        check_options(truncation, batch_size, concurrency)
        super().__init__()
        # a ResolvedModel: a caller that resolved the model already (no second resolve)
        self.resolved: ResolvedModel = (
            model if isinstance(model, ResolvedModel) else models.resolve(model, backend)
        )
        _refuse_reranker(self.resolved)
        overrides = dict(profile or {})
        overrides.update(query_prefix=query_prefix, document_prefix=document_prefix)
        self.profile: Profile = self.resolved.profile.with_overrides(overrides)
        self.truncation: TruncationPolicy = truncation
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = device
        self.trust_remote_code = trust_remote_code
        self.n_gpu_layers = n_gpu_layers
        self.n_threads = n_threads
        self.concurrency = concurrency
        self.on_truncate = on_truncate
        self.allow_unknown_prefixes = allow_unknown_prefixes
        self.dimensions = self.check_dimensions(dimensions, force_dimensions)
        if not self.profile.known:
            log.warning("%s", self.profile.describe())
        ident = self.profile.identification
        for conflict in ident.conflicts if ident else ():
            log.warning("%s: conflicting evidence: %s", self.profile.name, conflict)
        if ident is not None and allow_unknown_prefixes and self._unmapped_query_prefix():
            log.warning(
                "%s: queries are embedded without the prefix its %s asks for (%r), as "
                "allow_unknown_prefixes=True says",
                self.profile.name,
                ident.asked_where,
                ident.asked_prefixes[0],
            )
        log.info(
            "lokal model %s via %s (%s)", self.profile.name, self.backend_name, self.resolved.reason
        )

    # ---- public API --------------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        """Most tokens one text may have, prefix and special tokens included."""
        limit = self.backend.max_tokens
        if self.profile.context_length:
            limit = min(limit, self.profile.context_length)
        return limit

    @property
    def contexts(self) -> int:
        """Model calls that can run side by side: the GGUF backend's llama.cpp contexts
        (``concurrency``), 1 for sentence-transformers (loads the model)."""
        return self.backend.contexts

    @property
    def dimension(self) -> int:
        if self.dimensions:
            return self.dimensions
        return self.profile.dimension or self.backend.dimension

    def embed_query(self, text: str) -> np.ndarray:
        """One query's vector (query prefix applied)."""
        vector: np.ndarray = self.embed_queries([text]).vectors[0]
        return vector

    def embed_queries(self, texts: Sequence[str]) -> EmbedResult:
        """Queries' vectors, with the profile's query prefix applied.

        Raises :class:`~lokal.errors.UnknownPrefix` for an unknown model whose files ask for a
        query prefix lokal cannot map (see ``allow_unknown_prefixes``)."""
        self._check_query_prefix()
        return self._embed([self.profile.query_prefix + t for t in _texts(texts)])

    def embed_documents(self, texts: Sequence[str]) -> EmbedResult:
        """Documents' vectors, with the profile's document prefix applied."""
        return self._embed([self.profile.document_prefix + t for t in _texts(texts)])

    async def aembed_queries(self, texts: Sequence[str]) -> EmbedResult:
        return await asyncio.to_thread(self.embed_queries, texts)

    async def aembed_documents(self, texts: Sequence[str]) -> EmbedResult:
        return await asyncio.to_thread(self.embed_documents, texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as given (no prefix added), special tokens included."""
        return self.backend.count_tokens(_texts(texts))

    @cached_property
    def identity(self) -> ModelIdentity:
        """What an index records about this embedder (see :mod:`lokal.identity`)."""
        from lokal.packing import source_sha256

        r = self.resolved
        if r.path is None:
            # a hub model: load it so it is on disk, then identify the downloaded files
            self.backend  # noqa: B018
            r = self.resolved
        assert r.path is not None
        return ModelIdentity(
            name=self.profile.name,
            source_sha256=source_sha256(r),
            pooling=self.profile.pooling,
            normalize=self.normalize,
            dimension=self.dimension,
            document_prefix=self.profile.document_prefix,
            backend=r.backend,
            # known without loading the model: the GGUF's header, or full precision for torch
            quantization=r.quantization,
            file_sha256=_file_sha256(r),
            query_prefix=self.profile.query_prefix,
        )

    def __repr__(self) -> str:
        dims = f", dimensions={self.dimensions}" if self.dimensions else ""
        return (
            f"Embedder(model={self.profile.name!r}, backend={self.backend_name!r}"
            f"{dims}, location={self.resolved.location!r}, reason={self.resolved.reason!r})"
        )

    def check_dimensions(self, dimensions: int | None, force: bool = False) -> int | None:
        """The output size to slice to for ``dimensions`` (None: the native size), by this
        model's rule: a Matryoshka size its profile lists, or any size with ``force``.
        Raises :class:`~lokal.errors.ProfileError` for a size outside the model's."""
        if dimensions is None:
            return None
        native = self.profile.dimension
        if dimensions <= 0 or (native is not None and dimensions > native):
            msg = f"dimensions={dimensions} is outside 1..{native} for {self.profile.name}"
            raise ProfileError(msg)
        if native is not None and dimensions == native:
            return None
        if dimensions not in self.profile.matryoshka_dims and not force:
            trained = list(self.profile.matryoshka_dims) or "none"
            msg = (
                f"{self.profile.name} was not trained for {dimensions}-dimensional output "
                f"(Matryoshka dimensions: {trained}); slicing would lose quality. "
                "Pass force_dimensions=True to slice anyway."
            )
            raise ProfileError(msg)
        return dimensions

    # ---- internals ---------------------------------------------------------------------------

    def _unmapped_query_prefix(self) -> bool:
        """An unknown model (no family matched) whose files ask for a query prefix, none
        mapped from its config, and none set by the caller."""
        ident = self.profile.identification
        return not (
            ident is None
            or not ident.asked_prefixes
            or ident.family is not None
            or self.profile.query_prefix
            or "query_prefix" in self.profile.overridden
        )

    def _check_query_prefix(self) -> None:
        if self.allow_unknown_prefixes or not self._unmapped_query_prefix():
            return
        ident = self.profile.identification
        assert ident is not None
        raise UnknownPrefix(self.profile.name, ident.asked_prefixes, ident.asked_where)

    def _gguf_key(self) -> tuple[Any, ...]:
        return (self.concurrency,)

    def _gguf_backend(self, path: Path) -> Backend:
        from lokal.backends.llama_cpp import LlamaCppBackend

        options = self._llama_options(self.profile.context_length)
        return LlamaCppBackend(path, contexts=self.concurrency, **options)

    def _torch_backend(self, path: Path) -> Backend:
        from lokal.backends.sentence_transformers import SentenceTransformersBackend

        return SentenceTransformersBackend(
            path,
            local=True,
            device=self.device,
            batch_size=self.batch_size,
            trust_remote_code=self.trust_remote_code,
        )

    def _onnx_backend(self, path: Path) -> Backend:
        from lokal.backends.onnx import OnnxBackend

        return OnnxBackend(path, n_threads=self.n_threads, batch_size=self.batch_size)

    def _downloaded(self, path: Path, hub_id: str) -> None:
        overridden = {k: getattr(self.profile, k) for k in self.profile.overridden}
        self.profile = self.resolved.profile.with_overrides(overridden)

    def _embed(self, texts: list[str]) -> EmbedResult:
        backend = self.backend
        limit = self.context_length
        if self.truncation == "error":
            for i, n in enumerate(backend.count_tokens(texts)):
                if n > limit:
                    raise TextTooLong(i, n, limit)
        if not texts:
            return EmbedResult(np.zeros((0, self.dimension), dtype=np.float32), [])
        raw, counts = backend.embed(texts, limit)
        if raw.shape[0] != len(texts):
            msg = f"backend returned {raw.shape[0]} vectors for {len(texts)} texts"
            raise RuntimeError(msg)
        truncated = [Truncated(i, n, limit) for i, n in enumerate(counts) if n > limit]
        if truncated:
            cut = sum(t.tokens - t.limit for t in truncated)
            warnings.warn(
                f"{len(truncated)} of {len(texts)} texts were longer than {self.profile.name}'s "
                f"context of {limit} tokens and were cut ({cut} tokens dropped). Chunk them, "
                "or pass truncation='error' to refuse.",
                TruncationWarning,
                stacklevel=3,
            )
            if self.on_truncate is not None:
                self.on_truncate(truncated)
        return EmbedResult(self._finish(raw), counts, truncated)

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        if self.dimensions:
            vectors = vectors[:, : self.dimensions]
        if self.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1.0, norms)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _file_sha256(r: ResolvedModel) -> str:
    """The loaded file's sha256: a GGUF's, an ONNX pack's model.onnx (from its manifest, checked
    by ``lokal models verify``), else the source weights'."""
    from lokal.packing import source_sha256

    assert r.path is not None
    if r.backend == models.ONNX:
        from lokal import packing_onnx

        files = packing_onnx.read_manifest(r.path)["files"]
        return str(files[packing_onnx.MODEL_FILE]["sha256"])
    return models.file_sha256(r.path) if r.path.is_file() else source_sha256(r)


def options_for(identity: ModelIdentity, where: str = "the index") -> dict[str, Any]:
    """Embedder options that reproduce the model an index records (``Embedder(**options)``):
    the same backend and file (a GGUF of the recorded quantization in lokal's model cache, or
    the model by name), prefixes, normalization and dimension.

    Resolution is local-only (no download, with or without ``HF_HUB_OFFLINE``). Raises
    :class:`~lokal.errors.ModelNotFound` saying how to bring the model to this machine.
    """
    return _recorded(identity, where)[0]


def recorded_embedder(identity: ModelIdentity, where: str = "the index") -> Embedder:
    """The Embedder of :func:`options_for`, with the model resolved once."""
    options, resolved = _recorded(identity, where)
    options["model"] = resolved
    return Embedder(**options)


def _recorded(identity: ModelIdentity, where: str) -> tuple[dict[str, Any], ResolvedModel]:
    short = identity.name.rsplit("/", 1)[-1]
    if identity.backend == models.GGUF:
        exact = models.cached_gguf_path(short, identity.quantization)
        model = str(exact) if exact.is_file() else short
        bring = (
            f"make it on a connected machine with `"
            f"{models.bring_command(identity.name, identity.quantization)}` (a file pulled with "
            f"`lokal models pull` is pulled again) and copy the .gguf and its .json manifest "
            f"into {models.models_dir()}"
        )
    elif identity.backend == models.ONNX:
        from lokal import packing_onnx

        exact = packing_onnx.cached_path(short, identity.quantization)
        model = str(exact) if packing_onnx.is_pack(exact) else short
        bring = (
            f"make it on a connected machine with `lokal models pack {identity.name} --format "
            f"onnx --quantize {identity.quantization}` and copy the directory into "
            f"{models.models_dir()}"
        )
    elif identity.backend == models.ST:
        model = identity.name
        bring = (
            f"a reader never downloads it. On a connected machine, download "
            f"'{identity.name}' into the Hugging Face cache (any sentence-transformers load "
            f"does) or make a GGUF (`{models.bring_command(identity.name)}`), and copy the cache "
            f"or the .gguf and its .json manifest (into {models.models_dir()}) to this machine; or "
            f"name the model yourself (Embedder('{identity.name}')) to allow a download"
        )
    else:
        msg = (
            f"{where} was written with {identity.describe()}, which lokal cannot load; pass "
            "that model as embedding= (LangChain) or embed_model= (LlamaIndex)"
        )
        raise ModelNotFound(msg)
    options: dict[str, Any] = {
        "model": model,
        "backend": identity.backend,
        "query_prefix": identity.query_prefix,
        "document_prefix": identity.document_prefix,
        "normalize": identity.normalize,
    }
    try:
        # Local only: a reader of an existing index never touches the network unasked (the
        # Embedder built from these options resolves the same local files again).
        resolved = models.resolve(model, identity.backend, local_only=True)
    except ModelNotFound as exc:
        msg = f"{where} was written with {identity.describe()}, not on this machine: {bring}"
        raise ModelNotFound(msg) from exc
    if resolved.profile.dimension not in (None, identity.dimension):
        options.update(dimensions=identity.dimension, force_dimensions=True)
    return options, resolved


def _refuse_reranker(resolved: ResolvedModel) -> None:
    """A reranker is not an embedding model: sentence-transformers would mean-pool a
    cross-encoder's states into meaningless vectors, and llama.cpp returns no vectors from a
    GGUF reranker. Refuse either by name before anything loads."""
    if profiles.model_kind(resolved) == profiles.RERANKER:
        msg = (
            f"{resolved.path} is a reranker (a cross-encoder), not an embedding model: score "
            "with lokal.Reranker (or `lokal search --rerank`), and embed with an embedding model"
        )
        raise ProfileError(msg)


def _texts(texts: Sequence[str]) -> list[str]:
    """Validate and clean a batch (lokal's one policy: :func:`lokal.loading.clean_texts`)."""
    if isinstance(texts, str):
        msg = "pass a list of texts, not a single string (use embed_query for one query)"
        raise TypeError(msg)
    return clean_texts(texts)
