"""The API server of the local EdgeLB: the EdgeLB V2 API of shared/edgelb-api.md over HTTP.

Where it sits in the data flow: dklb's EdgeLB client (``engine.edgelb.client``), the demo and the
benchmarks talk HTTP to ``LocalEdgeLB``. Each request is read by ``edgelb_local.transport``, given to
the ``FaultInjector`` (``edgelb_local.faults``) which may delay it, answer 503, hold it or reset the
connection before it touches any state, and then routed (``LocalEdgeLB.handle``):

- reads answer from ``PoolState`` (``edgelb_local.state``; ``pools.json`` in the state directory);
- writes (POST/PUT/DELETE) are serialized by one lock, like the real API. A body goes through
  ``edgelb_local.validation`` in the real server's order: its binding (400 for JSON and type errors,
  422 with a go-openapi 6xx code for enums and minimums), then 409/404, then EdgeLB's checks (400),
  then the pool framework install (500). The accepted pool is answered as Go encodes it (omitempty:
  an ``endpoint.port`` of 0 is left out) and stored as a GET then reads it back (decoded once more:
  that port reads -1; ``engine.edgelb.schema.fill_defaults``). The stored form is handed to the
  dataplane first (``Dataplane.apply``: one real HAProxy per pool, or bookkeeping with
  ``NullDataplane``; a ``DataplaneError`` is a 400, nothing is stored and the running pool keeps
  serving), then persisted;
- metadata answers 504 until the dataplane reports the pool running AND ``metadata_delay`` seconds
  have passed since its configuration started (standing in for EdgeLB scheduling pool instances),
  then reports the real ports the dataplane listens on.

``serve`` hands the stored pools to ``Dataplane.recover`` before answering, so a restarted server
adopts (or restarts) the load balancers of its previous run. Errors are JSON
``{"code": <status, or go-openapi's 6xx code for a 422>, "message": "<text>"}``; every request is
logged as one line on the ``edgelb_local`` logger (method, path, status, milliseconds).

Local-only endpoint, not part of the EdgeLB contract: ``GET /_local/requests`` answers how many
requests this server has answered since it started, as
``{"requests": [{"method": "PUT", "route": "/v2/pools/{name}", "code": "200", "count": 3}, ...]}``.
Routes are templates (never a pool name), ``other`` for a path no route knows; ``code`` is the HTTP
status, or ``reset``/``timeout`` for an injected fault that sent none, or ``error`` when the client
went away mid-request. Injected faults count like any answer; ``/_local/*`` requests are not counted
(nor faulted). The benchmarks (``bench.measure.edgelb_requests``) and tests read it to count what a
controller asked of EdgeLB without trusting the controller's own numbers.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from edgelb_local.dataplane import Dataplane, DataplaneError, Running
from edgelb_local.faults import FaultInjector
from edgelb_local.render import frontend_name
from edgelb_local.state import PoolState
from edgelb_local.transport import HTTPServer, HTTPServer6, RequestHandler, Response
from edgelb_local.validation import Refusal, bind, check, install, namespace_change
from engine.edgelb.schema import PACKAGE_VERSION, encode_pool, fill_defaults

log = logging.getLogger("edgelb_local")

Pool = dict[str, Any]

METADATA_NOT_READY = "pool metadata not available yet"
# The route label of a path that matches no route: raw paths would make the counts unbounded.
OTHER_ROUTE = "other"


class HTTPError(Exception):
    """Raised by a route to answer ``{"code": code (the status unless given), "message": message}``."""

    def __init__(self, status: int, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = status if code is None else code

    @classmethod
    def refusing(cls, refusal: Refusal) -> HTTPError:
        return cls(refusal.status, refusal.message, code=refusal.code)


Handler = Callable[[dict[str, str], bytes], Response]


class LocalEdgeLB:
    """The EdgeLB V2 API over one ``Dataplane``, with pools persisted in ``state_dir``."""

    def __init__(
        self,
        *,
        state_dir: Path,
        dataplane: Dataplane,
        metadata_delay: float = 0.0,
        faults: FaultInjector | None = None,
        pool_address: str = "127.0.0.1",
        version: str = "v1.5.1-local",
        package_version: str = PACKAGE_VERSION,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.state = PoolState(state_dir)
        # Serve HTTPS with this context (as EdgeLB behind Admin Router does): lets tests prove the
        # client verifies certificates by default.
        self.tls = tls
        self.dataplane = dataplane
        self.metadata_delay = metadata_delay
        self.faults = faults
        self.pool_address = pool_address
        self.version = version
        # The pool package version this EdgeLB installs pools with (filled into pools that omit it).
        self.package_version = package_version
        # One writer at a time, like the real API: apply + persist of one pool never interleave with
        # another's, so the dataplane and pools.json always agree.
        self._write_lock = threading.Lock()
        # Set on shutdown: wakes requests sleeping an injected latency or holding an injected timeout.
        self.stopping = threading.Event()
        self._dataplane_stopped = False
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.requests = RequestCounts()
        # (template, pattern, handlers): the template names the route in the request counts.
        self._routes: list[tuple[str, re.Pattern[str], dict[str, Handler]]] = [
            _route("/ping", {"GET": self._ping}),
            _route("/version", {"GET": self._version}),
            _route("/v2/config", {"GET": self._config}),
            _route("/v2/pools", {"GET": self._list, "POST": self._create}),
            _route("/v2/pools/{name}", {"GET": self._get, "PUT": self._update, "DELETE": self._delete}),
            _route("/v2/pools/{name}/metadata", {"GET": self._metadata}),
            _route("/v2/pools/{name}/lbconfig", {"GET": self._lbconfig}),
        ]

    # -- lifecycle ---------------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0 = a free port), recover the dataplane, answer in a background
        thread; returns the address really bound."""
        if self._httpd is not None:
            raise RuntimeError("already serving")
        server_class = HTTPServer6 if ":" in host else HTTPServer
        httpd = server_class((host, port), RequestHandler)
        if self.tls is not None:
            # The handshake happens in each request's thread, on first read: a silent client
            # cannot stall the accept loop.
            httpd.socket = self.tls.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        httpd.app = self
        self.stopping.clear()
        self._dataplane_stopped = False
        # Bound before recovering: clients that connect meanwhile wait in the backlog instead of
        # being refused, and get answers that already see the recovered dataplane.
        with self._write_lock:
            try:
                self.dataplane.recover(self.state.list())
            except Exception:
                # A pool that cannot be brought back answers 504 on metadata; the API still serves.
                log.exception("dataplane recovery failed")
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="edgelb-local", daemon=True
        )
        self._thread.start()
        bound_host, bound_port = httpd.server_address[:2]
        log.info("edgelb-local serving on %s (%d pools)", self.url, len(self.state.names()))
        return str(bound_host), int(bound_port)

    @property
    def address(self) -> tuple[str, int]:
        if self._httpd is None:
            raise RuntimeError("not serving")
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"{'https' if self.tls is not None else 'http'}://{format_host(host)}:{port}"

    def shutdown(self, stop_dataplane: bool = True) -> None:
        """Stop answering (open connections are closed, held requests released); with
        ``stop_dataplane`` also stop every load balancer. Idempotent."""
        self.stopping.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            # Keep-alive connections would otherwise keep their handler threads (and the client's
            # view of a live server) after the listener is gone; a stopped process drops them too.
            with self._connections_lock:
                connections = list(self._connections)
            for conn in connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if stop_dataplane:
            # Under the write lock: a write still in flight finishes before its HAProxy is stopped.
            with self._write_lock:
                if not self._dataplane_stopped:
                    self._dataplane_stopped = True
                    self.dataplane.stop_all()

    # -- request handling (transport-independent) ---------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> Response:
        """The answer to one (non-faulted) request; ``path`` without query string."""
        path = path.rstrip("/") or "/"
        for _template, pattern, handlers in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            handler = handlers.get(method)
            if handler is None:
                allowed = ", ".join(sorted(handlers))
                return Response.error(405, f"method {method} not allowed on {path}", Allow=allowed)
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            try:
                return handler(params, body)
            except HTTPError as exc:
                return Response.error(exc.status, exc.message, code=exc.code)
            except Exception as exc:
                log.exception("%s %s failed", method, path)
                return Response.error(500, f"internal error: {exc}")
        return Response.error(404, f"no route {path}")

    def route_of(self, path: str) -> str:
        """The template of the route ``path`` goes to (``/v2/pools/{name}``), or ``other``."""
        path = path.rstrip("/") or "/"
        for template, pattern, _handlers in self._routes:
            if pattern.fullmatch(path):
                return template
        return OTHER_ROUTE

    def handle_local(self, method: str, path: str) -> Response:
        """The answer to a request under ``/_local/`` (the server's own endpoints)."""
        path = path.rstrip("/")
        if path != "/_local/requests":
            return Response.error(404, f"no route {path}")
        if method != "GET":
            return Response.error(405, f"method {method} not allowed on {path}", Allow="GET")
        return Response.json(200, {"requests": self.requests.snapshot()})

    def _ping(self, params: dict[str, str], body: bytes) -> Response:
        return Response.text(200, "pong")

    def _version(self, params: dict[str, str], body: bytes) -> Response:
        return Response.text(200, self.version)

    def _config(self, params: dict[str, str], body: bytes) -> Response:
        return Response.raw_json(200, '{"pools":' + self.state.list_json() + "}")

    def _list(self, params: dict[str, str], body: bytes) -> Response:
        return Response.raw_json(200, self.state.list_json())

    def _get(self, params: dict[str, str], body: bytes) -> Response:
        text = self.state.pool_json(params["name"])
        if text is None:
            raise _not_found(params["name"])
        return Response.raw_json(200, text)

    def _create(self, params: dict[str, str], body: bytes) -> Response:
        pool = self._bind(body)
        with self._write_lock:
            if self.state.pool_json(pool["name"]) is not None:
                raise HTTPError(409, f"pool {pool['name']} already exists")
            return self._store(pool)

    def _update(self, params: dict[str, str], body: bytes) -> Response:
        pool = self._bind(body)
        if pool["name"] != params["name"]:
            raise HTTPError(
                400, f"pool name in path ({params['name']}) does not match name in body ({pool['name']})"
            )
        with self._write_lock:
            previous = self.state.get(pool["name"])
            if previous is None:
                raise _not_found(pool["name"])
            return self._store(pool, previous)

    def _bind(self, body: bytes) -> dict[str, Any]:
        pool, refusal = bind(body, package_version=self.package_version)
        if refusal is not None:
            raise HTTPError.refusing(refusal)
        return pool

    def _store(self, pool: Pool, previous: Pool | None = None) -> Response:
        # Caller holds the write lock. EdgeLB's checks, then (PUT) the namespace, then the install.
        # The dataplane gets the pool as it will be stored, and before it is stored: a refused
        # configuration leaves both the running load balancer and pools.json as they were.
        refusals = [
            *check(pool),
            namespace_change(previous, pool) if previous is not None else None,
            install(pool, package_version=self.package_version),
        ]
        refusal = next((r for r in refusals if r is not None), None)
        if refusal is not None:
            raise HTTPError.refusing(refusal)
        answer = encode_pool(pool)
        stored = fill_defaults(answer)
        try:
            running = self.dataplane.apply(stored)
        except DataplaneError as exc:
            raise HTTPError(400, str(exc)) from exc
        self.state.put(stored, since=running.since)
        # The real server answers the body it bound, encoded; a GET reads the stored JSON back.
        return Response.json(200, answer)

    def _delete(self, params: dict[str, str], body: bytes) -> Response:
        name = params["name"]
        with self._write_lock:
            if self.state.pool_json(name) is None:
                raise _not_found(name)
            self.dataplane.remove(name)
            self.state.delete(name)
        return Response(204)

    def _metadata(self, params: dict[str, str], body: bytes) -> Response:
        name = params["name"]
        pool = self.state.get(name)
        if pool is None:
            raise _not_found(name)
        running = self.dataplane.status(name)
        if (
            running is None
            or time.time() < self._config_since(name, running) + self.metadata_delay
            or not _runs_frontends_of(pool, running)
        ):
            raise HTTPError(504, METADATA_NOT_READY)
        return Response.json(200, self._build_metadata(pool, running))

    def _config_since(self, name: str, running: Running) -> float:
        # The dataplane's clock restarts when it recovers a pool after a server restart, but the pool's
        # configuration did not change: like a real pool, whose instances keep running while the
        # EdgeLB API restarts, its metadata stays available. The stored time covers that case.
        stored = self.state.since(name)
        return running.since if stored is None else min(stored, running.since)

    def _build_metadata(self, pool: Pool, running: Running) -> dict[str, Any]:
        def endpoint(port: int) -> dict[str, Any]:
            return {"port": port, "private": [self.pool_address], "public": [self.pool_address]}

        haproxy = pool.get("haproxy") or {}
        frontends = [
            {
                "name": frontend_name(fe),
                "endpoints": [endpoint(running.frontends[frontend_name(fe)])],
            }
            for fe in haproxy.get("frontends") or []
        ]
        metadata: dict[str, Any] = {
            "name": pool["name"],
            "frontends": frontends,
            "stats": [endpoint(running.stats_port)],
        }
        elbs = ((pool.get("cloudProvider") or {}).get("aws") or {}).get("elbs") or []
        if elbs:
            metadata["aws"] = {
                "elbs": [
                    {
                        "name": elb["name"],
                        # Made up, but shaped like a DNS name so clients can put it into a Service status.
                        "dns": f"{elb['name']}.elb.edgelb.local",
                        "listeners": [
                            {"port": listener["port"], "linkFrontend": listener["linkFrontend"]}
                            for listener in elb.get("listeners") or []
                        ],
                    }
                    for elb in elbs
                ]
            }
        return metadata

    def _lbconfig(self, params: dict[str, str], body: bytes) -> Response:
        name = params["name"]
        if self.state.pool_json(name) is None:
            raise _not_found(name)
        try:
            return Response.text(200, self.dataplane.lbconfig(name))
        except DataplaneError as exc:
            raise HTTPError(500, str(exc)) from exc

    # -- connection bookkeeping (for shutdown) ------------------------------------------------------

    def _opened(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)

    def _closed(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)


class RequestCounts:
    """Requests answered, by (method, route template, code); thread-safe (one handler thread per
    connection)."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, method: str, route: str, code: int | str) -> None:
        with self._lock:
            self._counts[(method, route, str(code))] += 1

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            items = sorted(self._counts.items())
        return [{"method": m, "route": r, "code": c, "count": n} for (m, r, c), n in items]


def _route(template: str, handlers: dict[str, Handler]) -> tuple[str, re.Pattern[str], dict[str, Handler]]:
    # "{name}" is one path segment, percent-encoded or not; handlers get it unquoted.
    pattern = re.escape(template).replace(r"\{name\}", "(?P<name>[^/]+)")
    return template, re.compile(pattern), handlers


def format_host(host: str) -> str:
    """``host`` as it goes into a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def _runs_frontends_of(pool: Pool, running: Running) -> bool:
    # Between a write's apply and its persist, or while a dataplane still runs an older configuration,
    # the stored pool and the running one can name different frontends: that is "not ready yet", not
    # a reason to report a port the pool does not listen on.
    frontends = (pool.get("haproxy") or {}).get("frontends") or []
    return all(frontend_name(fe) in running.frontends for fe in frontends)


def _not_found(name: str) -> HTTPError:
    return HTTPError(404, f"pool {name} not found")
