"""The index tells the truth about itself: damage is found and reported (never a traceback,
never NaN scores), and a reader of an existing index never reaches for the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lokal.errors import IndexFileError
from lokal.identity import ModelIdentity
from lokal.index import Chunk, Index

from .conftest import _TOPICS

LOKAL = str(Path(sys.executable).parent / "lokal")
HUB_MODEL = "BAAI/bge-small-en-v1.5"


def _online_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user who never set offline mode, with an empty Hugging Face cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "LOKAL_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    return env


@pytest.fixture
def hub_model_index(tmp_path: Path) -> Path:
    """An index written with a hub model this machine does not have."""
    identity = ModelIdentity(
        name=HUB_MODEL,
        source_sha256="5" * 64,
        pooling="cls",
        normalize=True,
        dimension=384,
        document_prefix="",
        backend="sentence-transformers",
        quantization="f32",
        file_sha256="5" * 64,
        query_prefix="Represent this sentence for searching relevant passages: ",
    )
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    db = tmp_path / "hub.db"
    with Index.create(db, identity) as index:
        index.upsert(
            [Chunk("pumps are reset by holding the red button"), Chunk("filters")], vectors
        )
    return db


def test_reader_of_a_hub_model_index_does_not_download(
    hub_model_index: Path, tmp_path: Path
) -> None:
    """Without HF_HUB_OFFLINE, `lokal search` on such an index says how to bring the model,
    at once, and no socket is ever opened (audit hook in the real CLI's process)."""
    proc = subprocess.run(
        [LOKAL, "search", "how to reset the pump", "--index", str(hub_model_index)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_online_env(tmp_path),
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "ModelNotFound" in proc.stderr and HUB_MODEL in proc.stderr, proc.stderr
    assert "lokal models pack" in proc.stderr and "connected machine" in proc.stderr

    watched = (
        "import sys\n"
        "def hook(event, args):\n"
        "    if event in ('socket.connect', 'socket.getaddrinfo', 'socket.gethostbyname'):\n"
        "        sys.stderr.write(f'NETWORK {event} {args!r}\\n')\n"
        "        raise OSError('network touched')\n"
        "sys.addaudithook(hook)\n"
        "from lokal.agent.cli import main\n"
        "sys.argv = ['lokal', 'search', 'how to reset the pump', '--index', sys.argv[1]]\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", watched, str(hub_model_index)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_online_env(tmp_path),
        check=False,
    )
    assert "NETWORK" not in proc.stderr, proc.stderr
    assert proc.returncode == 1 and "ModelNotFound" in proc.stderr, proc.stderr


# ---- damage --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_index(tmp_path_factory: pytest.TempPathFactory, packed_gguf: Path) -> Path:
    """A real index made by the real CLI from 40 real files (about 0.5 MB)."""
    root = tmp_path_factory.mktemp("damage")
    docs = root / "docs"
    docs.mkdir()
    for i, key in enumerate(sorted(_TOPICS)[:40]):
        (docs / f"{i:03d}.txt").write_text(_TOPICS[key][:6000])
    db = root / "index.db"
    proc = subprocess.run(
        [LOKAL, "index", str(docs), "--index", str(db)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return db


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LOKAL, *args], capture_output=True, text=True, timeout=300, check=False)


def _damaged_copy(src: Path, dest: Path, seed: int) -> Path:
    """``src`` with 64 KB of random bytes written at a place chosen by ``seed`` (never the
    first page: a broken header is refused at open, a case of its own)."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    at = int(rng.integers(4096, len(data) - 65536))
    data[at : at + 65536] = rng.bytes(65536)
    dest.write_bytes(bytes(data))
    return dest


def _vector_damaged_copy(src: Path, dest: Path, rowid: int, garbage: bytes) -> Path:
    """``src`` with the bytes of one stored vector partly overwritten, nothing else: SQLite's
    own integrity_check still says "ok"."""
    with Index.open(src) as index:
        blob = bytes(
            index._reader()
            .execute("SELECT embedding FROM chunks_vec WHERE rowid = ?", (rowid,))
            .fetchone()[0]
        )
    data = bytearray(src.read_bytes())
    at = data.find(blob[:64])
    assert at > 0 and data.find(blob[:64], at + 1) == -1
    data[at + 64 : at + 64 + len(garbage)] = garbage
    dest.write_bytes(bytes(data))
    return dest


def _assert_reported(db: Path) -> None:
    check = _run("check", "--index", str(db))
    assert "Traceback" not in check.stderr + check.stdout, check.stderr
    assert check.returncode == 1, check.stdout + check.stderr
    named = [ln for ln in (check.stdout + check.stderr).splitlines() if "integrity:" in ln]
    assert named or "IndexFileError" in check.stderr, check.stdout + check.stderr
    found = _run("search", "how does a for loop work", "--index", str(db), "--json")
    assert "Traceback" not in found.stderr, found.stderr
    if found.returncode == 0:  # the damage missed everything a search reads
        scores = [hit["score"] for hit in json.loads(found.stdout)]
        assert all(np.isfinite(scores)), scores
    else:
        assert found.returncode == 1 and "IndexFileError" in found.stderr, found.stderr


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_random_damage_is_reported_never_a_traceback(
    real_index: Path, tmp_path: Path, seed: int
) -> None:
    _assert_reported(_damaged_copy(real_index, tmp_path / "damaged.db", seed))


@pytest.mark.parametrize(
    "garbage",
    [
        np.full(64, np.inf, dtype=np.float32).tobytes(),
        np.random.default_rng(7).bytes(256),
        np.full(16, 3.0, dtype=np.float32).tobytes(),  # finite, but no longer unit length
    ],
    ids=["infinite", "random-bytes", "finite-not-unit"],
)
def test_damaged_vectors_are_found_and_search_refuses(
    real_index: Path, tmp_path: Path, garbage: bytes
) -> None:
    db = _vector_damaged_copy(real_index, tmp_path / "damaged.db", 7, garbage)
    with Index.open(db) as index:
        assert [r[0] for r in index._reader().execute("PRAGMA integrity_check")] == ["ok"]
        report = index.check()
        assert not report.ok
        assert any("rows 7" in p and "vectors not" in p for p in report.problems), report
        with pytest.raises(IndexFileError, match="damaged"):
            index.search(np.ones(index.dimension, dtype=np.float32), k=3)
    check = _run("check", "--index", str(db))
    assert check.returncode == 1 and "Traceback" not in check.stderr
    assert "vectors not" in check.stdout, check.stdout
    found = _run("search", "how does a for loop work", "--index", str(db))
    assert found.returncode == 1 and "Traceback" not in found.stderr, found.stderr
    assert "IndexFileError" in found.stderr and "lokal check" in found.stderr


def test_check_reports_free_space(real_index: Path) -> None:
    with Index.open(real_index) as index:
        report = index.check()
    assert report.ok, report.problems
    assert report.counts["file_bytes"] == real_index.stat().st_size
    assert {"free_pages", "free_bytes", "vector_slots_unused"} <= set(report.counts)


@pytest.mark.parametrize("writable_here", [True, False], ids=["writable", "read-only"])
def test_fulltext_drift_is_found_also_by_a_read_only_checker(
    real_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writable_here: bool
) -> None:
    """A chunk's text changed behind FTS5's back: SQLite's integrity_check says "ok", the
    full-text integrity-check does not; a reader who may not write the file (FTS5's check is
    an INSERT) runs it on a private copy."""
    db = tmp_path / "drift.db"
    db.write_bytes(real_index.read_bytes())
    with Index.open(db, writable=True, agent=True) as index:
        index._reader().execute("UPDATE chunks SET text = 'zebra quagga okapi' WHERE id = 3")
    if not writable_here:
        from lokal.index import upkeep

        real_access = os.access
        monkeypatch.setattr(
            upkeep.os, "access", lambda p, m: False if Path(p) == db else real_access(p, m)
        )
    with Index.open(db) as index:
        report = index.check()
    assert any("full-text" in p for p in report.problems), report.problems


@pytest.mark.parametrize("quantization", ["float", "int8", "bit"])
def test_check_of_an_empty_index_is_ok(tmp_path: Path, quantization: str) -> None:
    """A new index, or one whose every document was removed (the agent killed before its first
    write): check reports it healthy instead of failing on the empty search copy."""
    identity = ModelIdentity("empty", "e" * 64, "mean", True, 24, "", "gguf", "q8_0", "f", "")
    with Index.create(tmp_path / "e.db", identity, quantization=quantization) as index:
        report = index.check()
        assert report.ok, report.problems
        assert report.counts["chunks"] == 0
