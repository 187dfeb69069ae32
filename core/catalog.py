"""A shortlist of embedding models that run well on a CPU, for ``lokal models list``, and
Ollama's names for models (:func:`ollama_hub_id`).

Sizes are parameter counts; ``mteb_retrieval`` is the English MTEB retrieval average (nDCG@10)
as published for the model (model card or the MTEB leaderboard at the model's release). The
numbers are the publishers', not measured here: run ``lokal eval`` on your own data before you
trust any of them. ``None`` means no published English retrieval average was found.
"""

from __future__ import annotations

from dataclasses import dataclass

from lokal.errors import ModelNotFound

HF = "https://huggingface.co/"


@dataclass(frozen=True)
class CatalogEntry:
    hub_id: str
    dimension: int
    context: int
    params_m: float
    licence: str
    mteb_retrieval: float | None
    note: str = ""

    @property
    def source(self) -> str:
        return HF + self.hub_id


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        "sentence-transformers/all-MiniLM-L6-v2",
        384,
        256,
        22.7,
        "apache-2.0",
        41.95,
        "lokal's embedded default: small and fast, no prefixes",
    ),
    CatalogEntry("sentence-transformers/all-mpnet-base-v2", 768, 384, 109, "apache-2.0", 43.81),
    CatalogEntry(
        "BAAI/bge-small-en-v1.5",
        384,
        512,
        33.4,
        "mit",
        51.68,
        "best small English retriever for its size; query instruction",
    ),
    CatalogEntry("BAAI/bge-base-en-v1.5", 768, 512, 109, "mit", 53.25),
    CatalogEntry("BAAI/bge-large-en-v1.5", 1024, 512, 335, "mit", 54.29),
    CatalogEntry("BAAI/bge-m3", 1024, 8192, 568, "mit", None, "multilingual, long context"),
    CatalogEntry("intfloat/e5-small-v2", 384, 512, 33, "mit", 49.04, "'query: '/'passage: '"),
    CatalogEntry("intfloat/e5-base-v2", 768, 512, 110, "mit", 50.29),
    CatalogEntry("intfloat/multilingual-e5-small", 384, 512, 118, "mit", None, "multilingual"),
    CatalogEntry("intfloat/multilingual-e5-base", 768, 512, 278, "mit", None, "multilingual"),
    CatalogEntry("thenlper/gte-small", 384, 512, 33, "mit", 49.46),
    CatalogEntry("thenlper/gte-base", 768, 512, 109, "mit", 51.14),
    CatalogEntry(
        "nomic-ai/nomic-embed-text-v1.5",
        768,
        8192,
        137,
        "apache-2.0",
        None,
        "Matryoshka 768..64, long context, needs trust_remote_code",
    ),
    CatalogEntry("Snowflake/snowflake-arctic-embed-s", 384, 512, 33, "apache-2.0", None),
    CatalogEntry(
        "Snowflake/snowflake-arctic-embed-m-v1.5",
        768,
        512,
        109,
        "apache-2.0",
        None,
        "Matryoshka 768/256",
    ),
    CatalogEntry(
        "mixedbread-ai/mxbai-embed-large-v1",
        1024,
        512,
        335,
        "apache-2.0",
        54.39,
        "Matryoshka; output not normalized by the model",
    ),
    # ---- the 2025-2026 families (issue 17). Qwen3's scores: the "Retri." column of the MTEB
    # (English, v2) table on each model card; the others' cards publish no English MTEB
    # retrieval average in that form (see the notes and docs/choosing-a-model.md).
    CatalogEntry(
        "Qwen/Qwen3-Embedding-0.6B",
        1024,
        32768,
        596,
        "apache-2.0",
        61.83,
        "instruction on queries only, last-token pooling, Matryoshka 32..1024, multilingual",
    ),
    CatalogEntry("Qwen/Qwen3-Embedding-4B", 2560, 32768, 4020, "apache-2.0", 68.46, "as 0.6B"),
    CatalogEntry("Qwen/Qwen3-Embedding-8B", 4096, 32768, 7570, "apache-2.0", 69.44, "as 0.6B"),
    CatalogEntry(
        "google/embeddinggemma-300m",
        768,
        2048,
        308,
        "gemma",
        None,
        "task prompts on both sides, Matryoshka 768/512/256/128, multilingual; the card gives "
        "MTEB English v2 mean 68.36, no retrieval average",
    ),
    CatalogEntry(
        "ibm-granite/granite-embedding-english-r2",
        768,
        8192,
        149,
        "apache-2.0",
        None,
        "ModernBERT, no prefixes, long context",
    ),
    CatalogEntry(
        "ibm-granite/granite-embedding-small-english-r2", 384, 8192, 47, "apache-2.0", None
    ),
    CatalogEntry(
        "ibm-granite/granite-embedding-278m-multilingual",
        768,
        512,
        278,
        "apache-2.0",
        None,
        "XLM-RoBERTa, no prefixes, multilingual",
    ),
    CatalogEntry(
        "nomic-ai/nomic-embed-text-v2-moe",
        768,
        512,
        475,
        "apache-2.0",
        None,
        "mixture of experts (305M active), multilingual, Matryoshka 768/256, needs "
        "trust_remote_code; the card reports BEIR 52.86",
    ),
)


# ---- Ollama's names --------------------------------------------------------------------------

_MINILM_L6 = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_L12 = "sentence-transformers/all-MiniLM-L12-v2"
_NOMIC = "nomic-ai/nomic-embed-text-v1.5"
_MXBAI = "mixedbread-ai/mxbai-embed-large-v1"
_ARCTIC = "Snowflake/snowflake-arctic-embed-"

#: Ollama's embedding model names and tags (``name:tag``; a bare name is ``:latest``) -> the
#: hub id of the model each denotes, for users who know models by Ollama's names.
OLLAMA_NAMES: dict[str, dict[str, str]] = {
    "all-minilm": {
        "latest": _MINILM_L6,
        "l6-v2": _MINILM_L6,
        "22m": _MINILM_L6,
        "l12-v2": _MINILM_L12,
        "33m": _MINILM_L12,
    },
    "nomic-embed-text": {"latest": _NOMIC, "v1.5": _NOMIC, "137m": _NOMIC},
    "mxbai-embed-large": {"latest": _MXBAI, "v1": _MXBAI, "335m": _MXBAI},
    "bge-m3": {"latest": "BAAI/bge-m3", "567m": "BAAI/bge-m3"},
    "bge-large": {"latest": "BAAI/bge-large-en-v1.5", "335m": "BAAI/bge-large-en-v1.5"},
    "snowflake-arctic-embed": {
        "latest": _ARCTIC + "l",
        "l": _ARCTIC + "l",
        "335m": _ARCTIC + "l",
        "m-long": _ARCTIC + "m-long",
        "137m": _ARCTIC + "m-long",
        "m": _ARCTIC + "m",
        "110m": _ARCTIC + "m",
        "s": _ARCTIC + "s",
        "33m": _ARCTIC + "s",
        "xs": _ARCTIC + "xs",
        "22m": _ARCTIC + "xs",
    },
    "snowflake-arctic-embed2": {
        "latest": _ARCTIC + "l-v2.0",
        "568m": _ARCTIC + "l-v2.0",
    },
    "paraphrase-multilingual": {
        "latest": "sentence-transformers/paraphrase-multilingual-mpnet-base-v2",
        "278m": "sentence-transformers/paraphrase-multilingual-mpnet-base-v2",
    },
}


def ollama_hub_id(name: str) -> str | None:
    """The hub id an Ollama model name (``all-minilm``, ``nomic-embed-text:latest``,
    ``snowflake-arctic-embed:xs``) denotes; None when ``name`` is not one of Ollama's names.
    A known name with a tag Ollama does not have is :class:`~lokal.errors.ModelNotFound`
    listing the tags."""
    base, _, tag = name.strip().lower().partition(":")
    tags = OLLAMA_NAMES.get(base)
    if tags is None:
        return None
    hub_id = tags.get(tag or "latest")
    if hub_id is None:
        msg = f"Ollama's '{base}' has no tag '{tag}'; its tags: {', '.join(tags)}"
        raise ModelNotFound(msg)
    return hub_id


# ---- published GGUFs (``lokal models pull``) -------------------------------------------------


@dataclass(frozen=True)
class PublishedGGUF:
    """A GGUF of a catalog model that someone publishes on the Hugging Face hub."""

    repo: str
    file: str
    #: who converts it, and where the name was checked
    note: str


#: One q8_0 file per catalog model where a well-known published GGUF exists. Each name was
#: checked on the hub's file listing of the repository (huggingface.co/REPO/tree/main); models
#: not listed here are pulled with ``--repo ORG/NAME --file F.gguf``. The hub's own sha256 of
#: the file is what ``lokal models pull`` verifies the download against.
PUBLISHED_GGUF: dict[str, PublishedGGUF] = {
    "sentence-transformers/all-MiniLM-L6-v2": PublishedGGUF(
        "second-state/All-MiniLM-L6-v2-Embedding-GGUF",
        "all-MiniLM-L6-v2-Q8_0.gguf",
        "Second State's conversions (LlamaEdge); also Q5_K_M and f16 in that repository",
    ),
    "BAAI/bge-small-en-v1.5": PublishedGGUF(
        "CompendiumLabs/bge-small-en-v1.5-gguf",
        "bge-small-en-v1.5-q8_0.gguf",
        "Compendium Labs' conversions; also f16, f32 and q4_k_m there",
    ),
    "BAAI/bge-base-en-v1.5": PublishedGGUF(
        "CompendiumLabs/bge-base-en-v1.5-gguf",
        "bge-base-en-v1.5-q8_0.gguf",
        "Compendium Labs' conversions; also f16, f32 and q4_k_m there",
    ),
    "nomic-ai/nomic-embed-text-v1.5": PublishedGGUF(
        "second-state/Nomic-embed-text-v1.5-Embedding-GGUF",
        "nomic-embed-text-v1.5-Q8_0.gguf",
        "Second State's conversions; Nomic's own nomic-ai/nomic-embed-text-v1.5-GGUF also exists",
    ),
}


def find(name: str) -> CatalogEntry | None:
    """The catalog entry named by a hub id or its last part, case-insensitively."""
    wanted = name.strip().lower()
    for entry in CATALOG:
        hub_id = entry.hub_id.lower()
        if wanted in (hub_id, hub_id.rsplit("/", 1)[-1]):
            return entry
    return None
