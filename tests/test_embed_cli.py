"""``lokal embed`` (one vector from the shell) and the shell completion the README documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lokal.agent.cli import cli
from lokal.embedder import Embedder

LOKAL = str(Path(sys.executable).parent / "lokal")
TEXT = "Hold the red button for five seconds to reset the pump."
ST = ["--backend", "sentence-transformers"]  # the bundled weights, loaded once per run


def _vector(output: str) -> np.ndarray:
    return np.asarray(json.loads(output), dtype=np.float32)


def test_embed_prints_the_document_vector(st_embedder: Embedder) -> None:
    result = CliRunner().invoke(cli, ["embed", TEXT, *ST])
    assert result.exit_code == 0, result.output
    vector = _vector(result.stdout)
    expected = st_embedder.embed_documents([TEXT]).vectors[0]
    assert vector.shape == (384,)
    np.testing.assert_allclose(vector, expected, atol=1e-6)


def test_query_and_document_sides_get_their_own_prefix(st_embedder: Embedder) -> None:
    runner = CliRunner()
    query = runner.invoke(cli, ["embed", "--query", TEXT, "--query-prefix", "query: ", *ST])
    document = runner.invoke(cli, ["embed", TEXT, "--query-prefix", "query: ", *ST])
    assert query.exit_code == 0 and document.exit_code == 0, query.output + document.output
    with_prefix, plain = st_embedder.embed_documents([f"query: {TEXT}", TEXT]).vectors
    np.testing.assert_allclose(_vector(query.stdout), with_prefix, atol=1e-6)
    np.testing.assert_allclose(_vector(document.stdout), plain, atol=1e-6)
    assert not np.allclose(with_prefix, plain, atol=1e-3)


def test_json_says_model_tokens_and_truncation(
    st_embedder: Embedder, long_text: str, tmp_path: Path
) -> None:
    source = tmp_path / "long.txt"
    source.write_text(long_text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["embed", "-i", str(source), "--json", *ST])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["model"] == "all-MiniLM-L6-v2" and out["backend"] == "sentence-transformers"
    assert out["dimension"] == len(out["vector"]) == 384 and out["side"] == "document"
    assert out["tokens"] == st_embedder.count_tokens([long_text])[0] > out["context"] == 256
    assert out["truncated"] is True
    assert "warning: TruncationWarning" in result.stderr  # said on stderr, not in the JSON
    short = json.loads(CliRunner().invoke(cli, ["embed", TEXT, "--json", *ST]).stdout)
    assert short["truncated"] is False and short["tokens"] < 256


def test_text_or_file_not_both_nor_neither(tmp_path: Path) -> None:
    runner = CliRunner()
    neither = runner.invoke(cli, ["embed"])
    assert neither.exit_code == 2 and "TEXT or with -i FILE" in neither.output
    (tmp_path / "t.txt").write_text("x")
    both = runner.invoke(cli, ["embed", "x", "-i", str(tmp_path / "t.txt")])
    assert both.exit_code == 2


@pytest.mark.slow
def test_the_real_command_reads_standard_input(tmp_path: Path, st_embedder: Embedder) -> None:
    env = {**os.environ, "LOKAL_HOME": str(tmp_path / "home")}  # no GGUF there: the bundled ST
    proc = subprocess.run(
        [LOKAL, "embed", "-i", "-"],
        input=TEXT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    expected = st_embedder.embed_documents([TEXT]).vectors[0]
    np.testing.assert_allclose(_vector(proc.stdout), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _lokal_completion lokal"),
        ("zsh", "#compdef lokal"),
        ("fish", "complete --no-files --command lokal"),
    ],
)
def test_shell_completion_scripts_generate(shell: str, marker: str) -> None:
    """What the README tells users to put in their shell's startup file."""
    env = {**os.environ, "_LOKAL_COMPLETE": f"{shell}_source"}
    proc = subprocess.run([LOKAL], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout


def test_completion_completes_commands_and_options() -> None:
    env = {**os.environ, "_LOKAL_COMPLETE": "bash_complete", "COMP_WORDS": "lokal models p"}
    env["COMP_CWORD"] = "2"
    proc = subprocess.run([LOKAL], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert {"plain,pack", "plain,pull"} <= set(proc.stdout.split())
    env.update(COMP_WORDS="lokal embed --q", COMP_CWORD="2")
    proc = subprocess.run([LOKAL], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert {"plain,--query", "plain,--query-prefix"} <= set(proc.stdout.split())
