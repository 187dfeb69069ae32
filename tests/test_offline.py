"""The suite runs with the network cut off (tests/offline); check that it really is."""

from __future__ import annotations

import os
import socket

import pytest


@pytest.mark.skipif(
    os.environ.get("LOKAL_TESTS_OFFLINE") != "1", reason="not started through tests/offline"
)
def test_network_is_cut_but_loopback_works() -> None:
    with pytest.raises(OSError):
        socket.create_connection(("1.1.1.1", 443), timeout=3).close()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname(), timeout=3)
    client.close()
    server.close()
