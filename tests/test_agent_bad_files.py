"""One bad file never stops `lokal index` or `lokal agent run` (issue 12): file names that are
not UTF-8, zip bombs, one huge line, files over their time limit, broken UTF-8. The real CLI
and the real agent in subprocesses."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lokal.agent.filenames import inside, path_of, uri_of
from lokal.index import Index

from .test_agent_cli import LOKAL, index_json, lokal
from .test_agent_daemon import TOPICS, AgentProcess, write_config
from .test_parsers import docx_bomb


@pytest.mark.parametrize(
    "raw",
    [b"/d/caf\xe9.txt", b"/d/ok.txt", b"/d/a\\b.txt", b"/d/caf\\xe9.txt", b"/d\xff/\\x\xc3\xa9"],
)
def test_uris_are_utf8_distinct_and_lead_back_to_the_bytes(raw: bytes) -> None:
    uri = uri_of(Path(os.fsdecode(raw)))
    uri.encode("utf-8")  # storable, printable
    assert os.fsencode(path_of(uri)) == raw
    assert inside(uri, uri_of(Path(os.fsdecode(raw.rsplit(b"/", 1)[0]))))


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


def test_zip_bomb_and_broken_utf8_are_recorded_and_the_rest_indexed(
    tmp_path: Path, packed_gguf: Path
) -> None:
    import docx

    docs = tmp_path / "docs"
    docs.mkdir()
    # a 1 GiB word/document.xml in a ~8 MB docx: 2 GB of memory when read (MemoryMax=1G)
    (docs / "bomb.docx").write_bytes(docx_bomb(1024 * 1024 * 1024))
    manual = docx.Document()
    manual.add_paragraph("Reset the pump by holding the red button.")
    manual.save(docs / "manual.docx")
    good = "Le café est prêt. Crème brûlée, déjà vu, naïve, Grüße aus München.\n" * 20
    (docs / "notes.txt").write_bytes(good.encode() + b"four bad bytes: \xe9\xff\x80\xfe.\n")
    (docs / "good.txt").write_text("Pump P-101: hold the red button.\n")
    db = tmp_path / "index.db"
    out = tmp_path / "out.json"
    peak = tmp_path / "peak_kb"
    # lokal index runs under a small Python that reports its peak RSS: a child forked straight
    # from this test process inherits its high-water mark (torch loaded by earlier tests), and
    # ru_maxrss would report this process's peak as the child's
    measure = (
        "import os, subprocess, sys; child = subprocess.Popen(sys.argv[2:]); "
        "_, status, usage = os.wait4(child.pid, 0); "
        "open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); "
        "sys.exit(os.waitstatus_to_exitcode(status))"
    )
    command = [LOKAL, "index", str(docs), "--index", str(db), "--json", "--model", str(packed_gguf)]
    with open(out, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-c", measure, str(peak), *command],
            stdout=f,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    summary = json.loads(out.read_text())
    assert proc.returncode == 1  # a file failed: said in the exit code, the rest indexed
    assert (summary["indexed"], summary["failed"]) == (3, 1), summary
    peak_mb = int(peak.read_text()) / 1024
    assert peak_mb < 600, f"peak RSS {peak_mb:.0f} MB"
    with Index.open(db) as index:
        docs_by_name = {Path(d.uri).name: d for d in index.documents()}
        texts = {Path(r.document).name: r.text for r in index.get()}
    bomb = docs_by_name["bomb.docx"]
    assert bomb.status == "failed" and "zip bomb" in (bomb.error or ""), bomb
    assert "café est prêt" in texts["notes.txt"] and "cafĂ" not in texts["notes.txt"]
    notes = docs_by_name["notes.txt"]
    assert notes.metadata["warning"] == (
        "not valid UTF-8: 4 invalid byte sequences replaced with U+FFFD"
    )
    assert any(p["reason"].startswith("not valid UTF-8") for p in summary["problems"])


def _base64_line(n: int) -> str:
    return base64.b64encode(random.Random(5).randbytes(n)).decode()[:n]


def test_time_limit_covers_chunking_and_embedding(tmp_path: Path, packed_gguf: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    # chunking alone takes tens of seconds (3 MB of base64 on one line)
    (docs / "attachment.log").write_text(_base64_line(3_000_000) + "\n")
    # chunked in well under a second, but about 700 chunks to embed (half a minute)
    prose = "\n\n".join(TOPICS)[:300_000]
    (docs / "reference.txt").write_text(prose)
    (docs / "good.txt").write_text("Pump P-101: hold the red button.\n")
    db = tmp_path / "var" / "index.db"
    cfg = write_config(
        tmp_path / "agent.toml",
        index=str(db),
        roots=[str(docs)],
        quiet_period=0.2,
        rescan_interval=0,
        max_file_seconds=5,
        model=str(packed_gguf),
    )
    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO idle:", timeout=300)
        with Index.open(db) as index:
            records = {Path(d.uri).name: d for d in index.documents()}
        assert records["good.txt"].status == "indexed"
        attachment, reference = records["attachment.log"], records["reference.txt"]
        assert attachment.status == "failed", attachment
        assert "not parsed and chunked within 5 s (max_file_seconds)" in attachment.error
        assert reference.status == "failed", reference
        assert "not embedded within 5 s (max_file_seconds)" in reference.error
        # and the agent goes on
        m = agent.mark()
        (docs / "later.txt").write_text("Compressor C-7 runs at 40 bar.\n")
        agent.idle_after(m)
        with Index.open(db) as index:
            assert index.document(str(docs / "later.txt")).status == "indexed"
    finally:
        assert agent.terminate() == 0, agent.log()


def test_sigterm_is_honoured_inside_one_big_file(tmp_path: Path, packed_gguf: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "attachment.log").write_text(_base64_line(5_000_000) + "\n")
    db = tmp_path / "var" / "index.db"
    cfg = write_config(
        tmp_path / "agent.toml",
        index=str(db),
        roots=[str(docs)],
        rescan_interval=0,
        model=str(packed_gguf),
    )
    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO large file: .*attachment.log")
        agent.proc.send_signal(signal.SIGTERM)
        # a liveness bound, not a speed measure: before, it went on for minutes (the file
        # had to be chunked and embedded whole first)
        code = agent.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        agent.kill()
        raise AssertionError("SIGTERM not honoured within 30 s:\n" + agent.log()) from None
    agent._close()
    assert code == 0, agent.log()
    assert "stopped" in agent.lines[-1]
    with Index.open(db) as index:  # nothing recorded for the file: the next start reads it
        assert index.document(str(docs / "attachment.log")) is None
