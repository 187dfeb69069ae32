"""What ``lokal serve`` is told: its settings, and which addresses are loopback."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Literal

from lokal.agent.server.worker import Kind

Api = Literal["ollama", "openai", "cohere", "lokal"]


DEFAULT_PORT = 11435


#: Texts over the context when a request does not say: cut and report, or refuse.
Truncation = Literal["warn", "error"]


@dataclass(frozen=True)
class ServeSettings:
    """What ``lokal serve`` was told. Every limit is per request unless said otherwise."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    #: the prefix path for APIs that do not say (``input_type`` absent)
    input_type: Kind = "document"
    #: texts longer than the context when the request does not say: cut ("warn") or refuse
    truncation: Truncation = "warn"
    force_dimensions: bool = False
    max_body_bytes: int = 8 * 1024 * 1024
    max_inputs: int = 2048
    max_k: int = 1000
    #: texts per model call (the worker batches up to this many)
    max_batch: int = 64
    #: texts waiting for the model (server-wide) before requests get 503
    max_queue: int = 8192
    #: model calls that run at once (the embedder needs as many GGUF contexts: concurrency)
    workers: int = 1
    access_log: bool = False
    #: host names the server answers besides its bind address (and localhost on loopback)
    allowed_hosts: tuple[str, ...] = ()
    #: web origins (``https://app.example``) whose pages may call the server
    allowed_origins: tuple[str, ...] = ()
    #: served on a Unix socket (no Host check: no browser reaches it by name)
    unix_socket: bool = False
    #: seconds a connection has to send its request headers, then its body
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    #: open connections per client address, and in all (more get 503)
    max_connections_per_client: int = 64
    max_connections: int = 1024


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only loopback addresses (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)
