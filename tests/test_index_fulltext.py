"""The full-text half of search (lokal.index.fulltext): the tokenizer follows the model's
language, every query word is searched, and migration 4 rebuilds an older file's table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lokal.central import schema as central_schema
from lokal.identity import ModelIdentity
from lokal.index import Chunk, Index, fulltext, schema, search

DIM = 8
ENGLISH = ModelIdentity.external("test", "Hand", "sentence-transformers/all-MiniLM-L6-v2", DIM)
MULTILINGUAL = ModelIdentity.external("test", "Hand", "intfloat/multilingual-e5-small", DIM)

TEXTS = {
    "pumps": "The pumps were running hot before the operators stopped them.",
    "valve": "Close the valve slowly; a pump that runs dry overheats.",
    "cafe": "The café on the corner serves coffee from eight.",
    "plain": "Nothing here is about machines at all.",
}


def vecs(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)


def fill(index: Index, texts: dict[str, str]) -> None:
    index.upsert([Chunk(t, id=i) for i, t in texts.items()], vecs(len(texts)))


@pytest.mark.parametrize(
    ("name", "language"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", "english"),
        ("all-MiniLM-L6-v2.q8_0.gguf", "english"),
        ("BAAI/bge-small-en-v1.5", "english"),
        ("intfloat/e5-small-v2", "english"),
        ("nomic-ai/nomic-embed-text-v1.5", "english"),
        ("Snowflake/snowflake-arctic-embed-m", "english"),
        ("intfloat/multilingual-e5-small", "any"),
        ("BAAI/bge-m3", "any"),
        ("Snowflake/snowflake-arctic-embed-m-v2.0", "any"),
        ("Alibaba-NLP/gte-multilingual-base", "any"),
        ("sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", "any"),
        ("some/unknown-model", "any"),
    ],
)
def test_the_language_decision_is_one_for_index_files_and_the_centre(
    name: str, language: str
) -> None:
    assert fulltext.language(name) == language
    identity = ModelIdentity.external("test", "Hand", name, DIM)
    config = central_schema.text_search_config(identity)
    assert config == ("english" if language == "english" else "simple")
    assert fulltext.tokenizer_for(name) == fulltext.TOKENIZERS[language]


def test_an_english_model_gets_stemming_and_folded_diacritics(tmp_path: Path) -> None:
    with Index.create(tmp_path / "en.db", ENGLISH) as index:
        assert fulltext.file_tokenizer(index._conn) == "porter unicode61 remove_diacritics 2"
        fill(index, TEXTS)
        # "pump running" matches "pumps were running" and "a pump that runs" (Porter)
        assert {h.id for h in index.text_search("pump running", k=4)} == {"pumps", "valve"}
        assert [h.id for h in index.text_search("cafe", k=4)] == ["cafe"]
        assert index.check().ok


def test_another_model_gets_trigrams_for_any_language(tmp_path: Path) -> None:
    texts = {
        **TEXTS,
        "zh": "数据库连接池的大小由配置文件决定。",
        "ja": "ポンプを再起動するには赤いボタンを押します。",
        "de": "Die Pumpe läuft heiß, wenn das Ventil geschlossen ist.",
    }
    with Index.create(tmp_path / "any.db", MULTILINGUAL) as index:
        assert fulltext.file_tokenizer(index._conn) == "trigram remove_diacritics 1"
        fill(index, texts)
        assert [h.id for h in index.text_search("CAFE", k=4)] == ["cafe"]
        assert [h.id for h in index.text_search("lauft", k=4)] == ["de"]  # folded
        # substrings: "pump" is in "pumps", "pump" and "Pumpe"; no stemming needed
        assert {h.id for h in index.text_search("pump", k=8)} == {"pumps", "valve", "de"}
        # no spaces between words: the question's run is not in the text verbatim
        assert [h.id for h in index.text_search("连接池的配置", k=4)] == ["zh"]
        assert [h.id for h in index.text_search("赤いボタン", k=4)] == ["ja"]


def test_no_query_word_is_dropped_as_common(tmp_path: Path) -> None:
    """Before: a word in more than 5% of the chunks was left out of the query, so "reset the
    pump" searched "reset" alone (in no chunk) and found nothing."""
    texts = {f"p{i}": f"Pump {i} has a pressure gauge and a drain." for i in range(30)}
    texts["other"] = "Reset the controller by holding the button."
    with Index.create(tmp_path / "common.db", ENGLISH) as index:
        fill(index, texts)
        assert index.text_search("pump 7", k=3)[0].id == "p7"
        hits = index.text_search("pump", k=40)
        assert len(hits) == 30
        both = index.text_search("reset the pump", k=40)
        assert {h.id for h in both} == set(texts)  # every word searched
        assert both[0].score == 1.0


@pytest.mark.parametrize("identity", [ENGLISH, MULTILINGUAL], ids=["english", "any"])
def test_quotes_and_fts_syntax_in_questions_are_words(
    tmp_path: Path, identity: ModelIdentity
) -> None:
    with Index.create(tmp_path / "syntax.db", identity) as index:
        fill(index, TEXTS)
        for text in ('"pump', "pump OR NOT*", "NEAR(pump valve)", "pump -valve", ":) ^", "a"):
            index.text_search(text, k=4)  # never an FTS5 syntax error
            index.hybrid_search(vecs(1)[0], text, k=4)
        assert index.text_search("", k=4) == [] and index.text_search("!!", k=4) == []


def test_migration_4_rebuilds_an_older_files_full_text_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
        with Index.create(path, ENGLISH) as old:
            fill(old, TEXTS)
            old.replace_document("doc.txt", [Chunk("Pumping stations", ordinal=0)], vecs(1))
    with Index.open(path) as reader:  # a reader does not migrate: the old table, no stemming
        assert schema.applied(reader._conn) == {1, 2, 3}
        assert fulltext.file_tokenizer(reader._conn) == "unicode61 remove_diacritics 2"
        assert [h.id for h in reader.text_search("pump", k=4)] == ["valve"]
    with Index.open(path, ENGLISH, writable=True) as ix:
        assert schema.applied(ix._conn) == {number for number, _, _ in schema.MIGRATIONS}
        assert fulltext.file_tokenizer(ix._conn) == "porter unicode61 remove_diacritics 2"
        found = {h.id for h in ix.text_search("pump", k=8)}
        assert found == {"pumps", "valve", "doc.txt#0"}
        assert len(ix) == 5 and ix.check().ok
        # later writes keep the rebuilt table consistent (external content: delete by text)
        ix.delete(["valve"])
        ix.upsert([Chunk("Two pumps, one spare.", id="spare")], vecs(1))
        assert {h.id for h in ix.text_search("pump", k=8)} == {"pumps", "doc.txt#0", "spare"}
        assert ix.check().ok
    with Index.open(path) as reader:
        assert {h.id for h in reader.text_search("pumped", k=8)} == {
            "pumps",
            "doc.txt#0",
            "spare",
        }


def test_fusion_keeps_what_either_ranking_found() -> None:
    vector = [(1, 0.9), (2, 0.8), (3, 0.1)]
    text = [(4, -1.0), (1, -5.0), (5, -9.0)]  # bm25 negated: higher is better
    top = search.fuse([vector, text], 5)
    scores = dict(top)
    assert top[0] == (1, pytest.approx(0.5 + 0.5 * 0.5))  # first by vector, middle by text
    assert scores[4] == pytest.approx(0.5)  # first by text alone
    assert scores[2] == pytest.approx(0.5 * 0.7 / 0.8)
    assert scores[3] == 0.0 and scores[5] == 0.0  # last in one ranking, absent from the other
    assert search.fuse([[(7, 0.3)], [(7, 2.0)]], 3) == [(7, 1.0)]  # first in both
    assert search.fuse([[], [(8, 1.0), (9, 1.0)]], 3) == [(8, 0.5), (9, 0.5)]  # ties by item
    assert search.fuse([[], []], 3) == []
    assert search.hybrid_depth(5) == search.HYBRID_DEPTH and search.hybrid_depth(500) == 500
    assert search.hybrid_depth(5, 20) == 20


def test_quantized_hybrid_rescores_no_more_than_a_plain_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hybrid takes 100 vector candidates; in bit mode rescoring all 100 x 40 of them with
    their float vectors cost 1.4 s at 50k chunks. It rescores what a plain search of
    max(4k, 20) would (20 x 40 = 800 here), and its scores stay exact cosines."""
    texts = {f"t{i}": f"pump {i} note" for i in range(5000)}
    with Index.create(tmp_path / "bit.db", ENGLISH, quantization="bit") as index:
        fill(index, texts)
        read: list[int] = []
        original = index._float_vectors

        def counting(rowids: list[int]) -> dict[int, np.ndarray]:
            read.append(len(rowids))
            return original(rowids)

        monkeypatch.setattr(index, "_float_vectors", counting)
        q = vecs(1)[0]
        hits = index.hybrid_search(q, "pump 42", k=5)
        budget = max(search.RESCORE_FACTOR * 5, search.CANDIDATE_MIN) * search.OVERSAMPLE["bit"]
        assert len(hits) == 5 and read[0] <= budget  # (then the few text-only hits' cosines)
        assert sum(read) <= budget + 5
        unit = q / np.linalg.norm(q)
        for h in hits:
            assert h.distance is not None
            stored = original(
                [
                    int(
                        index._conn.execute(
                            "SELECT id FROM chunks WHERE chunk_id = ?", (h.id,)
                        ).fetchone()[0]
                    )
                ]
            )
            assert 1 - float(next(iter(stored.values())) @ unit) == pytest.approx(
                h.distance, abs=1e-5
            )
