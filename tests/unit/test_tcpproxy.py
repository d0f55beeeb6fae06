"""``tests.tcpproxy``: the cuttable loopback proxy the failover tests rely on forwards bytes both
ways, counts the HTTP request lines sent through it (also when a line straddles two reads),
and once cut closes what is open and every new connection."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.tcpproxy import TCPProxy


@pytest.fixture
def echo() -> Iterator[int]:
    """A loopback server that sends back whatever it receives, on each connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def proxy(echo: int) -> Iterator[TCPProxy]:
    p = TCPProxy("127.0.0.1", echo).start()
    yield p
    p.stop()


def exchange(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_bytes_go_both_ways_and_request_lines_are_counted_once(proxy: TCPProxy) -> None:
    before = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        assert exchange(sock, b"GET /v2/pools HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"GET /v2/pools")
        # One request line in two reads.
        assert exchange(sock, b"POST /v2/po") == b"POST /v2/po"
        assert exchange(sock, b"ols HTTP/1.1\r\n\r\n") == b"ols HTTP/1.1\r\n\r\n"
        assert exchange(sock, b"DELETE /v2/pools/a HTTP/1.1\r\n\r\n").startswith(b"DELETE")
    seen = [(r.method, r.path) for r in proxy.requests(since=before)]
    assert seen == [("GET", "/v2/pools"), ("POST", "/v2/pools"), ("DELETE", "/v2/pools/a")]
    assert proxy.requests(since=time.monotonic() + 1) == []


def test_a_cut_closes_open_connections_and_refuses_new_ones_until_restored(proxy: TCPProxy) -> None:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    assert exchange(sock, b"hello") == b"hello"
    proxy.cut()
    # The open connection is closed: end of stream (or a reset) on the next read.
    with sock, contextlib.suppress(ConnectionResetError):
        assert sock.recv(10) == b""
    refused = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    with refused, contextlib.suppress(ConnectionResetError):
        assert refused.recv(10) == b""
    assert proxy.refused == 1
    proxy.restore()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as again:
        assert exchange(again, b"back") == b"back"
