"""`import lokal` and `lokal --help` stay light (checked in fresh interpreters)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "torch",
    "llama_cpp",
    "sentence_transformers",
    "transformers",
    "langchain_core",
    "llama_index",
    "psycopg",
    "pgvector",
)


def _loaded_after(code: str) -> list[str]:
    report = f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    probe = f"import sys\n{code}\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded:"), out.stdout
    return [m for m in last.removeprefix("loaded:").split(",") if m]


def test_import_lokal_is_light() -> None:
    assert _loaded_after("import lokal, lokal.embedder, lokal.models, lokal.packing") == []


def test_the_fleet_modules_import_no_postgresql_driver() -> None:
    code = (
        "import lokal.central.sync, lokal.central.bundle, lokal.agent.cli.sync, lokal.agent.pusher"
    )
    assert _loaded_after(code) == []


def test_import_central_store_is_light() -> None:
    assert _loaded_after("import lokal.central.store, lokal.central.filters") == []


def test_cli_help_is_light() -> None:
    code = (
        "from lokal.agent.cli import cli\n"
        "try:\n    cli(['models', '--help'])\nexcept SystemExit:\n    pass"
    )
    assert _loaded_after(code) == []


def test_resolving_and_constructing_loads_nothing() -> None:
    code = "from lokal import Embedder\ne = Embedder(backend='sentence-transformers')"
    assert _loaded_after(code) == []
