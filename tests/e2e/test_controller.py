"""`dklb run` end to end: real kube-apiserver, local EdgeLB with real HAProxy, real redis.

Each test is one of the user stories of the seed and of DESIGN.md, checked where the user
would look: the Service (status, annotation, finalizer, Events), EdgeLB (`dcos edgelb list`),
and traffic through the pool's frontend. The main stories run on both stores (``@BOTH_DATABASES``:
SQLite, and PostgreSQL through the same code).
"""

from __future__ import annotations

import re
import socket

import pytest
import yaml

from engine.model.services import ANNOTATION, FINALIZER, SHARED_POOL_KEY_ANNOTATION
from tests.checks import present
from tests.e2e.conftest import BOTH_DATABASES, World
from tests.integration.conftest import free_port
from tests.processes import wait_for

REDIS = "name: dklb-redis\nfrontends:\n- port: {port}\n  servicePort: 6379\n"


def redis_command(port: int, *args: str) -> bytes:
    payload = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(1024)


def frontend_ports(pool: dict | None) -> list[int]:
    return sorted(int(f["bindPort"]) for f in ((pool or {}).get("haproxy") or {}).get("frontends") or [])


@BOTH_DATABASES
def test_the_seed_redis_example(world: World) -> None:
    service = world.create_service("redis", config=REDIS.format(port=16379))
    world.redis_on_node_port(service)

    assert wait_for(lambda: world.ingress("redis"), what="status.loadBalancer.ingress") == [
        {"ip": "127.0.0.1"}
    ]
    pool = world.pool("dklb-redis")
    assert pool is not None and frontend_ports(pool) == [16379]
    assert (pool["role"], pool["cpus"], pool["mem"], pool["count"]) == ("slave_public", 0.1, 128, 1)
    assert redis_command(16379, "SET", "foo", "bar") == b"+OK\r\n"
    assert redis_command(16379, "GET", "foo") == b"$3\r\nbar\r\n"
    stored = present(world.service("redis"))
    assert FINALIZER in stored["metadata"]["finalizers"]
    world.wait_event("redis", reason="EnsuredLoadBalancer")

    world.delete_service("redis")
    wait_for(lambda: world.service("redis") is None, what="the Service released and gone")
    assert world.pool_names() == [], "the dklb-redis pool is deleted with its Service"


def test_a_service_without_annotation_gets_it_written_once_and_keeps_its_pool(world: World) -> None:
    port = free_port()
    world.create_service("web", ports=[(port, "TCP")])
    wait_for(lambda: world.ingress("web"), what="ready")
    text = present(world.service("web"))["metadata"]["annotations"][ANNOTATION]
    config = yaml.safe_load(text)
    assert re.fullmatch(r"kubernetes-cluster--[a-z0-9]{5}", config["name"])
    assert (config["cpus"], config["memory"], config["size"], config["role"]) == (0.1, 128, 1, "slave_public")
    assert config["frontends"] == [{"port": port, "servicePort": port}]
    version = present(world.service("web"))["metadata"]["resourceVersion"]

    world.restart_controller()
    world.wait_event("web", reason="EnsuredLoadBalancer")
    # After the restart the binding re-verifies; nothing about the Service changes.
    assert present(world.service("web"))["metadata"]["annotations"][ANNOTATION] == text
    assert world.pool_names() == [config["name"]]
    assert present(world.service("web"))["metadata"]["resourceVersion"] == version, (
        "the annotation is written once"
    )


@BOTH_DATABASES
def test_two_services_in_two_namespaces_share_one_pool(world: World) -> None:
    # Across namespaces, both Services consent with the same sharing key.
    keyed = {SHARED_POOL_KEY_ANNOTATION: "team-shared"}
    other = f"{world.namespace}-b"
    # The generated client is typed for its model classes; it takes the plain dict as well.
    world.core.create_namespace({"metadata": {"name": other}}, _preload_content=False)  # type: ignore[arg-type]
    port_a, port_b = free_port(), free_port()
    a = world.create_service(
        "a", config=f"name: shared\nfrontends:\n- {{port: {port_a}, servicePort: 6379}}\n", annotations=keyed
    )
    b = world.create_service(
        "b",
        namespace=other,
        config=f"name: shared\nfrontends:\n- {{port: {port_b}, servicePort: 6379}}\n",
        annotations=keyed,
    )
    world.redis_on_node_port(a)
    world.redis_on_node_port(b)
    wait_for(lambda: world.ingress("a") and world.ingress("b", namespace=other), what="both ready")
    assert world.pool_names() == ["shared"]
    assert frontend_ports(world.pool("shared")) == sorted([port_a, port_b])
    assert redis_command(port_a, "PING") == b"+PONG\r\n" and redis_command(port_b, "PING") == b"+PONG\r\n"

    world.delete_service("a")
    wait_for(lambda: world.service("a") is None, what="a released")
    assert world.pool_names() == ["shared"] and frontend_ports(world.pool("shared")) == [port_b]
    assert redis_command(port_b, "PING") == b"+PONG\r\n", "the other Service keeps serving"

    world.delete_service("b", namespace=other)
    wait_for(lambda: world.service("b", namespace=other) is None, what="b released")
    assert world.pool_names() == []


INVALID = [
    ("bad-yaml", "name: [unclosed", "failed to parse the value"),
    ("bad-name", 'name: "__foo__"', '"__foo__" is not a valid edgelb pool name'),
    (
        "public-network",
        "network: dcos",
        'cannot join a virtual network when the pool\'s role is "slave_public"',
    ),
    ("negative-cpus", "cpus: -0.1", "-0.100000 is not a valid cpu request"),
    ("negative-memory", "memory: -256", "-256 is not a valid memory request"),
    ("zero-size", "size: 0", "0 is not a valid size request"),
    ("bad-strategy", "strategies:\n  creation: Foo", 'failed to parse "Foo" as an edgelb pool creation'),
    ("bad-port", "frontends:\n- port: 123456\n  servicePort: 6379", "123456 is not a valid port number"),
]


def test_invalid_configurations_are_warned_and_never_reach_edgelb(world: World) -> None:
    for name, config, _ in INVALID:
        world.create_service(name, config=config + "\n")
    for name, _, message in INVALID:
        event = world.wait_event(name, type="Warning", contains=message)
        assert event["reason"] == "InvalidConfiguration"
    assert world.pool_names() == []
    for name, _, _ in INVALID:
        assert world.ingress(name) == []


@BOTH_DATABASES
def test_immutable_changes_are_refused_and_mutable_ones_update_the_pool(world: World) -> None:
    port = free_port()
    service = world.create_service("redis", config=REDIS.format(port=port))
    world.redis_on_node_port(service)
    wait_for(lambda: world.ingress("redis"), what="ready")
    before = world.pool("dklb-redis")

    for change, message in [
        (
            REDIS.format(port=port).replace("dklb-redis", "other"),
            "the name of the target edgelb pool cannot be changed",
        ),
        (REDIS.format(port=port) + "role: '*'\nnetwork: dcos\n", "cannot be changed"),
    ]:
        world.set_config("redis", change)
        world.wait_event("redis", type="Warning", contains=message)
        assert world.pool_names() == ["dklb-redis"] and world.pool("dklb-redis") == before
        assert redis_command(port, "PING") == b"+PONG\r\n", "the existing pool keeps serving"

    new_port = free_port()
    world.set_config("redis", REDIS.format(port=new_port) + "cpus: 0.3\n")
    wait_for(lambda: frontend_ports(world.pool("dklb-redis")) == [new_port], what="frontend port updated")
    assert present(world.pool("dklb-redis"))["cpus"] == 0.3
    wait_for(lambda: redis_command(new_port, "PING") == b"+PONG\r\n", what="traffic on the new port")


@pytest.mark.parametrize("strategy", ["IfNotPresent", "Once", "Never"])
def test_a_pool_deleted_out_of_band(world: World, strategy: str) -> None:
    port = free_port()
    config = REDIS.format(port=port) + f"strategies:\n  creation: {strategy}\n"
    if strategy == "Never":
        world.client.create_pool({"name": "dklb-redis", "haproxy": {"stats": {"bindPort": 0}}})
    service = world.create_service("redis", config=config)
    world.redis_on_node_port(service)
    wait_for(lambda: world.ingress("redis"), what="ready")

    world.client.delete_pool("dklb-redis")
    if strategy == "IfNotPresent":
        wait_for(lambda: world.pool("dklb-redis"), what="the pool re-created")
        wait_for(lambda: redis_command(port, "PING") == b"+PONG\r\n", what="traffic again")
    else:
        reason = "PoolDeleted" if strategy == "Once" else "PoolNotFound"
        world.wait_event("redis", type="Warning", reason=reason)
        assert world.pool_names() == []


@BOTH_DATABASES
def test_a_service_deleted_while_the_controller_is_down_is_cleaned_up(world: World) -> None:
    port = free_port()
    service = world.create_service("redis", config=REDIS.format(port=port))
    world.redis_on_node_port(service)
    wait_for(lambda: world.ingress("redis"), what="ready")

    world.controller.kill()
    world.delete_service("redis")
    assert present(world.service("redis"))["metadata"].get("deletionTimestamp"), "the finalizer holds it"
    assert world.pool_names() == ["dklb-redis"]

    world.controller.start()
    wait_for(lambda: world.service("redis") is None, what="finalizer released after restart")
    assert world.pool_names() == []


def test_a_udp_only_service_is_warned_and_a_type_change_cleans_up(world: World) -> None:
    # Kubernetes 1.20 refuses LoadBalancer Services that mix protocols, so UDP comes alone here
    # (mixing is covered by the engine tests).
    world.create_service("dns", ports=[(53, "UDP")], config="name: dns\n")
    event = world.wait_event("dns", type="Warning", reason="InvalidConfiguration")
    assert "no TCP port" in event["message"]
    world.wait_event("dns", type="Warning", contains="53/UDP")
    assert world.pool_names() == []

    port = free_port()
    world.create_service("web", ports=[(port, "TCP")], config="name: web\n")
    wait_for(lambda: world.ingress("web"), what="ready")
    world.patch_service("web", {"spec": {"type": "ClusterIP"}})
    wait_for(
        lambda: (
            world.ingress("web") == []
            and FINALIZER not in (present(world.service("web"))["metadata"].get("finalizers") or [])
        ),
        what="status cleared and finalizer released",
    )
    assert world.pool_names() == []
