"""The real `lokal` command in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lokal import gguf
from lokal.agent.cli import cli

# the installed console script, as a user runs it
LOKAL = [str(Path(sys.executable).parent / "lokal")]


def run(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*LOKAL, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"lokal {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        out.append((*prefix, name))
        if isinstance(command, click.Group):
            out.extend(_commands(command, (*prefix, name)))
    return out


@pytest.mark.parametrize("command", _commands(cli), ids=" ".join)
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    node: click.Command = cli
    for part in command:
        assert isinstance(node, click.Group)
        node = node.commands[part]
    assert node.help and len(node.help) > 20, f"{command} needs a real help text"


def test_models_list(packed_gguf: Path) -> None:
    data = json.loads(run("models", "list", "--json").stdout)
    assert packed_gguf.name in [d["name"] for d in data["on_disk"]]
    assert any(e["hub_id"] == "BAAI/bge-small-en-v1.5" for e in data["catalog"])
    assert all(e["source"].startswith("https://huggingface.co/") for e in data["catalog"])
    table = run("models", "list").stdout
    assert "all-MiniLM-L6-v2.q8_0.gguf" in table and "MTEB" in table


def test_models_info(packed_gguf: Path) -> None:
    info = json.loads(run("models", "info", str(packed_gguf), "--json").stdout)
    assert info["backend"] == "gguf" and info["kind"] == "embedding"
    assert info["profile"]["context_length"] == 256
    assert info["sha256"] == json.loads(Path(f"{packed_gguf}.json").read_text())["sha256"]
    st = json.loads(run("models", "info", "--backend", "sentence-transformers", "--json").stdout)
    assert st["source_sha256"] == info["source_sha256"]
    missing = run("models", "info", "/nonexistent/model.gguf", check=False)
    assert missing.returncode == 1
    assert "ModelNotFound" in missing.stderr and "Traceback" not in missing.stderr


def test_pack_f16_to_a_file_and_verify(tmp_path: Path) -> None:
    out = tmp_path / "minilm.f16.gguf"
    packed = json.loads(
        run(
            "models", "pack", "all-MiniLM-L6-v2", "--quantize", "f16", "-o", str(out), "--json"
        ).stdout
    )
    assert packed["path"] == str(out)
    assert gguf.read_metadata(out)["lokal.quantization"] == "f16"
    assert "OK" in run("models", "verify", str(out)).stdout
    # the file travels and gets damaged: verify says so and exits 1
    damaged = tmp_path / "damaged.gguf"
    shutil.copy(out, damaged)
    shutil.copy(f"{out}.json", f"{damaged}.json")
    with damaged.open("r+b") as fh:
        fh.seek(-100, 2)
        fh.write(b"\xff" * 10)
    bad = run("models", "verify", str(damaged), "--json", check=False)
    assert bad.returncode == 1
    result = json.loads(bad.stdout)[0]
    assert result["ok"] is False and "sha256" in result["error"]


def test_pack_rejects_unknown_quantization() -> None:
    proc = run("models", "pack", "all-MiniLM-L6-v2", "--quantize", "q3_xyz", check=False)
    assert proc.returncode == 2
    assert "unknown quantization" in proc.stderr
