"""Embedding-model profiles: what you must know to use an embedding model right.

A profile holds a model's query prefix (or instruction), document prefix, context length in
tokens, output dimension, pooling, whether its output is normalized, and the Matryoshka
dimensions it was trained for. Forgetting the prefixes of an E5 or Nomic model, or cutting text
at the wrong length, costs retrieval quality silently; the profile makes it explicit.

Where a profile comes from, highest priority first:

1. the user's overrides (any field);
2. lokal's own metadata in a GGUF packed by ``lokal models pack``;
3. a sentence-transformers directory's config (``prompts``, ``max_seq_length``, pooling,
   ``Normalize``), or a GGUF's standard metadata (context, dimension, pooling);
4. the built-in family table (:mod:`lokal.profiles.families`), matched on the model's name;
5. nothing known: no prefixes, and ``profile.known`` is False and ``profile.source`` says so.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lokal.errors import ProfileError
from lokal.profiles import evidence
from lokal.profiles.evidence import Identification
from lokal.profiles.families import (
    BGE_EN_QUERY,
    E5_INSTRUCT_QUERY,
    FAMILIES,
    GEMMA_DOCUMENT,
    GEMMA_QUERY,
    QWEN3_QUERY,
    FamilyRule,
)
from lokal.profiles.sources import (
    LOKAL_KEY_PREFIX,
    gguf_name,
    guess_name,
    name_candidates,
    read_json,
    read_object,
)

__all__ = [
    "BGE_EN_QUERY",
    "E5_INSTRUCT_QUERY",
    "FAMILIES",
    "FIELDS",
    "GEMMA_DOCUMENT",
    "GEMMA_QUERY",
    "QWEN3_QUERY",
    "FamilyRule",
    "Profile",
    "family_of",
    "from_gguf_metadata",
    "from_name",
    "from_sentence_transformers_dir",
]

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
    #: Which evidence named the model, what disagreed, what its files ask for
    #: (:mod:`lokal.profiles.evidence`); None for a profile from a name alone.
    identification: Identification | None = field(default=None, compare=False)

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
        """The profile's fields (its identification is :meth:`Identification.to_dict`)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.pop("identification")
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
_ST_CONFIG = "config_sentence_transformers.json"


def family_of(name: str) -> str | None:
    """The family the built-in table gives a model id (None: not in the table)."""
    profile = from_name(name)
    return profile.family if profile.known else None


def from_sentence_transformers_dir(path: str | Path, name: str | None = None) -> Profile:
    """Profile of a sentence-transformers model directory, read from its files only.

    No torch import: ``config_sentence_transformers.json`` (``prompts``,
    ``default_prompt_name``), ``sentence_bert_config.json`` (``max_seq_length``),
    ``modules.json`` (pooling, Normalize, Dense) and ``config.json`` (hidden size, name) give
    the fields they hold; the model card, the weights' sha256 or the name identify the model
    (:func:`lokal.profiles.evidence.identify_dir`), whose built-in profile fills the rest.
    ``name``: the name the caller asked by (a hub id); the profile keeps it as its name.
    """
    root = Path(path)
    st_config = read_object(root / _ST_CONFIG)
    bert_config = read_object(root / "sentence_bert_config.json")
    hf_config = read_object(root / "config.json")
    modules = read_json(root / "modules.json")
    modules = modules if isinstance(modules, list) else []

    ident = evidence.identify_dir(
        root,
        family_of,
        name=name,
        names=name_candidates(root, hf_config),
        config=_config_evidence(root, st_config, modules),
    )
    display = name or guess_name(root, hf_config, lambda n: from_name(n).known)
    table = from_name(ident.name)
    profile = table.replace(name=display)
    changes: dict[str, Any] = {}
    sources = []

    prompts_found, ident = _prompts(st_config, table, ident, changes)
    if prompts_found:
        sources.append(f"prompts in {_ST_CONFIG}")
    if isinstance(bert_config.get("max_seq_length"), int):
        changes["context_length"] = bert_config["max_seq_length"]
        sources.append("max_seq_length in sentence_bert_config.json")
    elif bert_config and _tokenizer_limit(root) is not None:
        # sentence-transformers 6 keeps the limit in the tokenizer's config
        changes["context_length"] = _tokenizer_limit(root)
        sources.append("model_max_length in tokenizer_config.json")

    dimension = hf_config.get("hidden_size") or hf_config.get("d_model")
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        module_dir = root / str(module.get("path", ""))
        if kind.endswith("Pooling"):
            pooling_cfg = read_object(module_dir / "config.json")
            mode = _pooling_mode(pooling_cfg)
            if mode:
                changes["pooling"] = mode
                ident = _pooling_conflict(mode, module_dir.name, table, ident)
            dimension = pooling_cfg.get(
                "word_embedding_dimension", pooling_cfg.get("embedding_dimension", dimension)
            )
        elif kind.endswith("Dense"):
            dimension = read_object(module_dir / "config.json").get("out_features", dimension)
        elif kind.endswith("Normalize"):
            normalize = True
    if modules:
        changes["normalize"] = normalize or profile.normalize
        sources.append("modules.json")
    if isinstance(dimension, int):
        changes["dimension"] = dimension
    base = profile.source if profile.known else "no built-in profile"
    if profile.known and ident.decided_by is not None and ident.decided_by.kind != evidence.NAME:
        base += f", identified by {ident.decided_by.where}"
    if sources:
        changes["source"] = f"{', '.join(sources)} at {root}; {base}"
    elif profile.known:
        changes["source"] = base
    return profile.replace(**changes, identification=ident)


def _config_evidence(
    root: Path, st_config: Mapping[str, Any], modules: list[Any]
) -> tuple[evidence.Evidence, ...]:
    """What the sentence-transformers config says, as evidence (it names no model)."""
    found = []
    prompts = st_config.get("prompts")
    if isinstance(prompts, dict) and prompts:
        shown = ", ".join(f"{k} {v!r}" for k, v in prompts.items())
        default = st_config.get("default_prompt_name")
        shown += f"; default_prompt_name {default!r}" if default else ""
        found.append(evidence.Evidence(evidence.CONFIG, f"prompts in {_ST_CONFIG}: {shown}"))
    for module in modules:
        if isinstance(module, dict) and str(module.get("type", "")).endswith("Pooling"):
            where = f"{module.get('path') or '.'}/config.json"
            mode = _pooling_mode(read_object(root / str(module.get("path", "")) / "config.json"))
            found.append(evidence.Evidence(evidence.CONFIG, f"{where}: {mode} pooling"))
    return tuple(found)


def _prompts(
    st_config: Mapping[str, Any],
    table: Profile,
    ident: Identification,
    changes: dict[str, Any],
) -> tuple[bool, Identification]:
    """The config's prompts as prefixes (into ``changes``). A default prompt
    (``default_prompt_name``) is what sentence-transformers puts before every text, so it fills
    a side that has no prompt of its own. Prompts lokal cannot map to either side, with no query
    prompt mapped, are what the config asks for; prompts that disagree with the identified
    family are a conflict."""
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not prompts:
        return False, ident
    default = prompts.get(st_config.get("default_prompt_name") or "")
    query = next((prompts[k] for k in _QUERY_PROMPTS if k in prompts), default)
    doc = next((prompts[k] for k in _DOCUMENT_PROMPTS if k in prompts), default)
    if query is None:
        unmapped = tuple(
            str(v) for k, v in prompts.items() if k not in _DOCUMENT_PROMPTS and v and v != doc
        )
        ident = ident.with_asked(unmapped, f"prompts in {_ST_CONFIG}")
    if query is None and doc is None:
        return False, ident
    changes["query_prefix"] = query or ""
    changes["document_prefix"] = doc or ""
    changes["known"] = True
    if table.known and (table.query_prefix, table.document_prefix) != (query or "", doc or ""):
        decided = ident.decided_by.where if ident.decided_by else "its name"
        ident = ident.with_conflict(
            f"prompts in {_ST_CONFIG} give query prefix {query or ''!r} and document prefix "
            f"{doc or ''!r}, but {decided} names {ident.name} (family {table.family}), whose "
            f"prefixes are {table.query_prefix!r} and {table.document_prefix!r}; the config's "
            "prompts are used"
        )
    return True, ident


def _pooling_conflict(
    mode: str, where: str, table: Profile, ident: Identification
) -> Identification:
    if not table.known or table.pooling in (None, mode):
        return ident
    return ident.with_conflict(
        f"{where}/config.json pools by {mode}, but {ident.name} (family {table.family}) pools "
        f"by {table.pooling}; the config's pooling is used"
    )


def _tokenizer_limit(root: Path) -> int | None:
    limit = read_object(root / "tokenizer_config.json").get("model_max_length")
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


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
# "lasttoken" as sentence-transformers names it, so a GGUF and its source agree on the model key.
_GGUF_POOLING = {0: "none", 1: "mean", 2: "cls", 3: "lasttoken", 4: "rank"}


def from_gguf_metadata(metadata: Mapping[str, Any], fallback_name: str) -> Profile:
    """Profile of a GGUF model from its metadata (see :mod:`lokal.gguf`): lokal's own record
    (``lokal.profile``, ``lokal.evidence``) when lokal packed it, so the file alone is enough;
    else the evidence its standard metadata and file name give, and its context, dimension and
    pooling."""
    arch = str(metadata.get("general.architecture", ""))
    name = gguf_name(metadata, fallback_name)
    ident = evidence.identify_gguf(metadata, fallback_name, family_of)
    profile = from_name(ident.name).replace(name=name)
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
    return profile.replace(**changes, identification=ident)
