"""The bounds of ``engine.telemetry.serving.HttpServer`` (security review S3), on loopback.

Each test runs a real server with small limits (a 1 s deadline, 2 workers, 4 connections, a
1 KiB body), so a bound is reached in a second, and checks what a client sees. The load test
(``tests/integration/test_endpoint_load.py``) does the same at full size against the real webhook
and /metrics.
"""

from __future__ import annotations

import collections
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.admission.certs import generate_self_signed
from engine.telemetry.http_wire import Refusal
from engine.telemetry.serving import (
    BAD_REQUEST,
    BODY_TOO_LARGE,
    CONNECTION_CAP,
    DEADLINE,
    HANDSHAKE,
    HEADER_TOO_LARGE,
    IDLE,
    LENGTH_REQUIRED,
    HttpServer,
    Limits,
    Request,
    Response,
    body_length,
    parse_head,
)

HOST = "127.0.0.1"
LIMITS = Limits(workers=2, max_connections=4, max_body=1024, deadline=1.0, idle_timeout=0.5, large_body=100)
# How late past a bound the client may see it: the server's timer is on time, the machine is not.
SLACK = 1.5


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        select.select([], [], [], 0.01)


class Echo:
    """A handler that says what it got, and can be held (to fill the workers)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.running = 0
        self.most = 0
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if request.path == "/raise":
                raise RuntimeError("boom")
            assert self.release.wait(10)
            return Response(
                200, b"%s %s %d" % (request.method.encode(), request.path.encode(), len(request.body))
            )
        finally:
            with self._lock:
                self.running -= 1


class Refusals:
    """The ``on_refused`` hook: how many refusals and cuts of each reason the server reported."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, reason: str) -> None:
        with self._lock:
            self.counts[reason] += 1

    def wait(self, expected: dict[str, int]) -> None:
        """Until exactly ``expected`` was reported (the hook runs in the server's loop thread)."""
        wait_for(lambda: dict(self.counts) == expected)


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
def refusals() -> Refusals:
    return Refusals()


@pytest.fixture
def server(echo: Echo, refusals: Refusals) -> Iterator[HttpServer]:
    server = HttpServer("test-http", LIMITS, on_refused=refusals)
    server.listen(HOST, 0, echo)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def connect(server: HttpServer) -> socket.socket:
    return socket.create_connection(server.addresses()[0], timeout=10)


def answer(sock: socket.socket) -> bytes:
    """Everything until the server closes."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def seconds_until_closed(sock: socket.socket, *, dribble: bytes = b"", limit: float = 10.0) -> float:
    """From now until the server closes ``sock``; sends one byte of ``dribble`` every 0.1 s."""
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < limit:
        readable, _, _ = select.select([sock], [], [], 0.1)  # the pacing of a dribbling client
        if readable:
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            return time.monotonic() - started
        if dribble:
            try:
                sock.send(dribble[sent % len(dribble) :][:1])
            except OSError:
                return time.monotonic() - started
            sent += 1
    raise AssertionError(f"still open after {limit} s")


# ---- parsing: pure functions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", ("GET", "/metrics", "HTTP/1.1", {"host": "x"})),
        (
            b"POST /v?t=1 HTTP/1.0\r\nContent-Length: 2\r\n\r\n",
            ("POST", "/v?t=1", "HTTP/1.0", {"content-length": "2"}),
        ),
        (b"GET /\r\n\r\n", 400),
        (b"GET / SPDY/3\r\n\r\n", 400),
        (b"G3T / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    ],
)
def test_parse_head(head: bytes, expected: tuple[str, str, str, dict[str, str]] | int) -> None:
    if isinstance(expected, int):
        with pytest.raises(Refusal) as refusal:
            parse_head(head)
        assert (refusal.value.status, refusal.value.reason) == (expected, BAD_REQUEST)
    else:
        assert parse_head(head) == expected


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {}, 0),
        ("POST", {"content-length": "0"}, 0),
        ("POST", {"content-length": "1024"}, 1024),
        ("POST", {"content-length": "1025"}, Refusal(413, "", BODY_TOO_LARGE)),
        ("POST", {"content-length": str(8 * 1024 * 1024)}, Refusal(413, "", BODY_TOO_LARGE)),
        ("POST", {"content-length": "99999999999999999999999"}, Refusal(400, "", BAD_REQUEST)),
        ("POST", {}, Refusal(411, "", LENGTH_REQUIRED)),
        ("POST", {"transfer-encoding": "chunked"}, Refusal(411, "", LENGTH_REQUIRED)),
        ("GET", {"transfer-encoding": "chunked", "content-length": "5"}, Refusal(411, "", LENGTH_REQUIRED)),
        ("POST", {"content-length": "-1"}, Refusal(400, "", BAD_REQUEST)),
        ("POST", {"content-length": "+5"}, Refusal(400, "", BAD_REQUEST)),
        ("POST", {"content-length": "0x10"}, Refusal(400, "", BAD_REQUEST)),
    ],
)
def test_body_length(method: str, headers: dict[str, str], expected: int | Refusal) -> None:
    if isinstance(expected, Refusal):
        with pytest.raises(Refusal) as refusal:
            body_length(method, headers, 1024)
        assert (refusal.value.status, refusal.value.reason) == (expected.status, expected.reason)
    else:
        assert body_length(method, headers, 1024) == expected


# ---- deadlines ----------------------------------------------------------------------------------


def test_a_dribbling_client_is_cut_at_the_deadline(server: HttpServer, refusals: Refusals) -> None:
    """S3 (security review): one byte at a time held a thread forever; now the whole request has
    ``deadline`` seconds from accept, however it trickles in."""
    with connect(server) as sock:
        seconds = seconds_until_closed(sock, dribble=b"POST /x HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 100)
    assert LIMITS.deadline - 0.05 <= seconds < LIMITS.deadline + SLACK
    refusals.wait({DEADLINE: 1})


def test_a_silent_client_is_cut_at_the_deadline(server: HttpServer, refusals: Refusals) -> None:
    """S3 (security review): a silent connection on the metrics port stayed open forever."""
    with connect(server) as sock:
        seconds = seconds_until_closed(sock)
    assert LIMITS.deadline - 0.05 <= seconds < LIMITS.deadline + SLACK
    refusals.wait({DEADLINE: 1})


def test_a_slow_body_is_cut_at_the_deadline(server: HttpServer, echo: Echo) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nContent-Length: 50\r\n\r\n")
        seconds = seconds_until_closed(sock, dribble=b"a")
    assert seconds < LIMITS.deadline + SLACK
    assert echo.calls == 0


def test_an_idle_kept_alive_connection_is_closed(server: HttpServer, refusals: Refusals) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"GET /one 0")
        # Kept alive: a second request on the same connection is answered.
        sock.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).endswith(b"GET /two 0")
        seconds = seconds_until_closed(sock)
    assert LIMITS.idle_timeout - 0.05 <= seconds < LIMITS.idle_timeout + SLACK
    refusals.wait({IDLE: 1})


def test_each_kept_alive_request_has_its_own_deadline(server: HttpServer) -> None:
    """Several requests on one connection may take longer in all than one deadline."""
    with connect(server) as sock:
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < LIMITS.deadline * 1.5:
            sock.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            assert sock.recv(65536).endswith(b"GET /%d 0" % n)
            n += 1


def test_the_tls_handshake_is_inside_the_deadline(tmp_path: Path, echo: Echo, refusals: Refusals) -> None:
    """S3 (security review): a client that connects and never says hello is cut like the others."""
    ca, cert, key = generate_self_signed(tmp_path, hosts=[HOST])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = HttpServer("test-https", LIMITS, on_refused=refusals)
    server.listen(HOST, 0, echo, tls=lambda: context)
    server.start()
    try:
        with connect(server) as sock:
            silent = seconds_until_closed(sock)
        with connect(server) as raw:
            tls = ssl.create_default_context(cafile=str(ca)).wrap_socket(raw, server_hostname=HOST)
            tls.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            assert tls.recv(65536).endswith(b"GET /ok 0")
            dribbled = seconds_until_closed(tls, dribble=b"GET /slow HTTP/1.1\r\n")
        refusals.wait({DEADLINE: 2})
        # Plain HTTP to the TLS port: the handshake fails at once, with no answer.
        with connect(server) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert seconds_until_closed(sock) < LIMITS.deadline / 2
        refusals.wait({DEADLINE: 2, HANDSHAKE: 1})
    finally:
        server.stop()
    assert LIMITS.deadline - 0.05 <= silent < LIMITS.deadline + SLACK
    assert dribbled < LIMITS.idle_timeout + LIMITS.deadline + SLACK


# ---- connections, workers, bodies ---------------------------------------------------------------


def test_connections_beyond_the_cap_are_closed_at_once(server: HttpServer, refusals: Refusals) -> None:
    """S3 (security review): a thread per connection, without limit; now at most
    ``max_connections`` are open, and one more is closed at once instead of queued."""
    held = [connect(server) for _ in range(LIMITS.max_connections)]
    try:
        wait_for(lambda: server.open_connections == LIMITS.max_connections)
        with connect(server) as extra:
            assert seconds_until_closed(extra) < LIMITS.deadline / 2
        refusals.wait({CONNECTION_CAP: 1})
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: server.open_connections == 0)
    with connect(server) as sock:
        sock.sendall(b"GET /again HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert answer(sock).endswith(b"GET /again 0")


def test_handlers_run_on_a_bounded_pool(server: HttpServer, echo: Echo) -> None:
    echo.release.clear()
    socks = [connect(server) for _ in range(4)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"GET /%d HTTP/1.1\r\nConnection: close\r\n\r\n" % i)
        wait_for(lambda: echo.running == LIMITS.workers)
        assert echo.calls == LIMITS.workers  # the others wait for a worker
        echo.release.set()
        answers = [answer(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert [a.rsplit(b" ", 2)[1] for a in answers] == [b"/0", b"/1", b"/2", b"/3"]
    assert echo.most == LIMITS.workers


def test_large_bodies_are_handled_one_at_a_time(server: HttpServer, echo: Echo) -> None:
    """A body over ``large_body`` costs ~20x its size once parsed: two of them never overlap,
    while small requests go on beside them."""
    echo.release.clear()
    big = [connect(server) for _ in range(2)]
    try:
        for sock in big:
            sock.sendall(
                b"POST /big HTTP/1.1\r\nConnection: close\r\nContent-Length: 500\r\n\r\n" + b"a" * 500
            )
        wait_for(lambda: echo.running == 1)
        with connect(server) as small:
            small.sendall(b"POST /small HTTP/1.1\r\nConnection: close\r\nContent-Length: 5\r\n\r\naaaaa")
            wait_for(lambda: echo.running == 2)  # beside the large one
            echo.release.set()
            assert answer(small).endswith(b"POST /small 5")
        assert [answer(sock).rsplit(b" ", 1)[1] for sock in big] == [b"500", b"500"]
    finally:
        for sock in big:
            sock.close()
    assert echo.calls == 3


@pytest.mark.parametrize(
    ("request_head", "expected", "reason"),
    [
        (b"POST /x HTTP/1.1\r\nContent-Length: 8388608\r\n\r\n", 413, BODY_TOO_LARGE),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1025\r\n\r\n", 413, BODY_TOO_LARGE),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, LENGTH_REQUIRED),
        (b"POST /x HTTP/1.1\r\n\r\n", 411, LENGTH_REQUIRED),
        (b"POST /x HTTP/1.1\r\nContent-Length: many\r\n\r\n", 400, BAD_REQUEST),
        (b"GET /x HTTP/1.1\r\n" + b"X-Long: " + b"a" * 40_000 + b"\r\n\r\n", 431, HEADER_TOO_LARGE),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, BAD_REQUEST),
    ],
)
def test_a_refused_request_is_answered_before_its_body_is_read(
    server: HttpServer, echo: Echo, refusals: Refusals, request_head: bytes, expected: int, reason: str
) -> None:
    """S3 (security review): an 8 MiB body was read whole (and parsed, ~20x in memory); now the
    Content-Length decides before a byte of the body is read. Nothing reaches the handler."""
    with connect(server) as sock:
        sock.sendall(request_head)  # and never the body it announces
        started = time.monotonic()
        data = answer(sock)
    assert status(data) == expected
    assert time.monotonic() - started < LIMITS.deadline / 2
    assert b"Connection: close" in data and b'"error"' in data
    assert echo.calls == 0
    refusals.wait({reason: 1})


def test_a_failing_handler_is_a_500_and_the_server_goes_on(server: HttpServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /raise HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = answer(sock)
    assert status(data) == 500 and b"RuntimeError: boom" in data
    with connect(server) as sock:
        sock.sendall(b"GET /fine HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert answer(sock).endswith(b"GET /fine 0")


def test_http_1_0_and_connection_close_end_the_connection(server: HttpServer) -> None:
    for head in (b"GET /a HTTP/1.0\r\n\r\n", b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"):
        with connect(server) as sock:
            sock.sendall(head)
            data = answer(sock)  # returns: the server closed
        assert data.endswith(b"GET /a 0") and b"Connection: close" in data


def test_stop_cuts_open_connections_and_frees_the_port(echo: Echo) -> None:
    server = HttpServer("test-http", LIMITS)
    host, port = server.listen(HOST, 0, echo)
    server.start()
    sock = socket.create_connection((host, port), timeout=10)
    wait_for(lambda: server.open_connections == 1)
    started = time.monotonic()
    server.stop()
    server.stop()  # idempotent
    assert seconds_until_closed(sock) < LIMITS.deadline
    assert time.monotonic() - started < LIMITS.deadline
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=5).close()
