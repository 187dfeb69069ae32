"""The agent's life on a box: kill -9 mid pass, a full disk, an index deleted or truncated.

Real ``lokal agent run`` processes (see test_agent_daemon.py); waits are on the agent's log
lines or on the index's rows, never on sleeps alone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lokal.errors import IndexFileError
from lokal.index import Index, sqlite

from .test_agent_daemon import TOPICS, AgentProcess, indexed, lokal, write_config


def _config(tmp_path: Path, docs: Path, db: Path, model: Path, **extra: object) -> Path:
    return write_config(
        tmp_path / "agent.toml",
        index=str(db),
        roots=[str(docs)],
        quiet_period=0.2,
        rescan_interval=0,
        model=str(model),
        **extra,
    )


def _documents(db: Path) -> dict[str, float]:
    """uri -> updated_at of the indexed documents (empty while the file is not there yet)."""
    try:
        with Index.open(db) as index:
            return {d.uri: d.updated_at for d in index.documents() if d.status == "indexed"}
    except IndexFileError:
        return {}


def _wait_documents(db: Path, agent: AgentProcess, at_least: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while len(_documents(db)) < at_least:
        assert agent.proc.poll() is None, agent.log()
        assert time.monotonic() < deadline, agent.log()
        time.sleep(0.05)


@pytest.mark.slow
def test_restart_after_kill_keeps_what_was_committed(tmp_path: Path, packed_gguf: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    n = 60
    for i in range(n):
        (docs / f"f{i:03}.txt").write_text(f"File {i}.\n{TOPICS[i % len(TOPICS)][:1500]}")
    db = tmp_path / "var" / "index.db"
    cfg = _config(tmp_path, docs, db, packed_gguf, batch_chunks=1)
    agent = AgentProcess(cfg)
    try:
        _wait_documents(db, agent, 5)
    finally:
        agent.kill()  # SIGKILL, mid first pass
    before = _documents(db)
    assert 5 <= len(before) < n, "the first pass ended before the kill: make it longer"
    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO idle:")
        status = json.loads(Path(f"{db}.status.json").read_text())
        after = _documents(db)
    finally:
        assert agent.terminate() == 0
    assert len(after) == n
    again = {uri for uri, t in before.items() if after[uri] != t}
    assert not again, f"{len(again)} of {len(before)} files committed before the kill re-embedded"
    assert status["embedded_files"] == n - len(before)


# ---- disk full -----------------------------------------------------------------------------


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A real 8 MB filesystem (tmpfs) that can be filled; skipped where mounting is impossible."""
    d = Path(tempfile.mkdtemp(prefix="lokal-small-fs-"))
    mount = shutil.which("mount")
    ok = mount is not None and os.geteuid() == 0
    if ok:
        done = subprocess.run(
            [mount, "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)],
            capture_output=True,
            check=False,
        )
        ok = done.returncode == 0
    if not ok:
        d.rmdir()
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        with contextlib.suppress(OSError):
            d.rmdir()


def _fill(directory: Path, leave: int) -> Path:
    """Fill the filesystem holding ``directory`` until ``leave`` bytes are free."""
    ballast = directory / "ballast"
    block = b"\0" * 65536
    with open(ballast, "wb") as f:
        while True:
            st = os.statvfs(directory)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                f.write(block[: max(4096, min(len(block), free - leave))])
                f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return ballast


def _status(db: Path) -> dict[str, object]:
    return json.loads(Path(f"{db}.status.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.slow
def test_disk_full_is_reported_and_survived(
    tmp_path: Path, small_fs: Path, packed_gguf: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump P-101\n\nHold the red button for five seconds.\n")
    db = small_fs / "index.db"
    cfg = _config(tmp_path, docs, db, packed_gguf, batch_chunks=4)
    agent = AgentProcess(cfg, env={"LOKAL_AGENT_DISK_RETRY_MAX": "2"})
    try:
        agent.idle_after(0)
        # while watching: the disk fills, new files cannot be written
        ballast = _fill(small_fs, 0)
        mark = agent.mark()
        for i in range(20):
            (docs / f"w{i:02}.txt").write_text(f"Watched {i}.\n{TOPICS[i][:3000]}")
        agent.wait_for(r"WARNING .*disk is full", after=mark)
        assert agent.proc.poll() is None
        assert _status(db)["state"] == "disk full"
        mark = agent.mark()
        ballast.unlink()
        agent.wait_for(r"INFO .*space again", after=mark)
        agent.idle_after(mark)
        assert agent.terminate() == 0
        assert len(indexed(db)) == 21
        # the first pass: the agent starts with a nearly full disk and many files to read
        for i in range(30):
            (docs / f"s{i:02}.txt").write_text(f"Started {i}.\n{TOPICS[20 + i][:3000]}")
        ballast = _fill(small_fs, 256 * 1024)
        agent = AgentProcess(cfg, env={"LOKAL_AGENT_DISK_RETRY_MAX": "2"})
        agent.wait_for(r"WARNING .*disk is full")
        assert agent.proc.poll() is None
        kept = indexed(db)
        assert len(kept) >= 21  # what was indexed stays
        mark = agent.mark()
        ballast.unlink()
        agent.idle_after(mark)
        assert agent.terminate() == 0
        assert len(indexed(db)) == 51
        assert "Traceback" not in agent.log()
    finally:
        if agent.proc.poll() is None:
            agent.kill()


# ---- the index file deleted or damaged -----------------------------------------------------


@pytest.fixture
def small_setup(tmp_path: Path, packed_gguf: Path) -> tuple[Path, Path, Path]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump P-101\n\nHold the red button for five seconds.\n")
    (docs / "valve.txt").write_text(TOPICS[0][:1500])
    db = tmp_path / "var" / "index.db"
    return docs, db, _config(tmp_path, docs, db, packed_gguf)


def test_index_deleted_under_the_agent_is_rebuilt(small_setup: tuple[Path, Path, Path]) -> None:
    docs, db, cfg = small_setup
    agent = AgentProcess(cfg)
    try:
        agent.idle_after(0)
        mark = agent.mark()
        db.unlink()  # `rm index.db`: the -wal and -shm stay
        agent.wait_for(r"WARNING .*index file .*(deleted|replaced)", after=mark)
        agent.idle_after(mark)
        assert db.exists()
        mark = agent.mark()
        (docs / "new.txt").write_text("A new note about the boiler pressure.\n")
        agent.idle_after(mark)
        assert sorted(Path(u).name for u in indexed(db)) == ["new.txt", "pump.md", "valve.txt"]
    finally:
        assert agent.terminate() == 0


def test_a_new_index_never_takes_the_wal_of_a_deleted_one(
    small_setup: tuple[Path, Path, Path],
) -> None:
    docs, db, cfg = small_setup
    agent = AgentProcess(cfg)
    agent.idle_after(0)
    conn = sqlite.connect(db)  # a checkpoint, as SQLite makes now and then: the main file
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # grows, the log restarts from there
    conn.close()
    mark = agent.mark()
    (docs / "new.txt").write_text(f"A new note.\n{TOPICS[3][:3000]}")
    agent.idle_after(mark)
    agent.kill()  # kill -9: the -wal holds the last commits
    assert Path(f"{db}-wal").stat().st_size > 0
    db.unlink()
    for attempt in range(2):  # it failed "malformed" on every start
        agent = AgentProcess(cfg)
        try:
            agent.idle_after(0)
        finally:
            assert agent.terminate() == 0, attempt
        assert "malformed" not in agent.log()
        assert sorted(Path(u).name for u in indexed(db)) == ["new.txt", "pump.md", "valve.txt"]


def test_a_truncated_index_gets_a_clear_message(
    small_setup: tuple[Path, Path, Path], packed_gguf: Path
) -> None:
    docs, db, cfg = small_setup
    for i in range(12):
        (docs / f"m{i}.txt").write_text(f"Manual {i}.\n{TOPICS[i][:2000]}")
    agent = AgentProcess(cfg)
    agent.idle_after(0)
    assert agent.terminate() == 0
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(size // 2)
    runs = {
        "search": lokal("search", "pump", "--index", str(db), check=False),
        "check": lokal("check", "--index", str(db), check=False),
        "agent run": lokal("agent", "run", "--config", str(cfg), check=False),
    }
    for name, proc in runs.items():
        assert proc.returncode != 0, name
        assert "Traceback" not in proc.stderr, (name, proc.stderr)
        assert "IndexFileError" in proc.stderr, (name, proc.stderr)
        assert f"{db} is truncated" in proc.stderr, (name, proc.stderr)
