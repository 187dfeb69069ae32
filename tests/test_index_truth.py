"""The index tells the truth about itself: damage is found and reported (never a traceback,
never NaN scores), and a reader of an existing index never reaches for the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lokal.identity import ModelIdentity
from lokal.index import Chunk, Index

LOKAL = str(Path(sys.executable).parent / "lokal")
HUB_MODEL = "BAAI/bge-small-en-v1.5"


def _online_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user who never set offline mode, with an empty Hugging Face cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "LOKAL_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    return env


@pytest.fixture
def hub_model_index(tmp_path: Path) -> Path:
    """An index written with a hub model this machine does not have."""
    identity = ModelIdentity(
        name=HUB_MODEL,
        source_sha256="5" * 64,
        pooling="cls",
        normalize=True,
        dimension=384,
        document_prefix="",
        backend="sentence-transformers",
        quantization="f32",
        file_sha256="5" * 64,
        query_prefix="Represent this sentence for searching relevant passages: ",
    )
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    db = tmp_path / "hub.db"
    with Index.create(db, identity) as index:
        index.upsert(
            [Chunk("pumps are reset by holding the red button"), Chunk("filters")], vectors
        )
    return db


def test_reader_of_a_hub_model_index_does_not_download(
    hub_model_index: Path, tmp_path: Path
) -> None:
    """Without HF_HUB_OFFLINE, `lokal search` on such an index says how to bring the model,
    at once, and no socket is ever opened (audit hook in the real CLI's process)."""
    proc = subprocess.run(
        [LOKAL, "search", "how to reset the pump", "--index", str(hub_model_index)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_online_env(tmp_path),
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "ModelNotFound" in proc.stderr and HUB_MODEL in proc.stderr, proc.stderr
    assert "lokal models pack" in proc.stderr and "connected machine" in proc.stderr

    watched = (
        "import sys\n"
        "def hook(event, args):\n"
        "    if event in ('socket.connect', 'socket.getaddrinfo', 'socket.gethostbyname'):\n"
        "        sys.stderr.write(f'NETWORK {event} {args!r}\\n')\n"
        "        raise OSError('network touched')\n"
        "sys.addaudithook(hook)\n"
        "from lokal.agent.cli import main\n"
        "sys.argv = ['lokal', 'search', 'how to reset the pump', '--index', sys.argv[1]]\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", watched, str(hub_model_index)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_online_env(tmp_path),
        check=False,
    )
    assert "NETWORK" not in proc.stderr, proc.stderr
    assert proc.returncode == 1 and "ModelNotFound" in proc.stderr, proc.stderr
