"""Pools belong to someone, end to end (S1 and S2 of the security review): real kube-apiserver,
local EdgeLB with real HAProxy, `dklb run` with its default flags.

A Service of namespace B cannot join, reconfigure or delete the pool dklb made for namespace A
(and with the admission webhook, cannot even be created naming it); a tenant cannot make dklb
delete a pool the operators made; a ClusterIP Service carrying a forged dklb finalizer changes
nothing in EdgeLB and is released.
"""

from __future__ import annotations

import uuid
from typing import Any

import kubernetes
import pytest

from engine.model.services import FINALIZER, SHARED_POOL_KEY_ANNOTATION
from engine.model.settings import Settings
from states.tenancy import Tenant, refusal
from tests.checks import present
from tests.e2e.conftest import World
from tests.e2e.test_admission import Webhook, error
from tests.e2e.test_admission import webhook as webhook  # the fixture, for the S1 apply-time test
from tests.e2e.test_controller import frontend_ports, redis_command
from tests.integration.conftest import free_port
from tests.processes import wait_for


def other_namespace(world: World) -> str:
    name = f"{world.namespace}-b"
    # The generated client is typed for its model classes; it takes the plain dict as well.
    world.core.create_namespace({"metadata": {"name": name}}, _preload_content=False)  # type: ignore[arg-type]
    return name


def config(pool: str, port: int, extra: str = "") -> str:
    return f"name: {pool}\nfrontends:\n- {{port: {port}, servicePort: 6379}}\n{extra}"


def finalizers(service: dict[str, Any] | None) -> list[str]:
    return list(present(service)["metadata"].get("finalizers") or [])


def test_s1_namespace_b_cannot_join_flip_or_delete_namespace_as_pool(world: World) -> None:
    """S1 (security review): B names A's pool, with other settings and a port of its own: it is
    Rejected with a message naming neither A nor its Service, the pool keeps A's settings and
    frontends, and deleting B's Service leaves the pool serving A."""
    b = other_namespace(world)
    pool = f"tenant-{uuid.uuid4().hex[:6]}"
    port_a, port_b = free_port(), free_port()
    a = world.create_service("web", config=config(pool, port_a, "cpus: 0.2\n"))
    world.redis_on_node_port(a)
    wait_for(lambda: world.ingress("web"), what="A's Service ready")
    before = present(world.pool(pool))

    world.create_service("evil", namespace=b, config=config(pool, port_b, "cpus: 0.5\n"))
    event = world.wait_event("evil", namespace=b, type="Warning", contains="used by another namespace")
    assert SHARED_POOL_KEY_ANNOTATION in event["message"]
    assert "--allow-cross-namespace-pools" in event["message"]
    for event in world.events("evil", namespace=b):
        assert world.namespace not in event["message"] and "web" not in event["message"].replace(
            "Service", ""
        )
    assert world.ingress("evil", namespace=b) == []
    assert present(world.pool(pool)) == before, "the pool is untouched"

    world.delete_service("evil", namespace=b)
    wait_for(lambda: world.service("evil", namespace=b) is None, what="B's Service released")
    after = present(world.pool(pool))
    assert after["cpus"] == 0.2 and frontend_ports(after) == [port_a]
    assert redis_command(port_a, "PING") == b"+PONG\r\n", "A keeps serving"


def test_s1_with_the_same_key_two_namespaces_share(world: World) -> None:
    """S1 (security review): sharing across namespaces is opt-in, by both, with the same key."""
    b = other_namespace(world)
    port_a, port_b = free_port(), free_port()
    keyed = {SHARED_POOL_KEY_ANNOTATION: "team-shop"}
    a = world.create_service("a", config=config("keyed", port_a), annotations=keyed)
    s = world.create_service("b", namespace=b, config=config("keyed", port_b), annotations=keyed)
    world.redis_on_node_port(a)
    world.redis_on_node_port(s)
    wait_for(lambda: world.ingress("a") and world.ingress("b", namespace=b), what="both ready")
    assert frontend_ports(world.pool("keyed")) == sorted([port_a, port_b])


def test_s1_with_the_webhook_namespace_b_is_refused_at_apply_time(world: World, webhook: Webhook) -> None:
    """S1 (security review), at ``kubectl apply``: the validating webhook refuses B's Service naming
    A's pool (403, the controller's own message, naming neither A nor its Service), and admits it
    when both carry the same sharing key."""
    b = other_namespace(world)
    # The webhooks are scoped to namespaces carrying the test's label: B carries it too.
    world.core.patch_namespace(b, {"metadata": {"labels": webhook.selector}}, _preload_content=False)
    pool = f"tenant-{uuid.uuid4().hex[:6]}"
    a = world.create_service("web", config=config(pool, free_port()))
    world.redis_on_node_port(a)
    wait_for(lambda: world.ingress("web"), what="A's Service ready: its pool recorded")

    with pytest.raises(kubernetes.client.ApiException) as refused:
        world.create_service("evil", namespace=b, config=config(pool, free_port()))
    status, message = error(refused.value)
    expected = present(
        refusal(
            pool,
            Tenant(b),
            others=[Tenant(world.namespace)],
            owner=None,
            pre_existing=False,
            cloud=False,
            settings=Settings(),
        )
    )[0]
    assert status == 403
    assert message == f'admission webhook "{webhook.webhook_name}" denied the request: {expected}'
    said = message.split("denied the request: ", 1)[1]
    assert world.namespace not in said and "web" not in said.replace("Service", "")
    assert world.service("evil", namespace=b) is None, "nothing stored"

    keyed_pool = f"keyed-{uuid.uuid4().hex[:6]}"
    keyed = {SHARED_POOL_KEY_ANNOTATION: "team-shop"}
    s = world.create_service("a-keyed", config=config(keyed_pool, free_port()), annotations=keyed)
    world.redis_on_node_port(s)
    wait_for(lambda: world.ingress("a-keyed"), what="A's keyed Service ready: its pool recorded")
    joined = world.create_service(
        "b-keyed", namespace=b, config=config(keyed_pool, free_port()), annotations=keyed
    )
    world.redis_on_node_port(joined)
    wait_for(lambda: world.ingress("b-keyed", namespace=b), what="B's Service admitted and ready")


def test_s2_a_tenant_cannot_make_dklb_delete_a_pre_existing_pool(world: World) -> None:
    """S2 (security review): the operators' empty pool, used and then left by a tenant's Service,
    is still there afterwards."""
    world.client.create_pool({"name": "ops-reserved", "haproxy": {"stats": {"bindPort": 0}}})
    port = free_port()
    service = world.create_service("x", config=config("ops-reserved", port))
    world.redis_on_node_port(service)
    wait_for(lambda: world.ingress("x"), what="the tenant's Service ready")
    assert frontend_ports(world.pool("ops-reserved")) == [port]

    world.delete_service("x")
    wait_for(lambda: world.service("x") is None, what="released")
    assert world.pool_names() == ["ops-reserved"]
    assert frontend_ports(world.pool("ops-reserved")) == []


def test_s2_a_cluster_ip_service_with_a_forged_finalizer_changes_nothing(world: World) -> None:
    """S2 (security review): a ClusterIP Service carrying dklb's finalizer and naming the operators'
    empty pool: released, and EdgeLB is exactly as before."""
    world.client.create_pool({"name": "ops-reserved", "haproxy": {"stats": {"bindPort": 0}}})
    before = present(world.pool("ops-reserved"))
    world.create_service("innocent", type="ClusterIP", config="name: ops-reserved\n")
    world.patch_service("innocent", {"metadata": {"finalizers": [FINALIZER]}})
    wait_for(lambda: FINALIZER not in finalizers(world.service("innocent")), what="the finalizer released")
    assert world.pool_names() == ["ops-reserved"] and world.pool("ops-reserved") == before

    world.delete_service("innocent")
    wait_for(lambda: world.service("innocent") is None, what="deleted")
    assert world.pool_names() == ["ops-reserved"] and world.pool("ops-reserved") == before
