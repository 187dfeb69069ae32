"""Model profiles: what lokal must know to use a model right, and what kind of model it is.

- :mod:`lokal.profiles.embedding`: embedding-model profiles (prefixes, context, dimension,
  pooling) and the family table;
- :mod:`lokal.profiles.reranking`: reranker (cross-encoder) profiles and their table;
- :mod:`lokal.profiles.kinds`: the one place that decides whether a model is an embedding
  model or a reranker;
- :mod:`lokal.profiles.sources`: reading config files and names, shared by the others;
- :mod:`lokal.profiles.evidence`: which model a directory or GGUF holds, by its config, its
  model card (:mod:`lokal.profiles.cards`), its weights' sha256
  (:mod:`lokal.profiles.checkpoints`) and its name, with the evidence that decided.

Everything is importable from ``lokal.profiles`` as before the split.
"""

from __future__ import annotations

from lokal.profiles.embedding import (
    BGE_EN_QUERY,
    E5_INSTRUCT_QUERY,
    FAMILIES,
    FIELDS,
    FamilyRule,
    Profile,
    family_of,
    from_gguf_metadata,
    from_name,
    from_sentence_transformers_dir,
)
from lokal.profiles.evidence import Evidence, Identification, identify_dir, identify_gguf
from lokal.profiles.kinds import (
    EMBEDDING,
    RERANKER,
    UNKNOWN,
    ModelKind,
    directory_kind,
    gguf_kind,
    is_classifier_dir,
    is_cross_encoder_dir,
    is_reranker_gguf,
    model_kind,
    reranker_profile,
)
from lokal.profiles.reranking import (
    ACTIVATIONS,
    BERT_PAIR,
    GGUF_CLASSIFIERS,
    GGUF_SUPPORT,
    RANK_POOLING,
    RERANKER_FAMILIES,
    RERANKER_FIELDS,
    XLMR_PAIR,
    RerankerProfile,
    RerankerRule,
    reranker_from_dir,
    reranker_from_gguf_metadata,
    reranker_from_name,
)
from lokal.profiles.sources import (
    HF,
    LOKAL_KEY_PREFIX,
    gguf_name,
    guess_name,
    read_json,
    read_object,
)

__all__ = [
    "ACTIVATIONS",
    "BERT_PAIR",
    "BGE_EN_QUERY",
    "E5_INSTRUCT_QUERY",
    "EMBEDDING",
    "FAMILIES",
    "FIELDS",
    "GGUF_CLASSIFIERS",
    "GGUF_SUPPORT",
    "HF",
    "LOKAL_KEY_PREFIX",
    "RANK_POOLING",
    "RERANKER",
    "RERANKER_FAMILIES",
    "RERANKER_FIELDS",
    "UNKNOWN",
    "XLMR_PAIR",
    "Evidence",
    "FamilyRule",
    "Identification",
    "ModelKind",
    "Profile",
    "RerankerProfile",
    "RerankerRule",
    "directory_kind",
    "family_of",
    "from_gguf_metadata",
    "from_name",
    "from_sentence_transformers_dir",
    "gguf_kind",
    "gguf_name",
    "guess_name",
    "identify_dir",
    "identify_gguf",
    "is_classifier_dir",
    "is_cross_encoder_dir",
    "is_reranker_gguf",
    "model_kind",
    "read_json",
    "read_object",
    "reranker_from_dir",
    "reranker_from_gguf_metadata",
    "reranker_from_name",
    "reranker_profile",
]
