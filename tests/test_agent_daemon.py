"""`lokal agent run|status|check`: the real daemon in a subprocess, real watchdog events.

Waits are event-driven: the agent logs ``idle:`` each time it has nothing left to do, and the
tests wait for that line (or another) on its stderr, with a generous timeout for busy boxes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lokal.agent import config as agent_config
from lokal.embedder import Embedder
from lokal.index import Index

from .conftest import _TOPICS

LOKAL = str(Path(sys.executable).parent / "lokal")
TOPICS = [_TOPICS[k] for k in sorted(_TOPICS)]


class AgentProcess:
    """``lokal agent run`` in a subprocess, its stderr read line by line."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [LOKAL, "agent", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 180) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[after:]:
                    if rx.search(line):
                        return line
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} in:\n{self.log()}")
                self._cond.wait(left)

    def idle_after(self, mark: int, until: Callable[[], bool] | None = None) -> None:
        """Wait for the agent to go idle after ``mark``; with ``until``, for the first idle line
        after which ``until()`` holds (an idle line already on its way when the test acted, for
        work done before, does not count)."""
        deadline = time.monotonic() + 180
        while True:
            self.wait_for(r"INFO idle:", after=mark, timeout=max(1.0, deadline - time.monotonic()))
            if until is None or until():
                return
            with self._cond:
                mark = max(i + 1 for i, line in enumerate(self.lines) if "INFO idle:" in line)

    def log(self) -> str:
        return "\n".join(self.lines)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        self._close()
        return code

    def _close(self) -> None:
        self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=60)
        self._close()


def lokal(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [LOKAL, *args], capture_output=True, text=True, timeout=300, check=False, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"lokal {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def write_config(path: Path, **values: object) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def indexed(db: Path) -> dict[str, str]:
    """uri -> the text of its chunks, joined."""
    with Index.open(db) as index:
        assert index.check().ok, index.check().problems
        out: dict[str, list[str]] = {}
        for r in index.get():
            out.setdefault(r.document, []).append(r.text)
        docs = {d.uri: d for d in index.documents() if d.status == "indexed"}
    return {uri: "\n".join(out.get(uri, [])) for uri in docs}


@pytest.fixture
def setup(tmp_path: Path, packed_gguf: Path) -> Iterator[tuple[Path, Path, Path]]:
    docs = tmp_path / "docs"
    (docs / "manuals").mkdir(parents=True)
    (docs / "pump.md").write_text("# Pump P-101\n\nHold the red button for five seconds.\n")
    (docs / "manuals" / "valve.txt").write_text(TOPICS[0][:1500])
    db = tmp_path / "var" / "index.db"
    cfg = write_config(
        tmp_path / "agent.toml",
        index=str(db),
        roots=[str(docs)],
        quiet_period=0.4,
        rescan_interval=0,  # events alone must do it
        model=str(packed_gguf),
    )
    yield docs, db, cfg


def test_agent_follows_changes_and_restarts(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    docs, db, cfg = setup
    outside = tmp_path / "outside"
    outside.mkdir()
    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO idle:")
        assert set(indexed(db)) == {str(docs / "pump.md"), str(docs / "manuals" / "valve.txt")}

        # a second agent on the same index refuses, and says why
        second = lokal("agent", "run", "--config", str(cfg), check=False)
        assert second.returncode == 1
        assert "another lokal agent" in second.stderr

        status = json.loads(lokal("agent", "status", "--config", str(cfg), "--json").stdout)
        assert status["running"] and status["documents"] == {"indexed": 2}
        assert status["roots"][0]["watch"] == "inotify"
        assert lokal("agent", "check", "--config", str(cfg)).stdout.startswith("OK")

        # create
        m = agent.mark()
        (docs / "new.md").write_text("Compressor C-7 runs at 40 bar.\n")
        agent.idle_after(m)
        assert "Compressor C-7" in indexed(db)[str(docs / "new.md")]

        # a slow write: open for ~2.5 s, written every 0.2 s (< quiet period): embedded once
        before = json.loads(lokal("agent", "status", "--config", str(cfg), "--json").stdout)
        m = agent.mark()
        with open(docs / "slow.txt", "w") as f:
            for i in range(12):
                f.write(f"line {i} of a log that grows for a while.\n")
                f.flush()
                time.sleep(0.2)
            f.write("the final line.\n")
        agent.idle_after(m)
        assert "the final line." in indexed(db)[str(docs / "slow.txt")]
        after = json.loads(lokal("agent", "status", "--config", str(cfg), "--json").stdout)
        assert after["embedded_files"] - before["embedded_files"] == 1

        # an editor's save by rename (the temporary file itself is never indexed)
        m = agent.mark()
        (docs / "pump.md.tmp").write_text("# Pump P-101\n\nHold the GREEN button instead.\n")
        os.replace(docs / "pump.md.tmp", docs / "pump.md")
        agent.idle_after(m, until=lambda: "GREEN" in indexed(db).get(str(docs / "pump.md"), ""))
        now = indexed(db)
        assert "GREEN" in now[str(docs / "pump.md")]
        assert not any(u.endswith(".tmp") for u in now)

        # move out of the root, move in, move a directory, delete
        m = agent.mark()
        os.rename(docs / "new.md", outside / "new.md")
        (outside / "incoming.txt").write_text("Turbine T-3 inspection every 400 hours.\n")
        os.rename(outside / "incoming.txt", docs / "incoming.txt")
        os.rename(docs / "manuals", docs / "handbooks")
        (docs / "slow.txt").unlink()
        agent.wait_for(r"INFO changes:", after=m)
        agent.idle_after(m)
        want = {
            str(docs / "pump.md"),
            str(docs / "incoming.txt"),
            str(docs / "handbooks" / "valve.txt"),
        }
        deadline = time.monotonic() + 60
        while set(indexed(db)) != want and time.monotonic() < deadline:
            m = agent.mark()
            agent.idle_after(m)  # later events (the directory's) are still being handled
        assert set(indexed(db)) == want
    finally:
        code = agent.terminate()
    assert code == 0, agent.log()
    assert "stopped" in agent.lines[-1]
    stopped = lokal("agent", "status", "--config", str(cfg), "--json", check=False)
    assert stopped.returncode == 1 and json.loads(stopped.stdout)["running"] is False

    # changes while stopped, one with its mtime put back: found at start-up
    pump = docs / "pump.md"
    st = pump.stat()
    pump.write_text("# Pump P-101\n\nHold the BLUE button.\n"[: len(pump.read_text())])
    os.utime(pump, ns=(st.st_atime_ns, st.st_mtime_ns))
    (docs / "incoming.txt").unlink()
    (docs / "later.txt").write_text("Added while the agent was stopped.\n")
    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO idle:")
        now = indexed(db)
        assert "BLUE" in now[str(pump)]
        assert set(now) == {
            str(pump),
            str(docs / "later.txt"),
            str(docs / "handbooks" / "valve.txt"),
        }
        line = agent.wait_for(r"INFO scan: ")  # the summary, not a "first scan:" progress line
        assert "2 indexed" in line and "1 removed" in line, line
    finally:
        assert agent.terminate() == 0


def test_root_that_disappears_keeps_its_documents(setup: tuple[Path, Path, Path]) -> None:
    docs, db, cfg = setup
    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO idle:")
        m = agent.mark()
        away = docs.with_name("docs-unmounted")
        os.rename(docs, away)  # as if unmounted
        agent.wait_for(r"root .* is not available \(missing\)", after=m)
        docs.mkdir()  # an empty mount point: still not trusted
        time.sleep(3)
        assert len(indexed(db)) == 2
        status = json.loads(lokal("agent", "status", "--config", str(cfg), "--json").stdout)
        assert status["roots"][0]["available"] is False
        (away / "while-away.txt").write_text("Written while the disk was elsewhere.\n")
        m = agent.mark()
        docs.rmdir()
        os.rename(away, docs)  # mounted again
        agent.wait_for(r"is available again", after=m)
        agent.idle_after(m)
        assert len(indexed(db)) == 3
        m = agent.mark()
        (docs / "after.txt").write_text("Watched again after the root came back.\n")
        agent.idle_after(m)
        assert str(docs / "after.txt") in indexed(db)
    finally:
        assert agent.terminate() == 0


@pytest.mark.parametrize(
    ("env", "expect"),
    [
        ({"LOKAL_AGENT_TEST_FSTYPE": "nfs4"}, r"is on nfs4, where inotify misses changes: polling"),
        ({"LOKAL_AGENT_TEST_WATCH_LIMIT": "1"}, r"fs\.inotify\.max_user_watches"),
    ],
    ids=["network-filesystem", "watch-limit"],
)
def test_polling_fallback(
    setup: tuple[Path, Path, Path], tmp_path: Path, env: dict[str, str], expect: str
) -> None:
    """The seams only pretend the mount type or the limit; the real PollingObserver runs."""
    docs, db, cfg = setup
    db = docs / "var" / "index.db"  # inside the watched root: its own files are never indexed
    text = cfg.read_text().replace(str(setup[1]), str(db)) + "poll_interval = 0.3\n"
    cfg.write_text(text)
    agent = AgentProcess(cfg, env=env)
    try:
        agent.wait_for(expect)
        agent.wait_for(r"INFO idle:")
        m = agent.mark()
        (docs / "polled.txt").write_text("Seen by polling.\n")
        agent.idle_after(m)
        now = indexed(db)
        assert "Seen by polling." in now[str(docs / "polled.txt")]
        assert {Path(u).name for u in now} == {"pump.md", "valve.txt", "polled.txt"}
        m = agent.mark()
        time.sleep(2)  # several polls of a root holding a live index: nothing to do
        assert not [line for line in agent.lines[m:] if "changes:" in line]
        status = json.loads(lokal("agent", "status", "--config", str(cfg), "--json").stdout)
        assert status["roots"][0]["watch"] == "polling"
    finally:
        assert agent.terminate() == 0


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, packed_gguf: Path) -> None:
    """kill -9 during indexing, 20 times: the index always opens and passes check, and after a
    clean run it holds exactly the files on disk. (Hundreds: ``tests/stress_agent_kill.py``.)"""
    kill_and_converge(tmp_path, packed_gguf, kills=20, seed=20261127)


def kill_and_converge(
    work: Path, model: Path, *, kills: int, seed: int, say: Callable[[str], None] = print
) -> None:
    """Start the agent, SIGKILL it at a random moment (while it embeds, writes, or watches
    files changing under it), check the index, change files, repeat; then one clean run must
    converge to exactly the files on disk."""
    import random

    rng = random.Random(seed)
    docs = work / "docs"
    docs.mkdir()

    def write(i: int) -> None:
        start = rng.randrange(len(TOPICS))
        text = "\n\n".join(TOPICS[(start + j) % len(TOPICS)][:800] for j in range(3))
        (docs / f"f{i:03d}.txt").write_text(f"file {i} version {rng.random()}\n{text}")

    def change_some() -> None:
        for _ in range(rng.randrange(2, 8)):
            i = rng.randrange(50)
            if (docs / f"f{i:03d}.txt").exists() and rng.random() < 0.3:
                (docs / f"f{i:03d}.txt").unlink()
            else:
                write(i)

    for i in range(40):
        write(i)
    db = work / "index.db"
    cfg = write_config(
        work / "agent.toml",
        index=str(db),
        roots=[str(docs)],
        quiet_period=0.1,
        rescan_interval=0,
        batch_chunks=16,
        model=str(model),
    )
    for n in range(1, kills + 1):
        agent = AgentProcess(cfg)
        agent.wait_for(r"INFO model:")  # the process is up; kill it somewhere after
        time.sleep(rng.uniform(0.0, 1.5))
        if rng.random() < 0.3:  # sometimes while files change under the watching agent
            change_some()
            time.sleep(rng.uniform(0.0, 0.5))
        agent.kill()
        with Index.open(db) as index:
            report = index.check()
            assert report.ok, (n, report.problems)
        change_some()  # and while it is down
        if n % 10 == 0:
            say(f"{n} kills: the index opened and passed check after each")
    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO idle:")
    finally:
        assert agent.terminate() == 0
    with Index.open(db) as index:
        assert index.check().ok
        docs_now = {d.uri: d for d in index.documents()}
    on_disk = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in docs.iterdir()}
    assert set(docs_now) == set(on_disk)
    assert all(docs_now[u].content_hash == h for u, h in on_disk.items())
    assert all(d.status == "indexed" and d.chunks > 0 for d in docs_now.values())
    say(f"converged: {len(on_disk)} files on disk, the same {len(docs_now)} in the index")


# ---- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('index = "i.db"\nroots = ["d"]\nqiuet_period = 1\n', "key 'qiuet_period': unknown key"),
        ('index = "i.db"\nroots = "d"\n', "key 'roots': must be list"),
        ('index = "i.db"\nroots = ["d"]\nthreads = true\n', "key 'threads': must be int"),
        ('index = "i.db"\nroots = ["d"]\npolling = "sometimes"\n', "key 'polling'"),
        ('index = "i.db"\nroots = []\n', "key 'roots': give at least one"),
        ('roots = ["d"]\n', "missing key 'index'"),
        ('index = "i.db"\nroots = ["d"]\noverlap = 200\nchunk_tokens = 256\n', "key 'overlap'"),
        ('index = "i.db"\nroots = ["d"]\nquiet_period = = 1\n', "line 3"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(text)
    with pytest.raises(agent_config.ConfigError, match=re.escape(message)):
        agent_config.load(p)


def test_config_error_from_the_cli_and_example_config(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text('index = "i.db"\nroots = ["d"]\nrescan_interval = -1\n')
    proc = lokal("agent", "run", "--config", str(p), check=False)
    assert proc.returncode == 1
    assert "key 'rescan_interval': must be >= 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    example = Path(__file__).parents[1] / "agent" / "agent.toml"
    cfg = agent_config.load(example)
    assert cfg.index.name == "index.db" and cfg.roots


def test_model_change_builds_a_new_index_and_swaps(
    setup: tuple[Path, Path, Path], gguf_embedder: Embedder, packed_gguf: Path
) -> None:
    """Another variant of the model (f16 instead of q8_0, packed from the same weights) never
    mixes vectors: the agent builds a new index beside the old one and renames it over it. A
    reader holding the old file follows (with a variant warning); a kill during the rebuild
    leaves the old index whole."""
    from lokal import packing
    from lokal.errors import ModelVariantWarning

    docs, db, cfg = setup
    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO idle:")
    finally:
        assert agent.terminate() == 0
    q = gguf_embedder.embed_query("how do I reset the pump?")
    reader = Index.open(db)
    assert reader.search(q, k=1)[0].document == str(docs / "pump.md")
    generation = reader.generation

    f16 = packing.pack("all-MiniLM-L6-v2", quantization="f16").path
    cfg.write_text(cfg.read_text().replace(str(packed_gguf), str(f16)))
    agent = AgentProcess(cfg)
    agent.wait_for(r"Building a new index beside it")
    agent.kill()
    with Index.open(db) as old:  # whatever the kill interrupted, the old index is whole
        assert old.identity.quantization == "q8_0" and old.check().ok
        assert len(list(old.documents())) == 2

    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"new index with .* is in place")
        agent.wait_for(r"INFO idle:")
        m = agent.mark()
        (docs / "after.md").write_text("Written after the model change.\n")
        agent.idle_after(m)
    finally:
        assert agent.terminate() == 0
    assert not Path(f"{db}.rebuild").exists()
    with Index.open(db) as new:
        assert new.identity.quantization == "f16" and new.check().ok
        assert {Path(d.uri).name for d in new.documents()} == {"pump.md", "valve.txt", "after.md"}
        # the swapped-in file is a new generation whose feed holds every chunk it has
        assert new.generation != generation
        assert {c.chunk_id for c in new.changes(0, 10_000)} == {r.id for r in new.get()}
    with pytest.warns(ModelVariantWarning, match="rebuilt with"):
        hits = reader.search(q, k=1)
    assert hits[0].document == str(docs / "pump.md")
    assert reader.identity.quantization == "f16"
    reader.close()
