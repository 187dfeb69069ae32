"""lokal: local text embeddings and reranking for retrieval, with no text leaving the machine.

``import lokal`` is light: models, torch and llama.cpp load on first use.

>>> from lokal import Embedder
>>> Embedder().embed_documents(["local text stays local"]).vectors.shape
(1, 384)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lokal.errors import (
    IntegrityError,
    LokalError,
    MissingDependency,
    ModelLoadError,
    ModelMismatch,
    ModelNotFound,
    ProfileError,
    TextTooLong,
    UnknownPrefix,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from lokal.embedder import Embedder, EmbedResult, Truncated, TruncationWarning
    from lokal.identity import ModelIdentity
    from lokal.profiles import Profile
    from lokal.reranker import Ranked, Reranker
    from lokal.retrieval import Retrieved, open_recorded, retrieve

_LAZY = {
    "Embedder": "lokal.embedder",
    "EmbedResult": "lokal.embedder",
    "Truncated": "lokal.embedder",
    "TruncationWarning": "lokal.embedder",
    "ModelIdentity": "lokal.identity",
    "Profile": "lokal.profiles",
    "Reranker": "lokal.reranker",
    "Ranked": "lokal.reranker",
    "Retrieved": "lokal.retrieval",
    "open_recorded": "lokal.retrieval",
    "retrieve": "lokal.retrieval",
}

__all__ = [
    "EmbedResult",
    "Embedder",
    "IntegrityError",
    "LokalError",
    "MissingDependency",
    "ModelIdentity",
    "ModelLoadError",
    "ModelMismatch",
    "ModelNotFound",
    "Profile",
    "ProfileError",
    "Ranked",
    "Reranker",
    "Retrieved",
    "TextTooLong",
    "Truncated",
    "TruncationWarning",
    "UnknownPrefix",
    "open_recorded",
    "retrieve",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'lokal' has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib

    return getattr(importlib.import_module(module), name)
