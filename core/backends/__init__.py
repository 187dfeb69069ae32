"""Embedding backends: one small interface, three engines.

:class:`Backend` is the seam. ``sentence_transformers`` runs PyTorch models (any local
directory or hub id); ``llama_cpp`` runs GGUF files through llama-cpp-python; ``onnx`` runs
ONNX packs (``lokal models pack --format onnx``) through ONNX Runtime, with no torch. No module
is imported until a model of its kind is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """What the embedder needs from an engine. Texts arrive with their prefixes applied."""

    #: "sentence-transformers", "gguf" or "onnx".
    name: str
    #: Output dimension of the raw vectors.
    dimension: int
    #: The most tokens (special tokens included) one text may have on this engine.
    max_tokens: int
    #: "f32", "q8_0", ...
    quantization: str
    #: Calls that can run side by side (llama.cpp contexts; 1 for PyTorch).
    contexts: int

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text with the model's own tokenizer, special tokens included, uncut."""
        ...

    def embed(self, texts: Sequence[str], max_tokens: int) -> tuple[np.ndarray, list[int]]:
        """One raw float32 vector per text, each text cut to ``max_tokens`` tokens; also the
        uncut token counts. Never more tokens than the engine can take reach the engine."""
        ...
