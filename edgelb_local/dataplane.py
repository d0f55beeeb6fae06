"""The dataplane port of the local EdgeLB: what turns a stored pool into a running load balancer.

The API server (``edgelb_local.server``) calls ``apply`` on every POST/PUT before it stores the
pool (a refused configuration is a 400 and the running pool keeps serving), ``remove`` on
DELETE, ``status`` to answer metadata, ``lbconfig`` for ``GET /v2/pools/{name}/lbconfig``,
``recover`` when it starts and ``stop_all`` when it stops gracefully.

Two implementations: ``edgelb_local.haproxy.HAProxyDataplane`` (one real HAProxy per pool) and
``NullDataplane`` below (``--no-dataplane``: ports are allocated and remembered but nothing
listens; for benchmarks with thousands of pools).
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from edgelb_local.render import frontend_name

Pool = dict[str, Any]


class DataplaneError(Exception):
    """The pool's configuration was refused; the message says why (shown in the 400)."""


@dataclass(frozen=True)
class Running:
    """A pool's load balancer as it runs now."""

    frontends: dict[str, int]  # frontend name -> the port it really listens on (dynamic resolved)
    stats_port: int
    since: float  # wall-clock time (time.time()) the current configuration started serving


class Dataplane(Protocol):
    def apply(self, pool: Pool) -> Running:
        """Run exactly this pool (start, or validated hot reload). Raises DataplaneError."""
        ...

    def remove(self, name: str) -> None: ...

    def status(self, name: str) -> Running | None:
        """None while the pool's load balancer is not up."""
        ...

    def lbconfig(self, name: str) -> str: ...

    def recover(self, pools: Iterable[Pool]) -> None:
        """On start: adopt what still runs for these pools, start what does not."""
        ...

    def stop_all(self) -> None: ...


class NullDataplane:
    """Bookkeeping only: deterministic fake ports, nothing listens."""

    def __init__(self, *, first_dynamic_port: int = 20000) -> None:
        self._lock = threading.Lock()
        self._ports = itertools.count(first_dynamic_port)
        self._running: dict[str, Running] = {}
        self._applied: dict[str, Pool] = {}

    def apply(self, pool: Pool) -> Running:
        with self._lock:
            previous = self._running.get(pool["name"])
            if previous is not None and self._applied.get(pool["name"]) == pool:
                # Like HAProxyDataplane (same config: no reload, same `since`) and a real pool, whose
                # instances keep serving through a PUT that changes nothing: metadata stays available.
                return previous
            self._applied[pool["name"]] = copy.deepcopy(pool)
            haproxy = pool.get("haproxy") or {}
            frontends = {}
            for fe in haproxy.get("frontends") or []:
                name = frontend_name(fe)
                port = int(fe.get("bindPort") or 0)
                if port == 0:
                    port = previous.frontends.get(name, 0) if previous else 0
                frontends[name] = port or next(self._ports)
            stats = int((haproxy.get("stats") or {}).get("bindPort") or 0)
            if stats == 0:
                stats = previous.stats_port if previous else next(self._ports)
            running = Running(frontends=frontends, stats_port=stats, since=time.time())
            self._running[pool["name"]] = running
            return running

    def remove(self, name: str) -> None:
        with self._lock:
            self._running.pop(name, None)
            self._applied.pop(name, None)

    def status(self, name: str) -> Running | None:
        with self._lock:
            return self._running.get(name)

    def lbconfig(self, name: str) -> str:
        return f"# pool {name}: no dataplane (--no-dataplane)\n"

    def recover(self, pools: Iterable[Pool]) -> None:
        for pool in pools:
            self.apply(pool)

    def stop_all(self) -> None:
        with self._lock:
            self._running.clear()
            self._applied.clear()
