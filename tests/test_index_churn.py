"""The slow leak: months of edits must not grow the index file without bound."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from lokal import Embedder
from lokal.index import Chunk, Index, compaction

from .conftest import paragraphs

FILES, CHUNKS, CYCLES = 60, 3, 20


@pytest.fixture(scope="module")
def pool(gguf_embedder: Embedder) -> tuple[list[str], np.ndarray]:
    """Real paragraphs and their real embeddings, reused by the churn's document versions."""
    texts = [p[:600] for p in paragraphs()[:240]]
    return texts, gguf_embedder.embed_documents(texts).vectors


def _write(index: Index, i: int, picks: list[int], pool: tuple[list[str], np.ndarray]) -> None:
    texts, vectors = pool
    chunks = [Chunk(texts[p], ordinal=j) for j, p in enumerate(picks)]
    index.replace_document(f"/srv/logs/f{i:03d}.txt", chunks, vectors[picks])


def _size(index: Index) -> int:
    index._reader().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    return index.path.stat().st_size


def test_churn_stays_within_one_and_a_half_fresh_builds(
    tmp_path: Path, gguf_embedder: Embedder, pool: tuple[list[str], np.ndarray]
) -> None:
    """10% of the documents replaced 20 times through Index.replace_document (the agent's
    write): the file stays within 1.5x a fresh build of the same documents, and every search
    still equals the fresh index's."""
    rng = random.Random(0)
    docs = {i: rng.sample(range(len(pool[0])), CHUNKS) for i in range(FILES)}
    with Index.create(tmp_path / "churn.db", gguf_embedder.identity) as index:
        for i, picks in docs.items():
            _write(index, i, picks, pool)
        for _ in range(CYCLES):
            for i in rng.sample(range(FILES), FILES // 10):
                docs[i] = rng.sample(range(len(pool[0])), CHUNKS)
                _write(index, i, docs[i], pool)
        size = _size(index)
        report = index.check()
        with Index.create(tmp_path / "fresh.db", gguf_embedder.identity) as fresh:
            for i, picks in docs.items():
                _write(fresh, i, picks, pool)
            fresh_size = _size(fresh)
            q = gguf_embedder.embed_query("how are exceptions handled?")
            assert [h.text for h in index.search(q, 10)] == [h.text for h in fresh.search(q, 10)]
    assert report.ok, report.problems
    assert size <= 1.5 * fresh_size, (size, fresh_size, report.counts)


def test_compaction_keeps_every_row_and_readers_reading(
    tmp_path: Path, gguf_embedder: Embedder, pool: tuple[list[str], np.ndarray]
) -> None:
    """A forced compaction moves vectors and frees pages; rows, vectors and search results are
    the same after it, and a reader open across it (WAL) reads on."""
    rng = random.Random(1)
    db = tmp_path / "c.db"
    with Index.create(db, gguf_embedder.identity) as index:
        for i in range(FILES):
            _write(index, i, rng.sample(range(len(pool[0])), CHUNKS), pool)
        for i in range(0, FILES, 2):  # every other document goes: half-empty vector chunks
            index.delete_document(f"/srv/logs/f{i:03d}.txt")
        q = gguf_embedder.embed_query("what is a generator?")
        with Index.open(db) as reader:
            before = [(h.id, round(h.score, 6)) for h in reader.search(q, 10)]
            waste = compaction.waste(index._reader())
            assert waste.unused_slots > 0
            figures = index.compact(force=True)
            assert figures["vectors_moved"] > 0
            assert figures["unused_slots_after"] < figures["unused_slots_before"]
            assert figures["pages_after"] < figures["pages_before"]
            assert [(h.id, round(h.score, 6)) for h in reader.search(q, 10)] == before
            assert reader.check().ok
        assert index.check().ok and len(index) == FILES // 2 * CHUNKS


def test_a_file_from_before_auto_vacuum_is_switched_once(
    tmp_path: Path, gguf_embedder: Embedder, pool: tuple[list[str], np.ndarray]
) -> None:
    db = tmp_path / "old.db"
    with Index.create(db, gguf_embedder.identity) as index:
        conn = index._reader()
        conn.execute("PRAGMA auto_vacuum = NONE")
        conn.execute("VACUUM")  # the file as lokal made it before compaction existed
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
        for i in range(FILES):
            _write(index, i, [i % 200, (i + 1) % 200, (i + 2) % 200], pool)
        for i in range(FILES):
            index.delete_document(f"/srv/logs/f{i:03d}.txt") if i % 3 else None
        index.compact(force=True)
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == compaction.INCREMENTAL
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert index.check().ok and len(index) == FILES // 3 * CHUNKS
