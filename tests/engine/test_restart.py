"""A restart reconciles only what changed while dklb was down.

At start-up (``Controller.mark_synced``) one store query and the Service cache tell which keys
need a reconcile (``Controller._to_reconcile``, ``Reconciler.quiet``): a Service deleted,
replaced, edited (annotation, pause, ports), a binding not settled or due to wake up. The settled
rest is left to the first pool sweep, which catches a pool changed or deleted in EdgeLB. First as
a table (each case one Service, judged in one pass), then end to end through the threaded
controller: every change made while it was down is acted on, and the untouched Services are
never reconciled and cost no write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from engine.model.services import PAUSED_ANNOTATION
from engine.store import utcnow
from tests.checks import present
from tests.engine.test_poolsweep import DEADLINE, Proc, procs
from tests.fakes.kube import FakeKube, make_service
from tests.processes import wait_for

__all__ = ["procs"]

Edit = Callable[[FakeKube, Proc, str], None]


def _untouched(kube: FakeKube, proc: Proc, key: str) -> None:
    return None


def _deleted(kube: FakeKube, proc: Proc, key: str) -> None:
    kube.delete(key)


def _gone_from_the_cluster(kube: FakeKube, proc: Proc, key: str) -> None:
    # The Service vanished entirely: the new process's cache never holds it.
    kube.delete(key)
    kube.remove_finalizer(present(kube.get(key)))


def _replaced(kube: FakeKube, proc: Proc, key: str) -> None:
    _gone_from_the_cluster(kube, proc, key)
    # A pool named in its configuration: the fixture's seeded name generator starts over in each
    # process and would hand it a name one of the first process's pools already has.
    kube.apply(make_service(key.split("/")[1], ports=[(80, 31900)], config="name: anew\n"))


def _paused(kube: FakeKube, proc: Proc, key: str) -> None:
    service = present(kube.get(key))
    service["metadata"]["annotations"][PAUSED_ANNOTATION] = "true"
    kube.apply(service)


def _ports_changed(kube: FakeKube, proc: Proc, key: str) -> None:
    service = present(kube.get(key))
    service["spec"]["ports"][0]["port"] = 8080
    kube.apply(service)


def _wakeup_due(kube: FakeKube, proc: Proc, key: str) -> None:
    proc.store.set_wakeup(key, utcnow() - timedelta(seconds=1))


# name -> (what happens to it while dklb is down, whether the start-up pass reconciles it)
CASES: dict[str, tuple[Edit, bool]] = {
    "untouched": (_untouched, False),
    "untouched-too": (_untouched, False),
    "deleted": (_deleted, True),
    "gone": (_gone_from_the_cluster, True),
    "replaced": (_replaced, True),
    "paused": (_paused, True),
    "ports": (_ports_changed, True),
    "due": (_wakeup_due, True),
}


def settled(proc: Proc, names: list[str]) -> list[str]:
    proc.start()
    keys = []
    for i, name in enumerate(names):
        proc.controller.observe(proc.kube.apply(make_service(name, ports=[(80, 31000 + i)])))
        keys.append(f"default/{name}")
    wait_for(lambda: proc.ready(keys), timeout=DEADLINE, what=f"{len(keys)} Services Ready")
    return keys


def test_the_start_up_pass_queues_exactly_the_keys_that_changed(procs: Callable[..., Proc]) -> None:
    first = procs()
    settled(first, list(CASES))
    first.close()
    kube = first.kube
    for name, (edit, _) in CASES.items():
        edit(kube, first, f"default/{name}")
    # Services dklb never bound: one that wants a load balancer, one that does not.
    kube.apply(make_service("new", ports=[(80, 31800)]))
    kube.apply(make_service("plain", type="ClusterIP"))

    second = procs()
    for service in kube.list():
        second.reconciler.cache.put(service)
    queued = set(second.controller._to_reconcile())

    expected = {f"default/{name}" for name, (_, reconciled) in CASES.items() if reconciled}
    assert queued == expected | {"default/new"}


def test_a_binding_not_settled_or_to_be_verified_is_always_queued(procs: Callable[..., Proc]) -> None:
    first = procs()
    keys = settled(first, ["a", "b"])
    first.close()
    second = procs()
    for service in first.kube.list():
        second.reconciler.cache.put(service)
    assert second.controller._to_reconcile() == []
    second.reconciler.verify({keys[0]})
    assert second.controller._to_reconcile() == [keys[0]]


def test_a_restart_acts_on_every_change_and_reconciles_nothing_else(procs: Callable[..., Proc]) -> None:
    names = ["calm0", "calm1", "deleted", "replaced", "paused", "ports", "pool-gone", "pool-edited"]
    first = procs()
    keys = settled(first, names)
    first.close()
    kube, edgelb = first.kube, first.edgelb
    _deleted(kube, first, "default/deleted")
    old_uid = present(kube.get("default/replaced"))["metadata"]["uid"]
    _replaced(kube, first, "default/replaced")
    _paused(kube, first, "default/paused")
    _ports_changed(kube, first, "default/ports")
    gone = present(present(first.store.get("default/pool-gone")).pool)
    edgelb.drop(gone)
    edited = present(present(first.store.get("default/pool-edited")).pool)
    pool = present(edgelb.stored(edited))
    pool["haproxy"]["frontends"][0]["bindPort"] = 4321
    edgelb.seed(pool)
    calm = ["default/calm0", "default/calm1"]
    calm_names = [present(present(first.store.get(k)).pool) for k in calm]
    calm_pools = {name: edgelb.stored(name) for name in calm_names}
    writes = edgelb.writes()

    second = procs()
    reconciled: list[str] = []
    lock = threading.Lock()
    reconcile = second.reconciler.reconcile

    def counted(key: str) -> Any:
        with lock:
            reconciled.append(key)
        return reconcile(key)

    second.reconciler.reconcile = counted  # type: ignore[method-assign]
    second.start()
    wait_for(lambda: bool(second.verified), timeout=DEADLINE, what="the start-up verification")

    def repaired() -> bool:
        states = {b.key: b.state for b in second.store.bindings()}
        return (
            kube.get("default/deleted") is None
            and states.get("default/paused") == "Paused"
            and all(states.get(k) == "Ready" for k in ["default/replaced", "default/ports", *calm])
            and all(states.get(f"default/{n}") == "Ready" for n in ["pool-gone", "pool-edited"])
            and edgelb.stored(gone) is not None
            and [f["bindPort"] for f in present(edgelb.stored(edited))["haproxy"]["frontends"]] == [80]
        )

    # A guard, not a pace: a step that meets a conflict (the pool sweep and the start-up pass both
    # re-creating "pool-gone") retries on the lifecycle's backoff (1, 2, 4, 8, 16 s...); once, on
    # a loaded CI machine, that took over 20 s. Here it takes ~1 s.
    wait_for(repaired, timeout=90, what="every change made while down acted on")
    assert present(second.store.get("default/replaced")).uid != old_uid
    ports = present(edgelb.stored(present(present(second.store.get("default/ports")).pool)))
    assert [f["bindPort"] for f in ports["haproxy"]["frontends"]] == [8080]
    assert not set(reconciled) & set(calm), "an untouched Service is never reconciled"
    assert {name: edgelb.stored(name) for name in calm_pools} == calm_pools
    assert edgelb.writes() > writes and len(keys) == len(names)


def test_services_listed_before_the_cache_is_synced_wait_for_the_start_up_pass(
    procs: Callable[..., Proc],
) -> None:
    """The watch's initial list delivers every Service before ``mark_synced``: they fill the cache
    and queue nothing, or every settled binding would be reconciled anyway."""
    first = procs()
    keys = settled(first, ["a", "b", "c"])
    first.close()
    kube = first.kube
    _paused(kube, first, keys[1])

    second = procs()
    second.controller.start()
    for service in kube.list():
        second.controller.observe(service)
    assert len(second.controller.queue) == 0
    second.controller.mark_synced()
    assert set(second.controller.queue._queued) <= {keys[1]}
    wait_for(lambda: present(second.store.get(keys[1])).state == "Paused", timeout=DEADLINE, what="b paused")
    assert [present(second.store.get(k)).state for k in (keys[0], keys[2])] == ["Ready", "Ready"]
