"""The floor: a client with no logic that makes exactly the requests a perfect controller must make.

Where it sits: ``bench.scenarios.floor`` starts it as a process of its own (like ``dklb run`` and
``bench.baseline``, so ``bench.scenarios.Probe`` measures its CPU and RSS the same way) on fresh
servers and runs the same burst against it; ``bench.report`` divides dklb's figures by its figures.

What it does, and nothing else (no state machine, no store, no retries, no resync):

- learns of Services by ONE list + watch of Services in all namespaces (never a per-Service GET);
- per LoadBalancer Service: one JSON patch adding dklb's finalizer and the defaulted
  ``kubernetes.dcos.io/dklb-config`` annotation, exactly as ``states.pending`` writes them
  (``engine.model.checks.check_service`` then ``PoolConfig.to_annotation``);
- per pool: ONE ``POST /v2/pools`` with the frontends and backends of every Service on it, the
  body built by the functions dklb builds it with (``service_objects``, ``new_pool``), so the
  local EdgeLB does the same work. The floor is told how many Services each pool will hold
  (``--plan``) and posts once it has patched them all: one write per pool is the least any
  controller can make, and dklb reaches it in the burst too (its Provisioning composes every
  binding already accepted on the pool). The finalizer goes first, as in dklb: a pool must never
  hold the objects of a Service that could be deleted without dklb hearing of it;
- per pool: ``GET /v2/pools/{name}/metadata`` on AwaitingMetadata's declared poll schedule (at
  once, then 1 s x1.5 up to 30 s, no jitter: states/lifecycle.yaml) until every Service on it
  has an address, so both wait the same for EdgeLB; metadata is read per pool, not per Service;
- per Service: one merge patch of ``status.loadBalancer.ingress`` (with the uid, like dklb).

Every request goes through ``--workers`` threads (dklb's default: 4) fed by one queue ordered by
due time. A failed request is logged and counted, never retried: the floor has no logic, and a
Service it failed never gets its address, so the benchmark's deadline reports it.

Counters are JSON at ``GET /stats`` (``bench.baseline.serve_stats``); the first stdout line is
``stats on http://HOST:PORT``. Kubernetes access: the kubeconfig's server and bearer token (the
local cluster's), TLS unverified (loopback).

    python -m bench.floor --kubeconfig PATH --edgelb-url URL --plan PLAN.json [--workers 4]
"""

from __future__ import annotations

import argparse
import functools
import heapq
import itertools
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
import yaml

from bench.baseline import Stats, serve_stats
from engine.model.checks import check_service
from engine.model.config import PoolConfig
from engine.model.services import ANNOTATION, FINALIZER, LOAD_BALANCER, json_pointer
from engine.model.translation import ingress_from_metadata, new_pool, service_objects

log = logging.getLogger("dklb.floor")
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

CLUSTER = "kubernetes-cluster"
POOL_GROUP = "dcos-edgelb/pools"
# AwaitingMetadata's poll in states/lifecycle.yaml, without its jitter.
POLL_BASE, POLL_FACTOR, POLL_CAP = 1.0, 1.5, 30.0
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
TIMEOUT = urllib3.Timeout(connect=10, read=60)

Service = dict[str, Any]


def poll_delay(attempt: int) -> float:
    """Seconds before metadata read number ``attempt + 1`` (the first read, attempt 0, is at once)."""
    return min(POLL_CAP, POLL_BASE * POLL_FACTOR ** (attempt - 1)) if attempt else 0.0


def plan_of(members: dict[str, int], pool: str) -> int:
    """How many Services pool ``pool`` will hold (a pool the plan does not name: one)."""
    return max(1, int(members.get(pool, 1)))


@dataclass(frozen=True)
class Member:
    """One patched Service, as its pool's POST and its status write need it."""

    namespace: str
    name: str
    uid: str
    frontends: list[dict[str, Any]]
    backends: list[dict[str, Any]]


def finalizer_patch(service: Service) -> tuple[list[dict[str, Any]], PoolConfig | None, Member | None]:
    """The finalizer+annotation JSON patch dklb's Pending writes, the defaulted configuration and
    the Service's pool objects; ``([], None, None)`` when dklb would reject the Service."""
    meta = service["metadata"]
    check = check_service(service, previous=None, cluster_name=CLUSTER, default_size=1, pool_group=POOL_GROUP)
    config = check.config
    if config is None:
        return [], None, None
    written = config.to_annotation()
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/uid", "value": meta["uid"]},
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
    ]
    if check.text != written:
        ops.append(
            {"op": "add", "path": json_pointer("metadata", "annotations", ANNOTATION), "value": written}
        )
    frontends, backends = service_objects(
        cluster=CLUSTER,
        namespace=meta["namespace"],
        service=meta["name"],
        ports=check.ports,
        bind_ports={f.service_port: f.port for f in config.frontends},
    )
    return ops, config, Member(meta["namespace"], meta["name"], meta["uid"], frontends, backends)


def pool_body(config: PoolConfig, members: list[Member]) -> dict[str, Any]:
    """The POST body dklb sends for a new pool holding ``members`` (``states.provisioning._create``)."""
    return new_pool(
        settings=config,
        pool_group=POOL_GROUP,
        frontends=[fe for m in members for fe in m.frontends],
        backends=[be for m in members for be in m.backends],
        created_by=CLUSTER,
        owner_namespace=members[0].namespace,
    )


def addresses(metadata: dict[str, Any], members: list[Member]) -> list[list[dict[str, str]]] | None:
    """Each member's ingress from the pool's metadata; None until every member has one."""
    found = [
        ingress_from_metadata(metadata, frontend_names=[fe["name"] for fe in m.frontends]) for m in members
    ]
    return found if all(found) else None


@dataclass
class Pool:
    config: PoolConfig
    members: list[Member] = field(default_factory=list)


class Tasks:
    """Requests to make, ordered by due time, drained by worker threads."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self.stopped = False

    def add(self, task: Callable[[], None], delay: float = 0.0) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), task))
            self._cond.notify()

    def next(self) -> Callable[[], None] | None:
        with self._cond:
            while not self.stopped:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    return heapq.heappop(self._heap)[2]
                self._cond.wait(self._heap[0][0] - now if self._heap else None)
            return None

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()


class Floor:
    def __init__(
        self,
        *,
        server: str,
        token: str,
        edgelb_url: str,
        plan: dict[str, int],
        stats: Stats,
        workers: int = 4,
    ) -> None:
        self.server, self.token, self.edgelb = server.rstrip("/"), token, edgelb_url.rstrip("/")
        self.plan, self.stats = plan, stats
        self.tasks = Tasks()
        self.auth = {"Authorization": f"Bearer {token}"}
        # The local API server's own certificate, on loopback: not verified. One pool for all
        # threads, a connection per worker and one for the watch.
        self.http = urllib3.PoolManager(maxsize=workers + 2, cert_reqs="CERT_NONE")
        self.seen: set[str] = set()
        self.pools: dict[str, Pool] = {}
        self._lock = threading.Lock()

    def request(
        self, what: str, method: str, url: str, *, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        """One request on the shared keep-alive pool; the decoded JSON answer. urllib3 itself, not
        requests: the floor should cost what the requests cost, not a client library's layers."""
        data = None if body is None else json.dumps(body).encode()
        headers = (
            {**self.auth, "Content-Type": content_type}
            if url.startswith(self.server)
            else {"Content-Type": content_type}
        )
        answer = self.http.request(method, url, body=data, headers=headers, timeout=TIMEOUT, retries=False)
        side = "kube" if url.startswith(self.server) else "edgelb"
        self.stats.add(f"{side} {what} {answer.status}")
        if answer.status >= 300 and not (what == "metadata" and answer.status in (404, 504)):
            raise RuntimeError(f"{method} {url}: {answer.status} {answer.data[:300]!r}")
        return json.loads(answer.data) if answer.status == 200 else None

    # ---- the watch (one list, then one watch) --------------------------------------------------------

    def watch(self) -> None:
        try:
            self._watch()
        except Exception as e:
            # No logic, no re-list: the Services it has not seen never get an address, and the
            # benchmark's deadline says so.
            self.stats.add("errors")
            log.error("the watch failed: %s", e)

    def _watch(self) -> None:
        listed = self.request("list", "GET", f"{self.server}/api/v1/services")
        for service in listed.get("items") or []:
            self.observed(service)
        version = listed["metadata"]["resourceVersion"]
        while not self.tasks.stopped:
            for event in self._events(version):
                obj = event.get("object") or {}
                version = (obj.get("metadata") or {}).get("resourceVersion", version)
                if event.get("type") == "ADDED":
                    self.observed(obj)

    def _events(self, version: str) -> Iterator[dict[str, Any]]:
        query = urlencode({"watch": "1", "resourceVersion": version, "timeoutSeconds": "3600"})
        answer = self.http.request(
            "GET",
            f"{self.server}/api/v1/services?{query}",
            headers=self.auth,
            preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=3700),
            retries=False,
        )
        self.stats.add(f"kube watch {answer.status}")
        if answer.status != 200:
            raise RuntimeError(f"watch: {answer.status} {answer.data[:300]!r}")
        try:
            buffer = b""
            # One JSON event per line; a chunk may hold several lines or part of one.
            for chunk in answer.stream(None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            answer.release_conn()

    def observed(self, service: Service) -> None:
        meta = service["metadata"]
        if (service.get("spec") or {}).get("type") != LOAD_BALANCER or meta.get("uid") in self.seen:
            return
        self.seen.add(meta["uid"])
        self.tasks.add(lambda: self.patch(service))

    # ---- the requests ------------------------------------------------------------------------------

    def patch(self, service: Service) -> None:
        ops, config, member = finalizer_patch(service)
        if config is None or member is None:
            self.stats.add("rejected")
            return
        url = f"{self.server}/api/v1/namespaces/{member.namespace}/services/{member.name}"
        self.request("patch", "PATCH", url, body=ops, content_type=JSON_PATCH)
        with self._lock:
            pool = self.pools.setdefault(config.name, Pool(config))
            pool.members.append(member)
            complete = len(pool.members) == plan_of(self.plan, config.name)
        if complete:
            self.tasks.add(lambda: self.create(config.name))

    def create(self, name: str) -> None:
        pool = self.pools[name]
        self.request("post", "POST", f"{self.edgelb}/v2/pools", body=pool_body(pool.config, pool.members))
        self.tasks.add(lambda: self.metadata(name, 0))

    def metadata(self, name: str, attempt: int) -> None:
        metadata = self.request("metadata", "GET", f"{self.edgelb}/v2/pools/{name}/metadata")
        members = self.pools[name].members
        found = addresses(metadata, members) if metadata is not None else None
        if found is None:
            self.tasks.add(lambda: self.metadata(name, attempt + 1), poll_delay(attempt + 1))
            return
        for member, ingress in zip(members, found, strict=True):
            self.tasks.add(functools.partial(self.status, member, ingress))

    def status(self, member: Member, ingress: list[dict[str, str]]) -> None:
        url = f"{self.server}/api/v1/namespaces/{member.namespace}/services/{member.name}/status"
        body = {"metadata": {"uid": member.uid}, "status": {"loadBalancer": {"ingress": ingress}}}
        self.request("status", "PATCH", url, body=body, content_type=MERGE_PATCH)

    def work(self) -> None:
        while (task := self.tasks.next()) is not None:
            try:
                task()
            except Exception as e:
                self.stats.add("errors")
                log.warning("request failed (not retried): %s", e)


def kube_access(kubeconfig: Path) -> tuple[str, str]:
    """(server, bearer token) of the kubeconfig's current context."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    return str(cluster["server"]), str(user["token"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--edgelb-url", required=True)
    parser.add_argument("--plan", type=Path, required=True, help="JSON: pool name -> Services it will hold")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--stats-listen", default="127.0.0.1:0")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level="INFO", stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server, token = kube_access(args.kubeconfig)
    stats = Stats()
    floor = Floor(
        server=server,
        token=token,
        edgelb_url=args.edgelb_url,
        plan=json.loads(args.plan.read_text()),
        stats=stats,
        workers=args.workers,
    )
    http = serve_stats(args.stats_listen, stats.snapshot)
    host, port = http.server_address[:2]
    assert isinstance(host, str)
    print(f"stats on http://{host}:{port}", flush=True)
    stop = threading.Event()

    def terminate(signum: int, frame: Any) -> None:
        stop.set()
        floor.tasks.stop()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    for i in range(args.workers):
        threading.Thread(target=floor.work, name=f"floor-worker-{i}", daemon=True).start()
    threading.Thread(target=floor.watch, name="floor-watch", daemon=True).start()
    while not stop.wait(1.0):
        pass
    http.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
