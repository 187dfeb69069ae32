"""The search copy: read in large pieces from the file, the stored bit copy kept in step by every
write, checked by ``Index.check``, and chosen by the index's size and memory budget.

Vectors here are random unit rows in a real sqlite-vec file (no model: what is tested is how
the copy is stored and read, which does not depend on where vectors come from)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lokal.errors import IndexFileError, MemoryBudgetError
from lokal.identity import ModelIdentity
from lokal.index import Chunk, Index, schema, stored, vectors

DIM = 48
IDENTITY = dataclasses.replace(
    ModelIdentity.external("test", "vectors", "synthetic", DIM), normalize=True
)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def stored_rows(index: Index) -> tuple[np.ndarray, np.ndarray]:
    """Every stored vector through vec0's row interface, sorted by rowid (the truth)."""
    rows = sorted(index._reader().execute("SELECT rowid, embedding FROM chunks_vec").fetchall())
    ids = np.array([r for r, _ in rows], dtype=np.int64)
    floats = np.frombuffer(b"".join(b for _, b in rows), dtype=np.float32).reshape(-1, DIM)
    return ids, floats


def assert_bits_in_step(index: Index) -> None:
    ids, floats = stored_rows(index)
    bit_ids, codes = stored.read_bits(index._reader(), DIM)
    assert np.array_equal(bit_ids, ids)
    assert np.array_equal(codes, vectors.encode(vectors.normalize(floats), "bit"))


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    rng = np.random.default_rng(7)
    ix = Index.create(tmp_path / "index.db", IDENTITY)
    ix.upsert(
        [Chunk(f"text {i}", id=f"c{i}", metadata={"n": i}) for i in range(3000)], unit(rng, 3000)
    )
    yield ix
    ix.close()


def test_every_write_keeps_the_stored_bit_copy_in_step(index: Index) -> None:
    rng = np.random.default_rng(1)
    assert_bits_in_step(index)
    index.upsert([Chunk(f"new {i}", id=f"c{i}") for i in range(0, 3000, 5)], unit(rng, 600))
    assert_bits_in_step(index)
    index.delete([f"c{i}" for i in range(1, 3000, 7)])
    assert_bits_in_step(index)
    index.delete_where({"n": {"$lt": 100}})
    assert_bits_in_step(index)
    chunks = [Chunk(f"doc {i}", ordinal=i) for i in range(40)]
    index.replace_document("file:///a.txt", chunks, unit(rng, 40))
    index.replace_document("file:///a.txt", chunks[:10], unit(rng, 10))
    assert_bits_in_step(index)
    index.set_document("file:///a.txt", status="failed", error="unreadable")
    assert_bits_in_step(index)
    index.compact(force=True)  # vec0 rows move to new chunks: the codes stay
    assert_bits_in_step(index)
    assert index.check().ok, index.check().problems
    index.clear()
    assert_bits_in_step(index)
    assert index._reader().execute("SELECT count(*) FROM vectors_bits").fetchone()[0] == 0


def test_a_failed_write_leaves_the_stored_copy_as_it_was(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = stored.read_bits(index._reader(), DIM)

    def fail(self: stored.BitsWriter, conn: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(stored.BitsWriter, "flush", fail)
    with pytest.raises(OSError, match="disk gone"):
        index.upsert([Chunk("x", id="c1")], unit(np.random.default_rng(2), 1))
    monkeypatch.undo()
    after = stored.read_bits(index._reader(), DIM)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert index.check().ok
    index.upsert([Chunk("x", id="c1")], unit(np.random.default_rng(2), 1))  # nothing left over
    assert_bits_in_step(index)


def test_the_copy_read_in_pieces_equals_the_copy_read_row_by_row(index: Index) -> None:
    index.delete([f"c{i}" for i in range(0, 3000, 3)])
    index.compact(force=True)  # vec0's chunk order is no longer rowid order
    conn = index._reader()
    order = conn.execute("SELECT rowids FROM chunks_vec_chunks ORDER BY chunk_id").fetchall()
    slots = np.concatenate([np.frombuffer(r[0], dtype=np.int64) for r in order])
    live = slots[slots > 0]
    assert np.any(np.diff(live) < 0), "the test wants rows out of rowid order in vec0"
    for mode in vectors.MODES:
        fast = vectors.VectorCache.load(conn, DIM, mode, (0, 0), unit=True)
        slow = vectors.VectorCache.load_rows(conn, DIM, mode, (0, 0), unit=True)
        assert np.array_equal(fast.rowids, slow.rowids)
        assert np.array_equal(fast.data, slow.data), mode


def test_check_finds_a_stored_copy_that_disagrees_with_the_rows(index: Index) -> None:
    conn = index._reader()
    block, _ids, bits = conn.execute("SELECT block, rowids, bits FROM vectors_bits").fetchone()
    flipped = (
        bytes(255 - b for b in bits[: stored.bits_width(DIM)]) + bits[stored.bits_width(DIM) :]
    )
    conn.execute("UPDATE vectors_bits SET bits = ? WHERE block = ?", (flipped, block))
    problems = index.check().problems
    assert any("stored bit copy differs" in p for p in problems), problems
    conn.execute("DELETE FROM vectors_bits WHERE block = ?", (block,))
    problems = index.check().problems
    assert any("stored bit copy and stored vectors disagree" in p for p in problems), problems


def test_a_stale_stored_copy_is_never_searched(
    index: Index, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows the stored copy lacks (a writer that bypassed lokal): the bit copy is built from
    the vectors instead, so every row can still be found."""
    index.quantization = "bit"
    conn = index._reader()
    conn.execute("DELETE FROM vectors_bits WHERE block = 0")
    _ids, floats = stored_rows(index)
    index._writes += 1  # the file changed under the index
    hits = index.search(floats[5], k=1)
    assert hits[0].id == "c5"
    assert "stored bit copy holds" in caplog.text


def test_auto_chooses_by_size_and_memory_budget(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert index.quantization == "auto"
    assert index.search_copy()["mode"] == "float"
    index.memory_budget = vectors.copy_bytes(3000, DIM, "float") - 1
    assert index.search_copy()["mode"] == "int8"  # NumKong is installed: int8 is fast
    monkeypatch.setattr(vectors, "_NUMKONG", False)  # without it, int8 is slower than float
    assert index.search_copy()["mode"] == "bit"
    monkeypatch.undo()
    index.memory_budget = vectors.copy_bytes(3000, DIM, "int8") - 1
    info = index.search_copy()
    assert (info["mode"], info["rows"]) == ("bit", 3000)
    assert info["bytes"] == vectors.copy_bytes(3000, DIM, "bit")
    assert "bit (auto; memory budget" in vectors.describe_copy(info)
    _, floats = stored_rows(index)
    hits = index.search(floats[42], k=3)
    assert index._cache is not None and index._cache.quantization == "bit"
    assert hits[0].id == "c42" and hits[0].distance == pytest.approx(0.0, abs=1e-6)
    monkeypatch.setenv(vectors.MEMORY_BUDGET_ENV, "1K")
    assert vectors.memory_budget() == 1024
    with Index.open(index.path) as reader:
        assert reader.search_copy()["mode"] == "bit"
    monkeypatch.setenv(vectors.MEMORY_BUDGET_ENV, "1G")
    with Index.open(index.path) as reader:
        assert reader.search_copy()["mode"] == "float"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("256M", 256 * 2**20), ("1.5G", 3 * 2**29), ("300MB", 300 * 2**20), (4096, 4096)],
)
def test_memory_budget_sizes(text: str | int, expected: int) -> None:
    assert vectors.parse_budget(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "12Q"])
def test_a_bad_memory_budget_is_a_clear_error(text: str) -> None:
    with pytest.raises(MemoryBudgetError, match="memory budget"):
        vectors.parse_budget(text)


def test_a_bad_budget_in_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Index.create(tmp_path / "i.db", IDENTITY).close()
    monkeypatch.setenv(vectors.MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(MemoryBudgetError, match=r"\$LOKAL_MEMORY_BUDGET: a memory budget is"):
        Index.open(tmp_path / "i.db")
    lokal = str(Path(sys.executable).parent / "lokal")
    proc = subprocess.run(
        [lokal, "check", "--index", str(tmp_path / "i.db")], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "LOKAL_MEMORY_BUDGET" in proc.stderr


def test_migration_5_stores_the_bit_copy_of_an_older_file(index: Index) -> None:
    path = index.path
    conn = index._reader()
    conn.execute("DROP TABLE vectors_bits")
    conn.execute("DELETE FROM lokal_migrations WHERE number = 5")
    index.close()
    with Index.open(path) as reader:  # a reader may not migrate: bits from the floats
        reader.quantization = "bit"
        _, floats = stored_rows(reader)
        assert reader.search(floats[7], k=1)[0].id == "c7"
    with Index.open(path, writable=True) as writer:
        assert 5 in schema.applied(writer._reader())
        assert_bits_in_step(writer)
        assert writer.check().ok


def test_a_damaged_vector_is_refused_by_the_fast_read(index: Index) -> None:
    conn = index._reader()
    bad = np.full(DIM, np.nan, dtype=np.float32)
    conn.execute("UPDATE chunks_vec SET embedding = ? WHERE rowid = 10", (bad.tobytes(),))
    index._writes += 1
    with pytest.raises(IndexFileError, match="not finite or not unit length"):
        index.search(unit(np.random.default_rng(3), 1)[0], k=3)
    half = unit(np.random.default_rng(4), 1)[0] * 0.5
    conn.execute("UPDATE chunks_vec SET embedding = ? WHERE rowid = 10", (half.tobytes(),))
    index._writes += 1
    with pytest.raises(IndexFileError, match=r"rows 10\)"):
        index.search(unit(np.random.default_rng(3), 1)[0], k=3)


@pytest.mark.parametrize("mode", ["int8", "bit"])
def test_simd_scores_equal_numpy_scores(
    index: Index, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NumKong's kernels score exactly as numpy does (bit: Hamming distances; int8: the
    integer dot product with the int8 query), over all rows and over a filter's rows."""
    assert vectors.simd() is not None
    cache = vectors.VectorCache.load(index._reader(), DIM, mode, (0, 0), unit=True)
    q = unit(np.random.default_rng(5), 1)[0]
    pos = np.arange(0, len(cache.rowids), 3)
    fast = [vectors.approximate_scores(cache, q, p) for p in (None, pos)]
    if mode == "bit":
        monkeypatch.setattr(vectors, "_NUMKONG", False)
        slow = [vectors.approximate_scores(cache, q, p) for p in (None, pos)]
    else:
        q8 = vectors.encode(q[None, :], "int8")[0].astype(np.int64)
        slow = [(cache.data.astype(np.int64) @ q8).astype(np.float32)]
        slow.append(slow[0][pos])
    for f, s in zip(fast, slow, strict=True):
        assert f.dtype == np.float32
        assert np.array_equal(f, s)


def test_lokal_check_shows_the_search_copy(index: Index) -> None:
    """The real `lokal check` names the copy an index uses, and follows the memory budget."""
    path = str(index.path)
    index.close()
    lokal = str(Path(sys.executable).parent / "lokal")
    env = {k: v for k, v in os.environ.items() if k != vectors.MEMORY_BUDGET_ENV}
    for budget, line in (
        (None, "search copy: float (auto; memory budget 256 MiB; 3,000 rows: 586 KiB)"),
        ("100K", "search copy: bit (auto; memory budget 100 KiB; 3,000 rows: 41 KiB, float"),
    ):
        if budget:
            env[vectors.MEMORY_BUDGET_ENV] = budget
        proc = subprocess.run(
            [lokal, "check", "--index", path], capture_output=True, text=True, env=env, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert line in proc.stdout, proc.stdout
