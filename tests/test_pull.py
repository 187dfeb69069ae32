"""``lokal models pull``: a real GGUF (packed in this run) served by a small HTTP server that
stands in for the Hugging Face hub (``HF_ENDPOINT``), answering as the hub does for a large
file: ``HEAD .../resolve/REV/FILE`` is a redirect to another host (the CDN) carrying
``X-Repo-Commit``, ``X-Linked-Etag`` (the file's sha256) and ``X-Linked-Size``, which
``huggingface_hub.get_hf_file_metadata`` reads; the CDN serves the bytes. The real ``lokal``
command runs in a subprocess, on loopback only under tests/offline."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from lokal import models, packing
from lokal.agent.cli import cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_test_token_not_real"

#: Runs `lokal` and reports, on stderr, which heavy modules the process imported.
_RUN = """
import atexit, sys
def _report():
    heavy = {"torch", "llama_cpp", "transformers", "sentence_transformers", "onnxruntime"}
    found = sorted(heavy & {m.split(".")[0] for m in sys.modules})
    sys.stderr.write("\\nHEAVY=" + ",".join(found) + "\\n")
atexit.register(_report)
from lokal.agent.cli import main
main()
"""


@dataclass
class Served:
    data: bytes
    #: what the hub says the sha256 is (the real one unless a test lies)
    sha256: str
    truncate: bool = False


@dataclass
class Hub:
    port: int
    files: dict[str, Served] = field(default_factory=dict)
    #: (method, path, Authorization header) of every request
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, head: bool) -> None:
            hub.requests.append((self.command, self.path, self.headers.get("Authorization")))
            if "/resolve/" in self.path:
                served = hub.files.get(self.path.replace("/resolve/main/", "/resolve/"))
                if served is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.end_headers()
                    return
                self.send_response(302)
                # another host: the client must not send the hub's token there
                self.send_header("Location", f"http://localhost:{hub.port}/cdn/{served.sha256}")
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", f'"{served.sha256}"')
                self.send_header("X-Linked-Size", str(len(served.data)))
                self.send_header("ETag", '"0000000000000000000000000000000000000000"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = self.path
            if path.startswith("/cdn/"):
                served = next((f for f in hub.files.values() if path == f"/cdn/{f.sha256}"), None)
            else:
                served = hub.files.get(path)
            if served is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(served.data)))
            self.end_headers()
            if not head:
                body = served.data[: len(served.data) // 2] if served.truncate else served.data
                self.wfile.write(body)
                self.wfile.flush()
                if served.truncate:
                    self.close_connection = True

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

    return Handler


@pytest.fixture
def hub() -> Iterator[Hub]:
    state = Hub(port=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A GGUF as publishers make them: llama.cpp's converter run on the bundled MiniLM
    weights, with no lokal metadata in it (MODELS.md's recipe)."""
    source = models.bundled_default_dir()
    assert source is not None, "needs the bundled MiniLM weights (lokal[st])"
    out = tmp_path_factory.mktemp("published") / "all-MiniLM-L6-v2-Q8_0.gguf"
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(source), "--outtype", "q8_0"]
    subprocess.run(
        [*cmd, "--outfile", str(out)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        check=True,
        timeout=600,
    )
    data = out.read_bytes()
    assert b"lokal." not in data[:65536]  # nothing of lokal's in the header
    return data


def _environ(hub: Hub, home: Path, **env: str) -> dict[str, str]:
    return {
        **os.environ,
        "LOKAL_HOME": str(home),
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(home / "hf"),
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        **env,
    }


def _lokal(hub: Hub, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _RUN, *args],
        capture_output=True,
        text=True,
        env=_environ(hub, home, **env),
        timeout=120,
        check=False,
    )


def _heavy(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stderr.rsplit("HEAVY=", 1)[1].strip()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


MINILM = "/second-state/All-MiniLM-L6-v2-Embedding-GGUF/resolve/all-MiniLM-L6-v2-Q8_0.gguf"


@pytest.mark.slow
def test_pull_a_catalog_model_from_the_hub(hub: Hub, gguf_bytes: bytes, tmp_path: Path) -> None:
    sha = hashlib.sha256(gguf_bytes).hexdigest()
    hub.files[MINILM] = Served(gguf_bytes, sha)

    proc = _lokal(hub, tmp_path, "models", "pull", "all-MiniLM-L6-v2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert _heavy(proc) == "", "pull imported a heavy module"
    out = json.loads(proc.stdout)
    placed = tmp_path / "models" / "all-MiniLM-L6-v2.q8_0.gguf"
    assert out["path"] == str(placed) and out["downloaded"] is True
    assert placed.read_bytes() == gguf_bytes  # byte for byte as published
    manifest = packing.verify(placed)  # what `lokal models verify` checks
    assert manifest["sha256"] == sha and manifest["pulled"]["sha256_from"] == "hub"
    assert manifest["source"].endswith(f"/resolve/{COMMIT}/all-MiniLM-L6-v2-Q8_0.gguf")
    assert manifest["profile"]["dimension"] == 384
    assert _leftovers(tmp_path / "models") == [placed.name, placed.name + ".json"]
    # the token went to the hub, never to the CDN it redirected to
    assert ("HEAD", MINILM.replace("/resolve/", "/resolve/main/"), f"Bearer {TOKEN}") in (
        hub.requests
    )
    cdn = [r for r in hub.requests if r[1].startswith("/cdn/")]
    assert cdn and all(auth is None for _, _, auth in cdn)

    # the cache finds it by name, as a GGUF, with the catalog model's profile
    info = _lokal(hub, tmp_path, "models", "info", "all-MiniLM-L6-v2", "--json")
    assert info.returncode == 0, info.stderr
    shown = json.loads(info.stdout)
    assert shown["location"] == str(placed) and shown["backend"] == "gguf"
    assert shown["profile"]["known"] and shown["profile"]["dimension"] == 384

    # pulling again downloads nothing
    before = len(cdn)
    again = _lokal(hub, tmp_path, "models", "pull", "all-MiniLM-L6-v2")
    assert again.returncode == 0, again.stderr
    assert "already in the model cache" in again.stdout
    assert len([r for r in hub.requests if r[1].startswith("/cdn/")]) == before


@pytest.mark.slow
def test_a_sha256_mismatch_leaves_nothing(hub: Hub, gguf_bytes: bytes, tmp_path: Path) -> None:
    hub.files[MINILM] = Served(gguf_bytes, "ab" * 32)  # the hub says another sha256
    # a download killed mid-way leaves its part file; the next pull removes it (its process is
    # gone) and leaves a running pull's alone
    cache = tmp_path / "models"
    cache.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    (cache / f".lokal-pull-{dead}-0badc0de.part").write_bytes(gguf_bytes[:100])
    running = cache / f".lokal-pull-{os.getpid()}-12345678.part"
    running.write_bytes(gguf_bytes[:100])
    proc = _lokal(hub, tmp_path, "models", "pull", "all-MiniLM-L6-v2")
    assert proc.returncode == 1
    assert "IntegrityError" in proc.stderr and "sha256" in proc.stderr
    assert "ab" * 32 in proc.stderr
    # no file, no manifest, no temporary file but the live process's
    assert _leftovers(cache) == [running.name]


@pytest.mark.slow
def test_pull_by_url_and_by_repo_and_file(hub: Hub, gguf_bytes: bytes, tmp_path: Path) -> None:
    sha = hashlib.sha256(gguf_bytes).hexdigest()
    hub.files["/files/minilm.gguf"] = Served(gguf_bytes, sha)
    hub.files["/files/cut.gguf"] = Served(gguf_bytes, sha, truncate=True)
    hub.files["/someone/minilm-GGUF/resolve/minilm-l6.Q8_0.gguf"] = Served(gguf_bytes, sha)
    cache = tmp_path / "models"

    wrong = _lokal(hub, tmp_path, "models", "pull", f"{hub.endpoint}/files/minilm.gguf",
                   "--sha256", "cd" * 32)  # fmt: skip
    assert wrong.returncode == 1 and "sha256" in wrong.stderr
    assert _leftovers(cache) == []

    cut = _lokal(hub, tmp_path, "models", "pull", f"{hub.endpoint}/files/cut.gguf")
    assert cut.returncode == 1, cut.stderr
    assert "nothing was kept" in cut.stderr
    assert _leftovers(cache) == []

    url = f"{hub.endpoint}/files/minilm.gguf"
    ok = _lokal(hub, tmp_path, "models", "pull", url, "--sha256", sha, "--name", "minilm-url")
    assert ok.returncode == 0, ok.stderr
    assert _heavy(ok) == ""
    placed = cache / "minilm-url.q8_0.gguf"
    assert packing.verify(placed)["source"] == url
    # a name no profile matches, and the file says nothing of lokal's: the profile is the GGUF's
    # own facts only (no prefixes), and says so
    info = json.loads(_lokal(hub, tmp_path, "models", "info", "minilm-url", "--json").stdout)
    assert info["profile"]["dimension"] == 384
    # any hub file by repository and file name, checked against the hub's sha256
    by_repo = _lokal(hub, tmp_path, "models", "pull", "--repo", "someone/minilm-GGUF",
                     "--file", "minilm-l6.Q8_0.gguf", "--json")  # fmt: skip
    assert by_repo.returncode == 0, by_repo.stderr
    out = json.loads(by_repo.stdout)
    # the same bytes are already in the cache (by their sha256): not downloaded twice
    assert out["downloaded"] is False and out["path"] == str(placed)


@pytest.mark.slow
def test_a_terminal_gets_a_download_bar(hub: Hub, gguf_bytes: bytes, tmp_path: Path) -> None:
    from .test_progress import run_with_terminal_stderr

    hub.files[MINILM] = Served(gguf_bytes, hashlib.sha256(gguf_bytes).hexdigest())
    env = {**_environ(hub, tmp_path), "COLUMNS": "120"}
    proc, stdout, drawn = run_with_terminal_stderr(
        [sys.executable, "-c", _RUN, "models", "pull", "all-MiniLM-L6-v2"], env
    )
    assert proc.returncode == 0, drawn
    mb = f"{len(gguf_bytes) / 1e6:.1f}"
    assert "pulling" in drawn and f"{mb} of {mb} MB" in drawn and "#" in drawn, drawn
    assert "pulled" in stdout


@pytest.mark.slow
def test_a_catalog_model_under_another_name_keeps_its_profile(
    hub: Hub, gguf_bytes: bytes, tmp_path: Path
) -> None:
    """The published bytes carry no lokal profile; the manifest does, so a pulled BGE named
    'mine' in the cache still gets BGE's query instruction."""
    repo = "/CompendiumLabs/bge-small-en-v1.5-gguf/resolve/bge-small-en-v1.5-q8_0.gguf"
    hub.files[repo] = Served(gguf_bytes, hashlib.sha256(gguf_bytes).hexdigest())
    pulled = _lokal(hub, tmp_path, "models", "pull", "bge-small-en-v1.5", "--name", "mine")
    assert pulled.returncode == 0, pulled.stderr
    info = _lokal(hub, tmp_path, "models", "info", "mine", "--json")
    assert info.returncode == 0, info.stderr
    profile = json.loads(info.stdout)["profile"]
    assert profile["family"] == "bge" and profile["query_prefix"].startswith("Represent this")
    assert "manifest of a pulled GGUF" in profile["source"]


def test_a_different_file_of_the_same_name_is_not_replaced(
    hub: Hub, gguf_bytes: bytes, tmp_path: Path
) -> None:
    cache = tmp_path / "models"
    cache.mkdir()
    other = cache / "all-MiniLM-L6-v2.q8_0.gguf"
    other.write_bytes(gguf_bytes[:-1] + b"\0")  # another file (say, packed here)
    hub.files[MINILM] = Served(gguf_bytes, hashlib.sha256(gguf_bytes).hexdigest())
    proc = _lokal(hub, tmp_path, "models", "pull", "all-MiniLM-L6-v2")
    assert proc.returncode == 1
    assert "ModelMismatch" in proc.stderr and "--force" in proc.stderr
    assert other.read_bytes() == gguf_bytes[:-1] + b"\0"
    assert _leftovers(cache) == [other.name]
    forced = _lokal(hub, tmp_path, "models", "pull", "all-MiniLM-L6-v2", "--force")
    assert forced.returncode == 0, forced.stderr
    assert other.read_bytes() == gguf_bytes


def test_unknown_models_and_offline_machines_get_a_clear_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("LOKAL_OFFLINE", raising=False)
    unknown = runner.invoke(cli, ["models", "pull", "intfloat/e5-small-v2"])
    assert unknown.exit_code == 1
    assert "--repo ORG/NAME --file" in unknown.output
    half = runner.invoke(cli, ["models", "pull", "--repo", "a/b"])
    assert half.exit_code == 2 and "--repo and --file go together" in half.output
    monkeypatch.setenv("LOKAL_OFFLINE", "1")
    off = runner.invoke(cli, ["models", "pull", "bge-small-en-v1.5"])
    assert off.exit_code == 1 and "downloads are off" in off.output


def test_errors_send_a_torch_free_user_to_pull(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where llama.cpp's converter (lokal[convert], torch) is missing, the way to a GGUF is
    `lokal models pull`; where it is installed, `lokal models pack`."""
    real = models.has_module

    def without_converter(name: str) -> bool:
        return False if name == "convert_hf_to_gguf" else real(name)

    with pytest.raises(models.ModelNotFound, match=r"lokal models pack BAAI/bge-small-en-v1\.5"):
        models.resolve("BAAI/bge-small-en-v1.5", backend="gguf")
    monkeypatch.setattr(models, "has_module", without_converter)
    with pytest.raises(models.ModelNotFound) as caught:
        models.resolve("BAAI/bge-small-en-v1.5", backend="gguf")
    assert "lokal models pull BAAI/bge-small-en-v1.5" in str(caught.value)
    assert "lokal models pack" not in str(caught.value)
    # a model lokal knows no published GGUF of: pull with the hub file named
    assert "--repo ORG/NAME --file" in models.bring_command("intfloat/e5-small-v2")


def test_the_catalog_says_what_can_be_pulled() -> None:
    from lokal import catalog

    hub_ids = {e.hub_id for e in catalog.CATALOG}
    assert set(catalog.PUBLISHED_GGUF) <= hub_ids  # every published file is of a catalog model
    for published in catalog.PUBLISHED_GGUF.values():
        assert published.file.endswith(".gguf") and published.repo.count("/") == 1
    listing = json.loads(CliRunner().invoke(cli, ["models", "list", "--json"]).stdout)
    by_id = {e["hub_id"]: e for e in listing["catalog"]}
    bge = by_id["BAAI/bge-small-en-v1.5"]["gguf"]
    assert bge["repo"] == "CompendiumLabs/bge-small-en-v1.5-gguf"
    assert by_id["intfloat/e5-small-v2"]["gguf"] is None
    table = CliRunner().invoke(cli, ["models", "list"]).stdout
    assert "lokal models pull all-MiniLM-L6-v2 | bge-small-en-v1.5" in table
    assert catalog.find("BGE-SMALL-EN-V1.5") is catalog.find("BAAI/bge-small-en-v1.5") is not None


def test_a_torch_free_install_is_sent_to_pull(monkeypatch: pytest.MonkeyPatch) -> None:
    """lokal[gguf] alone: no converter and no sentence-transformers. A hub id that is not a
    GGUF in the cache, and `lokal models pack`, both name the command that works there."""
    real = models.has_module
    torch_free = {"convert_hf_to_gguf", "sentence_transformers"}
    monkeypatch.setattr(models, "has_module", lambda name: name not in torch_free and real(name))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("LOKAL_OFFLINE", raising=False)
    with pytest.raises(models.ModelNotFound) as caught:
        models.resolve("BAAI/bge-small-en-v1.5")  # not downloaded: lokal[st] would be needed
    assert "lokal models pull BAAI/bge-small-en-v1.5" in str(caught.value)
    packing_it = CliRunner().invoke(cli, ["models", "pack", "BAAI/bge-small-en-v1.5"])
    assert packing_it.exit_code == 1
    assert "lokal[convert]" in packing_it.output
    assert "lokal models pull BAAI/bge-small-en-v1.5" in packing_it.output
