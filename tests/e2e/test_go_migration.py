"""A cluster that ran the Go dklb 1.0.1 switches to this dklb, on real processes: nothing breaks.

The state the Go dklb leaves behind is built by hand on a real kube-apiserver and the local
EdgeLB: LoadBalancer Services carrying the annotation its webhook wrote back (every field, with
``constraints: null`` and ``cloudProviderConfiguration: ""``), no finalizer, the status it
published; pools holding the frontends and backends it named ``<cluster>:<namespace>:<service>:
<port>``, with no dklb mark; no database. Then ``dklb run`` starts: every Service settles with
zero EdgeLB writes, gets dklb's finalizer and keeps its address. The bindings are live: a cpus
edit reaches the Go-made pool (adopted by its object names), a frontend port edit moves the
frontend, and deleting a Service deletes its pool.
"""

from __future__ import annotations

import json
import time
from typing import Any

import yaml

from engine.model.services import ANNOTATION, FINALIZER
from engine.model.translation import ingress_from_metadata
from tests.checks import present
from tests.e2e.conftest import World
from tests.e2e.invariants import settled
from tests.e2e.test_lost_database import (
    CLUSTER,
    EDGELB_WRITES,
    bindings,
    database,
    edgelb_writes,
    kube_writes,
    pools_raw,
    rig,
    start_controller,
)
from tests.processes import scrape, wait_for

__all__ = ["rig"]  # the fixture, shared with the lost-database test

DEDICATED = "kubernetes-cluster--x7k2p"  # a name the Go dklb generated: <cluster>--<5 random>
SHARED = "team-pool"


def go_annotation(*, name: str, frontends: list[tuple[int, int]]) -> str:
    """The configuration object as the Go webhook wrote it back: yaml.v2, no omitempty, in the
    shape of the verbatim fixtures of tests/unit/test_go_parity.py."""
    entries = "".join(f"- port: {port}\n  servicePort: {service_port}\n" for port, service_port in frontends)
    return (
        'cloudProviderConfiguration: ""\nconstraints: null\ncpus: 0.1\nmemory: 128\n'
        f'name: {name}\nnetwork: ""\nrole: slave_public\nsize: 1\n'
        f"strategies:\n  creation: IfNotPresent\nfrontends:\n{entries}"
    )


def go_objects(
    namespace: str, service: dict[str, Any], bind_port: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The frontend and backend the Go dklb made for the Service's first port."""
    port = service["spec"]["ports"][0]
    name = f"{CLUSTER}:{namespace}:{service['metadata']['name']}:{port['port']}"
    frontend = {
        "name": name,
        "bindAddress": "0.0.0.0",
        "bindPort": bind_port,
        "protocol": "TCP",
        "linkBackend": {"defaultBackend": name},
    }
    backend = {
        "name": name,
        "protocol": "TCP",
        "balance": "leastconn",
        "rewriteHttp": {
            "request": {
                "forwardfor": True,
                "xForwardedPort": True,
                "xForwardedProtoHttpsIfTls": True,
                "setHostHeader": True,
                "rewritePath": True,
            },
            "response": {"rewriteLocation": True},
        },
        "services": [
            {
                "marathon": {},
                "mesos": {"frameworkName": CLUSTER, "taskNamePattern": "^kube-node-.*$"},
                "endpoint": {"type": "CONTAINER_IP", "port": port["nodePort"], "check": {"enabled": True}},
            }
        ],
    }
    return frontend, backend


def go_pool(name: str, objects: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    return {
        "apiVersion": "V2",
        "name": name,
        "namespace": "dcos-edgelb/pools",
        "role": "slave_public",
        "cpus": 0.1,
        "mem": 128,
        "count": 1,
        "haproxy": {
            "stats": {"bindPort": 0},
            "frontends": [f for f, _ in objects],
            "backends": [b for _, b in objects],
        },
    }


def leave_go_state(world: World) -> dict[str, list[dict[str, str]]]:
    """Services, pools and statuses as the Go dklb left them; the status of each Service."""
    ns = world.namespace
    specs = {
        "redis": (DEDICATED, 16379, 6379),
        "web-a": (SHARED, 18080, 8080),
        "web-b": (SHARED, 18081, 8081),
    }
    services = {
        name: world.create_service(
            name, ports=[(port, "TCP")], config=go_annotation(name=pool, frontends=[(bind, port)])
        )
        for name, (pool, bind, port) in specs.items()
    }
    for pool in (DEDICATED, SHARED):
        objects = [go_objects(ns, services[n], bind) for n, (p, bind, _) in specs.items() if p == pool]
        world.client.create_pool(go_pool(pool, objects))

    statuses: dict[str, list[dict[str, str]]] = {}
    for name, (pool, _, _) in specs.items():
        frontend = f"{CLUSTER}:{ns}:{name}:{specs[name][2]}"

        def published(pool: str = pool, frontend: str = frontend) -> list[dict[str, str]] | None:
            try:
                metadata = world.client.get_metadata(pool)
            except Exception:  # 504 until the pool "runs": what the Go dklb waited for too
                return None
            return ingress_from_metadata(metadata, frontend_names=[frontend]) or None

        statuses[name] = wait_for(published, what=f"metadata of {pool}")
        world.core.patch_namespaced_service_status(
            name, ns, {"status": {"loadBalancer": {"ingress": statuses[name]}}}, _preload_content=False
        )
    return statuses


def test_a_go_dklb_cluster_switches_to_this_dklb_without_a_write_to_edgelb(rig: World) -> None:
    world = rig
    statuses = leave_go_state(world)
    before = pools_raw(world)
    assert not database(world).exists()

    started = time.monotonic()
    url = start_controller(world)

    def all_ready() -> bool:
        found = bindings(world)
        return (
            len(found) == 3
            and all(b.state == "Ready" for b in found)
            and settled(core=world.core, namespace=world.namespace, database=database(world))
        )

    wait_for(all_ready, timeout=60, interval=0.25, what="the Go dklb's Services Ready")
    took = time.monotonic() - started
    assert edgelb_writes(url) == dict.fromkeys(EDGELB_WRITES, 0.0), "taking over writes nothing to EdgeLB"
    assert pools_raw(world) == before, "every pool is byte-identical"
    for name, status in statuses.items():
        service = present(world.service(name))
        assert FINALIZER in service["metadata"]["finalizers"]
        assert world.ingress(name) == status, f"{name} keeps its address"
    status_writes = {
        k: v for k, v in kube_writes(scrape(url + "/metrics")).items() if k[1] == "services/status"
    }
    assert status_writes == {}, "no status rewritten"

    # ---- the bindings are live ----
    config = yaml.safe_load(present(world.service("redis"))["metadata"]["annotations"][ANNOTATION])
    world.set_config("redis", yaml.safe_dump({**config, "cpus": 0.5}, sort_keys=False))
    wait_for(lambda: (world.pool(DEDICATED) or {}).get("cpus") == 0.5, what="the Go-made pool with cpus 0.5")

    config = yaml.safe_load(present(world.service("web-b"))["metadata"]["annotations"][ANNOTATION])
    world.set_config(
        "web-b",
        yaml.safe_dump({**config, "frontends": [{"port": 18082, "servicePort": 8081}]}, sort_keys=False),
    )

    def moved_port() -> bool:
        frontends = present(world.pool(SHARED))["haproxy"]["frontends"]
        return sorted(f["bindPort"] for f in frontends) == [18080, 18082]

    wait_for(moved_port, what="web-b's frontend on 18082")
    wait_for(all_ready, timeout=60, interval=0.25, what="Ready after the edits")

    world.delete_service("redis")
    wait_for(lambda: DEDICATED not in world.pool_names(), what="the Go-made pool deleted with its Service")
    assert world.pool_names() == [SHARED]
    print(
        f"\nGo migration: 3 Services on 2 Go-made pools Ready {took:.1f}s after start with 0 EdgeLB writes; "
        "cpus edit, port edit and delete applied"
    )


def test_the_go_e2e_cloud_switch_moves_the_service_to_an_nlb(rig: World) -> None:
    """Go's ``service_cloud_loadbalancer_test``: a Service on pool ``ns`` gets a cloud configuration,
    with name ``cloud--ns``, role ``*`` and size 2 in the same update."""
    world = rig
    start_controller(world)
    world.create_service("web", ports=[(80, "TCP")], config="name: ns\n")

    def ready_on(pool: str) -> bool:
        found = bindings(world)
        return len(found) == 1 and (found[0].state, found[0].pool) == ("Ready", pool)

    wait_for(lambda: ready_on("ns"), timeout=60, interval=0.25, what="web Ready on ns")
    cloud = json.dumps({"aws": {"elbs": [{"name": "web-nlb", "type": "NLB", "listeners": [{"port": 80}]}]}})
    config = yaml.safe_load(present(world.service("web"))["metadata"]["annotations"][ANNOTATION])
    switched = {**config, "name": "cloud--ns", "role": "*", "size": 2, "cloudProviderConfiguration": cloud}
    world.set_config("web", yaml.safe_dump(switched, sort_keys=False))

    wait_for(lambda: ready_on("cloud--ns"), timeout=60, interval=0.25, what="web Ready on cloud--ns")
    assert world.pool_names() == ["cloud--ns"], "the old pool, dklb's and empty, is deleted"
    pool = present(world.pool("cloud--ns"))
    assert (pool["role"], pool["count"]) == ("*", 2)
    wait_for(
        lambda: world.ingress("web")[:1] == [{"hostname": "web-nlb.elb.edgelb.local"}],
        what="the NLB in the status",
    )
    world.wait_event(
        "web",
        reason="MovingLoadBalancer",
        contains='out of EdgeLB pool ns: the Service now names EdgeLB pool "cloud--ns"',
    )
