"""Long work shows progress, and the journal shows severity.

- ``lokal index`` and ``lokal eval``: plain lines (done of total, the rate, the time left) on
  stderr when it is not a terminal, a bar when it is (a real pseudo-terminal); stdout stays
  what the command prints (JSON here).
- ``lokal agent run``: the first scan's progress as log lines; under systemd (``JOURNAL_STREAM``
  naming stderr) every line carries its journald priority, so ``journalctl -p warning`` works.
"""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lokal.agent.cli import output

from .test_agent_daemon import TOPICS, write_config

LOKAL = str(Path(sys.executable).parent / "lokal")


def _docs(root: Path, n: int) -> Path:
    root.mkdir()
    for i in range(n):
        (root / f"note{i}.txt").write_text(f"Note {i}.\n{TOPICS[i % len(TOPICS)][:1200]}")
    return root


def _env(**extra: str) -> dict[str, str]:
    """The run's model cache (LOKAL_HOME), where ``packed_gguf`` put the default GGUF."""
    return {**os.environ, output.PROGRESS_SECONDS_ENV: "0", **extra}


@pytest.mark.slow
def test_lokal_index_prints_progress_lines_when_piped(tmp_path: Path, packed_gguf: Path) -> None:
    docs = _docs(tmp_path / "docs", 4)
    db = tmp_path / "index.db"
    proc = subprocess.run(
        [LOKAL, "index", str(docs), "--index", str(db), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # stdout is the JSON alone
    assert summary["indexed"] == 4
    # (only the lines of the bar: a library may write to stderr too)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("indexing")]
    assert lines[0] == "indexing: 4 files", proc.stderr
    during = [line for line in lines if re.match(r"indexing: [1-3] of 4 files, \d+ chunks", line)]
    assert during, proc.stderr
    assert all(re.search(r"\(\d+\.\d chunks/s\), about \d+s left$", line) for line in during)
    assert re.fullmatch(
        rf"indexing: 4 of 4 files, {summary['chunks']} chunks \(\d+\.\d chunks/s\), done in \d+s",
        lines[-1],
    ), proc.stderr


def run_with_terminal_stderr(
    args: list[str], env: dict[str, str], until: bytes | None = None
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Run ``args`` with stderr on a pseudo-terminal (stdout a pipe); the process, its
    stdout and what it drew on the terminal. With ``until``, SIGTERM once that appears."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=secondary, env=env)
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if until is not None and until in seen:
            proc.send_signal(signal.SIGTERM)
            until = None
        ready, _, _ = select.select([primary], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal is gone: the process has exited
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(primary)
    stdout = proc.communicate(timeout=60)[0].decode()
    return proc, stdout, seen.decode(errors="replace")


@pytest.mark.slow
def test_lokal_index_draws_a_bar_on_a_terminal(tmp_path: Path, packed_gguf: Path) -> None:
    docs = _docs(tmp_path / "docs", 3)
    proc, stdout, text = run_with_terminal_stderr(
        [LOKAL, "index", str(docs), "--index", str(tmp_path / "index.db")],
        _env(COLUMNS="120"),
    )
    assert proc.returncode == 0, text
    assert "indexing" in text and "3/3" in text, text  # done of total
    assert "#" in text and re.search(r"\d+ chunks \(\d+\.\d chunks/s\)", text), text
    assert "\r" in text or "\x1b" in text  # redrawn in place, not one line per step
    assert "of 3 files" not in text  # no plain lines on a terminal
    assert "indexed" in stdout


@pytest.mark.slow
def test_lokal_eval_prints_embedding_progress_when_piped(tmp_path: Path, packed_gguf: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": f"d{i}", "text": TOPICS[i][:600]}) + "\n" for i in range(5))
    )
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"question": TOPICS[1][:80], "expected": "d1"})
        + "\n"
        + json.dumps({"question": TOPICS[3][:80], "expected": "d3"})
        + "\n"
    )
    proc = subprocess.run(
        [LOKAL, "eval", str(questions), "--corpus", str(corpus), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)
    embedding = [line for line in proc.stderr.splitlines() if line.startswith("embedding 5 texts")]
    assert embedding, proc.stderr
    assert re.search(r": 5 of 5, \d+\.\d/s, done in \d+s$", embedding[-1]), proc.stderr


@pytest.mark.slow
def test_the_agent_draws_its_first_scan_on_a_terminal(tmp_path: Path, packed_gguf: Path) -> None:
    docs = _docs(tmp_path / "docs", 3)
    config = write_config(
        tmp_path / "agent.toml",
        index=str(tmp_path / "var" / "index.db"),
        roots=[str(docs)],
        quiet_period=0.2,
        rescan_interval=0,
    )
    proc, _, text = run_with_terminal_stderr(
        [LOKAL, "agent", "run", "--config", str(config)],
        _env(COLUMNS="120"),
        until=b"INFO idle:",
    )
    assert proc.returncode == 0, text
    assert "first scan" in text and "3/3" in text and "chunks/s" in text, text
    assert "of 3 files" not in text  # the bar, not the plain lines


def _agent_with_journal(config: Path, *args: str) -> subprocess.Popen[bytes]:
    """``lokal agent run`` whose stderr is a pipe that JOURNAL_STREAM names, as systemd
    names the journal's socket."""
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    env = _env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", INVOCATION_ID="0" * 32)
    proc = subprocess.Popen(
        [LOKAL, *args, "agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=write_end,
        env=env,
    )
    os.close(write_end)
    proc.stderr = os.fdopen(read_end, "rb")  # type: ignore[misc]
    return proc


@pytest.mark.slow
def test_agent_first_scan_progress_with_journald_priorities(
    tmp_path: Path, packed_gguf: Path
) -> None:
    docs = _docs(tmp_path / "docs", 3)
    db = tmp_path / "var" / "index.db"
    config = write_config(
        tmp_path / "agent.toml",
        index=str(db),
        roots=[str(docs), str(tmp_path / "not-mounted")],  # a missing root: a warning
        quiet_period=0.2,
        rescan_interval=0,
    )
    proc = _agent_with_journal(config, "-vv")
    lines: list[str] = []
    assert proc.stderr is not None
    try:
        for raw in proc.stderr:
            lines.append(raw.decode(errors="replace").rstrip("\n"))
            if "INFO idle:" in lines[-1]:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1] or b""
    lines += rest.decode(errors="replace").splitlines()
    log = "\n".join(lines)
    assert proc.returncode == 0, log
    # every log line (a library writing to stderr itself, as transformers' "Loading weights"
    # bar does, gets journald's default priority, info)
    logged = [x for x in lines if re.search(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b", x)]
    assert logged and all(re.match(r"<[3467]>[A-Z]+ ", line) for line in logged), log
    assert any(re.match(r"<4>WARNING root .*not-mounted is not available", x) for x in lines), log
    assert any(line.startswith("<6>INFO first scan: 3 files") for line in lines), log
    done = r"<6>INFO first scan: 3 of 3 files, \d+ chunks .*done in"
    assert any(re.match(done, line) for line in lines), log
    assert any(line.startswith("<7>DEBUG") for line in lines), log  # -vv
    assert not any(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", line) for line in lines)  # no time


def test_journal_priorities_and_when_they_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    formatter = output.JournalFormatter("%(levelname)s %(message)s")
    for level, prefix in [
        (logging.CRITICAL, "<3>"),
        (logging.ERROR, "<3>"),
        (logging.WARNING, "<4>"),
        (logging.INFO, "<6>"),
        (logging.DEBUG, "<7>"),
    ]:
        record = logging.LogRecord("lokal", level, __file__, 1, "two\nlines", None, None)
        assert formatter.format(record).splitlines() == [
            f"{prefix}{logging.getLevelName(level)} two",
            f"{prefix}lines",
        ]
    # JOURNAL_STREAM names another stream (stderr redirected to a file): no prefixes there
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    assert not output.stderr_is_journal()
    monkeypatch.delenv("JOURNAL_STREAM")
    monkeypatch.setenv("INVOCATION_ID", "0" * 32)
    assert not output.stderr_is_journal()
