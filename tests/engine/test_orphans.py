"""The orphan-pool sweeper (``engine.runtime.orphans``): what it deletes, what it never touches, and when.

Two layers. The decision (``decide``) is a pure function, table-tested: each row is a world of
pools, bindings and cached Services and the verdict on one pool (kept and why, a first sighting,
or deleted). The I/O (``sweep`` and ``OrphanSweeper``) runs against the deterministic engine
world of ``tests.engine.harness`` (SQLite store, fake EdgeLB, fake Kubernetes, the real
reconciler): the lost-create scenario of ``tests/e2e/test_faults.py`` replayed without
processes, a binding that joins the pool while the sweeper waits for the pool's lock, EdgeLB
failures, a fence that refuses, the gate, and a lost database whose pools survive a sweep even
if one ran before re-adoption.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.edgelb.errors import Unavailable
from engine.model.services import ANNOTATION, FINALIZER
from engine.model.translation import CREATED_BY_VARIABLE, object_name, pool_outline
from engine.runtime.cache import PoolLocks
from engine.runtime.fence import Fence, FencedEdgeLB
from engine.runtime.orphans import OrphanSweeper, _annotated_pool, decide, sweep
from engine.telemetry.metrics import Metrics
from tests.engine.harness import CLUSTER, World
from tests.fakes.edgelb import LIST, FakeEdgeLB
from tests.fakes.kube import make_service

POOL = "orphan"
OTHER_CLUSTER = "other-cluster"


# ---- the pure decision, table-tested ------------------------------------------------------------


@dataclass(frozen=True)
class B:
    """A binding as the decision reads it."""

    key: str
    pool: str | None = None
    config: dict[str, Any] | None = None


def pool(*owners: str, mark: str | None = CLUSTER, foreign: str | None = None) -> dict[str, Any]:
    """A pool holding one frontend and one backend per owner ("namespace/service")."""
    objects = []
    for owner in owners:
        namespace, service = owner.split("/")
        objects.append(object_name(cluster=CLUSTER, namespace=namespace, service=service, service_port=80))
    if foreign is not None:
        objects.append(foreign)
    body: dict[str, Any] = {
        "name": POOL,
        "haproxy": {
            "frontends": [{"name": n, "bindPort": 10000 + i} for i, n in enumerate(objects)],
            "backends": [{"name": n} for n in objects],
        },
    }
    if mark is not None:
        body["environmentVariables"] = {CREATED_BY_VARIABLE: mark}
    return body


def svc(key: str, *, type: str = "LoadBalancer", finalizer: bool = False, names: str | None = None) -> dict:
    namespace, name = key.split("/")
    meta: dict[str, Any] = {"namespace": namespace, "name": name, "annotations": {}, "finalizers": []}
    if finalizer:
        meta["finalizers"] = [FINALIZER]
    if names is not None:
        meta["annotations"][ANNOTATION] = f"name: {names}\nsize: 1\n"
    return {"metadata": meta, "spec": {"type": type}}


GONE = "default/gone"  # the Service whose objects the orphan still holds: deleted, not in the cache

# (id, pool, bindings, cached Services, seen at the previous sweep, verdict)
# verdict: "delete", "candidate" (first sighting: kept until the next sweep), or a substring of
# the reason it is kept.
ROWS = [
    ("unmarked pool, second sighting", pool(GONE, mark=None), [], [], {POOL}, "not created by dklb"),
    ("another cluster's mark", pool(GONE, mark=OTHER_CLUSTER), [], [], {POOL}, "not created by dklb"),
    ("marked, first sighting", pool(GONE), [], [], set(), "candidate"),
    ("marked, second sighting", pool(GONE), [], [], {POOL}, "delete"),
    ("marked and empty, second sighting", pool(), [], [], {POOL}, "delete"),
    ("a binding refers to it", pool(GONE), [B("default/a", pool=POOL)], [], {POOL}, "binding default/a"),
    (
        "a binding's recorded config names it",
        pool(GONE),
        [B("default/p", config={"name": POOL})],
        [],
        {POOL},
        "configuration of binding default/p",
    ),
    (
        "a binding on another pool",
        pool(GONE),
        [B("default/x", pool="elsewhere", config={"name": "elsewhere"})],
        [],
        {POOL},
        "delete",
    ),
    ("a foreign frontend", pool(GONE, foreign="operators-own"), [], [], {POOL}, "'operators-own'"),
    (
        "an object of another cluster",
        pool(GONE, foreign=f"{OTHER_CLUSTER}:default:web:80"),
        [],
        [],
        {POOL},
        "not this cluster's",
    ),
    (
        "its owner is still a LoadBalancer in the cache",
        pool("default/live"),
        [],
        [svc("default/live")],
        {POOL},
        "Service default/live",
    ),
    (
        "its owner is now a ClusterIP Service",
        pool("default/live"),
        [],
        [svc("default/live", type="ClusterIP")],
        {POOL},
        "delete",
    ),
    (
        "its owner still carries dklb's finalizer",
        pool("default/live"),
        [],
        [svc("default/live", type="ClusterIP", finalizer=True)],
        {POOL},
        "Service default/live",
    ),
    (
        "a LoadBalancer's annotation names it (Pending)",
        pool(GONE),
        [],
        [svc("default/new", names=POOL)],
        {POOL},
        "annotation of Service default/new",
    ),
    (
        "a ClusterIP's annotation names it",
        pool(GONE),
        [],
        [svc("default/new", type="ClusterIP", names=POOL)],
        {POOL},
        "delete",
    ),
]


@pytest.mark.parametrize("shape", [dict, pool_outline], ids=["whole pool", "outline"])
@pytest.mark.parametrize(
    ("body", "bindings", "services", "seen", "verdict"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_decide(
    body: dict[str, Any],
    bindings: list[B],
    services: list[dict],
    seen: set[str],
    verdict: str,
    shape: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Whole, or as the pool sweep hands its listing over (``pool_outline``): the same verdict."""
    # One-shot iterators, as a sweep passes them (read row by row): each is read once.
    decision = decide(
        [shape(body)], cluster=CLUSTER, bindings=iter(bindings), services=iter(services), seen=seen
    )
    if verdict == "delete":
        assert decision.delete == (POOL,) and decision.candidates == {POOL} and not decision.kept
    elif verdict == "candidate":
        assert decision.delete == () and decision.candidates == {POOL} and not decision.kept
    else:
        assert decision.delete == () and decision.candidates == frozenset()
        assert verdict in decision.kept[POOL], decision.kept


def test_decide_over_many_pools_deletes_only_orphans_seen_before() -> None:
    orphan_a, orphan_b, fresh, used = (dict(pool(GONE), name=n) for n in ("a", "b", "fresh", "used"))
    decision = decide(
        [orphan_a, orphan_b, fresh, used, {"haproxy": {}}],  # a pool without a name is skipped
        cluster=CLUSTER,
        bindings=[B("default/u", pool="used")],
        services=[],
        seen={"a", "b", "used", "vanished"},
    )
    assert decision.delete == ("a", "b")
    assert decision.candidates == {"a", "b", "fresh"}
    assert set(decision.kept) == {"used"}


# ---- the I/O, in the engine world -------------------------------------------------------------


class LateEdgeLB(FakeEdgeLB):
    """A POST is applied but its answer is lost: the pool appears only when the test ``land``s it."""

    def __init__(self) -> None:
        super().__init__(auto_metadata=True)
        self.in_flight: list[dict[str, Any]] = []

    def create_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        self.in_flight.append(body)
        raise Unavailable("POST /v2/pools: no answer within the read timeout (test)")

    def land(self) -> None:
        for body in self.in_flight:
            self.seed(body)
        self.in_flight.clear()


def sweeper(world: World, **kwargs: Any) -> OrphanSweeper:
    options: dict[str, Any] = {
        "edgelb": world.edgelb,
        "store": world.store,
        "cache": world.reconciler.cache,
        "locks": world.reconciler.locks,
        "cluster": CLUSTER,
        "may_sweep": lambda: True,
    }
    return OrphanSweeper(**(options | kwargs))


def orphan_world(tmp_path: Path) -> World:
    """The e2e bug replayed: the create's answer is lost, the Service deleted, then the pool lands."""
    late = LateEdgeLB()
    world = World(tmp_path, edgelb=late)
    world.kube.apply(make_service("late", config=f"name: {POOL}\n"))
    for _ in range(5):
        world.step()
        if late.in_flight:
            break
    binding = world.binding("default/late")
    assert binding.state == "Provisioning" and binding.last_error and "no answer" in binding.last_error
    world.kube.delete("default/late")
    world.settle()
    assert world.kube.get("default/late") is None and world.states() == {}, "Deleting saw 404 and let go"
    late.land()
    assert world.edgelb.names() == [POOL]
    return world


def test_the_pool_of_a_lost_create_landing_after_the_delete_goes_at_the_second_sweep(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = orphan_world(tmp_path)
    metrics = Metrics()
    s = sweeper(world, on_deleted=metrics.orphan_pool_deleted)
    caplog.set_level(logging.INFO, logger="dklb.orphans")

    assert s.run() == [] and s.seen == {POOL}, "first sighting: only remembered"
    assert world.edgelb.names() == [POOL]
    assert s.run() == [POOL]
    assert world.edgelb.names() == [] and s.seen == frozenset()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f'EdgeLB pool "{POOL}" was created by dklb and no Service uses it any more (orphan): deleted'
    ]
    assert metrics.registry.get_sample_value("dklb_orphan_pools_deleted_total") == 1.0
    assert s.run() == [], "nothing left"
    world.assert_invariants()


def test_pools_in_use_and_foreign_pools_survive_any_number_of_sweeps(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.kube.apply(make_service("a", config="name: shared\n"))
    world.kube.apply(make_service("b", ports=[(6380, 32214)], config="name: shared\n"))
    world.kube.apply(make_service("c"))
    world.seed_foreign_pool({"name": "operators", "haproxy": {"frontends": [], "backends": []}})
    world.settle()
    pools = world.edgelb.names()
    assert len(pools) == 3
    s = sweeper(world)
    for _ in range(3):
        assert s.run() == []
    assert world.edgelb.names() == pools and s.seen == frozenset()
    world.assert_invariants()


def test_a_listing_handed_over_is_used_instead_of_a_second_one(tmp_path: Path) -> None:
    """``dklb run`` hands the pool sweep's listing over: one resync lists the pools once."""
    world = orphan_world(tmp_path)
    s = sweeper(world)
    listing = world.edgelb.list_pools()
    lists = world.edgelb.calls[LIST]
    assert s.run(listing) == [] and s.seen == {POOL}
    assert s.run(listing) == [POOL], "the orphan goes at the second sweep, as with its own listing"
    assert world.edgelb.calls[LIST] == lists, "no listing of its own"
    assert world.edgelb.names() == []


def test_the_store_summaries_the_sweep_reads_are_what_the_store_holds(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.kube.apply(make_service("b", config="name: shared\n"))
    world.kube.apply(make_service("a", ports=[(6380, 32214)], config="name: shared\n"))
    world.kube.apply(make_service("c"))
    world.settle()

    read = [(b.key, b.pool, b.config) for b in world.store.summaries()]

    assert read == [(b.key, b.pool, b.config) for b in world.store.bindings()]
    assert [key for key, _, _ in read] == ["default/a", "default/b", "default/c"]
    assert all(pool and config for _, pool, config in read)


def test_sweeping_stops_and_forgets_while_it_may_not(tmp_path: Path) -> None:
    world = orphan_world(tmp_path)
    allowed = [True]
    s = sweeper(world, may_sweep=lambda: allowed[0])
    s.run()
    assert s.seen == {POOL}
    allowed[0] = False  # leadership lost, or (after a restart) the verification not done yet
    calls = sum(world.edgelb.calls.values())
    assert s.run() == [] and s.seen == frozenset()
    assert sum(world.edgelb.calls.values()) == calls, "not even a read"
    allowed[0] = True
    assert s.run() == [], "a first sighting again"
    assert s.run() == [POOL]


class JoiningLocks(PoolLocks):
    """The pool's lock, taken right after a worker committed under it: ``before`` runs first."""

    def __init__(self, before: Callable[[], None]) -> None:
        super().__init__()
        self.before = before

    @contextmanager
    def hold(self, pool: str | None) -> Iterator[None]:
        self.before()
        with super().hold(pool):
            yield


def test_a_service_accepted_into_the_pool_while_the_sweeper_waits_for_the_lock_keeps_it(
    tmp_path: Path,
) -> None:
    world = orphan_world(tmp_path)

    def accept_a_service() -> None:
        world.kube.apply(make_service("joiner", config=f"name: {POOL}\n"))
        world.sync_cache()
        world.reconciler.reconcile("default/joiner")  # Pending -> accept: a binding on the pool
        # ... and the cache forgets it again, so only the store (read under the lock) can tell.
        world.reconciler.cache.remove("default/joiner")

    s = sweeper(world)
    s.run()
    s._locks = JoiningLocks(accept_a_service)
    assert s.run() == []
    assert world.edgelb.names() == [POOL] and s.seen == frozenset()
    assert world.binding("default/joiner").pool == POOL


def test_edgelb_failures_postpone_the_deletion(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    world = orphan_world(tmp_path)
    s = sweeper(world)
    s.run()
    world.edgelb.fail_next("list_pools", Unavailable)
    assert s.run() == [] and s.seen == {POOL}, "a failed list keeps the candidates"
    world.edgelb.fail_next("delete_pool", Unavailable)
    assert s.run() == [] and s.seen == {POOL}, "a failed DELETE: retried at the next sweep"
    world.edgelb.fail_next("get_pool", Unavailable)
    assert s.run() == [] and s.seen == {POOL}, "a failed re-read under the lock: same"
    assert s.run() == [POOL] and world.edgelb.names() == []
    assert "listing the EdgeLB pools failed" in caplog.text and "next sweep retries" in caplog.text


def test_a_pool_deleted_by_someone_else_meanwhile_is_not_counted(tmp_path: Path) -> None:
    world = orphan_world(tmp_path)
    deleted: list[str] = []
    s = sweeper(world, on_deleted=deleted.append)
    s.run()

    class Vanishing(PoolLocks):
        @contextmanager
        def hold(self, pool: str | None) -> Iterator[None]:
            world.edgelb.drop(POOL)
            with super().hold(pool):
                yield

    s._locks = Vanishing()
    assert s.run() == [] and deleted == [] and s.seen == frozenset()


def test_the_fence_refuses_the_delete_of_a_replica_that_no_longer_leads(tmp_path: Path) -> None:
    world = orphan_world(tmp_path)
    leading = [True]
    fenced = FencedEdgeLB(world.edgelb, Fence(lambda: leading[0]))
    # may_sweep still says yes: leadership ended between the gate and the DELETE.
    s = sweeper(world, edgelb=fenced)
    s.run()
    leading[0] = False
    assert s.run() == [] and s.seen == frozenset()
    assert world.edgelb.names() == [POOL] and world.edgelb.calls["DELETE"] == 0


def test_after_a_lost_database_no_pool_is_deleted_even_by_a_premature_sweep(tmp_path: Path) -> None:
    world = World(tmp_path)
    for i in range(5):
        world.kube.apply(make_service(f"d{i}", ports=[(80, 30000 + i)]))
    for i in range(4):
        world.kube.apply(
            make_service(f"s{i}", ports=[(8000 + i, 31000 + i)], config=f"name: shared-{i % 2}\n")
        )
    world.settle()
    pools = world.edgelb.names()
    assert len(pools) == 7

    world.store.close()
    for path in tmp_path.glob("dklb.db*"):
        path.unlink()
    del world.store  # closed: restart() opens a new one
    world.restart()
    world.sync_cache()  # the watch has listed every Service; nothing reconciled yet
    assert world.store.bindings() == []

    # dklb run gates the sweeper on the start-up verification; even without that gate, every
    # pool's owners are LoadBalancer Services in the cache.
    s = sweeper(world)
    assert s.run() == [] and s.run() == [] and s.seen == frozenset()
    writes = world.edgelb.writes()
    world.settle()  # re-adoption
    assert s.run() == [] and s.run() == []
    assert world.edgelb.names() == pools and world.edgelb.writes() == writes, "re-adoption wrote nothing"
    world.assert_invariants()


def test_sweep_reports_what_it_deleted_and_what_it_remembers(tmp_path: Path) -> None:
    world = orphan_world(tmp_path)
    sweep_world = functools.partial(
        sweep,
        edgelb=world.edgelb,
        store=world.store,
        cache=world.reconciler.cache,
        locks=world.reconciler.locks,
        cluster=CLUSTER,
    )
    first = sweep_world(seen=frozenset())
    assert first.deleted == [] and first.candidates == {POOL}
    second = sweep_world(seen=first.candidates)
    assert second.deleted == [POOL] and second.candidates == frozenset()


@pytest.mark.parametrize(
    ("text", "pool"),
    [
        ("name: p1\n", "p1"),
        ("size: 2\n", None),
        ("[" * 3000 + "]" * 3000, None),  # nested too deeply for the parser: names nothing
        ("name: [unclosed", None),
        ("- a list\n", None),
        ("name: 5\n", None),
    ],
)
def test_the_pool_an_annotation_names(text: str, pool: str | None) -> None:
    service = {"metadata": {"annotations": {ANNOTATION: text}}}
    assert _annotated_pool(service) == pool
