"""The index file's life (lokal.index.lifecycle): atomic create, build beside and swap, readers
following a swap, snapshot, stale temporary files, and no connection left open by any of it."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from lokal.errors import ModelMismatch
from lokal.identity import ModelIdentity
from lokal.index import Chunk, Index, lifecycle, sqlite

DIM = 32
A = ModelIdentity("model-a", "a" * 64, "mean", True, DIM, "", "gguf", "q8_0", "fa", "")
B = ModelIdentity("model-b", "b" * 64, "mean", True, DIM, "", "gguf", "q8_0", "fb", "")


def unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(index: Index, texts: list[str], seed: int) -> np.ndarray:
    vectors = unit(len(texts), seed)
    index.upsert([Chunk(t, id=t) for t in texts], vectors)
    return vectors


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def ours() -> set[int]:
    return {id(c) for c in sqlite.open_connections()}


def test_open_connections_lists_a_connection_until_it_is_closed(tmp_path: Path) -> None:
    """What the leak guard in conftest.py checks: raw connections opened by the index's
    modules are seen, not only Index objects."""
    before = ours()
    conn = sqlite.connect(tmp_path / "raw.db")
    plain = sqlite.connect_plain(tmp_path / "plain.db")
    assert {id(conn), id(plain)} <= ours() - before
    conn.close()
    plain.close()
    assert ours() == before


def test_build_beside_keeps_the_old_file_for_readers_until_the_swap(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    with Index.create(path, A) as old:
        fill(old, ["old one", "old two"], 1)
    reader = Index.open(path)
    before = ours()
    build = lifecycle.Build(path)
    assert build.temp.parent == path.parent and build.temp != path
    new = build.open(B)
    vectors = fill(new, ["new one", "new two", "new three"], 2)
    assert len(reader) == 2  # the old file serves readers meanwhile
    build.swap(new)
    build.discard()
    assert new.closed and not build.temp.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".index.db")] == []
    assert ours() - before == set()  # swap opened (and closed) a connection on the old file
    with pytest.raises(ModelMismatch, match="was rebuilt with"):
        reader.search(vectors[0])  # another model: the reader is told, not fed wrong scores
    reader.close()
    with Index.open(path, B) as index:
        assert len(index) == 3
        assert index.search(vectors[1], k=1)[0].id == "new two"
        assert index.check().ok


def test_a_reader_of_the_same_model_follows_the_swap(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    with Index.create(path, A) as old:
        fill(old, ["old"], 1)
    with Index.open(path, A) as reader:
        first = reader.inode
        build = lifecycle.Build(path)
        new = build.open(A)
        vectors = fill(new, ["a", "b"], 3)
        build.swap(new)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert reader.search(vectors[1], k=1)[0].id == "b"
        assert reader.inode != first and len(reader) == 2


def test_swap_never_pairs_the_new_file_with_the_old_files_log(tmp_path: Path) -> None:
    """The old file has frames in its -wal (a writer still holds it open) when the new file
    is swapped in: the log is emptied first, and the new file reads back whole."""
    path = tmp_path / "index.db"
    writer = Index.create(path, A)
    fill(writer, [f"old {i}" for i in range(50)], 1)
    assert Path(f"{path}-wal").stat().st_size > 0
    build = lifecycle.Build(path)
    new = build.open(A)
    vectors = fill(new, ["fresh"], 4)
    build.swap(new)
    writer.close()  # the old connection goes away after the swap
    with Index.open(path, A) as index:
        assert [r.id for r in index.get()] == ["fresh"]
        assert index.search(vectors[0], k=1)[0].id == "fresh"
        assert index.check().ok


def test_a_resumable_build_continues_the_same_model_and_restarts_for_another(
    tmp_path: Path,
) -> None:
    path = tmp_path / "index.db"
    build = lifecycle.Build(path, resumable=True)
    assert build.temp == lifecycle.build_path(path) == Path(f"{path}.rebuild")
    with build.open(A, managed_by="agent") as first:
        fill(first, ["done before the stop"], 1)
    with lifecycle.Build(path, resumable=True).open(A, managed_by="agent") as again:
        assert [r.id for r in again.get()] == ["done before the stop"]
    with lifecycle.Build(path, resumable=True).open(B, managed_by="agent") as other:
        assert len(other) == 0 and other.identity.compare(B) == "same"


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    dead, alive = dead_pid(), os.getpid()
    stale = [
        tmp_path / f".index.db.creating-{dead}-0badc0de",
        tmp_path / f".index.db.creating-{dead}-0badc0de-wal",
        tmp_path / f".index.db.building-{dead}-0badc0de",
        tmp_path / f".index.db.building-{dead}-0badc0de-shm",
    ]
    kept = [tmp_path / f".index.db.building-{alive}-12345678", tmp_path / ".other.db.creating-1-x"]
    for p in stale + kept:
        p.write_bytes(b"partial")
    Index.create(path, A).close()
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in kept)


def test_create_refuses_an_existing_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    Index.create(path, A).close()
    from lokal.errors import IndexFileError

    with pytest.raises(IndexFileError, match="already exists"):
        Index.create(path, A)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.db"]


def test_snapshot_copies_what_is_still_in_the_log(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    with Index.create(path, A) as writer:
        vectors = fill(writer, ["kept in the log"], 5)
        before = ours()
        out = writer.snapshot(tmp_path / "snap.db")
        assert ours() == before
    assert not Path(f"{out}.tmp").exists() and (out.stat().st_mode & 0o777) == 0o640
    with Index.open(out, A) as copy:
        assert copy.search(vectors[0], k=1)[0].id == "kept in the log"
