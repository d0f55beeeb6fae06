"""The HTTP side door of ``dklb run``: ``/metrics``, ``/healthz`` and ``/readyz``.

Where it sits in the data flow: nothing the controller does goes through here; it only reads.
Prometheus scrapes ``/metrics`` (the ``engine.telemetry.metrics`` registry, rendered by
prometheus-client);
the kubelet probes ``/healthz`` (liveness: restart a process whose worker or watcher thread
died) and ``/readyz`` (readiness: the Service cache has synced and the database answers). A
standby replica under leader election is ready, since it serves probes and takes over at once,
and says ``"leader": false``.

``dklb run`` (``engine.app``) binds the socket while it builds its parts (a port already in use
fails fast, before any thread starts), serves first and stops serving last, so the probes
answer throughout start-up and shutdown. The server (``engine.telemetry.serving``) runs in daemon
threads: a slow scrape never blocks a probe, and nothing here can keep the process alive.

It is bounded (security review S3, ``LIMITS``): GET only (no body), 4 worker threads, at most 128
connections, 5 s from accept to answer, whatever the client's pace. ``/metrics`` can be moved to an
address of its own (``--metrics-listen``, e.g. 127.0.0.1 beside a sidecar scraper) while the
kubelet keeps probing ``/healthz`` and ``/readyz`` on the Pod's address.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from engine.telemetry.serving import (
    Handler,
    HttpServer,
    Limits,
    OnServerRefused,
    Request,
    Response,
    format_address,
    json_response,
)

log = logging.getLogger("dklb.http")

# The ``server`` label of this server's refusals (both addresses, with --metrics-listen).
SERVER = "http"
LIMITS = Limits(
    workers=4,
    # 50 idle connections still leave room for the kubelet and the scraper.
    max_connections=128,
    max_body=0,  # GET only
    # The kubelet's probe timeout is 1 s by default; a scrape renders in milliseconds.
    deadline=5.0,
    idle_timeout=5.0,
)


@dataclass(frozen=True)
class Probes:
    """What the probes look at, as callables evaluated on every request."""

    # Threads that must be alive: the controller's workers and the watchers.
    threads: Callable[[], Iterable[threading.Thread]]
    # True once shutdown began: no longer alive nor ready.
    stopping: Callable[[], bool]
    # True once the Service cache holds the whole cluster.
    synced: Callable[[], bool]
    # Raises unless the database answers a trivial query.
    database: Callable[[], None]
    # True while this replica leads (always, without leader election).
    leader: Callable[[], bool]


def liveness(probes: Probes) -> tuple[int, dict[str, Any]]:
    """200 unless a checked thread has ended or the process is stopping (then 500)."""
    # A thread not started yet is not dead: the server answers from the start of ``dklb run``.
    dead = sorted(t.name for t in probes.threads() if t.ident is not None and not t.is_alive())
    stopping = probes.stopping()
    if not dead and not stopping:
        return 200, {"alive": True}
    reasons = []
    if dead:
        reasons.append("dead threads: " + ", ".join(dead))
    if stopping:
        reasons.append("the process is stopping")
    return 500, {"alive": False, "dead": dead, "stopping": stopping, "reason": "; ".join(reasons)}


def readiness(probes: Probes) -> tuple[int, dict[str, Any]]:
    """200 once the Service cache synced and the database answers, else 503 with the reason."""
    leader = bool(probes.leader())
    reason = None
    if probes.stopping():
        reason = "the process is stopping"
    elif not probes.synced():
        reason = "the Service cache has not synced yet"
    else:
        try:
            probes.database()
        except Exception as exc:
            reason = f"the database does not answer: {type(exc).__name__}: {exc}"
    if reason is not None:
        return 503, {"ready": False, "leader": leader, "reason": reason}
    return 200, {"ready": True, "leader": leader}


class BindError(Exception):
    """One of the addresses cannot be bound; says which flag's (``http`` or ``metrics``)."""

    def __init__(self, which: str, address: tuple[str, int], error: OSError) -> None:
        super().__init__(f"cannot listen on {format_address(*address)}: {error.strerror or error}")
        self.which, self.address, self.error = which, address, error


def _metrics(registry: CollectorRegistry, request: Request) -> Response:
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(200, encoder(registry), content_type)


def _handler(registry: CollectorRegistry, probes: Probes, *, metrics: bool, probing: bool) -> Handler:
    """The paths one address serves: probes, /metrics, or both."""
    paths = [p for p, on in (("/metrics", metrics), ("/healthz", probing), ("/readyz", probing)) if on]

    def handle(request: Request) -> Response:
        path = request.path
        if request.method != "GET":
            return json_response(405, {"error": f"{path} takes a GET"})
        try:
            if path == "/metrics" and metrics:
                return _metrics(registry, request)
            if path == "/healthz" and probing:
                return json_response(*liveness(probes))
            if path == "/readyz" and probing:
                return json_response(*readiness(probes))
        except Exception as exc:
            log.exception("GET %s failed", path)
            return json_response(500, {"error": f"{type(exc).__name__}: {exc}"})
        hint = " (/metrics is on its own address: --metrics-listen)" if path == "/metrics" else ""
        return json_response(404, {"error": f"no such path {path}{hint}; try {', '.join(paths)}"})

    return handle


class HealthServer:
    """``/healthz`` and ``/readyz`` on one address, ``/metrics`` on the same or on ``metrics``;
    bound on construction."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        probes: Probes,
        metrics: tuple[str, int] | None = None,
        limits: Limits = LIMITS,
        on_refused: OnServerRefused | None = None,
    ) -> None:
        """Raises ``BindError`` when an address cannot be bound (in use, not local). ``on_refused``
        hears every refusal and cut as ``("http", reason)`` (``dklb_http_refused_total``)."""
        hook = None if on_refused is None else functools.partial(on_refused, SERVER)
        self._server = HttpServer("dklb-http", limits, logger=log, on_refused=hook)
        try:
            self._server.listen(host, port, _handler(registry, probes, metrics=metrics is None, probing=True))
        except OSError as exc:
            raise BindError("http", (host, port), exc) from exc
        if metrics is not None:
            try:
                self._server.listen(*metrics, _handler(registry, probes, metrics=True, probing=False))
            except OSError as exc:
                self._server.stop()
                raise BindError("metrics", metrics, exc) from exc
        self._started = False

    @property
    def address(self) -> tuple[str, int]:
        """The address really bound (the kernel's pick for port 0)."""
        return self._server.addresses()[0]

    @property
    def metrics_address(self) -> tuple[str, int]:
        """Where /metrics is served."""
        return self._server.addresses()[-1]

    @property
    def url(self) -> str:
        return "http://" + format_address(*self.address)

    @property
    def open_connections(self) -> int:
        return self._server.open_connections

    def start(self) -> HealthServer:
        if not self._started:
            self._started = True
            self._server.start()
            log.info("http listening on %s", self.url)
            if self.metrics_address != self.address:
                log.info("/metrics served on http://%s", format_address(*self.metrics_address))
        return self

    def stop(self) -> None:
        self._server.stop()
