"""lokal's demo: the agent indexes a directory; an application asks it questions.

The corpus is Python's own language reference (``pydoc_data.topics``, shipped with every
Python), written outside this project: one Markdown file per topic in a temporary directory.
``lokal agent run`` (a subprocess, as systemd would run it) embeds it with the embedded
default model into a lokal index file, then keeps watching: a file added later is indexed
within a second or two. The application side opens that index with LangChain's
``LokalVectorStore`` - read-only, with the model the file records - and answers questions,
citing file and lines. Everything runs on this machine: no API key, no network.

    python examples/demo.py [--limit N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from pydoc_data.topics import topics

from lokal.integrations.langchain import LokalVectorStore

QUESTIONS = [
    "How do I add debugging checks that are removed when optimizing?",
    "What happens when a generator is closed?",
    "How can a class customize attribute access?",
    "Which statement leaves a loop early?",
    "How do I reset pump P-101?",  # only the file added while the agent runs can answer
]
LATE_FILE = """# Pump P-101 maintenance

Resetting pump P-101: hold the red button on the control panel for five seconds,
then wait for the green light before opening the valve again.
"""
LOKAL = str(Path(sys.executable).parent / "lokal")


def write_corpus(docs: Path, limit: int | None) -> int:
    names = sorted(topics)[:limit] if limit else sorted(topics)
    for name in names:
        text = re.sub(r"\n{3,}", "\n\n", topics[name])
        (docs / f"{name}.md").write_text(f"# {name}\n\n{text}", encoding="utf-8")
    return len(names)


class Agent:
    """``lokal agent run`` in a subprocess; its log lines are echoed and waited on."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [LOKAL, "agent", "run", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.idle = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip()
            if " INFO " in line and any(w in line for w in ("scan:", "changes:", "model:")):
                print(f"   agent | {line.split(' INFO ', 1)[1]}")
            if "WARNING" in line or "ERROR" in line:
                print(f"   agent | {line}")
            if "INFO idle:" in line:
                self.idle.set()

    def wait_idle(self, timeout: float = 1800) -> None:
        if not self.idle.wait(timeout):
            msg = "the agent did not finish in time"
            raise SystemExit(msg)
        self.idle.clear()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, help="only the first N topics of the reference")
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (default: a temp dir)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="lokal-demo-"))
    docs, index = work / "docs", work / "var" / "index.db"
    if index.exists():
        parser.error(f"{index} exists already; pass another --keep directory")
    docs.mkdir(parents=True, exist_ok=True)
    n = write_corpus(docs, args.limit)
    config = work / "agent.toml"
    config.write_text(
        f"index = {json.dumps(str(index))}\nroots = [{json.dumps(str(docs))}]\nquiet_period = 0.5\n"
    )
    print(f"{n} topics of Python's language reference in {docs}")
    print(f"$ lokal agent run --config {config}")
    start = time.perf_counter()
    agent = Agent(config)
    try:
        agent.wait_idle()
        print(f"   first pass done in {time.perf_counter() - start:.1f} s\n")
        print("adding pump-p101.md while the agent watches...")
        (docs / "pump-p101.md").write_text(LATE_FILE, encoding="utf-8")
        agent.wait_idle()
        print()

        store = LokalVectorStore(index)  # read-only (agent-managed), the file's own model
        retriever = store.as_retriever(search_kwargs={"k": 3})
        for question in QUESTIONS:
            print(f"Q: {question}")
            for doc in retriever.invoke(question):
                origin = doc.metadata["lokal"]
                where = f"{Path(origin['source']).name}:{origin['line_start']}-{origin['line_end']}"
                snippet = " ".join(doc.page_content.split())[:90]
                print(f"   [{where}] {snippet}...")
            print()
        store.close()
        status = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
            [LOKAL, "agent", "status", "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        print(f"$ lokal agent status\n{status.stdout}")
    finally:
        code = agent.stop()
        print(f"agent stopped (exit {code})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
