"""The full-text half of search: the language an index's text is tokenized for, and its queries.

One decision, made from the model's name when a file (or a central collection) is created and
kept with it, so that the library, both vector stores, ``lokal search``, ``/v1/search``,
``lokal eval`` and the central store search full text the same way:

- an **English-only** model (all-MiniLM, all-mpnet, bge-*-en, e5-*-v2, gte, nomic-embed-text,
  snowflake-arctic-embed v1, mxbai-embed-large ...): FTS5's ``porter unicode61
  remove_diacritics 2`` (Porter stemming, case and diacritics folded) in an index file,
  PostgreSQL's ``english`` configuration centrally;
- any other model (multilingual, or unknown: its texts may be in any language, some written
  without spaces between words): FTS5's ``trigram remove_diacritics 1`` (every three-character
  substring, case and diacritics folded: no language's stemming needed, and Chinese or Japanese
  text is searchable) in an index file, ``simple`` centrally. A query word shorter than three
  characters cannot match a trigram table (an FTS5 limit); longer ones match as substrings.

Queries match any of the question's words (OR), ranked by BM25. No word is left out: a word
that most texts hold costs BM25 almost nothing, while dropping such words (what lokal did before
migration 4) lost 0.04 to 0.18 nDCG@10 of the full-text ranking on the three eval sets in
docs/choosing-a-model.md (benchmarks/hybrid_fusion.py).
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
    ANY: "trigram remove_diacritics 1",
}
#: The tokenizer of files made before migration 4 (no stemming).
OLD_TOKENIZER = "unicode61 remove_diacritics 2"
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
    if tokenizer not in (*TOKENIZERS.values(), OLD_TOKENIZER):
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
    return " ".join(found.group(1).split()) if found else OLD_TOKENIZER


def query_words(text: str) -> list[str]:
    """The question's words, lower-cased, each once, in order (at most :data:`MAX_WORDS`)."""
    found = list(dict.fromkeys(w.lower() for w in re.findall(r"\w+", text)))
    if len(found) > MAX_WORDS:
        log.info("full-text query: %d words, searching the first %d", len(found), MAX_WORDS)
    return found[:MAX_WORDS]


#: Scripts written without spaces between words: a "word" of theirs is a whole phrase.
_NO_SPACES = re.compile(r"[\u0e00-\u0eff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def match_query(words: Sequence[str], tokenizer: str = TOKENIZERS[ENGLISH]) -> str | None:
    """An FTS5 query matching any of ``words``, each a quoted string (no FTS5 syntax gets in;
    the table's tokenizer stems and folds each as it does the texts). For a trigram table, a
    run of a script without spaces is searched by its three-character pieces, since the run
    as a whole is rarely in the text verbatim."""
    terms: list[str] = []
    for w in words:
        if tokenizer.startswith("trigram") and len(w) > 3 and _NO_SPACES.search(w):
            terms.extend(w[i : i + 3] for i in range(len(w) - 2))
        else:
            terms.append(w)
    terms = list(dict.fromkeys(terms))
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
