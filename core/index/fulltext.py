"""The full-text half of search: the language an index's text is tokenized for, and its queries.

One decision, made from the model's name when a file (or a central collection) is created and
kept with it, so that the library, both vector stores, ``lokal search``, ``/v1/search``,
``lokal eval`` and the central store search full text the same way:

- an **English-only** model (all-MiniLM, all-mpnet, bge-*-en, e5-*-v2, gte, nomic-embed-text,
  snowflake-arctic-embed v1, mxbai-embed-large ...): FTS5's ``porter unicode61
  remove_diacritics 2`` (Porter stemming, case and diacritics folded) in an index file,
  PostgreSQL's ``english`` configuration centrally;
- any other model (multilingual, or unknown: its texts may be in any language): FTS5's
  ``unicode61 remove_diacritics 2`` (words split at Unicode separators, case and diacritics
  folded, no stemming) in an index file, ``simple`` centrally.

Queries match any of the question's words (OR), ranked by BM25. No word is left out: a word
every text holds costs BM25 almost nothing, while dropping it lost the only match of short
questions (benchmarks/hybrid_fusion.py; docs/choosing-a-model.md, "Hybrid search").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

ENGLISH = "english"
ANY = "any"
#: The FTS5 tokenizer of each language choice.
TOKENIZERS = {
    ENGLISH: "porter unicode61 remove_diacritics 2",
    ANY: "unicode61 remove_diacritics 2",
}
#: PostgreSQL's text search configuration of each language choice (the central store).
TEXT_SEARCH_CONFIGS = {ENGLISH: "english", ANY: "simple"}

#: Models trained on other languages than English, by name; checked first.
_MULTILINGUAL = re.compile(
    r"multilingual|bge-m3|labse|xlm|v2\.0|jina-embeddings-v3|qwen|distiluse", re.IGNORECASE
)
#: Models trained on English text only, by name.
_ENGLISH_ONLY = re.compile(
    r"all-minilm|all-mpnet|all-distilroberta|multi-qa-|msmarco-|paraphrase-|bge-[a-z]+-en"
    r"|e5-(?:small|base|large)|gte-(?:small|base|large)|nomic-embed-text|mxbai-embed"
    r"|snowflake-arctic-embed",
    re.IGNORECASE,
)
#: Words searched at most (the first, in the question's order); a longer question is cut, and
#: the log says so.
MAX_WORDS = 256


def language(model_name: str) -> str:
    """:data:`ENGLISH` for a model trained on English only, else :data:`ANY`."""
    if _MULTILINGUAL.search(model_name):
        return ANY
    return ENGLISH if _ENGLISH_ONLY.search(model_name) else ANY


def tokenizer_for(model_name: str) -> str:
    """The FTS5 tokenizer a new index file of this model gets."""
    return TOKENIZERS[language(model_name)]


def text_search_config(model_name: str) -> str:
    """The PostgreSQL text search configuration a new central collection of this model gets."""
    return TEXT_SEARCH_CONFIGS[language(model_name)]


def create_table(conn: Any, tokenizer: str) -> None:
    """The ``chunks_fts`` table (external content: ``chunks.text``) and its vocabulary."""
    if tokenizer not in TOKENIZERS.values():
        msg = f"unknown full-text tokenizer {tokenizer!r}; known: {sorted(TOKENIZERS.values())}"
        raise ValueError(msg)
    conn.execute(
        "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id', "
        f"tokenize='{tokenizer}')"
    )
    conn.execute("CREATE VIRTUAL TABLE chunks_fts_vocab USING fts5vocab(chunks_fts, 'row')")


def file_tokenizer(conn: Any) -> str:
    """The tokenizer the file's ``chunks_fts`` table was made with (older files: no stemming)."""
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'chunks_fts'"
    ).fetchone()
    found = re.search(r"tokenize\s*=\s*'([^']*)'", row[0] if row else "")
    return " ".join(found.group(1).split()) if found else "unicode61"


def query_words(text: str) -> list[str]:
    """The question's words, lower-cased, each once, in order (at most :data:`MAX_WORDS`)."""
    found = list(dict.fromkeys(w.lower() for w in re.findall(r"\w+", text)))
    if len(found) > MAX_WORDS:
        log.info("full-text query: %d words, searching the first %d", len(found), MAX_WORDS)
    return found[:MAX_WORDS]


def match_query(words: Sequence[str]) -> str | None:
    """An FTS5 query matching any of ``words``, each a quoted string (no FTS5 syntax gets in;
    the table's tokenizer stems and folds each as it does the texts)."""
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
