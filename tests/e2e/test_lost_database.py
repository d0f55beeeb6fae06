"""A lost database, on real processes: `dklb run` re-adopts every Service from Kubernetes and EdgeLB.

The real-process twin of ``tests/engine/test_adoption.py``. A real kube-apiserver, ``dklb
edgelb-local --no-dataplane`` and ``dklb run --http-listen 127.0.0.1:0`` (its /metrics counts every
EdgeLB and Kubernetes request it makes). Services on dedicated and on shared pools walk to Ready;
the controller is SIGKILLed, its SQLite database (and -wal/-shm) deleted, and a new controller
started on the same path. The annotations hold every Service's configuration and the pools hold
every Service's objects under names that say whose they are, so the new controller must rebuild
every binding and reference count with zero EdgeLB writes and zero writes to the Services
(``GET /v2/pools`` answers byte for byte what it answered before). Only Events are written: the
``EnsuringLoadBalancer``/``EnsuredLoadBalancer`` Events of the transitions it walks again (there is
no Lease: leader election is off). Afterwards the adopted bindings are live ones: deleting Services
deletes their pools (no orphan), and a cpus change of an adopted Service reaches the pool dklb
created (dklb marks its pools with ``environmentVariables.DKLB_CREATED_BY``) but never a
pre-existing pool it merely joined.

Every wait polls a condition with a deadline; the figures are printed as one summary line.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import requests
import yaml

import localcluster
from engine.edgelb.client import EdgeLBClient
from engine.model.services import ANNOTATION
from engine.model.translation import CREATED_BY_VARIABLE
from engine.store import Binding, Store, database_url
from tests.checks import present
from tests.e2e.conftest import World, release_services
from tests.e2e.invariants import settled, violations
from tests.processes import ControllerProcess, controller_args, scrape, start_edgelb, total, wait_for

TIMEOUT = 5.0
LISTENING = re.compile(r"http listening on (http://[^\s\"]+)")
CLUSTER = "kubernetes-cluster"
# Ready bindings re-verify their pool this often: the zero-write check waits for such a round.
RESYNC = 5.0
EDGELB_WRITES = ("POST", "PUT", "DELETE")
KUBE_WRITES = ("create", "update", "patch", "delete", "deletecollection")
SERVICE_RESOURCES = ("services", "services/status")
PREEXISTING = "preexisting"


# ---- the rig: a World whose controller serves /metrics ------------------------------------------


@pytest.fixture
def rig(
    kube_cluster: localcluster.LocalCluster, core: kubernetes.client.CoreV1Api, tmp_path: Path
) -> Iterator[World]:
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    # The generated client is typed for its model classes; it takes the plain dict as well.
    core.create_namespace({"metadata": {"name": namespace}}, _preload_content=False)  # type: ignore[arg-type]
    edgelb = start_edgelb(tmp_path / "edgelb", extra=["--no-dataplane"])
    controller = ControllerProcess(
        args=controller_args(
            kubeconfig=kube_cluster.kubeconfig,
            edgelb_url=edgelb.url,
            database=tmp_path / "dklb.db",
            resync_period=f"{RESYNC:g}s",
            http_listen="127.0.0.1:0",
        ),
        log_path=tmp_path / "controller.log",
    )
    world = World(
        core=core,
        namespace=namespace,
        edgelb=edgelb,
        client=EdgeLBClient(edgelb.url),
        controller=controller,
        directory=tmp_path,
    )
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(edgelb.stop)
        cleanup.callback(release_services, core)
        cleanup.callback(lambda: world.controller.stop())
        yield world


def database(world: World) -> Path:
    return world.directory / "dklb.db"


def start_controller(world: World) -> str:
    """Start the controller and wait until it is ready (database migrated, cache synced); its
    /metrics base URL, read from the log line it writes once bound."""
    log = world.controller.log_path
    offset = log.stat().st_size if log.exists() else 0
    world.controller.start()

    def url() -> str | None:
        found = LISTENING.search(log.read_bytes()[offset:].decode(errors="replace"))
        return found.group(1) if found else None

    base = wait_for(url, what="the controller's 'http listening on' log line")

    def ready() -> bool:
        with contextlib.suppress(requests.ConnectionError):
            return requests.get(base + "/readyz", timeout=TIMEOUT).status_code == 200
        return False

    wait_for(ready, what="/readyz 200")
    return base


def edgelb_writes(url: str) -> dict[str, float]:
    """EdgeLB writes by method, as the controller at ``url`` counted them."""
    metrics = scrape(url + "/metrics")
    return {m: total(metrics, "dklb_edgelb_requests_total", method=m) for m in EDGELB_WRITES}


def kube_writes(metrics: dict[str, list[Any]]) -> dict[tuple[str, str], float]:
    """Every Kubernetes write by (verb, resource), whatever its answer."""
    found: dict[tuple[str, str], float] = {}
    for s in metrics.get("dklb_kubernetes_requests_total", []):
        if s.labels["verb"] in KUBE_WRITES and s.value:
            key = (s.labels["verb"], s.labels["resource"])
            found[key] = found.get(key, 0.0) + s.value
    return found


def bindings(world: World) -> list[Binding]:
    if not database(world).exists():
        return []
    store = Store(database_url(str(database(world))), read_only=True)
    try:
        return [b for b in store.bindings() if b.namespace == world.namespace]
    finally:
        store.close()


def pool_records(world: World) -> dict[str, tuple[int, bool]]:
    """The database's pools table: name -> (reference count, created by dklb)."""
    store = Store(database_url(str(database(world))), read_only=True)
    try:
        return {p.name: (p.ref_count, p.created_by_dklb) for p in store.pools()}
    finally:
        store.close()


def all_ready(world: World, count: int) -> bool:
    found = bindings(world)
    if len(found) != count or any(b.state != "Ready" for b in found):
        return False
    return settled(core=world.core, namespace=world.namespace, database=database(world))


def broken(world: World, foreign: AbstractSet[str] = frozenset()) -> list[str]:
    return violations(
        core=world.core,
        namespace=world.namespace,
        edgelb=world.client,
        database=database(world),
        foreign_pools=foreign,
    )


def pools_raw(world: World) -> bytes:
    """``GET /v2/pools`` exactly as EdgeLB answers it."""
    answer = requests.get(world.edgelb.url + "/v2/pools", timeout=TIMEOUT)
    answer.raise_for_status()
    return answer.content


def lose_database(world: World) -> None:
    """SIGKILL the controller and delete its SQLite database with its WAL and shared memory."""
    world.controller.kill()
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{database(world)}{suffix}")
        path.unlink(missing_ok=True)
        assert not path.exists()


def set_cpus(world: World, name: str, cpus: float) -> None:
    """Change ``cpus`` in the Service's (defaulted, written-back) configuration object."""
    service = world.service(name)
    assert service is not None
    config = yaml.safe_load(service["metadata"]["annotations"][ANNOTATION])
    config["cpus"] = cpus
    world.set_config(name, yaml.safe_dump(config, sort_keys=False))


# ---- the workload ------------------------------------------------------------------------------


def dedicated_name(i: int) -> str:
    return f"dedicated-{i:02d}"


def shared_name(pool: int, k: int) -> str:
    return f"shared-{pool}-{k:02d}"


def create_workload(world: World, *, dedicated: int, shared_pools: int, per_pool: int) -> None:
    """``dedicated`` Services on a pool each, and ``shared_pools`` pools of ``per_pool`` Services."""
    for i in range(dedicated):
        world.create_service(
            dedicated_name(i), ports=[(10000 + i, "TCP")], config=f"name: {dedicated_name(i)}\n"
        )
    for k in range(per_pool):
        for p in range(shared_pools):
            # Services of one pool bind distinct frontend ports (servicePort = frontend port).
            world.create_service(shared_name(p, k), ports=[(8000 + k, "TCP")], config=f"name: shared-{p}\n")


def run_lost_database(world: World, *, dedicated: int, shared_pools: int, per_pool: int) -> None:
    count = dedicated + shared_pools * per_pool
    deadline = 30.0 + count * 1.5
    url = start_controller(world)
    started = time.monotonic()
    create_workload(world, dedicated=dedicated, shared_pools=shared_pools, per_pool=per_pool)
    wait_for(lambda: all_ready(world, count), timeout=deadline, interval=0.25, what=f"{count} Services Ready")
    provisioning = time.monotonic() - started
    assert broken(world) == []

    before = pools_raw(world)
    records = pool_records(world)
    expected_refs = {dedicated_name(i): 1 for i in range(dedicated)} | {
        f"shared-{p}": per_pool for p in range(shared_pools)
    }
    assert {name: refs for name, (refs, _) in records.items()} == expected_refs
    assert all(created for _, created in records.values()), "dklb created every pool"
    pools = world.pool_names()
    assert pools == sorted(expected_refs)
    marks = {
        p["name"]: (p.get("environmentVariables") or {}).get(CREATED_BY_VARIABLE)
        for p in world.client.list_pools()
    }
    assert marks == dict.fromkeys(pools, CLUSTER), "dklb marks the pools it creates"
    first_writes = edgelb_writes(url)
    assert first_writes["POST"] == len(pools) and first_writes["DELETE"] == 0

    # ---- lose the database, start again on the same path ----
    lose_database(world)
    restarted = time.monotonic()
    url = start_controller(world)
    wait_for(lambda: all_ready(world, count), timeout=deadline, interval=0.25, what=f"{count} re-adopted")
    adoption = time.monotonic() - restarted

    # Two more pool sweeps (a whole one started after the re-adoption): the zero-write claim
    # covers the settled state's verification too.
    swept = total(scrape(url + "/metrics"), "dklb_pool_sweeps_total", result="ok")

    def resynced() -> dict[str, list[Any]] | None:
        metrics = scrape(url + "/metrics")
        return metrics if total(metrics, "dklb_pool_sweeps_total", result="ok") >= swept + 2 else None

    metrics = wait_for(resynced, timeout=RESYNC * 4 + deadline, interval=0.5, what="one resync round")
    writes = kube_writes(metrics)
    service_writes = {k: v for k, v in writes.items() if k[1] in SERVICE_RESOURCES}
    other_writes = {f"{verb} {resource}": int(v) for (verb, resource), v in sorted(writes.items())}
    assert edgelb_writes(url) == dict.fromkeys(EDGELB_WRITES, 0.0), "adoption writes nothing to EdgeLB"
    assert service_writes == {}, f"adoption writes nothing to Services: {service_writes}"
    assert {resource for _, resource in writes} <= {"events"}, f"only Events are written: {writes}"
    assert pools_raw(world) == before, "every pool is byte-identical"
    assert world.pool_names() == pools, "no pool deleted, none created"
    rebuilt = pool_records(world)
    assert {name: refs for name, (refs, _) in rebuilt.items()} == expected_refs
    assert all(created for _, created in rebuilt.values()), "the marker says dklb created them"
    assert broken(world) == []

    # ---- the adopted bindings are live: deleting Services deletes their pools ----
    gone = {"shared-0", dedicated_name(0)}
    for k in range(per_pool):
        world.delete_service(shared_name(0, k))
    world.delete_service(dedicated_name(0))
    remaining = count - per_pool - 1
    wait_for(
        lambda: not gone & set(world.pool_names()) and all_ready(world, remaining),
        timeout=deadline,
        interval=0.25,
        what="the pools of the deleted Services deleted",
    )
    assert world.pool_names() == sorted(set(pools) - gone)
    assert broken(world) == []
    after_delete = edgelb_writes(url)
    assert (after_delete["POST"], after_delete["DELETE"]) == (0, 2)

    # ---- a settings change of an adopted Service reaches the pool dklb created ----
    changed = dedicated_name(1)
    untouched = {p["name"]: p for p in world.client.list_pools() if p["name"] != changed}
    set_cpus(world, changed, 0.5)
    wait_for(lambda: (world.pool(changed) or {}).get("cpus") == 0.5, what=f"pool {changed} with cpus 0.5")
    wait_for(lambda: all_ready(world, remaining), interval=0.25, what="Ready after the cpus change")
    assert {p["name"]: p for p in world.client.list_pools() if p["name"] != changed} == untouched
    assert broken(world) == []

    print(
        f"\nlost database: {count} Services ({dedicated} dedicated, {shared_pools}x{per_pool} shared, "
        f"{len(pools)} pools) provisioned in {provisioning:.1f}s, re-adopted in {adoption:.1f}s "
        f"(controller start to all Ready); after adoption: EdgeLB writes 0, Service writes 0, "
        f"other Kubernetes writes {other_writes}, pools byte-identical; deleting {per_pool + 1} "
        f"Services deleted 2 pools; cpus change applied to adopted pool {changed}"
    )


def test_a_lost_database_of_100_services_is_rebuilt_without_a_write(rig: World) -> None:
    # 20-26 s (plus ~13 s for the fixture to release the 89 Services left), re-adoption itself
    # ~7 s: under the 60 s that would make it a slow test, so it runs by default at full size.
    run_lost_database(rig, dedicated=60, shared_pools=4, per_pool=10)


FOREIGN_FRONTEND = "operator-web"
PREEXISTING_POOL: dict[str, Any] = {
    "name": PREEXISTING,
    "cpus": 2.0,
    "mem": 256,
    "count": 1,
    "haproxy": {
        "stats": {"bindPort": 0},
        "frontends": [
            {
                "name": FOREIGN_FRONTEND,
                "bindPort": 18080,
                "protocol": "TCP",
                "linkBackend": {"defaultBackend": FOREIGN_FRONTEND},
            }
        ],
        "backends": [
            {
                "name": FOREIGN_FRONTEND,
                "protocol": "TCP",
                "services": [{"endpoint": {"type": "ADDRESS", "address": "127.0.0.1", "port": 18081}}],
            }
        ],
    },
}


def test_after_a_lost_database_only_the_pools_dklb_created_take_settings_changes(rig: World) -> None:
    """The mark never turns a pre-existing pool into dklb's: its settings stay the operator's."""
    url = start_controller(rig)
    rig.client.create_pool(PREEXISTING_POOL)
    rig.create_service("guest", ports=[(9000, "TCP")], config=f"name: {PREEXISTING}\n")
    rig.create_service("owner", ports=[(9001, "TCP")], config="name: owned\n")
    wait_for(lambda: all_ready(rig, 2), interval=0.25, what="both Services Ready")
    assert broken(rig, {PREEXISTING}) == []
    records = {PREEXISTING: (1, False), "owned": (1, True)}
    assert pool_records(rig) == records
    # EdgeLB leaves an empty map out of what it returns (omitempty).
    assert CREATED_BY_VARIABLE not in (present(rig.pool(PREEXISTING)).get("environmentVariables") or {})

    lose_database(rig)
    url = start_controller(rig)
    wait_for(lambda: all_ready(rig, 2), interval=0.25, what="both Services re-adopted")
    assert pool_records(rig) == records, "adopted: dklb's pool by its mark, the other one not"
    assert edgelb_writes(url) == dict.fromkeys(EDGELB_WRITES, 0.0)

    set_cpus(rig, "guest", 0.7)
    set_cpus(rig, "owner", 0.7)
    wait_for(lambda: (rig.pool("owned") or {}).get("cpus") == 0.7, what="pool owned with cpus 0.7")

    def guest_done() -> bool:
        guest = [b for b in bindings(rig) if b.name == "guest"]
        return bool(guest) and (guest[0].config or {}).get("cpus") == 0.7 and all_ready(rig, 2)

    wait_for(guest_done, interval=0.25, what="the guest's cpus change handled")
    pool = rig.pool(PREEXISTING)
    assert pool is not None and (pool["cpus"], pool["mem"], pool["count"]) == (2.0, 256, 1)
    assert sorted(fe["name"] for fe in pool["haproxy"]["frontends"]) == [
        f"{CLUSTER}:{rig.namespace}:guest:9000",
        FOREIGN_FRONTEND,
    ]
    assert edgelb_writes(url) == {"POST": 0, "PUT": 1, "DELETE": 0}, "one PUT: pool owned"
    assert broken(rig, {PREEXISTING}) == []

    # The guest leaves: its objects go, the pre-existing pool and the operator's objects stay.
    rig.delete_service("guest")
    wait_for(lambda: rig.service("guest") is None and all_ready(rig, 1), interval=0.25, what="guest gone")
    pool = rig.pool(PREEXISTING)
    assert pool is not None and [fe["name"] for fe in pool["haproxy"]["frontends"]] == [FOREIGN_FRONTEND]
    assert pool["cpus"] == 2.0
    assert broken(rig, {PREEXISTING}) == []
