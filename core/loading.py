"""What :class:`~lokal.embedder.Embedder` and :class:`~lokal.reranker.Reranker` share: checking
their options, loading a model once per process, and cleaning the texts they are given.

- :class:`LoadedModel` loads its backend on first use and shares it: two objects with the same
  model and engine settings (their :meth:`LoadedModel._cache_key`) get the same loaded backend,
  held weakly, so it is freed with its last user.
- :func:`clean_texts` is lokal's one text-cleaning policy. Lone surrogates (undecodable bytes
  smuggled in by ``surrogateescape``) and NUL characters become U+FFFD, so both backends'
  tokenizers see the same valid text: llama.cpp reads a text as a C string, and everything
  after a NUL would be lost without a word. Each call that replaced something logs one warning
  with the count. (``lokal serve`` answers 400 to a NUL in a request instead: an HTTP API
  refuses what it would otherwise change.)
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from lokal import models
from lokal.errors import ModelLoadError, ProfileError
from lokal.models import ResolvedModel

log = logging.getLogger(__name__)

TruncationPolicy = Literal["warn", "error"]
TRUNCATION_POLICIES = ("warn", "error")

BackendT = TypeVar("BackendT")

# Loaded backends shared across embedders and rerankers in this process (weak: freed with the
# last user). Keys start with the kind of model, so an embedder and a reranker never share.
_LOADED: weakref.WeakValueDictionary[tuple[Any, ...], Any] = weakref.WeakValueDictionary()
_LOAD_LOCK = threading.Lock()


def check_options(truncation: str, batch_size: int, concurrency: int = 1) -> None:
    """The argument checks both model classes make before resolving anything."""
    if truncation not in TRUNCATION_POLICIES:
        msg = f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}"
        raise ProfileError(msg)
    if batch_size <= 0:
        msg = f"batch_size must be positive, got {batch_size}"
        raise ProfileError(msg)
    if concurrency <= 0:
        msg = f"concurrency must be positive, got {concurrency}"
        raise ProfileError(msg)


class LoadedModel(Generic[BackendT]):
    """A resolved model whose backend loads on first use, once per process.

    Subclasses set :attr:`resolved` and the engine settings, and say how to build their two
    engines (:meth:`_gguf_backend`, :meth:`_torch_backend`, :meth:`_onnx_backend`) and what
    more makes two GGUF loads different (:meth:`_gguf_key`).
    """

    #: Which cache entries are this class's ("embed", "rerank").
    KIND = ""
    resolved: ResolvedModel
    batch_size: int
    device: str | None
    #: Run the model's own Python code (sentence-transformers only; a GGUF runs none).
    trust_remote_code: bool = False
    n_gpu_layers: int
    n_threads: int | None

    def __init__(self) -> None:
        self._backend: BackendT | None = None
        self._lock = threading.Lock()

    @property
    def backend_name(self) -> str:
        return self.resolved.backend

    @property
    def backend(self) -> BackendT:
        """The loaded engine (loads the model on first access)."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = self._load()
        return self._backend

    def _load(self) -> BackendT:
        key = self._cache_key()
        with _LOAD_LOCK:
            backend: BackendT | None = _LOADED.get(key)
            if backend is None:
                backend = self._load_backend()
                _LOADED[key] = backend
        return backend

    def _cache_key(self) -> tuple[Any, ...]:
        r = self.resolved
        if r.backend == models.GGUF:
            llama = (r.backend, str(r.path), self.n_gpu_layers, self.n_threads, self.batch_size)
            return (self.KIND, *llama, *self._gguf_key())
        if r.backend == models.ONNX:
            return (self.KIND, r.backend, str(r.path), self.n_threads, self.batch_size)
        return (
            self.KIND,
            r.backend,
            r.location,
            self.device,
            self.batch_size,
            self.trust_remote_code,
        )

    def _load_backend(self) -> BackendT:
        r = self.resolved
        if r.backend == models.GGUF:
            assert r.path is not None
            return self._gguf_backend(r.path)
        if r.backend == models.ONNX:
            assert r.path is not None
            return self._onnx_backend(r.path)
        if r.path is None:  # a hub model: bring it to disk, resolve it again
            hub_id = r.hub_id
            assert hub_id is not None
            r = self.resolved = models.resolve(str(models.download_hub_model(hub_id)), models.ST)
            assert r.path is not None
            self._downloaded(r.path, hub_id)
        return self._torch_backend(r.path)

    def _llama_options(self, context_length: int | None) -> dict[str, Any]:
        """The llama.cpp settings both GGUF engines take."""
        return {
            "context_length": context_length,
            "n_gpu_layers": self.n_gpu_layers,
            "n_threads": self.n_threads,
            "max_sequences": self.batch_size,
        }

    def _gguf_key(self) -> tuple[Any, ...]:
        return ()

    def _gguf_backend(self, path: Path) -> BackendT:
        raise NotImplementedError

    def _torch_backend(self, path: Path) -> BackendT:
        raise NotImplementedError

    def _onnx_backend(self, path: Path) -> BackendT:
        raise NotImplementedError

    def _downloaded(self, path: Path, hub_id: str) -> None:
        """Called once a hub model is on disk (at ``path``): refresh what depends on it."""


def load_error(what: str, location: object, exc: Exception, trusted: bool) -> ModelLoadError:
    """The error for a sentence-transformers model that failed to load. A model whose config
    names its own Python code (``auto_map``, e.g. Nomic) is refused by transformers unless the
    caller trusts it: then the message says to pass ``trust_remote_code=True``."""
    text = str(exc)
    if not trusted and "trust_remote_code" in text:
        msg = (
            f"{location} needs trust_remote_code=True: its config names Python code of its own, "
            "which sentence-transformers runs only when asked. Read that code, then pass "
            f"trust_remote_code=True to the {what} (or its LangChain / LlamaIndex adapter) if "
            "you trust it"
        )
        return ModelLoadError(msg)
    return ModelLoadError(f"cannot load {location}: {text}")


def clean_texts(texts: Sequence[str], what: str = "text") -> list[str]:
    """Check a batch (a list of str, not one str) and apply lokal's cleaning policy: lone
    surrogates and NUL characters become U+FFFD; one log warning per call says how many texts
    changed."""
    if isinstance(texts, str):
        msg = f"pass a list of {what}s, not a single string"
        raise TypeError(msg)
    out = list(texts)
    changed = 0
    for i, t in enumerate(out):
        if not isinstance(t, str):
            msg = f"{what} {i} is {type(t).__name__}, not str"
            raise TypeError(msg)
        cleaned = clean_text(t)
        if cleaned is not t:
            out[i] = cleaned
            changed += 1
    if changed:
        log.warning(
            "%d of %d %ss held NUL characters or undecodable bytes; replaced with U+FFFD",
            changed,
            len(out),
            what,
        )
    return out


def clean_text(text: str) -> str:
    """``text`` with lone surrogates and NUL characters replaced by U+FFFD (the same object
    when there was nothing to replace)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text
