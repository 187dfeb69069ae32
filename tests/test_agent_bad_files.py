"""One bad file never stops `lokal index` or `lokal agent run` (issue 12): file names that are
not UTF-8, zip bombs, one huge line, files over their time limit, broken UTF-8. The real CLI
and the real agent in subprocesses."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lokal.index import Index

from .test_agent_cli import index_json, lokal
from .test_agent_daemon import AgentProcess, write_config


def _bytes_path(directory: Path, name: bytes) -> bytes:
    return os.fsencode(directory) + b"/" + name


def test_index_file_names_that_are_not_utf8(tmp_path: Path, packed_gguf: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    bad = _bytes_path(docs, b"caf\xe9.txt")  # Latin-1 name: not valid UTF-8
    with open(bad, "wb") as f:
        f.write(b"The espresso machine in the caf\xc3\xa9 needs descaling.\n")
    os.mkdir(_bytes_path(docs, b"d\xfcsseldorf"))
    with open(_bytes_path(docs, b"d\xfcsseldorf/plan.txt"), "wb") as f:
        f.write(b"Plant layout for the second hall.\n")
    (docs / "good.txt").write_text("Pump P-101: hold the red button.\n")
    (docs / "back\\slash.txt").write_text("A name with a backslash.\n")
    db = tmp_path / "index.db"

    first = index_json(docs, db, "--model", str(packed_gguf))
    assert (first["indexed"], first["failed"]) == (4, 0), first
    with Index.open(db) as index:
        uris = {d.uri for d in index.documents() if d.status == "indexed"}
    assert uris == {
        f"{docs}/caf\\xe9.txt",
        f"{docs}/d\\xfcsseldorf/plan.txt",
        f"{docs}/good.txt",
        f"{docs}/back\\\\slash.txt",
    }
    # the table output and `lokal check` (which re-reads every file by its URI) do not crash
    table = lokal("index", str(docs), "--index", str(db), "--model", str(packed_gguf))
    assert "unchanged  4" in table.stdout
    check = json.loads(lokal("check", "--index", str(db), "--json").stdout)
    assert check["ok"] and check["stale"] == [], check
    found = lokal("search", "espresso descaling", "--index", str(db), "-k", "1")
    assert "caf\\xe9.txt" in found.stdout

    # a change is followed, a rename, a delete
    with open(bad, "wb") as f:
        f.write(b"The caf\xc3\xa9 now serves tea only.\n")
    sub = b"d\xfcsseldorf/"
    os.rename(_bytes_path(docs, sub + b"plan.txt"), _bytes_path(docs, sub + b"pl\xe4n.txt"))
    second = index_json(docs, db, "--model", str(packed_gguf))
    assert (second["indexed"], second["removed"]) == (2, 1), second
    os.remove(bad)
    third = index_json(docs, db, "--model", str(packed_gguf))
    assert third["removed"] == 1, third
    with Index.open(db) as index:
        uris = {d.uri for d in index.documents()}
    assert f"{docs}/caf\\xe9.txt" not in uris
    assert f"{docs}/d\\xfcsseldorf/pl\\xe4n.txt" in uris


def test_agent_follows_file_names_that_are_not_utf8(tmp_path: Path, packed_gguf: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    with open(_bytes_path(docs, b"caf\xe9.txt"), "wb") as f:
        f.write(b"The espresso machine needs descaling.\n")
    (docs / "good.txt").write_text("Pump P-101: hold the red button.\n")
    db = tmp_path / "var" / "index.db"
    cfg = write_config(
        tmp_path / "agent.toml",
        index=str(db),
        roots=[str(docs)],
        quiet_period=0.2,
        rescan_interval=0,
        model=str(packed_gguf),
    )

    def uris() -> set[str]:
        with Index.open(db) as index:
            return {d.uri for d in index.documents() if d.status == "indexed"}

    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO idle:")
        assert uris() == {f"{docs}/caf\\xe9.txt", f"{docs}/good.txt"}
        m = agent.mark()
        os.rename(_bytes_path(docs, b"caf\xe9.txt"), _bytes_path(docs, b"th\xe9.txt"))
        agent.wait_for(r"INFO changes:", after=m)
        agent.idle_after(m)
        assert uris() == {f"{docs}/th\\xe9.txt", f"{docs}/good.txt"}
        m = agent.mark()
        os.remove(_bytes_path(docs, b"th\xe9.txt"))
        agent.wait_for(r"INFO changes:.*1 removed", after=m)
        assert uris() == {f"{docs}/good.txt"}
    finally:
        assert agent.terminate() == 0, agent.log()
