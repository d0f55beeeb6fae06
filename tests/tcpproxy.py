"""A loopback TCP proxy a test can cut: one replica's road to PostgreSQL or to EdgeLB.

The end-to-end failover tests put a ``TCPProxy`` between one ``dklb run`` and a server it needs
(``--database`` or ``--edgelb-url`` name the proxy's port). ``cut()`` closes every connection
through it and answers each new one by closing it at once (as a server that went away), so the
replica meets connection errors at once rather than a hang; ``restore()`` lets connections through
again. Everything the client sends is kept with the time it arrived, so a test can count the HTTP
requests a replica made after some moment (``requests(since=...)``), e.g. "no EdgeLB write once
it was cut off from its database".
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass

REQUEST_LINE = re.compile(rb"(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS) (\S+) HTTP/1\.[01]\r\n")
# Longer than any request line dklb sends (a pool name is at most 63 characters).
TAIL = 1024


@dataclass(frozen=True)
class Request:
    """An HTTP request line seen on its way to the server, and when (``time.monotonic()``)."""

    at: float
    method: str
    path: str


class _Link:
    """One client connection and its connection to the server, pumped by two threads."""

    def __init__(self, client: socket.socket, server: socket.socket, proxy: TCPProxy) -> None:
        self.client, self.server, self.proxy = client, server, proxy
        # The end of what the client sent: a request line may straddle two reads.
        self.tail = b""

    def start(self) -> None:
        for source, sink, upstream in ((self.client, self.server, True), (self.server, self.client, False)):
            threading.Thread(target=self._pump, args=(source, sink, upstream), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if upstream:
                    self.proxy._saw(self, data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self.proxy._forget(self)


class TCPProxy:
    """127.0.0.1:<free port> -> ``target``; see the module docstring."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._requests: list[Request] = []
        self._cut = False
        self._closed = False
        self.refused = 0
        self._thread = threading.Thread(target=self._accept, name=f"tcpproxy-{self.port}", daemon=True)

    def start(self) -> TCPProxy:
        self._thread.start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> float:
        """Close every connection and refuse new ones; returns when (``time.monotonic()``)."""
        with self._lock:
            self._cut = True
            links = list(self._links)
        for link in links:
            link.close()
        return time.monotonic()

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def requests(self, *, since: float = 0.0) -> list[Request]:
        """The HTTP request lines sent through the proxy at or after ``since``, in order."""
        with self._lock:
            return [r for r in self._requests if r.at >= since]

    def stop(self) -> None:
        with self._lock:
            self._closed = True
        # Closing a listening socket does not wake a thread blocked in accept(): a connection does.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
            pass
        self._thread.join(timeout=5)
        self._listener.close()
        self.cut()

    # ---- the threads -----------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                closed, cut = self._closed, self._cut
            if closed:
                client.close()
                return
            if cut:
                with self._lock:
                    self.refused += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            link = _Link(client, server, self)
            with self._lock:
                self._links.add(link)
            link.start()

    def _saw(self, link: _Link, data: bytes) -> None:
        now = time.monotonic()
        with self._lock:
            seen = link.tail + data
            for match in REQUEST_LINE.finditer(seen):
                # Lines that end inside the tail were counted with the previous read.
                if match.end() > len(link.tail):
                    self._requests.append(Request(now, match.group(1).decode(), match.group(2).decode()))
            link.tail = seen[-TAIL:]

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
