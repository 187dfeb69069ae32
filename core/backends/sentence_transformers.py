"""The sentence-transformers (PyTorch) backend."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lokal.errors import MissingDependency, ModelLoadError, ModelNotFound
from lokal.loading import load_error

log = logging.getLogger(__name__)


class SentenceTransformersBackend:
    """``SentenceTransformer.encode`` on texts whose prompt lokal applied (the profile's prefix,
    taken from the model's ``prompts``): the model adds none of its own."""

    name = "sentence-transformers"
    quantization = "f32"
    #: PyTorch runs one call on all its threads: two calls would fight for them.
    contexts = 1

    def __init__(
        self,
        location: str | Path,
        *,
        local: bool,
        device: str | None = None,
        batch_size: int = 32,
        trust_remote_code: bool = False,
    ) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependency(
                extra="st", feature="the sentence-transformers backend"
            ) from exc
        try:
            self._model = SentenceTransformer(
                str(location),
                device=device,
                local_files_only=local,
                trust_remote_code=trust_remote_code,
            )
        except OSError as exc:
            msg = f"cannot load sentence-transformers model from {location}: {exc}"
            raise (ModelNotFound(msg) if not local else ModelLoadError(msg)) from exc
        except (ValueError, RuntimeError, KeyError) as exc:
            error = load_error("Embedder", location, exc, trust_remote_code)
            raise error from exc
        self._tokenizer: Any = self._model.tokenizer
        # One lock for the model and its tokenizer: HF fast tokenizers are not re-entrant
        # ("Already borrowed") and max_seq_length is model state.
        self._lock = threading.RLock()
        self.batch_size = batch_size
        self.device = str(self._model.device)
        self.dimension = int(self._model.get_embedding_dimension() or 0)
        # The limit the model itself cuts at (its max_seq_length), not the position table.
        limit = self._model.max_seq_length or getattr(self._tokenizer, "model_max_length", 0)
        self.max_tokens = int(limit) if limit and limit < 1_000_000 else 512
        log.info("loaded sentence-transformers model %s on %s", location, self.device)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        with self._lock:
            encoded = self._tokenizer(
                list(texts),
                add_special_tokens=True,
                truncation=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str], max_tokens: int) -> tuple[np.ndarray, list[int]]:
        counts = self.count_tokens(texts)
        with self._lock:
            previous = self._model.max_seq_length
            self._model.max_seq_length = min(max_tokens, self.max_tokens)
            try:
                vectors = self._model.encode(
                    list(texts),
                    # the texts carry the profile's prefix already: never a second prompt from
                    # the model's default_prompt_name (prompt=None would apply it)
                    prompt="",
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            finally:
                self._model.max_seq_length = previous
        return np.asarray(vectors, dtype=np.float32), counts
