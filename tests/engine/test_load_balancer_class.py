"""``--load-balancer-class`` through the real reconciler, against fake Kubernetes and EdgeLB.

The local kube-apiserver (1.20) drops ``spec.loadBalancerClass``, so the rule is proven here: a
Service of another class gets no binding, no finalizer, no Event and no pool, through creation,
resyncs and deletion; one of ours walks to Ready as usual; and one that still holds our
finalizer from a dklb of another class is cleaned up on delete instead of being left held.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.model.services import FINALIZER
from engine.model.settings import Settings
from tests.engine.harness import CLUSTER, World
from tests.fakes.kube import make_service

OURS, THEIRS = "example.com/dklb", "example.com/other-lb"


def lb(name: str, cls: str | None, port: int, *, finalizer: bool = False) -> dict[str, Any]:
    service = make_service(
        name, config=f"name: pool-{name}\nfrontends:\n- port: {port}\n  servicePort: 6379\n"
    )
    if cls is not None:
        service["spec"]["loadBalancerClass"] = cls
    if finalizer:
        service["metadata"]["finalizers"] = [FINALIZER]
    return service


@pytest.fixture(params=[None, OURS], ids=["no-class", "a-class"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, settings=Settings(cluster_name=CLUSTER, load_balancer_class=request.param))
    yield w
    w.store.close()


def test_only_the_services_of_the_controllers_class_are_driven(world: World) -> None:
    controller = world.settings.load_balancer_class
    classes = {"plain": None, "ours": OURS, "theirs": THEIRS}
    for port, (name, cls) in enumerate(classes.items(), start=18001):
        world.kube.apply(lb(name, cls, port))
    world.settle()
    world.assert_invariants()

    mine = {f"default/{name}" for name, cls in classes.items() if cls == controller}
    assert world.states() == dict.fromkeys(mine, "Ready")
    assert sorted(world.edgelb.names()) == sorted(f"pool-{key.split('/')[1]}" for key in mine)
    for name in classes:
        key = f"default/{name}"
        service = world.kube.get(key)
        assert service is not None
        if key in mine:
            assert service["metadata"]["finalizers"] == [FINALIZER]
            assert service["status"]["loadBalancer"]["ingress"]
            continue
        # Another controller's: not a trace of dklb on it.
        assert service["metadata"]["finalizers"] == []
        assert world.kube.events_for(key) == []
        assert not (service.get("status") or {}).get("loadBalancer")

    # Resyncs and deletion of another controller's Services leave them alone too.
    world.advance(600)
    for name in classes:
        world.kube.delete(f"default/{name}")
    world.settle()
    world.assert_invariants()
    assert world.kube.list() == []
    assert world.states() == {}
    assert world.edgelb.names() == []
    assert [
        e
        for name, cls in classes.items()
        if cls != controller
        for e in world.kube.events_for(f"default/{name}")
    ] == []


def test_a_service_held_by_our_finalizer_is_still_cleaned_up(world: World) -> None:
    # Bound by a dklb of another class (the operator changed --load-balancer-class): Kubernetes
    # never changes a Service's class, so dropping it would leave its pool behind and the
    # Service undeletable.
    world.kube.apply(lb("held", THEIRS, 18010, finalizer=True))
    world.settle()
    world.assert_invariants()
    assert world.states() == {"default/held": "Ready"}
    world.kube.delete("default/held")
    world.settle()
    world.assert_invariants()
    assert world.kube.get("default/held") is None
    assert world.edgelb.names() == []
