"""The sentence-transformers (PyTorch) reranker backend: ``CrossEncoder``.

Pairs are scored by ``CrossEncoder.predict`` itself, so a pair that fits the context scores
exactly as sentence-transformers scores it. What lokal adds is the length policy: a pair that
does not fit is cut on the document side only (the tokenizer's ``only_second`` truncation), and
a query longer than the reranker allows is cut to a token boundary of its own text before it is
paired. Returns raw logits; the reranker applies the profile's activation.
"""

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


class CrossEncoderBackend:
    name = "sentence-transformers"
    quantization = "f32"

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
            import torch
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise MissingDependency(
                extra="st", feature="the sentence-transformers reranker backend"
            ) from exc
        try:
            self._model = CrossEncoder(
                str(location),
                device=device,
                local_files_only=local,
                trust_remote_code=trust_remote_code,
            )
        except OSError as exc:
            msg = f"cannot load cross-encoder from {location}: {exc}"
            raise (ModelNotFound(msg) if not local else ModelLoadError(msg)) from exc
        except (ValueError, RuntimeError, KeyError) as exc:
            error = load_error("Reranker", location, exc, trust_remote_code)
            raise error from exc
        if self._model.num_labels != 1:
            msg = f"{location} has {self._model.num_labels} labels; a reranker has one"
            raise ModelLoadError(msg)
        self._identity = torch.nn.Identity()
        self._tokenizer: Any = self._model.tokenizer
        # HF fast tokenizers are not re-entrant ("Already borrowed"): one lock for model and
        # tokenizer.
        self._lock = threading.RLock()
        self.batch_size = batch_size
        self.device = str(self._model.device)
        self.special_tokens = int(self._tokenizer.num_special_tokens_to_add(pair=True))
        limit = self._model.max_seq_length or getattr(self._tokenizer, "model_max_length", 0)
        self.max_tokens = int(limit) if limit and limit < 1_000_000 else 512
        log.info("loaded cross-encoder %s on %s", location, self.device)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, without special tokens, uncut."""
        with self._lock:
            encoded = self._tokenizer(
                list(texts),
                add_special_tokens=False,
                truncation=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        return [len(ids) for ids in encoded["input_ids"]]

    def _cut_text(self, text: str, n_tokens: int) -> str:
        """The start of ``text`` that holds its first ``n_tokens`` tokens."""
        with self._lock:
            if getattr(self._tokenizer, "is_fast", False):
                enc = self._tokenizer(
                    text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
                )
                return text[: enc["offset_mapping"][n_tokens - 1][1]]
            ids = self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            return str(self._tokenizer.decode(ids[:n_tokens]))

    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        max_query_tokens: int,
        max_tokens: int,
        max_document_tokens: int | None = None,
    ) -> np.ndarray:
        """Raw logits, one per document. The query keeps at most ``max_query_tokens`` tokens,
        each document its first ``max_document_tokens`` (when given), both cut at a token
        boundary of their own text; then each pair is cut on the document side to
        ``max_tokens`` (special tokens included)."""
        if not documents:
            return np.zeros(0, dtype=np.float32)
        if self.count_tokens([query])[0] > max_query_tokens:
            query = self._cut_text(query, max_query_tokens)
        if max_document_tokens is not None:
            counts = self.count_tokens(documents)
            documents = [
                self._cut_text(d, max_document_tokens) if n > max_document_tokens else d
                for d, n in zip(documents, counts, strict=True)
            ]
        limit = min(max_tokens, self.max_tokens)
        with self._lock:
            scores = self._model.predict(
                [(query, d) for d in documents],
                batch_size=self.batch_size,
                show_progress_bar=False,
                activation_fn=self._identity,
                convert_to_numpy=True,
                processing_kwargs={"text": {"truncation": "only_second", "max_length": limit}},
            )
        return np.asarray(scores, dtype=np.float32).reshape(len(documents))
