"""Who may read and who may not: the agent's files for its group, and files it cannot read.

Root reads everything, so these run the other side as an unprivileged user through
``setpriv`` (util-linux). They need root (to create the ``lokal`` group and switch users);
elsewhere they are skipped, saying why.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_agent_daemon import LOKAL, TOPICS, AgentProcess, write_config

UID = 42420  # an unprivileged user that exists nowhere: setpriv needs no account

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("groupadd"),
    reason="needs root, setpriv and groupadd to act as another user",
)


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory other users can traverse (pytest's own tmp_path is private to root), and
    a lokal they can run: a checkout in a private directory (a fresh clone under a 0700
    mktemp directory) gets search permission for others on its ancestors, for this test only."""
    d = Path(tempfile.mkdtemp(prefix="lokal-users-"))
    d.chmod(0o711)
    changed: list[tuple[Path, int]] = []
    for top in (Path(sys.prefix), Path(__file__).resolve().parents[1]):
        for parent in [top, *top.parents]:
            mode = stat.S_IMODE(parent.stat().st_mode)
            if not mode & stat.S_IXOTH and parent not in {p for p, _ in changed}:
                changed.append((parent, mode))
                parent.chmod(mode | stat.S_IXOTH)
    try:
        yield d
    finally:
        for parent, mode in reversed(changed):
            parent.chmod(mode)
        shutil.rmtree(d, ignore_errors=True)


def as_user(
    uid: int, gid: int, groups: list[int], *cmd: str, **kw: object
) -> subprocess.CompletedProcess[str]:
    wrapper = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    wrapper += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return subprocess.run(
        [*wrapper, *cmd], capture_output=True, text=True, timeout=300, check=False, **kw
    )


READER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from lokal.index import Index
    from lokal.errors import IndexReadOnly, LokalError
    path, seconds = sys.argv[1], float(sys.argv[2])
    out = {"queries": 0, "errors": [], "write_refused": None}
    end = time.monotonic() + seconds
    with Index.open(path) as ix:
        q = np.ones(ix.dimension, dtype=np.float32)
        while time.monotonic() < end:
            try:
                ix.search(q, k=3)
                ix.text_search("pump", k=3)
                out["queries"] += 1
            except Exception as exc:
                out["errors"].append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.02)
        out["chunks"] = len(ix)
    try:
        Index.open(path, writable=True)
        out["write_refused"] = False
    except Exception as exc:
        out["write_refused"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))
    """
)


def test_group_members_read_while_the_agent_writes(base: Path, packed_gguf: Path) -> None:
    subprocess.run(["groupadd", "-f", "lokal"], check=True)
    gid = grp.getgrnam("lokal").gr_gid
    docs = base / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"m{i}.txt").write_text(f"Pump manual part {i}.\n{TOPICS[i][:600]}")
    db = base / "var" / "index.db"
    cfg = write_config(
        base / "agent.toml",
        index=str(db),
        roots=[str(docs)],
        quiet_period=0.2,
        rescan_interval=0,
        model=str(packed_gguf),
        group="lokal",
    )
    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO idle:")
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o2750
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            if p.exists():
                st = p.stat()
                assert st.st_gid == gid, p
                assert stat.S_IMODE(st.st_mode) & 0o007 == 0, (p, oct(st.st_mode))
        reader = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={UID}",
                f"--regid={UID}",
                f"--groups={gid}",
                sys.executable,
                "-c",
                READER,
                str(db),
                "6",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3, 12):  # the agent writes while the member reads
            (docs / f"m{i}.txt").write_text(f"Pump manual part {i}.\n{TOPICS[i][:600]}")
            agent.idle_after(agent.mark())
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
        result = json.loads(out)
        assert result["queries"] > 10 and result["errors"] == [], result
        assert result["write_refused"], result  # a member of the group may not write
        # someone outside the group cannot even open it
        outsider = as_user(UID + 1, UID + 1, [], sys.executable, "-c", READER, str(db), "0")
        assert outsider.returncode != 0
        assert "ermission denied" in outsider.stderr or "unable to open" in outsider.stderr
    finally:
        assert agent.terminate() == 0


def test_an_unreadable_file_is_recorded_and_the_rest_indexed(base: Path, packed_gguf: Path) -> None:
    """The agent as an ordinary user meets a file it may not read: recorded as failed with the
    reason, the others indexed, and retried (and indexed) once it becomes readable."""
    home = base / "home"
    docs = base / "docs"
    home.mkdir()
    docs.mkdir()
    model = home / packed_gguf.name
    shutil.copy(packed_gguf, model)
    (docs / "open.txt").write_text("Anyone may read this manual.\n")
    secret = docs / "secret.txt"
    secret.write_text("Only root may read this.\n")
    secret.chmod(0o000)
    os.chown(home, UID, UID)
    os.chown(docs, UID, UID)
    os.chown(docs / "open.txt", UID, UID)
    db = home / "index.db"
    env = {**os.environ, "LOKAL_HOME": str(home), "HOME": str(home)}
    cmd = [LOKAL, "index", str(docs), "--index", str(db), "--model", str(model), "--json"]
    first = as_user(UID, UID, [], *cmd, env=env)
    assert first.returncode == 1, first.stderr  # a failed file is a non-zero exit
    summary = json.loads(first.stdout)
    assert (summary["indexed"], summary["failed"]) == (1, 1), summary
    assert summary["problems"][0]["path"] == str(secret)
    assert "Permission denied" in summary["problems"][0]["reason"]
    secret.chmod(0o644)
    second = as_user(UID, UID, [], *cmd, env=env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["indexed"] == 1


# ---- the index's directory and files: one rule for the agent and `lokal index` (access.py)


def _lokal_group() -> int:
    subprocess.run(["groupadd", "-f", "lokal"], check=True)
    return grp.getgrnam("lokal").gr_gid


def _docs(base: Path) -> Path:
    docs = base / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"m{i}.txt").write_text(f"Pump manual part {i}.\n{TOPICS[i][:600]}")
    return docs


def _member_reads(db: Path, gid: int) -> dict[str, object]:
    out = as_user(UID, UID, [gid], sys.executable, "-c", READER, str(db), "0.5")
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    assert result["errors"] == [] and result["chunks"], result
    return result


def test_an_existing_directory_keeps_its_mode_and_group(base: Path, packed_gguf: Path) -> None:
    gid = _lokal_group()
    docs = _docs(base)
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    before = shared.stat()
    db = shared / "index.db"
    cfg = write_config(
        base / "agent.toml",
        index=str(db),
        roots=[str(docs)],
        quiet_period=0.2,
        rescan_interval=0,
        model=str(packed_gguf),
        group="lokal",
    )
    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO idle:")
        after = shared.stat()
        assert (stat.S_IMODE(after.st_mode), after.st_gid) == (
            stat.S_IMODE(before.st_mode),
            before.st_gid,
        )
        assert "writable by every user" in agent.log()
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            st = p.stat()  # the agent's own files do get the group
            assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (gid, 0o640), p
    finally:
        assert agent.terminate() == 0
    check = subprocess.run(
        [LOKAL, "agent", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "writable by every user" in check.stderr, check.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_group_members_read_while_the_agent_is_stopped(base: Path, packed_gguf: Path) -> None:
    gid = _lokal_group()
    docs = _docs(base)
    db = base / "var" / "index.db"
    cfg = write_config(
        base / "agent.toml",
        index=str(db),
        roots=[str(docs)],
        quiet_period=0.2,
        rescan_interval=0,
        model=str(packed_gguf),
        group="lokal",
    )
    agent = AgentProcess(cfg)
    agent.wait_for(r"INFO idle:")
    assert agent.terminate() == 0  # stopped cleanly
    _member_reads(db, gid)
    agent = AgentProcess(cfg)
    agent.wait_for(r"INFO idle:")
    agent.kill()  # stopped by kill -9: its -wal and -shm stay
    _member_reads(db, gid)


def test_lokal_index_gives_the_file_to_the_group(base: Path, packed_gguf: Path) -> None:
    gid = _lokal_group()
    docs = _docs(base)
    db = base / "out" / "index.db"
    proc = subprocess.run(
        [LOKAL, "index", str(docs), "--index", str(db), "--model", str(packed_gguf)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    st = db.stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (gid, 0o640)
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o2750
    _member_reads(db, gid)
