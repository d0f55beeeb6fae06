"""The bounded HTTP/1.1 server both of ``dklb run``'s endpoints are made of.

Where it sits: ``engine.telemetry.health`` serves ``/metrics``, ``/healthz`` and ``/readyz`` with
it, ``engine.admission.server`` the webhook (over TLS). Neither port is authenticated and any Pod
may reach them unless a NetworkPolicy says otherwise, so the server itself bounds what a client
can take (security review S3):

- **threads**: connections live on one asyncio loop (one thread per server); a fixed pool of
  ``Limits.workers`` threads runs the handlers. A client that dribbles or says nothing holds a
  socket and a few KiB, never a thread; beyond ``Limits.max_connections`` a new connection is
  closed at once.
- **time**: every request is answered, or its connection cut, within ``Limits.deadline`` of the
  accept (TLS handshake included) or, on a kept-alive connection, of its first byte. It is one
  timer over the whole exchange, not a timeout per read, so one byte a second does not stretch it.
  A kept-alive connection with no new request is closed after ``Limits.idle_timeout``.
- **memory**: the request line and headers are at most ``Limits.max_header`` bytes; a body needs
  a Content-Length (no chunked bodies) of at most ``Limits.max_body``, refused before a byte of it
  is read. A body over ``Limits.large_body`` is read and handled one at a time, on a thread of
  its own (JSON parsing multiplies a body's size by ~20 in Python objects), so many large bodies
  cost about one.

A handler is a plain function ``Request -> Response`` run in the pool; whatever it raises becomes a
500. The access log goes through ``logging`` at debug level (every line of a JSON-logging process
must be JSON; a probe every few seconds would drown what matters).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import queue
import re
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

log = logging.getLogger("dklb.http")

KIB = 1024
MIB = 1024 * KIB
# How long a closing connection may take to flush its answer and say goodbye (TLS close_notify).
CLOSE_TIMEOUT = 1.0


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::]:9420`` for IPv6; port 0 = a free port) as a (host, port) pair."""
    host, sep, port = text.strip().rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    host = host.strip("[]")
    if not sep or not host or not 0 <= number <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (PORT 0..65535; 0 = a free port)")
    return host, number


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Limits:
    """What one client may take of a server; see the module docstring."""

    workers: int
    max_connections: int
    max_body: int
    deadline: float
    idle_timeout: float
    max_header: int = 32 * KIB
    large_body: int = 64 * KIB


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as sent: path and query
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    client: str

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    close: bool = False  # end the connection after this answer


def json_response(status: int, body: Mapping[str, Any], *, close: bool = False) -> Response:
    return Response(status, (json.dumps(body) + "\n").encode(), "application/json", close)


Handler = Callable[[Request], Response]


class _Refusal(Exception):
    """A request the server answers itself, then closes the connection (its rest is unread)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_LENGTH = re.compile(r"[0-9]{1,19}")


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """(method, target, version, headers) of a request head ending in a blank line; ``_Refusal``."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise _Refusal(400, f"bad request line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _Refusal(400, f"bad header line {line[:100]!r}")
        name = name.lower()
        if name in headers and name in ("content-length", "transfer-encoding", "host"):
            raise _Refusal(400, f"more than one {name} header")  # request smuggling
        headers[name] = value.strip()
    return parts[0], parts[1], parts[2], headers


def body_length(method: str, headers: Mapping[str, str], limit: int) -> int:
    """How many body bytes to read; ``_Refusal`` before any is read when that is not acceptable."""
    if "transfer-encoding" in headers:
        # The API server always sends a length; a chunked body has no size to check up front.
        raise _Refusal(411, "a Content-Length is required (chunked bodies are not accepted)")
    length = headers.get("content-length")
    if length is None:
        if method in ("POST", "PUT", "PATCH"):
            raise _Refusal(411, "a Content-Length is required")
        return 0
    if not _LENGTH.fullmatch(length):
        raise _Refusal(400, f"bad Content-Length {length[:30]!r}")
    size = int(length)
    if size > limit:
        raise _Refusal(413, f"the body of {size} bytes is over the limit of {limit} bytes")
    return size


def render(response: Response, *, server: str, close: bool) -> bytes:
    """The status line, headers and body, to go out in one write (no Nagle wait between them)."""
    try:
        phrase = HTTPStatus(response.status).phrase
    except ValueError:
        phrase = ""
    lines = [
        f"HTTP/1.1 {response.status} {phrase}",
        f"Server: {server}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Response]", Handler, Request, Callable[[], None]]


class _Workers:
    """A fixed pool of daemon threads running handlers for the loop (nothing here keeps a process
    alive, unlike ``ThreadPoolExecutor``, whose threads are joined at exit)."""

    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-worker-{i}", daemon=True) for i in range(count)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def submit(
        self, handler: Handler, request: Request, done: Callable[[], None]
    ) -> asyncio.Future[Response]:
        """The handler's answer, from the loop's side; ``done`` runs in the loop once the handler
        has returned (or was skipped), even when the future was cancelled before."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Response] = loop.create_future()
        self._jobs.put((loop, future, handler, request, done))
        return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, handler, request, done = job
            outcome: Response | BaseException | None = None
            if not future.cancelled():  # its client is gone: skip the work
                try:
                    outcome = handler(request)
                except Exception as exc:
                    outcome = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped
                loop.call_soon_threadsafe(_settle, future, outcome, done)


def _settle(
    future: asyncio.Future[Response], outcome: Response | BaseException | None, done: Callable[[], None]
) -> None:
    done()
    if future.done() or outcome is None:
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


@dataclass
class _Listener:
    sock: socket.socket
    handler: Handler
    tls: Callable[[], ssl.SSLContext] | None


class HttpServer:
    """Listeners (bound by ``listen``) served by one loop thread and one worker pool."""

    def __init__(
        self, name: str, limits: Limits, *, logger: logging.Logger = log, server: str = "dklb"
    ) -> None:
        self.name, self.limits, self._log, self._server = name, limits, logger, server
        self._listeners: list[_Listener] = []
        self._connections: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = asyncio.Event()  # bound to the loop on first use, in the loop's thread
        self._large = asyncio.Semaphore(1)
        self._workers = _Workers(limits.workers, name)
        # Large bodies on a thread of their own, not just one at a time: glibc gives each thread a
        # malloc arena and keeps what a parse freed there, so a large parse on each of the pool's
        # threads in turn would cost the process a large parse's memory per thread.
        self._large_worker = _Workers(1, name + "-large")

    def listen(
        self, host: str, port: int, handler: Handler, *, tls: Callable[[], ssl.SSLContext] | None = None
    ) -> tuple[str, int]:
        """Binds now (an address in use fails here, before any thread starts); the bound address.
        ``tls`` gives the context for each new connection (a rotation swaps what it returns)."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            # As the stdlib servers do: a restart binds at once, whatever is left in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._listeners.append(_Listener(sock, handler, tls))
        return _address(sock)

    def addresses(self) -> list[tuple[str, int]]:
        return [_address(listener.sock) for listener in self._listeners]

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._loop_exception)
        self._workers.start()
        self._large_worker.start()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._serve(),), name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stops accepting, cuts the open connections, closes the sockets; idempotent."""
        loop, thread, self._thread = self._loop, self._thread, None
        if loop is not None and thread is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._request_stop)
            thread.join(timeout=5)
            self._workers.stop()
            self._large_worker.stop()
            if not thread.is_alive():
                loop.close()
        for listener in self._listeners:
            listener.sock.close()

    def _request_stop(self) -> None:
        self._stopping.set()

    async def _serve(self) -> None:
        servers = []
        for listener in self._listeners:
            servers.append(
                await asyncio.start_server(
                    _callback(self._connection, listener), sock=listener.sock, limit=self.limits.max_header
                )
            )
        await self._stopping.wait()
        for server in servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A client hanging up mid-handshake is routine: never a traceback at error level.
        self._log.debug("%s: %s", self.name, context.get("message"), exc_info=context.get("exception"))

    async def _connection(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "?"
        task = asyncio.current_task()
        if task is None or len(self._connections) >= self.limits.max_connections:
            self._log.debug(
                "%s: refused a connection from %s: %d open", self.name, client, len(self._connections)
            )
            writer.transport.abort()
            return
        self._connections.add(task)
        try:
            await self._converse(listener, reader, writer, client)
        except TimeoutError:
            self._log.debug(
                "%s: cut %s: no whole request within %.0f s", self.name, client, self.limits.deadline
            )
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:  # ssl.SSLError is an OSError
            self._log.debug("%s: connection from %s failed: %s", self.name, client, exc)
        finally:
            self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def _converse(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> None:
        loop = asyncio.get_running_loop()
        limits = self.limits
        first = b""
        async with asyncio.timeout(limits.deadline):
            if listener.tls is not None:
                # Here, inside the deadline: a client that never finishes its hello is cut too.
                await writer.start_tls(listener.tls(), ssl_handshake_timeout=limits.deadline)
            keep = await self._exchange(listener, reader, writer, client, first)
        while keep:
            try:
                async with asyncio.timeout(limits.idle_timeout):
                    first = await reader.read(1)
            except TimeoutError:
                self._log.debug("%s: closed an idle connection from %s", self.name, client)
                return
            if not first:
                return
            async with asyncio.timeout_at(loop.time() + limits.deadline):
                keep = await self._exchange(listener, reader, writer, client, first)

    async def _exchange(
        self,
        listener: _Listener,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
        first: bytes,
    ) -> bool:
        """Reads one request and answers it; whether the connection stays open."""
        try:
            head = first + await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return await self._refuse(
                writer, client, "-", _Refusal(431, f"the request head is over {self.limits.max_header} bytes")
            )
        except asyncio.IncompleteReadError:
            return False  # the client closed between requests, or mid-head
        target = "-"
        try:
            method, target, version, headers = parse_head(head)
            size = body_length(method, headers, self.limits.max_body)
        except _Refusal as refusal:
            return await self._refuse(writer, client, target, refusal)
        response = await self._handle(
            listener.handler, reader, size, Request(method, target, headers, b"", client)
        )
        close = response.close or version != "HTTP/1.1" or "close" in headers.get("connection", "").lower()
        self._log.debug('%s "%s %s" %d', client, method, target, response.status)
        await self._send(writer, response, close)
        return not close

    async def _handle(
        self, handler: Handler, reader: asyncio.StreamReader, size: int, request: Request
    ) -> Response:
        large = size > self.limits.large_body
        semaphore = self._large
        if large:
            await semaphore.acquire()
        handed = False
        try:
            body = await reader.readexactly(size) if size else b""
            request = Request(request.method, request.target, request.headers, body, request.client)
            if large:
                future = self._large_worker.submit(handler, request, semaphore.release)
            else:
                future = self._workers.submit(handler, request, _nothing)
            handed = True
            try:
                return await future
            except Exception as exc:
                self._log.error("%s %s failed", request.method, request.path, exc_info=exc)
                return json_response(500, {"error": f"{type(exc).__name__}: {exc}"})
        finally:
            if large and not handed:
                semaphore.release()

    async def _refuse(
        self, writer: asyncio.StreamWriter, client: str, target: str, refusal: _Refusal
    ) -> bool:
        self._log.debug("%s: %s %s refused: %s", self.name, client, target, refusal)
        writer.write(
            render(json_response(refusal.status, {"error": str(refusal)}), server=self._server, close=True)
        )
        await writer.drain()
        # Not a graceful close: that would read (and, over TLS, decrypt) the unread body until the
        # client's goodbye, 8 MiB of it if the client says so. The answer is already with the
        # kernel; the abort resets the connection, and the client's send fails at once.
        writer.transport.abort()
        return False

    async def _send(self, writer: asyncio.StreamWriter, response: Response, close: bool) -> None:
        writer.write(render(response, server=self._server, close=close))
        await writer.drain()
        if close:
            writer.close()  # flushes what drain left buffered; TLS adds its close_notify
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await writer.wait_closed()


def _nothing() -> None:
    pass


def _address(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


def _callback(
    serve: Callable[[_Listener, asyncio.StreamReader, asyncio.StreamWriter], Any], listener: _Listener
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    async def callback(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve(listener, reader, writer)

    return callback
