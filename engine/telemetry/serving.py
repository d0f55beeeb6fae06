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
must be JSON; a probe every few seconds would drown what matters). So do refusals and cuts, which
a client can cause at will; each is also reported to ``on_refused`` with its reason
(``engine.telemetry.http_wire.REASONS``: ``dklb_http_refused_total``), so that a flood shows on a
dashboard without debug logging. A TLS listener may require a client certificate (its context
says so): a client without one, or with one its CA did not sign, is cut at the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.telemetry.http_wire import (
    BAD_REQUEST,
    BODY_TOO_LARGE,
    CLIENT_CERTIFICATE,
    CONNECTION_CAP,
    DEADLINE,
    HANDSHAKE,
    HEADER_TOO_LARGE,
    IDLE,
    LENGTH_REQUIRED,
    REASONS,
    Handler,
    HandshakeFailed,
    OnRefused,
    OnServerRefused,
    Refusal,
    Request,
    Response,
    body_length,
    format_address,
    json_response,
    parse_head,
    parse_listen,
    render,
)

# The wire format lives in http_wire; re-exported: every user of the server (the webhook,
# /metrics, the local EdgeLB) imports it from here.
__all__ = [
    "BAD_REQUEST",
    "BODY_TOO_LARGE",
    "CLIENT_CERTIFICATE",
    "CONNECTION_CAP",
    "DEADLINE",
    "HANDSHAKE",
    "HEADER_TOO_LARGE",
    "IDLE",
    "KIB",
    "LENGTH_REQUIRED",
    "MIB",
    "REASONS",
    "Handler",
    "HttpServer",
    "Limits",
    "OnRefused",
    "OnServerRefused",
    "Request",
    "Response",
    "body_length",
    "format_address",
    "json_response",
    "parse_head",
    "parse_listen",
    "render",
]

log = logging.getLogger("dklb.http")

KIB = 1024
MIB = 1024 * KIB
# How long a closing connection may take to flush its answer and say goodbye (TLS close_notify).
CLOSE_TIMEOUT = 1.0


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
        self,
        name: str,
        limits: Limits,
        *,
        logger: logging.Logger = log,
        server: str = "dklb",
        on_refused: OnRefused | None = None,
    ) -> None:
        self.name, self.limits, self._log, self._server = name, limits, logger, server
        self._on_refused = on_refused
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
            self._refused(CONNECTION_CAP)
            writer.transport.abort()
            return
        self._connections.add(task)
        try:
            await self._converse(listener, reader, writer, client)
        except TimeoutError:
            self._log.debug(
                "%s: cut %s: no whole request within %.0f s", self.name, client, self.limits.deadline
            )
            self._refused(DEADLINE)
        except HandshakeFailed as exc:
            self._log.debug("%s: TLS handshake with %s failed (%s): %s", self.name, client, exc.reason, exc)
            self._refused(exc.reason)
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
                try:
                    await writer.start_tls(listener.tls(), ssl_handshake_timeout=limits.deadline)
                except ssl.SSLError as exc:
                    raise HandshakeFailed(exc) from exc
            keep = await self._exchange(listener, reader, writer, client, first)
        while keep:
            try:
                async with asyncio.timeout(limits.idle_timeout):
                    first = await reader.read(1)
            except TimeoutError:
                self._log.debug("%s: closed an idle connection from %s", self.name, client)
                self._refused(IDLE)
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
                writer,
                client,
                "-",
                Refusal(431, f"the request head is over {self.limits.max_header} bytes", HEADER_TOO_LARGE),
            )
        except asyncio.IncompleteReadError:
            return False  # the client closed between requests, or mid-head
        target = "-"
        try:
            method, target, version, headers = parse_head(head)
            size = body_length(method, headers, self.limits.max_body)
        except Refusal as refusal:
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

    async def _refuse(self, writer: asyncio.StreamWriter, client: str, target: str, refusal: Refusal) -> bool:
        self._log.debug("%s: %s %s refused: %s", self.name, client, target, refusal)
        self._refused(refusal.reason)
        writer.write(
            render(json_response(refusal.status, {"error": str(refusal)}), server=self._server, close=True)
        )
        await writer.drain()
        # Not a graceful close: that would read (and, over TLS, decrypt) the unread body until the
        # client's goodbye, 8 MiB of it if the client says so. The answer is already with the
        # kernel; the abort resets the connection, and the client's send fails at once.
        writer.transport.abort()
        return False

    def _refused(self, reason: str) -> None:
        if self._on_refused is not None:
            try:
                self._on_refused(reason)
            except Exception:
                self._log.warning("on_refused hook failed", exc_info=True)

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
