"""What must hold between Kubernetes, EdgeLB and dklb's database once a real controller has settled.

The end-to-end twin of ``tests.engine.harness.World.assert_invariants``: the crash-injection,
fault and lost-database tests drive real processes (kube-apiserver, ``dklb edgelb-local``,
``dklb run``) through a workload, wait for ``settled()``, then call ``violations()`` and expect
an empty list. Each violation is one readable sentence, so a failing round says what broke.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import kubernetes

from engine.edgelb.client import EdgeLBClient
from engine.kube.api import response_json
from engine.model.services import FINALIZER, has_finalizer, wants_load_balancer
from engine.model.translation import owner_of
from engine.store import Store, database_url

SETTLED = {"Ready", "Rejected", "Paused"}
CLUSTER = "kubernetes-cluster"


def _services(core: kubernetes.client.CoreV1Api, namespace: str) -> list[dict[str, Any]]:
    response = core.list_namespaced_service(namespace, _preload_content=False)
    return list(response_json(response)["items"])


def _key(service: dict[str, Any]) -> str:
    return f"{service['metadata']['namespace']}/{service['metadata']['name']}"


def _owned_frontends(pool: dict[str, Any], cluster: str) -> list[str]:
    return sorted(
        fe["name"]
        for fe in (pool.get("haproxy") or {}).get("frontends") or []
        if owner_of(fe["name"], cluster=cluster) is not None
    )


def settled(
    *,
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    database: Path | str,
) -> bool:
    """Every LoadBalancer Service of ``namespace`` has a settled binding, and nothing else is left."""
    store = Store(database_url(str(database)), read_only=True)
    try:
        bindings = {b.key: b for b in store.bindings() if b.namespace == namespace}
    finally:
        store.close()
    services = {_key(s): s for s in _services(core, namespace)}
    for key, service in services.items():
        if wants_load_balancer(service):
            binding = bindings.get(key)
            if binding is None or binding.state not in SETTLED:
                return False
        elif has_finalizer(service):
            return False
    # A binding of a Service that is gone (or no longer a LoadBalancer) must have been removed.
    return all(key in services and wants_load_balancer(services[key]) for key in bindings)


def violations(
    *,
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    edgelb: EdgeLBClient,
    database: Path | str,
    foreign_pools: AbstractSet[str] = frozenset(),
    cluster: str = CLUSTER,
) -> list[str]:
    """Every broken promise, as sentences; [] when the three parties agree.

    ``foreign_pools``: pools that existed before dklb (pre-existing pools it must never delete).
    The database is read in one read-only session, like ``dklb inspect`` does.
    """
    found: list[str] = []
    store = Store(database_url(str(database)), read_only=True)
    try:
        bindings = store.bindings()
        recorded = {p.name: p.ref_count for p in store.pools()}
        live = store.live_reference_counts()
    finally:
        store.close()
    if recorded != live:
        found.append(f"reference counts {recorded} differ from live bindings {live}")

    pools = edgelb.list_pools()
    names = Counter(p["name"] for p in pools)
    found += [f"pool {name} exists {n} times" for name, n in names.items() if n > 1]
    for pool in pools:
        name = pool["name"]
        members = [b for b in bindings if b.pool == name]
        if not members and name not in foreign_pools:
            found.append(f"pool {name} exists without any binding (orphan)")
        expected = sorted(fe["name"] for b in members if b.objects for fe in b.objects["frontends"])
        owned = _owned_frontends(pool, cluster)
        if owned != expected:
            found.append(f"pool {name} holds frontends {owned}, its bindings want {expected}")
    for name in foreign_pools - set(names):
        found.append(f"pre-existing pool {name} was deleted")

    by_key = {b.key: b for b in bindings}
    services = _services(core, namespace)
    for service in services:
        key = _key(service)
        binding = by_key.get(key)
        if wants_load_balancer(service):
            if binding is None:
                found.append(f"{key} is a LoadBalancer Service without a binding")
                continue
            if binding.state == "Ready":
                ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                if not ingress:
                    found.append(f"{key} is Ready without an address in its status")
                if not has_finalizer(service):
                    found.append(f"{key} is Ready without dklb's finalizer")
                if binding.pool not in names:
                    found.append(f"{key} is Ready but its pool {binding.pool} is not in EdgeLB")
            elif binding.state not in SETTLED:
                found.append(f"{key} is still {binding.state}")
        elif has_finalizer(service):
            found.append(f"{key} is not a LoadBalancer (or is being deleted) yet still holds {FINALIZER}")
    keys = {_key(s) for s in services}
    for b in bindings:
        if b.namespace == namespace and b.key not in keys:
            found.append(f"binding {b.key} ({b.state}) outlives its deleted Service")
    return found
