"""The HTTP side of the local EdgeLB: connections, request bodies, answers, faults, request counts.

Where it sits in the data flow: ``LocalEdgeLB.serve`` (``edgelb_local.server``) listens with
``HTTPServer``; each connection gets a ``RequestHandler`` thread, which reads the body (bounded,
chunked or not), asks the app's ``FaultInjector`` what to do with the request (delay, 503, hold,
reset) and otherwise hands it to ``LocalEdgeLB.handle``, then writes the ``Response`` with
keep-alive. Every request is counted once (``LocalEdgeLB.requests``) before its answer goes out and
logged as one line (method, path, status, milliseconds).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edgelb_local.faults import NO_FAULT

if TYPE_CHECKING:
    from edgelb_local.server import LocalEdgeLB

log = logging.getLogger("edgelb_local")

# Bodies are pools; nothing legitimate comes close. Bounds what one request can make the server buffer.
MAX_BODY = 16 * 1024 * 1024
# An idle keep-alive connection is dropped after this long, so vanished clients do not pin threads.
IDLE_TIMEOUT = 300.0
# Paths under this prefix are the local server's own (request counts): never counted or faulted.
LOCAL_PREFIX = "/_local/"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any) -> Response:
        return cls(status, json.dumps(data).encode())

    @classmethod
    def raw_json(cls, status: int, text: str) -> Response:
        return cls(status, text.encode())

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode(), "text/plain; charset=utf-8")

    @classmethod
    def error(cls, status: int, message: str, *, code: int | None = None, **headers: str) -> Response:
        body = {"code": status if code is None else code, "message": message}
        return cls(status, json.dumps(body).encode(), headers=headers)


def _ignore_status(status: int) -> None:
    pass


class HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Benchmarks open many connections at once; the default backlog of 5 would refuse some.
    request_queue_size = 128
    app: LocalEdgeLB

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that refuses our certificate or hangs up is its business, not a server error.
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLError | ConnectionError):
            log.debug("connection from %s ended: %s", client_address[0], error)
            return
        super().handle_error(request, client_address)


class HTTPServer6(HTTPServer):
    address_family = socket.AF_INET6


class RequestHandler(http.server.BaseHTTPRequestHandler):
    server: HTTPServer
    # HTTP/1.1 keep-alive: clients reuse connections, so every answer carries a Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "edgelb-local"
    timeout = IDLE_TIMEOUT
    _sent_status = 0
    # Told the status of every answer just before it is sent; _dispatch points it at its counter.
    _answering: Callable[[int], None] = staticmethod(_ignore_status)

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; with Nagle's algorithm the body would wait for
        # the client's delayed ACK (~40 ms per request).
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.app._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app._closed(self.connection)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        app = self.server.app
        start = time.monotonic()
        outcome: int | str = "-"
        path = urlsplit(self.path).path
        # Counted once, as soon as the outcome is decided and BEFORE the answer goes out (``_send``
        # calls ``_answering``): a client reading /_local/requests right after its answer finds its
        # request already counted.
        counted = path.startswith(LOCAL_PREFIX)

        def count(code: int | str) -> None:
            nonlocal counted
            if not counted:
                counted = True
                app.requests.add(self.command, app.route_of(path), code)

        self._answering = count
        try:
            body = self._read_body()
            if body is None:
                outcome = self._sent_status  # 400 or 413, already answered
                return
            if path.startswith(LOCAL_PREFIX):
                response = app.handle_local(self.command, path)
                outcome = response.status
                self._send(response)
                return
            # Decided before anything touches state: a faulted write changes nothing.
            decision = app.faults.decide(self.command, path) if app.faults else NO_FAULT
            if decision.latency > 0:
                app.stopping.wait(decision.latency)
            if decision.action == "reset":
                outcome = "reset"
                count(outcome)
                self._reset()
                return
            if decision.action == "timeout":
                outcome = "timeout"
                count(outcome)
                self.close_connection = True
                # Bounded: the client sees no answer for `hold` seconds (or until shutdown), then EOF.
                app.stopping.wait(decision.hold)
                return
            if decision.action == "5xx":
                response = Response.error(503, "injected fault")
            else:
                response = app.handle(self.command, path, body)
            outcome = response.status
            self._send(response)
        except (ConnectionError, TimeoutError) as exc:
            outcome = f"{outcome} ({type(exc).__name__})"
            self.close_connection = True
        finally:
            self._answering = _ignore_status
            count("error")  # no-op once counted: here only if the client went away before an outcome
            elapsed = (time.monotonic() - start) * 1000
            log.info("%s %s %s %.1fms", self.command, self.path, outcome, elapsed)

    def _read_body(self) -> bytes | None:
        """The request body; None after answering 400/413 for a body that cannot be read."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header else 0
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self.close_connection = True
            self._send(Response.error(400, f"bad Content-Length {length_header!r}"))
            return None
        if length > MAX_BODY:
            self.close_connection = True
            self._send(Response.error(413, f"request body larger than {MAX_BODY} bytes"))
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                self.close_connection = True
                self._send(Response.error(400, "bad chunked encoding"))
                return None
            if size == 0:
                # Trailers, up to the empty line.
                while self.rfile.readline(1024).strip():
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                self.close_connection = True
                self._send(Response.error(413, f"request body larger than {MAX_BODY} bytes"))
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF ending the chunk

    def _send(self, response: Response) -> None:
        self._sent_status = response.status
        self._answering(response.status)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status == 204:
            self.end_headers()
            return
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _reset(self) -> None:
        # SO_LINGER on with a zero timeout makes close() send RST instead of FIN: what a crashed
        # process or a middlebox dropping the connection looks like to the client.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # rfile holds a reference to the socket: the descriptor only closes once both are closed.
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.connection.close()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Errors the base class answers itself (bad request line, unknown method, header too long)
        # get the same JSON shape as every other error.
        self.close_connection = True
        self._send(Response.error(code, message or explain or self.responses.get(code, ("error",))[0]))
        method, path = getattr(self, "command", None) or "-", getattr(self, "path", None) or "-"
        if not urlsplit(path).path.startswith(LOCAL_PREFIX):
            # Answered by the base class before _dispatch (bad request line, unknown method): counted here.
            self.server.app.requests.add(method, self.server.app.route_of(urlsplit(path).path), code)
        log.info("%s %s %d", method, path, code)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # _dispatch logs one line per request itself (with the elapsed time).
        pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)
