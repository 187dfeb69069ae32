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
from typing import Any, Generic, Literal, TypeVar

from lokal import models
from lokal.errors import ProfileError
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

    Subclasses set :attr:`resolved` and the engine settings, and implement
    :meth:`_cache_key` (what makes two loads the same) and :meth:`_load_backend`.
    """

    resolved: ResolvedModel
    #: The profile's context length, if it sets one (tokens).
    _profile_context: int | None = None

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
        raise NotImplementedError

    def _load_backend(self) -> BackendT:
        raise NotImplementedError

    def _download(self) -> ResolvedModel:
        """Bring a hub model to disk and resolve it again (sentence-transformers)."""
        hub_id = self.resolved.hub_id
        assert hub_id is not None
        path = models.download_hub_model(hub_id)
        self.resolved = models.resolve(str(path), models.ST)
        return self.resolved


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
