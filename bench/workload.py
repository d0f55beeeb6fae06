"""What a benchmark asks of a controller, and how it sees the answers arrive.

Where it sits: ``bench.scenarios`` builds ``specs`` (by default 60% dedicated pools, 40% shared pools of 10,
each Service with an explicit annotation as the Go dklb's admission webhook would have written),
creates, updates and deletes them through the kube-apiserver's REST API from a few threads (as a
burst of ``kubectl apply`` would), and reads the times at which each Service got its address
from a ``ReadyWatcher`` (a watch on Services, so observing costs the controller nothing) and the
times at which EdgeLB reflects a change from ``EdgeLBPoller``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from engine.kube.api import api_client
from engine.kube.watch import Watcher
from engine.model.services import ANNOTATION

SHARED_POOL_SIZE = 10
THREADS = 8


@dataclass(frozen=True)
class Spec:
    name: str
    pool: str
    port: int  # the pool frontend's bind port
    size: int = 1

    @property
    def shared(self) -> bool:
        return self.pool.startswith("bench-s-")

    def annotation(self) -> str:
        return f"name: {self.pool}\nsize: {self.size}\nfrontends:\n- {{port: {self.port}, servicePort: 80}}\n"

    def body(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "annotations": {ANNOTATION: self.annotation()}},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": self.name},
                "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}],
            },
        }


def specs(n: int, *, shared_fraction: float = 0.4) -> list[Spec]:
    """``n`` Services: the first ``1 - shared_fraction`` on pools of their own, the rest in pools of 10."""
    shared = int(n * shared_fraction) // SHARED_POOL_SIZE * SHARED_POOL_SIZE
    out = [Spec(name=f"svc-{i:05d}", pool=f"bench-d-{i:05d}", port=10000 + i) for i in range(n - shared)]
    out += [
        Spec(
            name=f"svc-{i:05d}", pool=f"bench-s-{(i - (n - shared)) // SHARED_POOL_SIZE:04d}", port=10000 + i
        )
        for i in range(n - shared, n)
    ]
    return out


def pool_members(wanted: Iterable[Spec]) -> dict[str, int]:
    """How many of ``wanted`` each pool holds (what ``bench.floor`` is told)."""
    counts: dict[str, int] = {}
    for spec in wanted:
        counts[spec.pool] = counts.get(spec.pool, 0) + 1
    return counts


class Kube:
    """The few REST calls the workload makes, on one keep-alive session per thread."""

    def __init__(self, server: str, token: str, namespace: str) -> None:
        self.server = server
        self.token = token
        self.namespace = namespace
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.token}"
            # The local API server's own certificate; and not only session.verify = False, which
            # an environment CA bundle (REQUESTS_CA_BUNDLE) silently overrides.
            session.verify = False
            session.trust_env = False
        return session

    def _url(self, name: str = "") -> str:
        base = f"{self.server}/api/v1/namespaces/{self.namespace}/services"
        return f"{base}/{name}" if name else base

    def create_namespace(self) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        self._session().post(f"{self.server}/api/v1/namespaces", json=body, timeout=30).raise_for_status()

    def create(self, spec: Spec) -> None:
        self._call("post", self._url(), json=spec.body())

    def set_annotation(self, spec: Spec) -> None:
        patch = {"metadata": {"annotations": {ANNOTATION: spec.annotation()}}}
        self._call("patch", self._url(spec.name), json=patch, content_type="application/merge-patch+json")

    def delete(self, name: str) -> None:
        self._call("delete", self._url(name))

    def _call(self, method: str, url: str, *, json: Any = None, content_type: str | None = None) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        for _ in range(5):
            answer = self._session().request(method, url, json=json, headers=headers, timeout=30)
            if answer.status_code != 409 or method == "post":
                answer.raise_for_status()
                return
        answer.raise_for_status()


def in_parallel(items: Iterable[Spec], call: Callable[[Spec], None]) -> dict[str, float]:
    """``call`` on every item from a few threads; returns when each call returned (monotonic)."""
    done: dict[str, float] = {}

    def one(spec: Spec) -> None:
        call(spec)
        done[spec.name] = time.monotonic()

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, items))
    return done


class ReadyWatcher:
    """When each Service of ``namespace`` first showed an address in its status (monotonic)."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.namespace = namespace
        self.ready: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self._lock = threading.Lock()
        self._watcher = Watcher(
            api_client(kubeconfig), resource="services", on_upsert=self._upsert, on_delete=self._delete
        )

    def __enter__(self) -> ReadyWatcher:
        self._watcher.start()
        self._watcher.synced.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._watcher.stop()

    def _upsert(self, service: dict[str, Any]) -> None:
        meta = service["metadata"]
        if meta["namespace"] != self.namespace:
            return
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if ingress:
            with self._lock:
                self.ready.setdefault(meta["name"], time.monotonic())

    def _delete(self, service: dict[str, Any]) -> None:
        meta = service["metadata"]
        if meta["namespace"] == self.namespace:
            with self._lock:
                self.gone.setdefault(meta["name"], time.monotonic())

    def count_ready(self, names: Iterable[str]) -> int:
        with self._lock:
            return sum(1 for n in names if n in self.ready)


class EdgeLBPoller:
    """When EdgeLB first showed each wanted state (a polled ``GET /v2/pools``, every 0.25 s)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def pools(self) -> dict[str, dict[str, Any]]:
        answer = self.session.get(self.url + "/v2/pools", timeout=60)
        answer.raise_for_status()
        return {p["name"]: p for p in answer.json()}


def frontend_ports(pool: dict[str, Any]) -> dict[str, int]:
    """Frontend name -> bind port."""
    return {
        fe["name"]: int(fe.get("bindPort") or 0) for fe in (pool.get("haproxy") or {}).get("frontends") or []
    }
