"""Causal-LM rerankers scored by their "yes"/"no" next-token logits (Qwen3-Reranker), on
transformers (the ``st`` extra).

Qwen3-Reranker is not a cross-encoder: it reads one prompt (a system message, then
``<Instruct>: {task}\\n<Query>: {query}\\n<Document>: {document}`` as the user's turn, then an
empty thinking block as the assistant's) and the relevance is the probability of "yes" against
"no" as the next token. This backend follows the model card's recipe: the user turn tokenized
as one text (cut at its end, the document's side, when too long), the chat scaffolding's tokens
around it, left padding, the last position's logits. It returns ``logit("yes") - logit("no")``:
the profile's sigmoid of it is the card's ``softmax([no, yes])[yes]``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lokal.errors import MissingDependency, ModelLoadError, ModelNotFound

log = logging.getLogger(__name__)

#: The task a query is judged for when none is given (the card's default).
DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def user_turn(query: str, document: str, task: str = DEFAULT_TASK) -> str:
    return f"<Instruct>: {task}\n<Query>: {query}\n<Document>: {document}"


class CausalRerankBackend:
    name = "sentence-transformers"
    quantization = "f32"

    def __init__(
        self, location: str | Path, *, local: bool, device: str | None = None, batch_size: int = 8
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise MissingDependency(extra="st", feature="causal-LM rerankers") from exc
        loader: Any = AutoModelForCausalLM
        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(
                str(location), padding_side="left", local_files_only=local
            )
            model: Any = loader.from_pretrained(str(location), local_files_only=local)
        except OSError as exc:
            msg = f"cannot load causal-LM reranker from {location}: {exc}"
            raise (ModelNotFound(msg) if not local else ModelLoadError(msg)) from exc
        model.eval()  # no dropout
        if device:
            model.to(device)
        self._tokenizer, self._model = tokenizer, model
        self._torch = torch
        self.device = str(self._model.device)
        self.batch_size = batch_size
        vocab = self._tokenizer.get_vocab()
        missing = [t for t in ("yes", "no") if t not in vocab]
        if missing:
            msg = f"{location}: no {' or '.join(missing)!r} token, so not a yes/no reranker"
            raise ModelLoadError(msg)
        self._yes, self._no = vocab["yes"], vocab["no"]
        self._prefix = self._ids(PREFIX)
        self._suffix = self._ids(SUFFIX)
        #: the prompt's own tokens around a query and a document (approximate at the seams)
        self.special_tokens = (
            len(self._prefix) + len(self._suffix) + len(self._ids(user_turn("", "")))
        )
        limit = getattr(self._tokenizer, "model_max_length", 0)
        positions = getattr(self._model.config, "max_position_embeddings", 0) or 8192
        self.max_tokens = int(min(limit, positions) if 0 < limit < 1_000_000 else positions)
        self._lock = threading.RLock()
        log.info("loaded causal-LM reranker %s on %s", location, self.device)

    def _ids(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, without special tokens, uncut."""
        with self._lock:
            return [len(self._ids(t)) for t in texts]

    def _cut(self, text: str, n_tokens: int) -> str:
        ids = self._ids(text)
        return text if len(ids) <= n_tokens else str(self._tokenizer.decode(ids[:n_tokens]))

    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        max_query_tokens: int,
        max_tokens: int,
        max_document_tokens: int | None = None,
    ) -> np.ndarray:
        """``logit("yes") - logit("no")`` per document, the card's recipe; every prompt cut at
        the end of its user turn (the document's side) to fit ``max_tokens``."""
        if not documents:
            return np.zeros(0, dtype=np.float32)
        limit = min(max_tokens, self.max_tokens)
        room = limit - len(self._prefix) - len(self._suffix)
        out = np.empty(len(documents), dtype=np.float32)
        with self._lock:
            query = self._cut(query, max_query_tokens)
            if max_document_tokens is not None:
                documents = [self._cut(d, max_document_tokens) for d in documents]
            prompts = [
                self._prefix + self._ids(user_turn(query, d))[:room] + self._suffix
                for d in documents
            ]
            for start in range(0, len(prompts), self.batch_size):
                batch = prompts[start : start + self.batch_size]
                out[start : start + len(batch)] = self._forward(batch)
        return out

    def _forward(self, prompts: list[list[int]]) -> np.ndarray:
        padded = self._tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt")
        with self._torch.inference_mode():
            logits = self._model(**padded.to(self._model.device)).logits[:, -1, :]
        diff = logits[:, self._yes] - logits[:, self._no]
        return np.asarray(diff.float().cpu().numpy(), dtype=np.float32)
