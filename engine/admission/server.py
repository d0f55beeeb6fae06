"""The admission webhook's HTTPS endpoint: ``POST /mutate``, ``POST /validate``, ``GET /healthz``.

Where it sits in the data flow: the API server calls it for every CREATE and UPDATE of a Service
(the MutatingWebhookConfiguration on ``/mutate``, then the ValidatingWebhookConfiguration on
``/validate``), trusting the CA bundle registered with them. The body is handed to
``engine.admission.review.review`` and its answer sent back; nothing here decides anything. Each review
is logged in one line (logger ``dklb.admission``) and reported to ``on_request`` (metrics).

The API server only speaks HTTPS to webhooks, so the server does TLS itself (1.2 or later). The
certificate usually comes from a mounted Secret that a rotation replaces on disk:
``reload_certificates`` swaps in a new TLS context, used from the next connection on.

The server is stdlib ``ThreadingHTTPServer`` in a daemon thread. TLS handshakes happen in the
per-connection threads, so a client that connects and says nothing never blocks the accept loop,
and bad input of any kind (plain HTTP, garbage, a body that is no AdmissionReview) ends in an
error answer or a closed connection, never in a dead server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from engine.admission.review import InvalidReview, review
from engine.model.settings import Settings
from engine.telemetry.serving import Handler, Server, server_class

log = logging.getLogger("dklb.admission")

MUTATE_PATH = "/mutate"
VALIDATE_PATH = "/validate"
HEALTH_PATH = "/healthz"
# An AdmissionReview carries the object and the old object; Kubernetes objects are at most ~1.5 MiB.
MAX_BODY = 8 * 1024 * 1024
# Per socket operation (handshake, each read): bounds a stalled client and an idle keep-alive.
CONNECTION_TIMEOUT = 30.0

OnRequest = Callable[[str, bool, float], None]


def _tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


class _Server(Server):
    settings: Settings
    on_request: OnRequest | None
    context: ssl.SSLContext  # replaced whole by reload_certificates; read once per connection

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(CONNECTION_TIMEOUT)
        try:
            # Here, in the connection's thread, not in the accept loop: a slow handshake delays
            # nobody else. The context is read once: a reload affects the next connections only.
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError: plain HTTP, a port scan
            log.debug("TLS handshake with %s failed: %s", client_address[0], e)
            return
        with self._lock:
            self._connections.add(tls)
        try:
            _Handler(tls, client_address, self)
        finally:
            with self._lock:
                self._connections.discard(tls)
            # wrap_socket detached ``request``: the caller's shutdown_request no longer closes it.
            self.shutdown_request(tls)

    def close_connections(self) -> None:
        """Ends the keep-alive connections, so that clients reconnect (to another replica)."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            # The plain socket's shutdown: SSLSocket.shutdown would drop the SSL object under the
            # thread reading from it. Its read returns and the thread finishes.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(connection, socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Never a traceback on stderr: a client hanging up mid-request is routine.
        log.debug("connection from %s failed", client_address[0], exc_info=True)


class _Handler(Handler):
    server: _Server
    logger = log
    server_version = "dklb-admission"
    # Keep-alive: the API server reuses its connections; a handshake per review would cost more
    # than the review.
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle, the second waits for the client's
    # delayed ACK (~40 ms per review on a kept-alive connection).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == HEALTH_PATH:
            self.send_body(200, b"ok\n", "text/plain; charset=utf-8")
        elif path in (MUTATE_PATH, VALIDATE_PATH):
            self._error(405, f"{path} takes a POST of an AdmissionReview")
        else:
            self._error(404, f"no such path {path}; try {MUTATE_PATH}, {VALIDATE_PATH} or {HEALTH_PATH}")

    def do_POST(self) -> None:
        # The API server appends "?timeout=10s" to the webhook's path.
        path = self.path.split("?", 1)[0]
        if path not in (MUTATE_PATH, VALIDATE_PATH):
            self._error(404, f"no such path {path}; try {MUTATE_PATH} or {VALIDATE_PATH}")
            return
        started = time.monotonic()
        status, answer = self._review(path)
        seconds = time.monotonic() - started
        allowed = status == 200 and bool(answer.get("response", {}).get("allowed"))
        if self.server.on_request is not None:
            try:
                self.server.on_request(path, allowed, seconds)
            except Exception:
                log.warning("on_request hook failed", exc_info=True)
        self.send_json(status, answer)

    def _review(self, path: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) for one POST; logs the one line of the review."""
        body, problem = self._body()
        if problem is not None:
            log.info("%s %s refused: %s", path, self.client_address[0], problem[1])
            return problem[0], {"error": problem[1]}
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; "[[[[..." recurses
            log.info("%s %s refused: the body is not JSON: %s", path, self.client_address[0], e)
            return 400, {"error": f"the body is not JSON: {e}"}
        try:
            answer = review(document, settings=self.server.settings, mutate=path == MUTATE_PATH)
        except InvalidReview as e:
            log.info("%s %s refused: not an AdmissionReview: %s", path, self.client_address[0], e)
            return 400, {"error": f"not an AdmissionReview: {e}"}
        except Exception as e:
            # A bug, not the input's fault: the API server applies the webhook's failurePolicy.
            log.exception("%s %s failed", path, self.client_address[0])
            return 500, {"error": f"{type(e).__name__}: {e}"}
        _log_review(path, document, answer)
        return 200, answer

    def _body(self) -> tuple[bytes, tuple[int, str] | None]:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None:
            # The API server always sends a length; reading a chunked body is not worth the code.
            self.close_connection = True
            return b"", (411, "a Content-Length is required")
        try:
            size = int(length)
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_BODY:
            self.close_connection = True  # the unread body would be taken for the next request
            return b"", (413 if size > MAX_BODY else 400, f"bad Content-Length {length!r}")
        return self.rfile.read(size), None

    def _error(self, status: int, message: str) -> None:
        self.send_json(status, {"error": message})


def _log_review(path: str, document: dict[str, Any], answer: dict[str, Any]) -> None:
    request = document.get("request") or {}
    response = answer.get("response") or {}
    # On CREATE, request.name is empty when the object asks for a generated name.
    obj = request.get("object")
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    namespace = request.get("namespace") or meta.get("namespace") or ""
    name = request.get("name") or meta.get("name") or meta.get("generateName") or ""
    outcome = "allowed" if response.get("allowed") else "refused"
    details = []
    if response.get("patch"):
        details.append("patched")
    if not response.get("allowed"):
        details.append(str((response.get("status") or {}).get("message", "")))
    if response.get("warnings"):
        details.append("warnings: " + "; ".join(response["warnings"]))
    log.info(
        "%s %s %s/%s uid=%s: %s%s",
        path,
        request.get("operation"),
        namespace,
        name,
        request.get("uid"),
        outcome,
        "".join(f" ({d})" for d in details),
    )


class AdmissionServer:
    """The webhook endpoints on one HTTPS address; the certificate is loaded on construction."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        cert_file: str,
        key_file: str,
        settings: Settings,
        on_request: OnRequest | None = None,
    ) -> None:
        """Raises ``OSError``/``ssl.SSLError`` when the certificate or key cannot be loaded."""
        self._host, self._port = host, port
        self._cert_file, self._key_file = str(cert_file), str(key_file)
        self._settings = settings
        self._on_request = on_request
        # Loaded now: a missing or mismatched certificate fails at start-up, not on the first review.
        self._context = _tls_context(self._cert_file, self._key_file)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The address really bound (the kernel's pick for port 0); the configured one before start."""
        if self._httpd is None:
            return self._host, self._port
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        """Binds and serves in a daemon thread; returns the bound address. Raises ``OSError``."""
        if self._httpd is None:
            httpd = server_class(_Server, self._host)((self._host, self._port))
            httpd.settings = self._settings
            httpd.on_request = self._on_request
            httpd.context = self._context
            self._httpd = httpd
            self._thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="dklb-admission",
                daemon=True,
            )
            self._thread.start()
            log.info("admission webhook listening on https://%s:%d", *self.address)
        return self.address

    def stop(self) -> None:
        """Stops accepting, closes the open connections and the listening socket; idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        httpd.server_close()
        httpd.close_connections()

    def reload_certificates(self) -> None:
        """Re-reads the certificate and key (a rotated Secret) for the connections to come.

        Raises ``OSError``/``ssl.SSLError`` (e.g. a key not matching the certificate, as seen while
        a rotation is half written) and then keeps serving the previous certificate.
        """
        context = _tls_context(self._cert_file, self._key_file)
        self._context = context
        if self._httpd is not None:
            self._httpd.context = context  # one attribute swap: a connection sees old or new, whole
        log.info("admission webhook certificate reloaded from %s", self._cert_file)
