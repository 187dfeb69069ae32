"""A shortlist of embedding models that run well on a CPU, for ``lokal models list``.

Sizes are parameter counts; ``mteb_retrieval`` is the English MTEB retrieval average (nDCG@10)
as published for the model (model card or the MTEB leaderboard at the model's release). The
numbers are the publishers', not measured here: run ``lokal eval`` on your own data before you
trust any of them. ``None`` means no published English retrieval average was found.
"""

from __future__ import annotations

from dataclasses import dataclass

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
)


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
