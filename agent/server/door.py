"""Who may talk to ``lokal serve``: the checks at its door, kept apart from the APIs behind it.

- :class:`Door`, an ASGI layer in front of every route: the ``Host`` header must name this
  server (a web page the operator visits cannot reach a loopback server through DNS
  rebinding: its requests carry the attacker's host name), and a browser request from another
  origin (an ``Origin`` header that is not this server's) is refused. JSON endpoints further
  require ``Content-Type: application/json`` (in :mod:`lokal.agent.server.app`), so a cross-site
  "simple" request (``text/plain``, no preflight) is never read as JSON.
- :func:`guarded_protocol`, uvicorn's HTTP/1.1 protocol with read deadlines and a bound per
  client: a connection must send its request headers within ``header_timeout`` and its body
  within ``body_timeout`` (else 408 and closed; a connection that sends nothing is closed
  after ``header_timeout`` too), and one client (remote address; over a Unix socket, the
  peer's uid) holds at most ``per_client`` connections: a new one closes that client's oldest
  connection waiting for a request (503), or gets 503 itself when all are busy. A slow
  client neither holds a connection forever, nor fills the server-wide bound, nor locks out
  a real request from its own address.
- :func:`index_key` and :func:`bind_unix_socket`: serving an index only to those who may read
  its file, by a key readable like the index, or a Unix socket with the index's group and mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import socket
import stat
import struct
import tempfile
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: ``reject(path, status, message)``: an ASGI response in the shape of the path's API
Reject = Callable[[str, int, str], ASGIApp]

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 - names of the wildcard binds, not binds


def _host_name(value: str) -> str:
    """The name in a ``Host`` header, without the port, lowercased (``[::1]:80`` -> ``::1``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostRule:
    """Which ``Host`` names a server bound to ``bound`` answers.

    Loopback binds answer their own address, ``localhost``, ``127.0.0.1`` and ``::1``; a
    wildcard bind (``0.0.0.0``, ``::``) answers any address literal (DNS rebinding needs a
    name), ``localhost`` and this machine's name; any other bind answers the name or address
    it was given. ``extra`` adds names (``--allowed-host``); ``*`` accepts any.
    """

    names: frozenset[str]
    any_ip: bool = False
    anything: bool = False

    @classmethod
    def for_bind(cls, bound: str, extra: Iterable[str], *, loopback: bool) -> HostRule:
        extra = [_host_name(e) for e in extra]
        names = {*extra, _host_name(bound)}
        wildcard = bound.strip("[]") in _WILDCARDS
        if loopback or wildcard:
            names.update(_LOOPBACK_NAMES)
        if wildcard:  # not getfqdn(): a reverse lookup that may hang where DNS is down
            names.add(_host_name(socket.gethostname()))
        return cls(frozenset(names - {""}), any_ip=wildcard, anything="*" in extra)

    def allows(self, host: str) -> bool:
        if self.anything:
            return True
        name = _host_name(host)
        return name in self.names or (self.any_ip and _is_ip(name))


class Door:
    """The ASGI layer that checks ``Host`` (421) and ``Origin`` (403) before any route runs.

    ``hosts`` None skips the Host check (a Unix socket: no browser reaches it by name).
    ``origins`` are the other origins allowed (``--allowed-origin``; ``*`` allows any).
    """

    def __init__(
        self, app: ASGIApp, *, hosts: HostRule | None, origins: Iterable[str], reject: Reject
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = frozenset(o.strip().rstrip("/").lower() for o in origins)
        self.reject = reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self._refusal(scope)
            if refused is not None:
                status, message = refused
                log.warning("refused %s %s: %s", scope["method"], scope["path"], message)
                await self.reject(scope["path"], status, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        if self.hosts is not None:
            if host is None:
                return 400, "the request has no Host header"
            if not self.hosts.allows(host):
                return 421, (
                    f"this server does not answer to the host name {_host_name(host)!r} (a "
                    "guard against DNS rebinding); to use that name, start lokal serve with "
                    f"--allowed-host {_host_name(host)}"
                )
        if origin is not None and not self._same_origin(origin, host, scope):
            return 403, (
                f"requests from other web origins are refused (Origin: {origin}); to allow a "
                f"page there, start lokal serve with --allowed-origin {origin}"
            )
        return None

    def _same_origin(self, origin: str, host: str | None, scope: Scope) -> bool:
        wanted = origin.strip().rstrip("/").lower()
        if "*" in self.origins or wanted in self.origins:
            return True
        scheme, sep, authority = wanted.partition("://")
        return (
            bool(sep)
            and scheme == scope.get("scheme", "http")
            and authority == (host or "").strip().lower()
        )


# ---- slow clients ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionLimits:
    """Read deadlines and the per-client bound (the server-wide one is uvicorn's)."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    per_client: int = 64


def _response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


def _peer(transport: asyncio.BaseTransport, client: tuple[str, int] | None) -> object:
    """Who a connection is from: its remote address, or over a Unix socket the peer's uid."""
    if client is not None:
        return client[0]
    sock = transport.get_extra_info("socket")
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if sock is not None and so_peercred is not None:
        with contextlib.suppress(OSError):
            _pid, uid, _gid = struct.unpack(
                "3i", sock.getsockopt(socket.SOL_SOCKET, so_peercred, 12)
            )
            return ("uid", uid)
    return "unix"


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the header and body deadlines and the per-client bound."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    #: each client's open connections, oldest first (a dict as an ordered set)
    open_by_peer: dict[object, dict[Any, None]] = {}
    warned: set[object] = set()
    too_many = _response(
        503,
        "Service Unavailable",
        f"too many connections from your address (at most {limits.per_client})",
    )

    class GuardedH11Protocol(H11Protocol):
        _peer: object = None
        _timer: asyncio.TimerHandle | None = None
        _waiting_for = ""

        # uvicorn declares the parameter as asyncio.Transport, asyncio.BaseProtocol a BaseTransport
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = _peer(transport, self.client)
            held = open_by_peer.setdefault(peer, {})
            if len(held) >= limits.per_client:
                if peer not in warned:
                    warned.add(peer)
                    log.warning(
                        "%s holds %d connections, the most one client may; closing its oldest "
                        "idle ones for new ones",
                        peer,
                        len(held),
                    )
                # the oldest connection of this client with no request in progress makes room:
                # a slowloris from an address cannot lock out a real request from it
                idle = next((c for c in held if c._idle()), None)
                if idle is None:
                    transport.write(too_many)
                    transport.close()
                    return
                idle._drop()
                idle.transport.write(too_many)
                idle.transport.close()
            held[self] = None
            self._peer = peer
            self._arm("headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._drop()
            super().connection_lost(exc)

        def _drop(self) -> None:
            """No longer counted against its client."""
            if self._peer is None:
                return
            held = open_by_peer[self._peer]
            held.pop(self, None)
            if not held:
                del open_by_peer[self._peer]
                warned.discard(self._peer)
            self._peer = None

        def _idle(self) -> bool:
            """Waiting for a request (none sent, part of one, or kept alive after one)."""
            return self.conn.their_state is h11.IDLE and (
                self.cycle is None or self.cycle.response_complete
            )

        def data_received(self, data: bytes) -> None:
            if self._timer is None and self.conn.their_state is h11.IDLE:
                self._arm("headers")  # the next request on a kept-alive connection begins
            super().data_received(data)
            self._track()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._track()
            if self._timer is None and self.conn.their_state is h11.IDLE:
                if self.conn.trailing_data[0]:  # part of a pipelined request is waiting
                    self._arm("headers")

        def _track(self) -> None:
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                if self._waiting_for != "body":
                    self._arm("body")
            elif state is not h11.IDLE:
                self._disarm()

        def _arm(self, what: str) -> None:
            self._disarm()
            delay = limits.header_timeout if what == "headers" else limits.body_timeout
            self._waiting_for = what
            self._timer = self.loop.call_later(delay, self._expired, what, delay)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._waiting_for = None, ""

        def _expired(self, what: str, delay: float) -> None:
            self._timer, self._waiting_for = None, ""
            if self.transport.is_closing():
                return
            log.info("%s: no complete request %s in %.0f s; closing", self._peer, what, delay)
            # waiting for headers, the cycle (if any) is the last request's, long answered
            if what == "headers" or not self.cycle.response_started:
                self.transport.write(
                    _response(408, "Request Timeout", f"the request {what} took over {delay:g} s")
                )
            self.transport.close()

    return GuardedH11Protocol


# ---- serving an index to those who may read it -----------------------------------------------


def needs_key(index_path: Path) -> bool:
    """Whether a keyless TCP server would show the index to users its file mode denies."""
    return not index_path.stat().st_mode & stat.S_IROTH


def _mode_like(index_path: Path, owner: int, group: int, other: int) -> tuple[int, int]:
    """``(mode, gid)``: ``owner`` always, plus ``group``/``other`` where the index grants read."""
    st = index_path.stat()
    mode = owner
    if st.st_mode & stat.S_IRGRP:
        mode |= group
    if st.st_mode & stat.S_IROTH:
        mode |= other
    return mode, st.st_gid


def _chgrp(fd_or_path: int | str, gid: int, what: Path) -> bool:
    try:
        if isinstance(fd_or_path, int):
            os.fchown(fd_or_path, -1, gid)
        else:
            os.chown(fd_or_path, -1, gid)
    except PermissionError:
        log.warning(
            "%s: cannot give it the index's group (gid %d): only its owner can use it", what, gid
        )
        return False
    return True


def index_key(index_path: Path, key_file: Path) -> str:
    """The key that guards a served index, from ``key_file``, written there first if absent.

    The file gets the index's group and is readable like the index (0640 for a 0640 index,
    0600 for a 0600 one): who can read the index can read the key. An existing file is used
    again (clients keep their key across restarts) if this user owns it and it grants nothing
    the index does not; otherwise it is refused, never trusted.
    """
    mode, gid = _mode_like(index_path, 0o600, 0o040, 0o004)
    try:
        st = key_file.stat()
    except FileNotFoundError:
        st = None
    if st is not None:
        loose = stat.S_IMODE(st.st_mode) & ~mode
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or loose:
            msg = (
                f"{key_file} exists but is not a key file this server wrote (it must be a file "
                f"owned by this user with mode {mode:04o} or tighter); remove it or choose "
                "another with --key-file"
            )
            raise PermissionError(msg)
        key = key_file.read_text(encoding="ascii").strip()
        if key:
            return key
    key = secrets.token_urlsafe(32)
    fd, tmp = tempfile.mkstemp(prefix=f".{key_file.name}.", dir=key_file.parent)
    try:
        if not _chgrp(fd, gid, key_file):
            mode &= 0o700
        os.fchmod(fd, mode)
        os.write(fd, key.encode("ascii") + b"\n")
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, key_file)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return key


class UnixListener:
    """A listening Unix socket at ``path``; :meth:`close` removes the file if it is still this
    one (not a socket another server has put there since)."""

    def __init__(self, path: Path, sock: socket.socket) -> None:
        self.path, self.sock = path, sock
        self._inode = path.lstat().st_ino

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            if self.path.lstat().st_ino == self._inode:
                self.path.unlink()


def bind_unix_socket(
    path: Path, index_path: Path | None, *, owner_only: bool = False
) -> UnixListener:
    """A listening Unix socket at ``path`` whose mode and group follow the index file's.

    Connecting needs write permission on the socket: group and others get ``rw`` where the
    index grants them read (0660 for a 0640 index); without an index, anyone local may connect
    (0666, as on loopback TCP). The socket is made in a private directory beside ``path``,
    given its mode and group there, then renamed into place, so it is never open wider. A
    stale socket at ``path`` (nobody listening) is replaced; anything else is refused.
    """
    if owner_only:  # the owner's alone (a central store served with the owner's credentials)
        mode, gid = 0o600, -1
    elif index_path is not None:
        mode, gid = _mode_like(index_path, 0o600, 0o060, 0o006)
    else:
        mode, gid = 0o666, -1
    _clear_stale(path)
    private = Path(tempfile.mkdtemp(prefix=".lokal-serve-", dir=path.parent))
    staged = private / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staged))
        if gid >= 0 and not _chgrp(str(staged), gid, path):
            mode &= 0o700
        os.chmod(staged, mode)
        sock.listen(1024)
        os.rename(staged, path)
        return UnixListener(path, sock)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            staged.unlink()
        raise
    finally:
        with contextlib.suppress(OSError):
            private.rmdir()


def _clear_stale(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        msg = f"{path} exists and is not a socket: refusing to replace it"
        raise FileExistsError(msg)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
    else:
        msg = f"{path}: another server is listening on this socket"
        raise FileExistsError(msg)
    finally:
        probe.close()
    path.unlink(missing_ok=True)
