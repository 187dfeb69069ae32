"""What a model is: an embedding model or a reranker (a cross-encoder), and its profile.

The one place lokal decides. Every caller (:class:`lokal.Embedder` refusing a reranker,
:class:`lokal.Reranker` refusing an embedding model, the packer, ``lokal models info``) asks
:func:`model_kind` and reads the files only through here:

- a GGUF is a ``"reranker"`` when lokal's packer recorded ``lokal.kind = reranker``, or
  llama.cpp's converter recorded rank pooling or the classifier's labels; an ``"embedding"``
  model when lokal recorded an embedding profile or a pooling type is set; else ``"unknown"``
  (the backend checks for a classification head on load);
- a model directory is a ``"reranker"`` when its ``config.json`` names a
  ``*ForSequenceClassification`` architecture and it has no sentence-transformers Pooling
  module; an ``"embedding"`` model when it names no such architecture; ``"unknown"`` when it is
  both (a classifier with a Pooling module: either class may load it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lokal.profiles.reranking import (
    RANK_POOLING,
    RerankerProfile,
    reranker_from_dir,
    reranker_from_gguf_metadata,
    reranker_from_name,
)
from lokal.profiles.sources import LOKAL_KEY_PREFIX, guess_name, read_json, read_object

if TYPE_CHECKING:
    from lokal.models import ResolvedModel

ModelKind = Literal["embedding", "reranker", "unknown"]
EMBEDDING: ModelKind = "embedding"
RERANKER: ModelKind = "reranker"
UNKNOWN: ModelKind = "unknown"


def is_classifier_dir(path: str | Path) -> bool:
    """Does the directory hold a sequence-classification model (a cross-encoder)?"""
    archs = read_object(Path(path) / "config.json").get("architectures") or []
    return any(str(a).endswith("ForSequenceClassification") for a in archs)


def is_cross_encoder_dir(path: str | Path) -> bool:
    """A classifier directory that is not also a sentence-transformers embedding model (one with
    a Pooling module). sentence-transformers would load a cross-encoder as an embedder without a
    word, mean-pooling its states into vectors that mean nothing; lokal's Embedder refuses it."""
    if not is_classifier_dir(path):
        return False
    modules = read_json(Path(path) / "modules.json")
    if not isinstance(modules, list):
        return True
    return not any(
        isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling") for m in modules
    )


def is_reranker_gguf(metadata: Mapping[str, Any]) -> bool:
    """Is this GGUF a reranker (a classification head for rank pooling), not an embedding model?
    lokal's packer records ``lokal.kind``; llama.cpp's converter records the classifier's labels
    or the rank pooling type."""
    arch = str(metadata.get("general.architecture", ""))
    return (
        metadata.get(LOKAL_KEY_PREFIX + "kind") == "reranker"
        or metadata.get(f"{arch}.pooling_type") == RANK_POOLING
        or f"{arch}.classifier.output_labels" in metadata
    )


def gguf_kind(metadata: Mapping[str, Any]) -> ModelKind:
    """What a GGUF is, from its metadata."""
    if is_reranker_gguf(metadata):
        return RERANKER
    arch = metadata.get("general.architecture")
    if LOKAL_KEY_PREFIX + "profile" in metadata or metadata.get(f"{arch}.pooling_type") is not None:
        return EMBEDDING
    return UNKNOWN


def is_causal_reranker_dir(path: str | Path) -> bool:
    """A causal LM that a reranker family scores by its next-token logits (Qwen3-Reranker,
    mxbai-rerank-v2): its config names a ``*ForCausalLM`` and its name a causal-LM reranker
    family. Not an embedding model, though it has no classification head."""
    hf = read_object(Path(path) / "config.json")
    archs = [str(a) for a in hf.get("architectures") or []]
    if not any(a.endswith("ForCausalLM") for a in archs):
        return False
    name = guess_name(Path(path), hf, lambda n: reranker_from_name(n).known)
    return reranker_from_name(name).scoring != "cross-encoder"


def directory_kind(path: str | Path) -> ModelKind:
    """What a model directory is, from its config files."""
    if not is_classifier_dir(path):
        return RERANKER if is_causal_reranker_dir(path) else EMBEDDING
    return RERANKER if is_cross_encoder_dir(path) else UNKNOWN


def model_kind(resolved: ResolvedModel) -> ModelKind:
    """What a resolved model is; ``"unknown"`` for a hub model not yet downloaded."""
    from lokal import gguf, models

    if resolved.path is None:
        return UNKNOWN
    if resolved.backend == models.GGUF:
        return gguf_kind(gguf.read_metadata(resolved.path))
    return directory_kind(resolved.path)


def reranker_profile(resolved: ResolvedModel) -> RerankerProfile:
    """The reranker profile of a resolved model (call it for a model that is not an
    embedding model): lokal's GGUF record, the directory's configs, else the family table."""
    from lokal import gguf, models

    if resolved.path is None:  # a hub id still to download
        return reranker_from_name(resolved.name)
    if resolved.backend == models.GGUF:
        meta = gguf.read_metadata(resolved.path)
        return reranker_from_gguf_metadata(meta, resolved.path.name.split(".")[0])
    if resolved.backend == models.ONNX:  # an ONNX pack: the name it was packed as
        return reranker_from_dir(resolved.path, name=resolved.name)
    # the name comes from the directory: a Hugging Face cache path names its hub id
    return reranker_from_dir(resolved.path)
