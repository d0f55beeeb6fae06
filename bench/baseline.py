"""The old Go dklb's algorithm, re-implemented as a controller process: the benchmark's baseline.

Where it sits: the benchmark runs this and ``dklb run`` against the same kube-apiserver and local EdgeLB
and compares them. Only the algorithm differs; parsing and translation are ours (``engine.model.config``,
``engine.model.translation``), so the measurement is about what mesosphere/dklb's controller *did*
(``pkg/controllers/{generic,service}.go``, ``pkg/translator/{service_translator,status}.go``):

- a client-go informer on Services (``Watcher``, resync every ``--resync-period``, 2 minutes by
  default); add/update/resync of a LoadBalancer Service (or one that was) enqueue its key, a delete
  enqueues the key with the Service's tombstone; every enqueue is ``AddRateLimited``;
- a client-go ``RateLimitingQueue`` with ``DefaultControllerRateLimiter`` (per-item 5 ms·2^n up to
  1000 s, max'ed with a 10 qps / burst 100 token bucket), drained by ONE worker;
- sync = Translate: GET the pool; 404 -> POST a new one (even for a deleted Service: the Go dklb
  re-created the pool of a Service deleted after its pool); else replace the Service's objects,
  set cpus/mem/count from this Service (last writer wins) and PUT the whole pool: the Go dklb's
  ``reflect.DeepEqual`` against the server-filled pool never held, so a live Service PUTs on every
  sync; a deleted Service's objects removed leave an empty pool -> DELETE. Then GET the metadata;
  any error (404/504 = not yet) means no status this time: the next sync, usually the resync, tries
  again. With metadata, ``UpdateStatus`` is called unconditionally (no comparison);
- errors are logged (Warning Event ``TranslationError``), never re-queued, and not ``Forget``-ed,
  so the item's exponential delay grows at each later enqueue; no finalizers;
- the Kubernetes client is client-go's default (the Go dklb set no QPS): 5 qps, burst 10, here on
  the worker's writes. Since every sync with metadata writes the status, this, not the queue's
  10 qps, bounds a steady state to ~5 syncs/s: more Services than 5 x resync period never drain.

Not modelled: leader election, the Ingress controller, the admission webhook (the benchmark writes
every annotation in full, as the webhook did), Events being sent asynchronously. The status is our
``ingress_from_metadata`` (a public IP equal to a private one is listed once; Go listed it twice).

Counters (EdgeLB requests by method and route, Kubernetes writes, syncs, errors) are served as JSON
at ``GET /stats`` on ``--stats-listen``; the first stdout line is ``stats on http://HOST:PORT``.

    .venv/bin/python -m bench.baseline --kubeconfig PATH --edgelb-url URL [--resync-period 2m]
"""

from __future__ import annotations

import argparse
import collections
import copy
import heapq
import itertools
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Hashable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast

from engine.edgelb.client import EdgeLBClient
from engine.edgelb.errors import EdgeLBError, NotFound
from engine.edgelb.port import EdgeLB
from engine.kube.adapter import KubeAdapter
from engine.kube.api import api_client, core_v1
from engine.kube.watch import Watcher, object_key
from engine.model.durations import parse_duration
from engine.model.parse import parse_config
from engine.model.services import ANNOTATION
from engine.model.translation import (
    compose_pool,
    exposed_ports,
    ingress_from_metadata,
    is_empty,
    link_listeners,
    new_pool,
    owner_of,
    service_objects,
)

log = logging.getLogger("dklb.baseline")

Service = dict[str, Any]
Item = tuple[str, str | None]  # (namespace/name, uid of the tombstone or None): the Go WorkItem


class TokenBucket:
    """golang.org/x/time/rate.Limiter as client-go uses it: ``reserve`` takes a token now, possibly
    borrowed from the future, and says how long to wait before using it."""

    def __init__(self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.qps, self.burst, self.clock = qps, burst, clock
        self._tokens, self._last = float(burst), clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps) - 1
            self._last = now
            return max(0.0, -self._tokens / self.qps)

    def wait(self, stop: threading.Event | None = None) -> None:
        delay = self.reserve()
        if delay > 0:
            (stop or threading.Event()).wait(delay)


class ControllerRateLimiter:
    """workqueue.DefaultControllerRateLimiter(): the max of a per-item exponential failure delay
    (counted per ``when`` since the item's last ``forget``) and the overall token bucket."""

    def __init__(
        self,
        qps: float = 10,
        burst: int = 100,
        *,
        base: float = 0.005,
        cap: float = 1000.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bucket = TokenBucket(qps, burst, clock=clock)
        self.base, self.cap = base, cap
        self.failures: collections.Counter[Hashable] = collections.Counter()
        self._lock = threading.Lock()

    def when(self, item: Hashable) -> float:
        with self._lock:
            exponent = self.failures[item]
            self.failures[item] += 1
        return max(min(self.cap, self.base * 2**exponent), self.bucket.reserve())

    def forget(self, item: Hashable) -> None:
        with self._lock:
            self.failures.pop(item, None)


class RateLimitingQueue:
    """client-go's rate-limiting work queue: an item is queued at most once (``dirty``), never handed
    to two workers, re-queued after ``done`` if added while processing; ``add_after`` waits in a heap
    (a repeated add keeps the earlier time)."""

    def __init__(
        self, limiter: ControllerRateLimiter, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limiter, self.clock = limiter, clock
        self._cond = threading.Condition()
        self._queue: collections.deque[Hashable] = collections.deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._waiting: list[tuple[float, int, Hashable]] = []
        self._ready_at: dict[Hashable, float] = {}
        self._seq = itertools.count()
        self._shutting_down = False

    def __len__(self) -> int:
        return len(self._queue)

    def waiting(self) -> int:
        return len(self._ready_at)

    def add(self, item: Hashable) -> None:
        with self._cond:
            self._add(item)

    def _add(self, item: Hashable) -> None:
        if self._shutting_down or item in self._dirty:
            return
        self._dirty.add(item)
        if item not in self._processing:
            self._queue.append(item)
            self._cond.notify()

    def add_after(self, item: Hashable, delay: float) -> None:
        with self._cond:
            if delay <= 0:
                self._add(item)
                return
            ready = self.clock() + delay
            if self._shutting_down or self._ready_at.get(item, float("inf")) <= ready:
                return
            self._ready_at[item] = ready
            heapq.heappush(self._waiting, (ready, next(self._seq), item))
            self._cond.notify()

    def add_rate_limited(self, item: Hashable) -> None:
        self.add_after(item, self.limiter.when(item))

    def forget(self, item: Hashable) -> None:
        self.limiter.forget(item)

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next item, or None on shutdown or after ``timeout`` seconds without one."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while True:
                now = self.clock()
                while self._waiting and self._waiting[0][0] <= now:
                    ready, _, item = heapq.heappop(self._waiting)
                    if self._ready_at.get(item) == ready:  # else superseded by an earlier add_after
                        del self._ready_at[item]
                        self._add(item)
                if self._shutting_down:
                    return None
                if self._queue:
                    item = self._queue.popleft()
                    self._processing.add(item)
                    self._dirty.discard(item)
                    return item
                if deadline is not None and now >= deadline:
                    return None
                wake = [
                    t for t in (deadline, self._waiting[0][0] if self._waiting else None) if t is not None
                ]
                self._cond.wait(min(wake) - now if wake else None)

    def done(self, item: Hashable) -> None:
        with self._cond:
            self._processing.discard(item)
            if item in self._dirty:
                self._queue.append(item)
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shutting_down = True
            self._cond.notify_all()


class Kube(Protocol):
    def update_status(self, service: Service) -> None: ...

    def event(self, service: Service, *, type: str, reason: str, message: str) -> None: ...


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.started = time.time()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        with self._lock:
            counts = dict(self.counts)

        def group(prefix: str) -> dict[str, int]:
            return {k[len(prefix) :]: v for k, v in sorted(counts.items()) if k.startswith(prefix)}

        return {
            "edgelb_requests": group("edgelb "),
            "edgelb_routes": group("route "),
            "edgelb_requests_total": sum(group("edgelb ").values()),
            "kube_writes": group("kube "),
            "kube_writes_total": sum(group("kube ").values()),
            **{k: v for k, v in sorted(counts.items()) if " " not in k},
            "uptime_seconds": round(time.time() - self.started, 3),
            **extra,
        }


class Baseline:
    """The Go dklb's ServiceController: informer callbacks in, one worker out."""

    def __init__(
        self,
        *,
        edgelb: EdgeLB,
        kube: Kube,
        queue: RateLimitingQueue,
        stats: Stats,
        cluster: str,
        pool_group: str = "dcos-edgelb/pools",
    ) -> None:
        self.edgelb, self.kube, self.queue, self.stats = edgelb, kube, queue, stats
        self.cluster, self.pool_group = cluster, pool_group
        self.services: dict[str, Service] = {}  # the lister's cache
        self.tombstones: dict[Item, Service] = {}

    # ---- informer event handlers (watcher thread) --------------------------------------------------

    def on_upsert(self, service: Service) -> None:
        key = object_key(service)
        old = self.services.get(key)
        self.services[key] = service
        if _is_lb(service) or (old is not None and _is_lb(old)):
            self._enqueue((key, None))

    def on_delete(self, service: Service) -> None:
        key = object_key(service)
        self.services.pop(key, None)
        if _is_lb(service):
            item = (key, service["metadata"].get("uid", ""))
            self.tombstones[item] = service
            self._enqueue(item)

    def _enqueue(self, item: Item) -> None:
        self.stats.add("enqueued")
        self.queue.add_rate_limited(item)

    # ---- the worker ----------------------------------------------------------------------------------

    def process_next(self, timeout: float | None = None) -> bool:
        """Process one item; False on shutdown (or when none came within ``timeout``)."""
        got = self.queue.get(timeout)
        if got is None:
            return False
        item = cast(Item, got)
        try:
            self.sync(item)
            self.queue.forget(item)
        except Exception as e:
            # Not re-queued and not forgotten: retried at the next event or resync, later each time.
            self.stats.add("errors")
            self.stats.add(f"error_{type(e).__name__}")
            log.warning("error syncing %r: %s", item[0], e)
        finally:
            self.queue.done(item)
        return True

    def sync(self, item: Item) -> None:
        self.stats.add("syncs")
        key = item[0]
        tombstone = self.tombstones.pop(item, None)
        # The lister first: a Service re-created under the same name is synced, not its tombstone.
        service = self.services.get(key) or tombstone
        if service is None:
            raise LookupError(
                f"service {key!r} in work queue no longer exists, and no tombstone was recovered"
            )
        deleted = key not in self.services
        service = copy.deepcopy(service)
        try:
            ingress = self.translate(service, deleted=deleted)
        except Exception as e:
            self.kube.event(
                service,
                type="Warning",
                reason="TranslationError",
                message=f"failed to translate service: {e}",
            )
            raise
        if not deleted and ingress is not None:
            service["status"] = {"loadBalancer": {"ingress": ingress} if ingress else {}}
            self.kube.update_status(service)
            self.stats.add("status_updates")

    def translate(self, service: Service, *, deleted: bool) -> list[dict[str, str]] | None:
        """The Go ``ServiceTranslator.Translate``: the pool change, then the status (None = no status)."""
        meta = service["metadata"]
        owner = (meta["namespace"], meta["name"])
        ports, _ = exposed_ports(service)
        parsed = parse_config(
            (meta.get("annotations") or {}).get(ANNOTATION),
            service_ports=[p.port for p in ports],
            cluster_name=self.cluster,
        )
        if parsed.config is None:
            raise ValueError(f"the edgelb pool configuration object is not valid: {'; '.join(parsed.errors)}")
        config = parsed.config
        frontends, backends = service_objects(
            cluster=self.cluster,
            namespace=owner[0],
            service=owner[1],
            ports=ports,
            bind_ports={f.service_port: f.port for f in config.frontends},
        )
        try:
            current = self.edgelb.get_pool(config.name)
        except NotFound:
            current = None
        if current is None:
            strategy = config.creation_strategy
            if strategy == "Never":
                raise LookupError(
                    f"edgelb pool {config.name!r} does not exist and the creation strategy is Never"
                )
            ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
            if ingress and strategy == "Once":
                raise LookupError(
                    f"edgelb pool {config.name!r} was probably deleted manually (strategy Once)"
                )
            # Deleted or not: the Go dklb computed the objects from the Service's ports either way.
            self.edgelb.create_pool(
                new_pool(settings=config, pool_group=self.pool_group, frontends=frontends, backends=backends)
            )
            return self.status(config.name, owner)
        gone = deleted or not _is_lb(service)
        pool = compose_pool(
            current,
            cluster=self.cluster,
            owners=[owner],
            frontends=[] if gone else frontends,
            backends=[] if gone else backends,
        )
        # A deleted Service changes the pool only if it had objects there; a live one always does.
        changed = pool != current
        if not gone:
            pool["cpus"], pool["mem"], pool["count"] = config.cpus, config.memory, config.size
            if config.cloud_provider is not None:
                pool["cloudProvider"] = link_listeners(config.cloud_provider, frontends)
            changed = True  # reflect.DeepEqual(server-filled object, computed object) never held
        if not changed:
            return self.status(config.name, owner)
        if is_empty(pool):
            self.edgelb.delete_pool(config.name)
            return []
        self.edgelb.update_pool(pool)
        return self.status(config.name, owner)

    def status(self, pool_name: str, owner: tuple[str, str]) -> list[dict[str, str]] | None:
        """The Go ``computeLoadBalancerStatus``: any metadata error (404/504 "not yet") -> no status."""
        try:
            metadata = self.edgelb.get_metadata(pool_name)
        except EdgeLBError as e:
            self.stats.add("metadata_not_available")
            log.debug("unable to report status for pool %s: %s", pool_name, e)
            return None
        # Like the Go dklb: every frontend whose name says it is this Service's, whatever its port.
        names = [f.get("name") for f in metadata.get("frontends") or [] if isinstance(f, dict)]
        owned = [
            n
            for n in names
            if isinstance(n, str) and (o := owner_of(n, cluster=self.cluster)) and o[0] == owner
        ]
        return ingress_from_metadata(metadata, frontend_names=owned)


def _is_lb(service: Service) -> bool:
    return (service.get("spec") or {}).get("type") == "LoadBalancer"


# ---- the process ---------------------------------------------------------------------------------------


class KubeWriter:
    """The Go dklb's Kubernetes writes: ``UpdateStatus`` (PUT of the whole Service, with the cached
    resourceVersion: a stale cache gets 409) and Events, behind client-go's default 5 qps / burst 10."""

    def __init__(
        self, api: Any, *, qps: float = 5, burst: int = 10, stop: threading.Event | None = None
    ) -> None:
        self.core = core_v1(api)
        self.adapter = KubeAdapter(api, component="dklb-baseline")
        self.limiter = TokenBucket(qps, burst)
        self.stop = stop

    def update_status(self, service: Service) -> None:
        meta = service["metadata"]
        self.limiter.wait(self.stop)
        # The generated client is typed for its model classes; it takes the dict (validating it into
        # the model) and, with _preload_content=False, answers the raw urllib3 response.
        response = self.core.replace_namespaced_service_status(
            meta["name"],
            meta["namespace"],
            service,  # type: ignore[arg-type]
            _preload_content=False,
            _request_timeout=30,
        )
        # Read it all, so the connection can serve the next request.
        _ = response.data  # type: ignore[attr-defined]
        response.release_conn()  # type: ignore[attr-defined]

    def event(self, service: Service, *, type: str, reason: str, message: str) -> None:
        self.limiter.wait(self.stop)
        self.adapter.event(service, type=type, reason=reason, message=message)


def serve_stats(listen: str, snapshot: Callable[[], dict[str, Any]]) -> ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/stats":
                self.send_error(404)
                return
            body = json.dumps(snapshot(), sort_keys=True).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="baseline-stats", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--edgelb-url", required=True)
    parser.add_argument("--resync-period", type=parse_duration, default=120.0)
    parser.add_argument("--cluster-name", default="kubernetes-cluster")
    parser.add_argument("--pool-group", default="dcos-edgelb/pools")
    parser.add_argument("--stats-listen", default="127.0.0.1:0")
    parser.add_argument("--qps", type=float, default=10.0, help="work queue bucket (client-go: 10)")
    parser.add_argument("--burst", type=int, default=100, help="work queue bucket (client-go: 100)")
    parser.add_argument("--kube-qps", type=float, default=5.0, help="Kubernetes client (client-go: 5)")
    parser.add_argument("--kube-burst", type=int, default=10, help="Kubernetes client (client-go: 10)")
    parser.add_argument("--edgelb-timeout", type=parse_duration, default=10.0, help="per call (Go: 10s)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    stats, stop = Stats(), threading.Event()

    def on_kube(verb: str, resource: str, status: int, seconds: float) -> None:
        if verb not in ("get", "list", "watch"):
            stats.add(f"kube {verb} {resource}")

    def on_edgelb(method: str, route: str, status: int, seconds: float) -> None:
        stats.add(f"edgelb {method}")
        stats.add(f"route {method} {route} {status or 'no-answer'}")

    api = api_client(args.kubeconfig, on_request=on_kube)
    edgelb = EdgeLBClient(
        args.edgelb_url,
        connect_timeout=args.edgelb_timeout,
        read_timeout=args.edgelb_timeout,
        on_response=on_edgelb,
    )
    queue = RateLimitingQueue(ControllerRateLimiter(args.qps, args.burst))
    kube = KubeWriter(api, qps=args.kube_qps, burst=args.kube_burst, stop=stop)
    baseline = Baseline(
        edgelb=edgelb,
        kube=kube,
        queue=queue,
        stats=stats,
        cluster=args.cluster_name,
        pool_group=args.pool_group,
    )
    server = serve_stats(args.stats_listen, lambda: stats.snapshot(queue=len(queue), waiting=queue.waiting()))
    host, port = server.server_address[:2]
    assert isinstance(host, str)  # an AF_INET(6) socket's address
    print(f"stats on http://{host}:{port}", flush=True)

    def terminate(signum: int, frame: Any) -> None:
        stop.set()
        queue.shutdown()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    watcher = Watcher(
        api,
        resource="services",
        on_upsert=baseline.on_upsert,
        on_delete=baseline.on_delete,
        resync_period=args.resync_period,
    )
    watcher.start()

    def work() -> None:
        # Like WaitForCacheSync: the worker starts once the first LIST has been delivered.
        while not watcher.synced.wait(0.1):
            if stop.is_set():
                return
        log.info("informer synced; worker started (resync every %.0fs)", args.resync_period)
        while not stop.is_set() and baseline.process_next():
            pass

    worker = threading.Thread(target=work, name="baseline-worker", daemon=True)
    worker.start()
    while not stop.wait(1.0):
        pass
    log.info("stopping")
    watcher.stop()
    worker.join(timeout=15)
    server.shutdown()
    edgelb.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
