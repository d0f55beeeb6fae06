"""The HTTP/1.1 wire of ``engine.telemetry.serving``: a request head parsed, a body's length
decided before it is read, an answer rendered, and the names of every refusal and cut.

Where it sits: pure functions and values, no socket. ``engine.telemetry.serving`` reads requests
and writes answers with them; ``engine.telemetry.metrics`` labels ``dklb_http_refused_total``
with ``REASONS``. A request that cannot be accepted raises ``Refusal`` carrying the status to
answer and the reason to count.
"""

from __future__ import annotations

import email.utils
import json
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any


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

# Why the server cut a connection or refused a request: the ``reason`` of ``OnRefused`` (and of
# ``dklb_http_refused_total``). Each names one cut point of ``engine.telemetry.serving``.
CONNECTION_CAP = "connection_cap"  # max_connections open: closed at accept
DEADLINE = "deadline"  # no whole request (handshake included) within Limits.deadline
IDLE = "idle"  # a kept-alive connection said nothing for Limits.idle_timeout
HANDSHAKE = "handshake"  # the TLS handshake failed (plain HTTP, garbage, no common version)
CLIENT_CERTIFICATE = "client_certificate"  # no client certificate, or one the CA did not sign
BAD_REQUEST = "bad_request"  # 400: a request line, header or Content-Length that does not parse
LENGTH_REQUIRED = "length_required"  # 411: a chunked body, or a POST without Content-Length
BODY_TOO_LARGE = "body_too_large"  # 413: a Content-Length over Limits.max_body
HEADER_TOO_LARGE = "header_too_large"  # 431: a request head over Limits.max_header
REASONS = (
    CONNECTION_CAP,
    DEADLINE,
    IDLE,
    HANDSHAKE,
    CLIENT_CERTIFICATE,
    BAD_REQUEST,
    LENGTH_REQUIRED,
    BODY_TOO_LARGE,
    HEADER_TOO_LARGE,
)

# Called in the server's loop thread with the reason of each refusal or cut; must not block.
OnRefused = Callable[[str], None]
# The same, for a hook shared by several servers: (server, reason), e.g. ``Metrics.http_refused``.
OnServerRefused = Callable[[str, str], None]


class Refusal(Exception):
    """A request the server answers itself, then closes the connection (its rest is unread)."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


class HandshakeFailed(Exception):
    """The TLS handshake failed; ``reason`` is ``HANDSHAKE`` or ``CLIENT_CERTIFICATE``."""

    def __init__(self, error: ssl.SSLError) -> None:
        super().__init__(str(error))
        self.reason = CLIENT_CERTIFICATE if _is_client_certificate_error(error) else HANDSHAKE


def _is_client_certificate_error(error: ssl.SSLError) -> bool:
    # A certificate that does not verify (another CA, expired) is SSLCertVerificationError; none
    # at all is PEER_DID_NOT_RETURN_A_CERTIFICATE (TLS 1.2 and 1.3 alike, on the server's side).
    return isinstance(error, ssl.SSLCertVerificationError) or error.reason in (
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "CERTIFICATE_VERIFY_FAILED",
    )


_LENGTH = re.compile(r"[0-9]{1,19}")


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """(method, target, version, headers) of a request head ending in a blank line; ``Refusal``."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise Refusal(400, f"bad request line {lines[0][:100]!r}", BAD_REQUEST)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise Refusal(400, f"bad header line {line[:100]!r}", BAD_REQUEST)
        name = name.lower()
        if name in headers and name in ("content-length", "transfer-encoding", "host"):
            raise Refusal(400, f"more than one {name} header", BAD_REQUEST)  # request smuggling
        headers[name] = value.strip()
    return parts[0], parts[1], parts[2], headers


def body_length(method: str, headers: Mapping[str, str], limit: int) -> int:
    """How many body bytes to read; ``Refusal`` before any is read when that is not acceptable."""
    if "transfer-encoding" in headers:
        # The API server always sends a length; a chunked body has no size to check up front.
        raise Refusal(411, "a Content-Length is required (chunked bodies are not accepted)", LENGTH_REQUIRED)
    length = headers.get("content-length")
    if length is None:
        if method in ("POST", "PUT", "PATCH"):
            raise Refusal(411, "a Content-Length is required", LENGTH_REQUIRED)
        return 0
    if not _LENGTH.fullmatch(length):
        raise Refusal(400, f"bad Content-Length {length[:30]!r}", BAD_REQUEST)
    size = int(length)
    if size > limit:
        raise Refusal(413, f"the body of {size} bytes is over the limit of {limit} bytes", BODY_TOO_LARGE)
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
