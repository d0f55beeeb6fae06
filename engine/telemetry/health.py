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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from engine.telemetry.serving import Handler, Server, format_address, server_class

log = logging.getLogger("dklb.http")


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


class _Server(Server):
    probes: Probes
    registry: CollectorRegistry


class _Handler(Handler):
    server: _Server
    server_version = "dklb"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self.send_body(200, encoder(self.server.registry), content_type)
            elif path == "/healthz":
                self.send_json(*liveness(self.server.probes))
            elif path == "/readyz":
                self.send_json(*readiness(self.server.probes))
            else:
                self.send_json(404, {"error": f"no such path {path}; try /metrics, /healthz or /readyz"})
        except Exception as exc:
            log.exception("GET %s failed", path)
            self.send_json(500, {"error": f"{type(exc).__name__}: {exc}"})


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on one address; bound on construction."""

    def __init__(self, host: str, port: int, *, registry: CollectorRegistry, probes: Probes) -> None:
        """Raises ``OSError`` when the address cannot be bound (in use, not local)."""
        self._httpd = server_class(_Server, host)((host, port), _Handler)
        self._httpd.registry = registry
        self._httpd.probes = probes
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The address really bound (the kernel's pick for port 0)."""
        return self._httpd.bound

    @property
    def url(self) -> str:
        return "http://" + format_address(*self.address)

    def start(self) -> HealthServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="dklb-http",
                daemon=True,
            )
            self._thread.start()
            log.info("http listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
