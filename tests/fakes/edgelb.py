"""An in-memory EdgeLB implementing ``engine.edgelb.port.EdgeLB``, for tests.

Where it sits in the data flow: state handlers under test call it where production calls the HTTP
client. It behaves like the contract in shared/edgelb-api.md and refuses what the local EdgeLB refuses, in
the same order (``edgelb_local.validation``): a binding refusal (400 or 422) and EdgeLB's checks
(400) are Invalid with the server's status, Conflict/NotFound come between them as in the server,
and an install refusal (a too long DC/OS service name, a package it does not have) is Unavailable
(500). It answers a write with the pool as Go encodes it and stores it as a GET reads it back
(``engine.edgelb.schema.fill_defaults``: defaults filled, a 0 endpoint port read back as -1, unknown
keys dropped), so a test proves the caller normalizes before comparing, and
answers metadata with Unavailable(504) until the pool is "launched" (``ready(name)`` or
``auto_metadata=True``). Tests read ``calls`` / ``writes()`` to assert how many EdgeLB calls a
scenario made, and ``fail_next`` to inject faults.

With ``path=`` the state (pools and readiness) is persisted to a JSON file, written atomically on every
write, so a test can SIGKILL a process using it and reload the state in a new process.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import threading
from pathlib import Path
from typing import Any

from edgelb_local.state import atomic_write_text
from edgelb_local.validation import Refusal, bind_value, check, install, namespace_change
from engine.edgelb.errors import Conflict, EdgeLBError, Invalid, NotFound, Unavailable
from engine.edgelb.schema import PACKAGE_VERSION, default_frontend_name, encode_pool, fill_defaults
from engine.runtime.crashpoints import checkpoint

Pool = dict[str, Any]

LIST = "GET /v2/pools"
GET = "GET /v2/pools/{name}"
POST = "POST"
PUT = "PUT"
DELETE = "DELETE"
METADATA = "GET metadata"
WRITES = (POST, PUT, DELETE)

# fail_next accepts the call keys above or the Protocol's method names.
_METHOD_KEYS = {
    "list_pools": LIST,
    "get_pool": GET,
    "create_pool": POST,
    "update_pool": PUT,
    "delete_pool": DELETE,
    "get_metadata": METADATA,
}
_KEYS = frozenset(_METHOD_KEYS.values())

# Where EdgeLB starts handing out ports for `bindPort: 0` (dynamic).
FIRST_DYNAMIC_PORT = 1025


class FakeEdgeLB:
    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        agent_ip: str = "127.0.0.1",
        public_ip: str | None = None,
        auto_metadata: bool = False,
        package_version: str = PACKAGE_VERSION,
    ) -> None:
        self.agent_ip = agent_ip
        # The pool package version this EdgeLB installs (changing it stands for an EdgeLB upgrade).
        self.package_version = package_version
        self.public_ip = public_ip if public_ip is not None else agent_ip
        self.auto_metadata = auto_metadata
        self.calls: collections.Counter[str] = collections.Counter()
        self._path = Path(path) if path is not None else None
        self._lock = threading.RLock()
        self._pools: dict[str, Pool] = {}
        self._ready: set[str] = set()
        self._faults: dict[str, collections.deque[EdgeLBError]] = collections.defaultdict(collections.deque)
        if self._path is not None and self._path.exists():
            state = json.loads(self._path.read_text())
            self._pools = state.get("pools", {})
            self._ready = set(state.get("ready", []))

    # -- test controls ------------------------------------------------------------------------------

    def writes(self) -> int:
        """POST + PUT + DELETE calls made, failed ones included."""
        with self._lock:
            return sum(self.calls[key] for key in WRITES)

    def fail_next(self, method: str, error: EdgeLBError | type[EdgeLBError]) -> None:
        """The next call of ``method`` (a call key like "PUT" or a method name like "update_pool")
        raises ``error``; several calls queue up."""
        key = _METHOD_KEYS.get(method, method)
        if key not in _KEYS:
            raise ValueError(f"unknown method {method!r}")
        if isinstance(error, type):
            error = error(f"injected {error.__name__} on {key}", status=_STATUS.get(error))
        with self._lock:
            self._faults[key].append(error)

    def ready(self, name: str) -> None:
        """The pool's instances are up: metadata answers from now on (until the pool is deleted)."""
        with self._lock:
            self._ready.add(name)
            self._save()

    def seed(self, pool: Pool) -> None:
        """Store a pool as if someone else had created it (no call counted, no validation)."""
        with self._lock:
            self._pools[pool["name"]] = fill_defaults(pool)
            self._save()

    def drop(self, name: str) -> None:
        """Delete a pool out of band (an operator's ``dcos edgelb delete``): no call counted, no fault."""
        with self._lock:
            self._pools.pop(name, None)
            self._ready.discard(name)
            self._persist()

    def stored(self, name: str) -> Pool | None:
        """The stored pool without counting a call (for assertions)."""
        with self._lock:
            pool = self._pools.get(name)
            return copy.deepcopy(pool) if pool is not None else None

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._pools)

    # -- the EdgeLB Protocol -------------------------------------------------------------------------

    def list_pools(self) -> list[Pool]:
        with self._lock:
            self._call(LIST)
            return [copy.deepcopy(self._pools[name]) for name in sorted(self._pools)]

    def get_pool(self, name: str) -> Pool:
        with self._lock:
            self._call(GET)
            return copy.deepcopy(self._existing(name))

    def create_pool(self, pool: Pool) -> Pool:
        with self._lock:
            self._call(POST)
            bound = self._bind(pool)
            if bound["name"] in self._pools:
                raise Conflict(f"pool {bound['name']} already exists", status=409)
            return self._store(bound, None)

    def update_pool(self, pool: Pool) -> Pool:
        with self._lock:
            self._call(PUT)
            bound = self._bind(pool)
            return self._store(bound, self._existing(bound["name"]))

    def delete_pool(self, name: str) -> None:
        with self._lock:
            self._call(DELETE)
            self._existing(name)
            del self._pools[name]
            self._ready.discard(name)
            self._save()

    def get_metadata(self, name: str) -> dict[str, Any]:
        with self._lock:
            self._call(METADATA)
            pool = self._existing(name)
            if not (self.auto_metadata or name in self._ready):
                raise Unavailable(f"metadata for pool {name} is not available yet", status=504)
            return self._metadata(pool)

    # -- internals ----------------------------------------------------------------------------------

    def _call(self, key: str) -> None:
        self.calls[key] += 1
        if self._faults[key]:
            raise self._faults[key].popleft()

    def _existing(self, name: str) -> Pool:
        pool = self._pools.get(name)
        if pool is None:
            raise NotFound(f"pool {name} not found", status=404)
        return pool

    def _bind(self, pool: Pool) -> Pool:
        bound, refusal = bind_value(pool, package_version=self.package_version)
        if refusal is not None:
            raise _error(refusal)
        return bound

    def _store(self, bound: Pool, previous: Pool | None) -> Pool:
        refusals = [
            *check(bound),
            namespace_change(previous, bound) if previous is not None else None,
            install(bound, package_version=self.package_version),
        ]
        refusal = next((r for r in refusals if r is not None), None)
        if refusal is not None:
            raise _error(refusal)
        answer = encode_pool(bound)
        self._pools[bound["name"]] = fill_defaults(answer)
        self._save()
        return answer

    def _metadata(self, pool: Pool) -> dict[str, Any]:
        haproxy = pool["haproxy"]
        dynamic = iter(range(FIRST_DYNAMIC_PORT, 65536))

        def resolved(port: int) -> int:
            return port if port else next(dynamic)

        def endpoint(port: int) -> dict[str, Any]:
            return {"port": resolved(port), "private": [self.agent_ip], "public": [self.public_ip]}

        # Dynamic ports are handed out stats first, then frontends in order.
        stats = [endpoint(haproxy["stats"]["bindPort"])]
        metadata: dict[str, Any] = {
            "name": pool["name"],
            "frontends": [
                {"name": fe.get("name") or default_frontend_name(fe), "endpoints": [endpoint(fe["bindPort"])]}
                for fe in haproxy["frontends"]
            ],
            "stats": stats,
        }
        elbs = ((pool.get("cloudProvider") or {}).get("aws") or {}).get("elbs") or []
        if elbs:
            metadata["aws"] = {
                "elbs": [
                    {
                        "name": elb["name"],
                        "dns": f"{elb['name']}-0123456789.elb.us-west-2.amazonaws.com",
                        "listeners": [
                            {"port": listener["port"], "linkFrontend": listener["linkFrontend"]}
                            for listener in elb["listeners"]
                        ],
                    }
                    for elb in elbs
                ]
            }
        return metadata

    def _save(self) -> None:
        self._persist()
        # Right after an EdgeLB write, before dklb records it: where a crash hurts most.
        checkpoint("edgelb-write")

    def _persist(self) -> None:
        if self._path is None:
            return
        state = json.dumps({"pools": self._pools, "ready": sorted(self._ready)}, indent=1, sort_keys=True)
        atomic_write_text(self._path, state)


def _error(refusal: Refusal) -> EdgeLBError:
    if refusal.status >= 500:
        return Unavailable(refusal.message, status=refusal.status)
    return Invalid(refusal.message, status=refusal.status)


_STATUS: dict[type[EdgeLBError], int] = {NotFound: 404, Conflict: 409, Invalid: 400, Unavailable: 503}
