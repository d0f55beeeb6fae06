"""The stdlib HTTP server both of ``dklb run``'s endpoints are made of.

Where it sits: ``engine.telemetry.health`` serves ``/metrics``, ``/healthz`` and ``/readyz`` with
it, ``engine.admission.server`` the webhook (over TLS). Both want the same things of
``ThreadingHTTPServer``: a thread per connection that never keeps the process alive, no reverse
DNS lookup at bind time, IPv6 when the host says so, JSON answers with a length, and the access
log through ``logging`` (every line of a JSON-logging process must be JSON).
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

log = logging.getLogger("dklb.http")


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


class Server(ThreadingHTTPServer):
    """Binds on construction (an address in use fails there, before any thread starts)."""

    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host's FQDN, which can stall for seconds on
        # a reverse DNS lookup; the name is never used.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def bound(self) -> tuple[str, int]:
        """The address really bound (the kernel's pick for port 0)."""
        host, port = self.server_address[:2]
        return str(host), int(port)


S = TypeVar("S", bound=Server)


def server_class(base: type[S], host: str) -> type[S]:
    """``base``, or its IPv6 variant when ``host`` is an IPv6 address."""
    if ":" not in host:
        return base
    return type(base.__name__ + "6", (base,), {"address_family": socket.AF_INET6})


class Handler(BaseHTTPRequestHandler):
    """JSON and plain answers with a Content-Length; the access log at debug level."""

    logger = log

    def send_json(self, status: int, body: dict[str, Any]) -> None:
        self.send_body(status, (json.dumps(body) + "\n").encode(), "application/json")

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Through logging, never straight to stderr. Debug level: probes every few seconds and
        # one line per review would drown what matters.
        self.logger.debug("%s %s", self.address_string(), format % args)
