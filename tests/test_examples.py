"""Every example runs, as a user would run it, and prints the right sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_demo(packed_gguf: Path) -> None:
    out = run_example("demo.py", "--limit", "12")
    assert "scan: 12 files seen, 12 indexed" in out
    assert out.count("Q: ") == 5
    # the file added while the agent watched answers the question only it can answer
    pump = out.split("Q: How do I reset pump P-101?")[1]
    assert pump.split("\n")[1].strip().startswith("[pump-p101.md:1-4]")
    assert "[assert.md:" in out.split("Q: ")[1]  # the debugging-checks question
    assert "agent stopped (exit 0)" in out


@pytest.mark.slow
def test_langchain_retriever(packed_gguf: Path) -> None:
    out = run_example("langchain_retriever.py")
    assert "-> pump.md" in out and "-> filters.md" in out


@pytest.mark.slow
def test_llama_index_retriever(packed_gguf: Path) -> None:
    out = run_example("llama_index_retriever.py")
    assert "-> pump.md" in out and "-> safety.md" in out


def test_every_example_is_tested() -> None:
    tested = {"demo.py", "langchain_retriever.py", "llama_index_retriever.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested
