"""The built-in family table: profiles for models known by name, and their published prompts.

Each :class:`FamilyRule` gives the models whose name matches its pattern a query prefix (or
instruction), a document prefix, context length, dimension, pooling and Matryoshka sizes, with
the page it was read from (``source``). :func:`lokal.profiles.embedding.from_name` takes the
first rule that matches; a model's own config outranks the table
(:mod:`lokal.profiles.embedding` says the order).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lokal.profiles.sources import HF

BGE_EN_QUERY = "Represent this sentence for searching relevant passages: "
E5_INSTRUCT_QUERY = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: "
)
#: Qwen3-Embedding's query prompt, as its config_sentence_transformers.json has it: no space after
#: "Query:" (the card's ``get_detailed_instruct`` is ``f"Instruct: {task}\nQuery:{query}"``).
#: Documents take no prompt.
QWEN3_QUERY = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)
#: EmbeddingGemma's retrieval prompts (its config_sentence_transformers.json, "query"/"document").
GEMMA_QUERY = "task: search result | query: "
GEMMA_DOCUMENT = "title: none | text: "


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


_QWEN3_SIZES = (4096, 2560, 2048, 1024, 768, 512, 256, 128, 64, 32)

# Order matters: the first matching rule wins, so specific patterns come before general ones.
FAMILIES: tuple[FamilyRule, ...] = (
    # ---- the 2025-2026 families (issue 17); docs/choosing-a-model.md has what each is for ----
    *(
        FamilyRule(
            pattern,
            "qwen3-embedding",
            HF + f"Qwen/Qwen3-Embedding-{size}",
            QWEN3_QUERY,
            context_length=32768,
            dimension=dim,
            pooling="lasttoken",
            # trained for any size from 32 up (MRL); lokal lists the usual ones
            matryoshka_dims=tuple(d for d in _QWEN3_SIZES if d <= dim),
        )
        for pattern, size, dim in (
            (r"qwen3-embedding-0\.6b", "0.6B", 1024),
            (r"qwen3-embedding-4b", "4B", 2560),
            (r"qwen3-embedding-8b", "8B", 4096),
        )
    ),
    FamilyRule(
        r"qwen3-embedding",
        "qwen3-embedding",
        HF + "Qwen/Qwen3-Embedding-0.6B",
        QWEN3_QUERY,
        context_length=32768,
        pooling="lasttoken",
    ),
    FamilyRule(
        r"embedding-?gemma",
        "embeddinggemma",
        HF + "google/embeddinggemma-300m",
        GEMMA_QUERY,
        GEMMA_DOCUMENT,
        context_length=2048,
        dimension=768,
        pooling="mean",
        matryoshka_dims=(768, 512, 256, 128),
    ),
    *(
        FamilyRule(
            hub,  # the hub name is the pattern: no regex characters in it
            "granite-embedding",
            HF + f"ibm-granite/{hub}",
            context_length=ctx,
            dimension=dim,
            pooling="cls",
        )
        for hub, ctx, dim in (
            ("granite-embedding-small-english-r2", 8192, 384),
            ("granite-embedding-english-r2", 8192, 768),
            ("granite-embedding-30m-english", 512, 384),
            ("granite-embedding-125m-english", 512, 768),
            ("granite-embedding-107m-multilingual", 512, 384),
            ("granite-embedding-278m-multilingual", 512, 768),
        )
    ),
    FamilyRule(
        r"nomic-embed-text-v2",
        "nomic-v2-moe",
        HF + "nomic-ai/nomic-embed-text-v2-moe",
        "search_query: ",
        "search_document: ",
        context_length=512,
        dimension=768,
        pooling="mean",
        matryoshka_dims=(768, 256),
    ),
    # ---- the classic families ----
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
