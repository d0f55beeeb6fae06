"""The admission webhook's HTTPS endpoint: ``POST /mutate``, ``POST /validate``, ``GET /healthz``.

Where it sits in the data flow: the API server calls it for every CREATE and UPDATE of a Service
(the MutatingWebhookConfiguration on ``/mutate``, then the ValidatingWebhookConfiguration on
``/validate``), trusting the CA bundle registered with them. The body is handed to
``engine.admission.review.review`` and its answer sent back; nothing here decides anything. Each review
is logged in one line (logger ``dklb.admission``) and reported to ``on_request`` (metrics).

The API server only speaks HTTPS to webhooks, so the server does TLS itself (1.2 or later). The
certificate usually comes from a mounted Secret that a rotation replaces on disk:
``reload_certificates`` swaps in a new TLS context, used from the next connection on.

With a client CA (``--admission-client-ca-file``) the server asks every client for a certificate
and accepts only one that CA signed: the API server presents one when its
``--admission-control-config-file`` says so (README, "Admission webhook"). Any other client, a Pod
that can reach 8443 included, is cut at the TLS handshake, before a byte of HTTP; the cut is
logged at debug level and counted (``dklb_http_refused_total{server="webhook",
reason="client_certificate"}``). The CA file is re-read with the certificate.

The server is ``engine.telemetry.serving.HttpServer`` with the webhook's ``LIMITS`` (security
review S3): 8 worker threads, at most 256 connections, a body of at most 3 MiB (the API server's
own request limit) refused by its Content-Length before it is read, and 10 s from accept (TLS
handshake included) to answer, whatever the client's pace. Bad input of any kind (plain HTTP,
garbage, a body that is no AdmissionReview) ends in an error answer or a closed connection, never
in a dead server.
"""

from __future__ import annotations

import functools
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from engine.admission.review import InvalidReview, PoolLookup, review
from engine.model.settings import Settings
from engine.telemetry.serving import (
    MIB,
    HttpServer,
    Limits,
    OnServerRefused,
    Request,
    Response,
    json_response,
)

log = logging.getLogger("dklb.admission")

MUTATE_PATH = "/mutate"
VALIDATE_PATH = "/validate"
HEALTH_PATH = "/healthz"
# The API server refuses requests over 3 MiB itself, so no AdmissionReview it sends is larger.
MAX_BODY = 3 * MIB
LIMITS = Limits(
    # Reviews are CPU-bound under the GIL: more threads would only queue on it.
    workers=8,
    max_connections=256,
    max_body=MAX_BODY,
    # Past the API server's own timeoutSeconds (at most 30 s, ours 5 s): its answer is lost anyway.
    deadline=10.0,
    # The API server keeps connections alive between reviews; a closed one costs it a handshake.
    idle_timeout=10.0,
)

# The ``server`` label of the webhook's refusals (``dklb_http_refused_total``).
SERVER = "webhook"

OnRequest = Callable[[str, bool, float], None]


class ClientCAError(ValueError):
    """The client CA file cannot be used; the message names the file."""


def _tls_context(cert_file: str, key_file: str, client_ca_file: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ClientCAError(f"the client CA file {client_ca_file} does not load: {exc}") from exc
        # Only the CAs of that file: never the system's, which would let any public certificate in.
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _Webhook:
    """The handler: one request in, one answer out (run in the server's worker threads)."""

    def __init__(
        self, settings: Settings, on_request: OnRequest | None, pool_tenancy: PoolLookup | None = None
    ) -> None:
        self.settings, self.on_request, self.pool_tenancy = settings, on_request, pool_tenancy

    def __call__(self, request: Request) -> Response:
        path = request.path
        if request.method == "GET":
            if path == HEALTH_PATH:
                return Response(200, b"ok\n", "text/plain; charset=utf-8")
            if path in (MUTATE_PATH, VALIDATE_PATH):
                return json_response(405, {"error": f"{path} takes a POST of an AdmissionReview"})
            return json_response(
                404, {"error": f"no such path {path}; try {MUTATE_PATH}, {VALIDATE_PATH} or {HEALTH_PATH}"}
            )
        if request.method != "POST":
            return json_response(501, {"error": f"method {request.method[:20]} not supported"})
        # The API server appends "?timeout=10s" to the webhook's path.
        if path not in (MUTATE_PATH, VALIDATE_PATH):
            return json_response(404, {"error": f"no such path {path}; try {MUTATE_PATH} or {VALIDATE_PATH}"})
        started = time.monotonic()
        status, answer = self._review(path, request)
        seconds = time.monotonic() - started
        allowed = status == 200 and bool(answer.get("response", {}).get("allowed"))
        if self.on_request is not None:
            try:
                self.on_request(path, allowed, seconds)
            except Exception:
                log.warning("on_request hook failed", exc_info=True)
        return json_response(status, answer)

    def _review(self, path: str, request: Request) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) for one POST; logs the one line of the review."""
        try:
            # Within MAX_BODY only: the server refused anything larger before reading it.
            document = json.loads(request.body)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; "[[[[..." recurses
            log.info("%s %s refused: the body is not JSON: %s", path, request.client, e)
            return 400, {"error": f"the body is not JSON: {e}"}
        try:
            answer = review(
                document,
                settings=self.settings,
                mutate=path == MUTATE_PATH,
                pool_tenancy=self.pool_tenancy,
                on_tenancy_refusal=_log_tenancy_refusal,
            )
        except InvalidReview as e:
            log.info("%s %s refused: not an AdmissionReview: %s", path, request.client, e)
            return 400, {"error": f"not an AdmissionReview: {e}"}
        except Exception as e:
            # A bug, not the input's fault: the API server applies the webhook's failurePolicy.
            log.exception("%s %s failed", path, request.client)
            return 500, {"error": f"{type(e).__name__}: {e}"}
        _log_review(path, document, answer)
        return 200, answer


def _log_tenancy_refusal(service: str, pool: str, details: str) -> None:
    # What the answer leaves out (who uses the pool), for the operator; the controller's words.
    log.warning("Service %s may not use EdgeLB pool %s: %s", service, pool, details)


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
        limits: Limits = LIMITS,
        pool_tenancy: PoolLookup | None = None,
        client_ca_file: str | None = None,
        on_refused: OnServerRefused | None = None,
    ) -> None:
        """Raises ``OSError``/``ssl.SSLError`` when the certificate or key cannot be loaded,
        ``ClientCAError`` when the client CA cannot. ``pool_tenancy``: what the database knows of
        a pool (``engine.admission.tenancy``). ``client_ca_file``: accept only clients with a
        certificate it signed. ``on_refused`` hears every refusal and cut as ``("webhook", reason)``."""
        self._host, self._port = host, port
        self._cert_file, self._key_file = str(cert_file), str(key_file)
        self._client_ca_file = None if client_ca_file is None else str(client_ca_file)
        self._handler = _Webhook(settings, on_request, pool_tenancy)
        self._limits = limits
        self._on_refused = None if on_refused is None else functools.partial(on_refused, SERVER)
        # Loaded now: a missing or mismatched certificate fails at start-up, not on the first review.
        self._context = _tls_context(self._cert_file, self._key_file, self._client_ca_file)
        self._server: HttpServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The address really bound (the kernel's pick for port 0); the configured one before start."""
        if self._server is None:
            return self._host, self._port
        return self._server.addresses()[0]

    @property
    def open_connections(self) -> int:
        return 0 if self._server is None else self._server.open_connections

    def start(self) -> tuple[str, int]:
        """Binds and serves in a daemon thread; returns the bound address. Raises ``OSError``."""
        if self._server is None:
            server = HttpServer(
                "dklb-admission",
                self._limits,
                logger=log,
                server="dklb-admission",
                on_refused=self._on_refused,
            )
            # The context is read once per connection: a reload affects the next connections only.
            server.listen(self._host, self._port, self._handler, tls=lambda: self._context)
            server.start()
            self._server = server
            log.info(
                "admission webhook listening on https://%s:%d%s",
                *self.address,
                "" if self._client_ca_file is None else f" (clients of the CA {self._client_ca_file} only)",
            )
        return self.address

    def stop(self) -> None:
        """Stops accepting, cuts the open connections (clients reconnect, to another replica) and
        closes the listening socket; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def reload_certificates(self) -> None:
        """Re-reads the certificate and key (a rotated Secret), and the client CA, for the
        connections to come.

        Raises ``OSError``/``ssl.SSLError`` (e.g. a key not matching the certificate, as seen while
        a rotation is half written) or ``ClientCAError``, and then keeps serving the previous ones.
        """
        # One attribute swap: a connection sees the old context or the new one, whole.
        self._context = _tls_context(self._cert_file, self._key_file, self._client_ca_file)
        log.info(
            "admission webhook certificate reloaded from %s%s",
            self._cert_file,
            "" if self._client_ca_file is None else f", client CA from {self._client_ca_file}",
        )
