"""Who may talk to `lokal serve`: the real server in a subprocess, real HTTP and raw sockets.

Three servers (module-scoped), each loading the packed GGUF once:

- ``open_server``: embeddings only, loopback, keyless; short header/body deadlines and a small
  per-client bound, for the slow-client cases.
- ``door_server``: an index only its owner and group may read (0640), on loopback TCP: a key
  is generated beside it; one extra host name and one extra web origin are allowed.
- ``socket_server``: the same index over a Unix socket, which takes the index's mode and group.

Slow clients come from other loopback addresses (127.0.0.2, 127.0.0.3) than the real requests
(127.0.0.1): the bound is per client address.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lokal.embedder import Embedder
from lokal.index import Chunk, Index

from .test_serve import LOKAL, TIMEOUT, Server

pytestmark = pytest.mark.slow

MODEL = "all-MiniLM-L6-v2"
SECRET = [
    "The vault combination is written on the back of the staff rota.",
    "Payroll for March goes out on the 28th, after the audit closes.",
    "The staging database password rotates every Monday morning.",
]
PER_CLIENT = 16
HEADER_TIMEOUT = 3.0


def _stopped_cleanly(s: Server) -> None:
    code, log = s.stop(), s.log()
    s.close()
    assert code == 0, log
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def private_index(gguf_embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("private") / "index.db"
    vectors = gguf_embedder.embed_documents(SECRET).vectors
    with Index.create(path, gguf_embedder.identity) as index:
        chunks = [Chunk(t, ordinal=i, metadata={"n": i}) for i, t in enumerate(SECRET)]
        index.replace_document("/srv/private/notes.txt", chunks, vectors)
    path.chmod(0o640)
    return path


@pytest.fixture(scope="module")
def open_server(packed_gguf: Path) -> Iterator[Server]:
    s = Server(
        "--header-timeout", str(HEADER_TIMEOUT),
        "--body-timeout", str(HEADER_TIMEOUT),
        "--max-connections-per-client", str(PER_CLIENT),
    )  # fmt: skip
    yield s
    _stopped_cleanly(s)


@pytest.fixture(scope="module")
def door_server(packed_gguf: Path, private_index: Path) -> Iterator[Server]:
    s = Server(
        "--index", str(private_index),
        "--allowed-host", "lokal.test",
        "--allowed-origin", "http://app.test",
    )  # fmt: skip
    yield s
    _stopped_cleanly(s)


@pytest.fixture(scope="module")
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("run") / "serve.sock"


@pytest.fixture(scope="module")
def socket_server(packed_gguf: Path, private_index: Path, socket_path: Path) -> Iterator[Server]:
    s = Server("--socket", str(socket_path), "--index", str(private_index))
    yield s
    _stopped_cleanly(s)
    assert not socket_path.exists()  # the server removes its socket


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _search(server: Server, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/search", json={"query": "vault", "k": 1}, headers=headers, timeout=TIMEOUT
    )


def _key(private_index: Path) -> str:
    return private_index.with_name(private_index.name + ".key").read_text().strip()


# ---- Host, Origin, Content-Type ----------------------------------------------------------------


def test_host_header_must_name_the_server(door_server: Server, private_index: Path) -> None:
    """DNS rebinding: a page at http://evil.example:PORT whose name now resolves to 127.0.0.1
    sends Host: evil.example:PORT; the server must not answer it."""
    auth = {"authorization": f"Bearer {_key(private_index)}"}
    port = _port(door_server)
    r = _search(door_server, host=f"evil.example:{port}", **auth)
    assert r.status_code == 421, r.text
    assert "--allowed-host evil.example" in r.json()["error"]["message"]
    r = httpx.post(
        f"{door_server.url}/api/embed",
        json={"model": MODEL, "input": "x"},
        headers={"host": "evil.example"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 421 and "DNS rebinding" in r.json()["error"]  # Ollama's shape
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "lokal.test"):
        assert _search(door_server, host=host, **auth).status_code == 200, host


def test_other_origins_refused(door_server: Server, private_index: Path) -> None:
    auth = {"authorization": f"Bearer {_key(private_index)}"}
    r = _search(door_server, origin="http://evil.example", **auth)
    assert r.status_code == 403, r.text
    assert "--allowed-origin http://evil.example" in r.json()["error"]["message"]
    assert _search(door_server, origin="null", **auth).status_code == 403
    same = f"http://127.0.0.1:{_port(door_server)}"
    assert _search(door_server, origin=same, **auth).status_code == 200
    assert _search(door_server, origin="http://app.test", **auth).status_code == 200


def test_json_endpoints_need_a_json_content_type(open_server: Server) -> None:
    """A cross-site form or fetch() may send text/plain without a preflight: never JSON."""
    body = json.dumps({"model": MODEL, "input": "hi"})
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": ctype} if ctype else {}
        r = httpx.post(
            f"{open_server.url}/api/embed", content=body, headers=headers, timeout=TIMEOUT
        )
        assert r.status_code == 415, (ctype, r.text)
        assert "application/json" in r.json()["error"]
    r = httpx.post(
        f"{open_server.url}/v1/embeddings",
        content=json.dumps({"model": MODEL, "input": "hi"}),
        headers={"content-type": "text/plain;charset=UTF-8"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 415 and r.json()["error"]["message"]
    ok = httpx.post(
        f"{open_server.url}/api/embed",
        content=body,
        headers={"content-type": "application/json; charset=utf-8"},
        timeout=TIMEOUT,
    )
    assert ok.status_code == 200 and len(ok.json()["embeddings"]) == 1


# ---- who may read the index ------------------------------------------------------------------


def test_embedding_only_server_stays_keyless(open_server: Server) -> None:
    r = httpx.post(
        f"{open_server.url}/api/embed", json={"model": MODEL, "input": "hi"}, timeout=TIMEOUT
    )
    assert r.status_code == 200


def test_private_index_needs_the_generated_key(door_server: Server, private_index: Path) -> None:
    key_file = private_index.with_name(private_index.name + ".key")
    st, index_st = key_file.stat(), private_index.stat()
    # readable like the index: its owner and its group, nobody else
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == index_st.st_gid
    assert str(key_file) in door_server.log()
    refused = _search(door_server)
    assert refused.status_code == 401, refused.text
    assert "API key" in refused.json()["error"]["message"]
    wrong = _search(door_server, authorization="Bearer not-the-key")
    assert wrong.status_code == 401
    embed = httpx.post(
        f"{door_server.url}/api/embed", json={"model": MODEL, "input": "hi"}, timeout=TIMEOUT
    )
    assert embed.status_code == 401
    ok = _search(door_server, authorization=f"Bearer {_key(private_index)}")
    assert ok.status_code == 200, ok.text
    assert ok.json()["results"][0]["text"] == SECRET[0]


def test_unix_socket_takes_the_index_mode_and_group(
    socket_server: Server, socket_path: Path, private_index: Path
) -> None:
    assert socket_server.url == f"unix:{socket_path}"
    st = socket_path.stat()
    assert stat.S_ISSOCK(st.st_mode)
    # a 0640 index: owner and group may connect (connecting needs write), others not
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == private_index.stat().st_gid
    transport = httpx.HTTPTransport(uds=str(socket_path))
    with httpx.Client(transport=transport, base_url="http://lokal", timeout=TIMEOUT) as client:
        r = client.post("/v1/search", json={"query": "vault", "k": 1})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["text"] == SECRET[0]
        # a browser page of another origin is still refused
        r = client.post(
            "/v1/search", json={"query": "vault"}, headers={"origin": "http://evil.example"}
        )
        assert r.status_code == 403


# ---- slow clients ------------------------------------------------------------------------------


def _connect(server: Server, source: str) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.connect((host, int(port)))
    return s


def test_slowloris_from_one_address_leaves_room_for_others(open_server: Server) -> None:
    """1,100 connections that never finish their headers (more than the server-wide bound of
    1,024) from 127.0.0.2: past the per-client bound each new one closes that address's oldest
    waiting one, so real requests are served, from 127.0.0.1 and from 127.0.0.2 itself."""
    slow: list[socket.socket] = []
    body = {"model": MODEL, "input": "hi"}
    try:
        for _ in range(1100):
            s = _connect(open_server, "127.0.0.2")
            s.sendall(b"POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(s)
        r = httpx.post(f"{open_server.url}/api/embed", json=body, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        same = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=same, timeout=TIMEOUT) as client:
            r = client.post(f"{open_server.url}/api/embed", json=body)
        assert r.status_code == 200, r.text
        # all but PER_CLIENT - 1 slow ones were closed with a 503 (one made room for the
        # real request from their address)
        want = len(slow) - PER_CLIENT + 1
        assert _count_refused(slow, want=want) == want
    finally:
        for s in slow:
            s.close()


def _count_refused(socks: list[socket.socket], want: int, limit: float = 120.0) -> int:
    """How many sockets got the server's 503 (waits until ``want`` did, at most ``limit`` s)."""
    refused = 0
    deadline = time.monotonic() + limit
    with selectors.DefaultSelector() as sel:  # epoll: select() stops at descriptor 1023
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        while refused < want and sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                sel.unregister(s)
                refused += s.recv(4096).startswith(b"HTTP/1.1 503")
    return refused


def _trickle(s: socket.socket, drip: bytes, every: float, limit: float = 60.0) -> bytes | None:
    """Sends ``drip`` every ``every`` seconds until the server answers or closes (returns what
    it sent, b"" for a bare close) or ``limit`` seconds pass (None)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s], [], [], every)
        if ready:
            try:
                return s.recv(4096)
            except ConnectionResetError:
                return b""
        try:
            s.sendall(drip)
        except (BrokenPipeError, ConnectionResetError):
            return b""
    return None


def test_trickling_headers_time_out(open_server: Server) -> None:
    """One header byte every 1.5 s: closed with 408 after the header deadline."""
    with _connect(open_server, "127.0.0.3") as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        answer = _trickle(s, b"a", every=1.5)
    assert answer is not None, "a trickling client was never disconnected"
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_idle_and_trickling_body_time_out(open_server: Server) -> None:
    with _connect(open_server, "127.0.0.3") as idle:
        ready, _, _ = select.select([idle], [], [], 60)  # sends nothing at all
        assert ready and idle.recv(4096).startswith(b"HTTP/1.1 408")
    with _connect(open_server, "127.0.0.3") as s:
        s.sendall(
            b"POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        answer = _trickle(s, b" ", every=1.0)
    assert answer is not None, "a trickling body was never cut"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    # and the server still answers
    r = httpx.get(f"{open_server.url}/health", timeout=TIMEOUT)
    assert r.status_code == 200
    assert "Traceback" not in open_server.log()


def test_keep_alive_connection_trickling_its_second_request_times_out(open_server: Server) -> None:
    with _connect(open_server, "127.0.0.3") as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b'{"status":"ok"}' not in first:
            chunk = s.recv(4096)
            assert chunk, first
            first += chunk
        s.sendall(b"GET /health HTTP/1.1\r\n")
        answer = _trickle(s, b"X", every=1.0)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer


def _serve_fails(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LOKAL_API_KEY"}
    proc = subprocess.run(
        [LOKAL, "serve", "--port", "0", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode != 0, proc.stdout
    assert "listening" not in proc.stdout and "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_socket_refuses_to_replace_a_file(private_index: Path, tmp_path: Path) -> None:
    taken = tmp_path / "serve.sock"
    taken.write_text("not a socket")
    proc = _serve_fails("--socket", str(taken), "--index", str(private_index))
    assert "not a socket" in proc.stderr
    assert taken.read_text() == "not a socket"


def test_key_file_that_cannot_be_trusted_or_written_is_refused(
    private_index: Path, tmp_path: Path
) -> None:
    """Before any model loads: a key others could read is not used, nor a place it cannot go."""
    loose = tmp_path / "loose.key"
    loose.write_text("everyone-can-read-this\n")
    loose.chmod(0o644)
    proc = _serve_fails("--index", str(private_index), "--key-file", str(loose))
    assert proc.returncode == 2
    assert "not a key file this server wrote" in proc.stderr and "--no-key" in proc.stderr
    assert loose.read_text() == "everyone-can-read-this\n"
    nowhere = tmp_path / "missing-dir" / "api.key"
    proc = _serve_fails("--index", str(private_index), "--key-file", str(nowhere))
    assert proc.returncode == 2 and "--key-file" in proc.stderr
