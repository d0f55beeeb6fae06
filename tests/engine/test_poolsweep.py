"""Resync by list: what keeping watch over settled bindings costs, and what it still catches.

With ``harness.World`` (fake clock; ``advance`` runs the pool sweep and the metadata refresh as
the controller does every resync period): N Ready bindings cost exactly one ``GET /v2/pools``,
no per-binding GET and no store commit per resync; a pool modified out of band wakes only its
own bindings, which repair it; each pool's metadata is read once per metadata period, however
many bindings share it; a status changed behind dklb's back is restored; a listing that fails
wakes nobody and commits nothing. With the threaded ``Controller`` (real clock): a restart
verifies every Ready binding with one listing (only a modified pool's binding reads its pool,
a Service whose status was cleared is given its address again, a Service deleted while down is
released) and a follower makes no EdgeLB request at all.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.edgelb.errors import Unavailable
from engine.model.settings import Settings
from engine.runtime import lifecycle, poolsweep
from engine.runtime.controller import Controller
from engine.runtime.poolsweep import MetadataSchedule, PoolSweep
from engine.runtime.reconciler import Reconciler
from engine.store import Store, database_url, migrate
from tests.checks import present
from tests.engine.harness import METADATA_PERIOD, World
from tests.fakes.edgelb import GET, LIST, METADATA, FakeEdgeLB
from tests.fakes.kube import FakeKube, make_service
from tests.processes import wait_for

CLUSTER = "kubernetes-cluster"
DEADLINE = 20.0


def shared_and_own(world: World, *, own: int, shared: int) -> tuple[list[str], list[str]]:
    """``own`` Services with a pool each, ``shared`` Services in the pool "shared"; settled Ready."""
    owners = [f"default/own{i}" for i in range(own)]
    for i in range(own):
        world.kube.apply(make_service(f"own{i}", ports=[(80, 30100 + i)], config=f"name: own{i}\n"))
    sharers = [f"default/sh{i}" for i in range(shared)]
    for i in range(shared):
        world.kube.apply(make_service(f"sh{i}", ports=[(90 + i, 30200 + i)], config="name: shared\n"))
    world.settle()
    assert set(world.states().values()) == {"Ready"}
    return owners, sharers


def ingress(world: World, key: str) -> Any:
    return present(world.kube.get(key))["status"].get("loadBalancer", {}).get("ingress")


def test_n_ready_bindings_cost_one_listing_and_nothing_else_per_resync(world: World) -> None:
    owners, sharers = shared_and_own(world, own=12, shared=8)
    world.advance(600)  # the first sweep: the metadata schedule learns the pools
    calls, commits = dict(world.edgelb.calls), world.store.write_transactions
    kube_writes, edgelb_writes = world.kube.writes, world.edgelb.writes()

    for _ in range(4):
        world.advance(30)

    assert world.edgelb.calls[LIST] == calls[LIST] + 4, "one listing per resync"
    assert world.edgelb.calls[GET] == calls[GET], "no binding read its pool"
    assert world.store.write_transactions == commits, "no store commit"
    assert (world.kube.writes, world.edgelb.writes()) == (kube_writes, edgelb_writes)
    # 13 pools, due once per 300 s each: in 120 s at most the ones due, never one per binding.
    assert world.edgelb.calls[METADATA] - calls[METADATA] <= 13
    assert set(world.states().values()) == {"Ready"} and len(owners + sharers) == 20


def test_a_modified_pool_wakes_only_its_bindings_and_is_repaired(world: World) -> None:
    owners, sharers = shared_and_own(world, own=5, shared=3)
    pool = present(world.edgelb.stored("shared"))
    pool["haproxy"]["frontends"][0]["bindPort"] = 1234  # sh0's frontend, changed by an operator
    world.edgelb.seed(pool)

    assert sorted(world.swept()) == ["default/sh0"], "only the binding whose objects differ"
    world.edgelb.drop("own3")
    assert sorted(world.sweep.sweep()) == ["default/own3", "default/sh0"]

    world.advance(30)
    world.settle()
    assert world.edgelb.names() == ["own0", "own1", "own2", "own3", "own4", "shared"]
    assert sorted(f["bindPort"] for f in present(world.edgelb.stored("shared"))["haproxy"]["frontends"]) == [
        90,
        91,
        92,
    ]
    drifted = {
        key for key in owners + sharers if any(h.trigger == "drift" for h in world.store.history(key=key))
    }
    assert drifted == {"default/own3", "default/sh0"}
    world.assert_invariants()


def fresh_sweep(world: World) -> PoolSweep:
    """The sweep of a process started again on the same store (nothing in memory)."""
    return PoolSweep(
        edgelb=world.edgelb,
        store=world.store,
        cache=world.reconciler.cache,
        states=world.sweep.states,
        cluster=CLUSTER,
        metadata=MetadataSchedule(300.0),
    )


def test_after_a_restart_the_first_sweep_normalizes_nothing_it_saw_and_still_sees_drift(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The normal forms are kept in the store: a restart's first sweep normalizes only what
    changed, and the sweeps of a process at rest write nothing."""
    owners, sharers = shared_and_own(world, own=4, shared=3)
    world.sweep.sweep()
    assert len(world.store.normal_forms()) >= len(owners + sharers)
    commits = world.store.write_transactions
    world.sweep.sweep()
    assert world.store.write_transactions == commits, "nothing new: nothing written"

    normalized: list[Any] = []
    real = poolsweep.normalized_objects

    def counted(found: Any) -> Any:
        normalized.append(found)
        return real(found)

    monkeypatch.setattr(poolsweep, "normalized_objects", counted)
    assert fresh_sweep(world).sweep() == []
    assert normalized == [], "every set was seen before the restart"
    assert world.store.write_transactions == commits

    pool = present(world.edgelb.stored("shared"))
    pool["haproxy"]["frontends"][0]["bindPort"] = 1234
    world.edgelb.seed(pool)
    assert fresh_sweep(world).sweep() == ["default/sh0"], "a kept form hides no change"
    assert len(normalized) == 1, "only the changed listing is normalized"


def test_normal_forms_no_longer_used_are_dropped(world: World) -> None:
    shared_and_own(world, own=3, shared=0)
    # What a long life leaves behind: forms of objects nobody has any more.
    world.store.keep_normal_forms({i.to_bytes(16, "big"): b"x" * 16 for i in range(3000)})
    sweep = fresh_sweep(world)
    assert sweep.sweep() == []
    kept = world.store.normal_forms()
    assert len(kept) < 10 and all(i.to_bytes(16, "big") not in kept for i in range(3000))
    assert fresh_sweep(world).sweep() == [], "what is kept still says every pool is as recorded"


def test_metadata_is_read_once_per_pool_per_period(world: World) -> None:
    shared_and_own(world, own=2, shared=6)  # 3 pools, 8 bindings
    world.advance(1)  # the metadata schedule learns the 3 pools
    reads = world.edgelb.calls[METADATA]
    periods = 10
    for _ in range(int(periods * METADATA_PERIOD / 10)):
        world.advance(10)
    made = world.edgelb.calls[METADATA] - reads
    # Each pool every period (+/- 10 %): about 3 per period, never 8 (one per binding).
    assert 3 * (periods - 1) <= made <= 3 * (periods + 1), made


def test_a_status_changed_behind_dklbs_back_is_restored_within_the_metadata_period(world: World) -> None:
    owners, sharers = shared_and_own(world, own=2, shared=2)
    world.advance(1)
    world.kube.set_ingress(present(world.kube.get("default/sh1")), [{"ip": "10.9.9.9"}])
    world.advance(METADATA_PERIOD * 1.1 + 1)
    assert ingress(world, "default/sh1") == [{"ip": "127.0.0.1"}]
    assert all(ingress(world, k) == [{"ip": "127.0.0.1"}] for k in owners + sharers)


def test_new_addresses_in_the_metadata_reach_every_service_of_the_pool(world: World) -> None:
    owners, sharers = shared_and_own(world, own=1, shared=3)
    world.advance(1)
    world.edgelb.agent_ip = world.edgelb.public_ip = "10.0.0.7"
    writes = world.kube.writes
    world.advance(METADATA_PERIOD * 1.1 + 1)
    assert all(ingress(world, k) == [{"ip": "10.0.0.7"}] for k in owners + sharers)
    assert world.kube.writes == writes + 4, "one status write per Service, nothing else"


def test_a_failed_listing_wakes_nobody_and_commits_nothing(world: World) -> None:
    shared_and_own(world, own=3, shared=2)
    world.advance(600)
    commits, gets = world.store.write_transactions, world.edgelb.calls[GET]
    world.edgelb.fail_next("GET /v2/pools", Unavailable("down", status=503))
    with pytest.raises(Unavailable):
        world.sweep.sweep()
    world.step()
    assert world.store.write_transactions == commits
    assert world.edgelb.calls[GET] == gets
    assert set(world.states().values()) == {"Ready"}
    world.edgelb.drop("own1")
    world.advance(30)  # the next period lists again
    world.settle()
    assert "own1" in world.edgelb.names()


# ---- the threaded controller: start-up and leadership ---------------------------------------------


class Proc:
    """One controller process with its pool sweep, over a database file and shared fakes."""

    def __init__(
        self,
        db: Path,
        kube: FakeKube,
        edgelb: FakeEdgeLB,
        *,
        leading: bool = True,
        sweep_interval: float = 0.3,
    ) -> None:
        self.kube, self.edgelb = kube, edgelb
        self.store = Store(database_url(str(db)))
        machine = lifecycle.load()
        self.reconciler = Reconciler(
            store=self.store,
            lifecycle=machine,
            edgelb=edgelb,
            kube=kube,
            settings=Settings(cluster_name=CLUSTER),
            rng=random.Random(7),
        )
        self.leading = leading
        self.sweep = PoolSweep(
            edgelb=edgelb,
            store=self.store,
            cache=self.reconciler.cache,
            states=[n for n, s in machine.states.items() if s.settled and s.handler is not None],
            cluster=CLUSTER,
            metadata=MetadataSchedule(300.0),
        )
        self.verified: list[float] = []
        self.controller = Controller(
            self.reconciler,
            workers=4,
            scan_interval=0.2,
            active=lambda: self.leading,
            on_verified=self.verified.append,
            sweep=self.sweep,
            sweep_interval=sweep_interval,
            metadata_interval=0.1,
        )

    def start(self) -> None:
        for service in self.kube.list():
            self.reconciler.cache.put(service)
        self.controller.start()
        self.controller.mark_synced()

    def ready(self, keys: list[str]) -> bool:
        states = {b.key: b.state for b in self.store.bindings()}
        return all(states.get(k) == "Ready" for k in keys)

    def close(self) -> None:
        self.controller.stop()
        self.store.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    db = tmp_path / "dklb.db"
    migrate.upgrade(str(db))
    kube, edgelb = FakeKube(), FakeEdgeLB(auto_metadata=True)
    made: list[Proc] = []

    def make(**kwargs: Any) -> Proc:
        proc = Proc(db, kube, edgelb, **kwargs)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.close()


def test_a_restart_verifies_every_ready_binding_with_one_listing(procs: Callable[..., Proc]) -> None:
    first = procs()
    first.start()
    keys = []
    for i in range(6):
        first.controller.observe(first.kube.apply(make_service(f"s{i}", ports=[(80, 30300 + i)])))
        keys.append(f"default/s{i}")
    wait_for(lambda: first.ready(keys), timeout=DEADLINE, what="6 Services Ready")
    first.close()

    # While dklb is down: a pool modified, a status cleared, a Service deleted.
    edgelb, kube = first.edgelb, first.kube
    modified = present(present(first.store.get("default/s1")).pool)
    pool = present(edgelb.stored(modified))
    pool["haproxy"]["frontends"][0]["bindPort"] = 4321
    edgelb.seed(pool)
    kube.set_ingress(present(kube.get("default/s2")), [])
    kube.delete("default/s5")
    calls = dict(edgelb.calls)
    untouched = ["default/s0", "default/s3", "default/s4"]
    wakeups = {k: present(first.store.get(k)).next_wakeup for k in untouched}

    second = procs()
    second.start()
    wait_for(lambda: bool(second.verified), timeout=DEADLINE, what="the start-up verification")
    wait_for(
        lambda: second.ready(keys[:5]) and kube.get("default/s5") is None,
        timeout=DEADLINE,
        what="everything repaired",
    )
    repaired = present(edgelb.stored(modified))
    assert [f["bindPort"] for f in repaired["haproxy"]["frontends"]] == [80]
    assert present(kube.get("default/s2"))["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.1"}]
    assert second.sweep.sweeps >= 1 and edgelb.calls[LIST] > calls.get(LIST, 0)
    # The bindings nothing happened to ran no handler and committed nothing.
    assert {k: present(second.store.get(k)).next_wakeup for k in untouched} == wakeups
    # s1 (drift: its handler's GET, then Provisioning's GET-merge-PUT), s2's handler, s5's Deleting.
    assert edgelb.calls[GET] - calls.get(GET, 0) <= 5
    assert edgelb.calls[LIST] - calls.get(LIST, 0) >= 1
    assert len(second.verified) == 1


def test_a_follower_makes_no_edgelb_request(procs: Callable[..., Proc]) -> None:
    leader = procs()
    leader.start()
    leader.controller.observe(leader.kube.apply(make_service("s", ports=[(80, 30400)])))
    wait_for(lambda: leader.ready(["default/s"]), timeout=DEADLINE, what="Ready")
    leader.close()

    calls = sum(leader.edgelb.calls.values())
    follower = procs(leading=False)
    runs: list[None] = []
    sweep = follower.controller._sweep

    def counted(*, periodic: bool = True) -> None:
        runs.append(None)
        sweep(periodic=periodic)

    follower.controller._sweep = counted  # type: ignore[method-assign]
    follower.start()
    # Several sweep periods pass: a follower looks at nothing.
    wait_for(lambda: len(runs) >= 3, timeout=3 * DEADLINE, what="three sweep periods")
    assert sum(leader.edgelb.calls.values()) == calls
    assert follower.sweep.sweeps == 0
    assert not follower.verified, "a follower verifies nothing"


def test_leadership_regained_lists_the_pools_at_once(procs: Callable[..., Proc]) -> None:
    """A settled binding has nothing scheduled: a pool changed while another replica led is seen
    by a listing as soon as this replica leads again, not a sweep period (here an hour) later."""
    proc = procs(sweep_interval=3600.0)
    proc.start()
    proc.controller.observe(proc.kube.apply(make_service("s", ports=[(80, 30500)])))
    wait_for(lambda: proc.ready(["default/s"]), timeout=DEADLINE, what="Ready")
    wait_for(lambda: not proc.controller._startup_sweep_pending, timeout=DEADLINE, what="the start-up sweep")

    proc.leading = False
    name = present(present(proc.store.get("default/s")).pool)
    pool = present(proc.edgelb.stored(name))
    pool["haproxy"]["frontends"][0]["bindPort"] = 4321
    proc.edgelb.seed(pool)
    proc.leading = True
    proc.controller.enqueue_all()

    def repaired() -> bool:
        return [f["bindPort"] for f in present(proc.edgelb.stored(name))["haproxy"]["frontends"]] == [80]

    wait_for(repaired, timeout=DEADLINE, what="the pool repaired after the takeover")


def test_each_sweep_is_reported_with_the_bindings_it_woke(procs: Callable[..., Proc]) -> None:
    """The ``dklb_pool_sweeps_total{result}`` / ``dklb_pool_sweep_woken_total`` hook: a listing
    that fails is reported failed; one that finds a modified pool says whom it woke."""
    proc = procs()
    reports: list[tuple[bool, int]] = []
    proc.controller.on_sweep = lambda listed, woken: reports.append((listed, woken))
    proc.start()
    proc.controller.observe(proc.kube.apply(make_service("s", ports=[(80, 30600)])))
    wait_for(lambda: proc.ready(["default/s"]), timeout=DEADLINE, what="Ready")
    wait_for(lambda: (True, 0) in reports, timeout=DEADLINE, what="a sweep that found nothing")

    name = present(present(proc.store.get("default/s")).pool)
    pool = present(proc.edgelb.stored(name))
    pool["haproxy"]["frontends"][0]["bindPort"] = 4321
    proc.edgelb.seed(pool)
    wait_for(lambda: (True, 1) in reports, timeout=DEADLINE, what="a sweep that woke the binding")

    proc.edgelb.fail_next(LIST, Unavailable)
    wait_for(lambda: (False, 0) in reports, timeout=DEADLINE, what="a failed sweep reported")


def test_the_orphan_sweep_follows_each_periodic_sweep_with_its_listing(procs: Callable[..., Proc]) -> None:
    """``after_sweep`` (the orphan sweep in ``dklb run``) gets the pools the periodic sweep listed,
    so one resync lists them once; never the start-up sweep's; None while this replica may not sweep
    (the orphan sweeper then forgets its candidates and lists nothing)."""
    proc = procs()
    handed: list[list[Any] | None] = []
    proc.controller.after_sweep = handed.append
    proc.start()
    proc.controller.observe(proc.kube.apply(make_service("s", ports=[(80, 30700)])))
    wait_for(lambda: proc.ready(["default/s"]), timeout=DEADLINE, what="Ready")
    wait_for(lambda: any(handed), timeout=DEADLINE, what="a periodic sweep's listing handed over")
    listing = next(found for found in handed if found)
    assert sorted(pool["name"] for pool in listing) == sorted(proc.edgelb.names())

    proc.leading = False
    handed.clear()
    wait_for(lambda: len(handed) >= 2, timeout=DEADLINE, what="two periods as a follower")
    assert all(found is None for found in handed)


def test_a_listing_cut_mid_stream_wakes_nobody_and_the_next_whole_one_does(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing is read one pool at a time: a fault after some pools must not make the sweep
    compare (and wake) against the part read; a whole listing is handed to the orphan sweep as
    outlines (name, mark, object names), not as the pools."""
    shared_and_own(world, own=4, shared=3)
    world.edgelb.drop("own3")  # a whole listing wakes default/own3
    sweep = fresh_sweep(world)

    def cut() -> Iterator[dict[str, Any]]:
        for i, pool in enumerate(world.edgelb.list_pools()):
            if i == 2:
                raise Unavailable("GET /v2/pools: connection failed mid-answer")
            yield pool

    monkeypatch.setattr(world.edgelb, "iter_pools", cut, raising=False)
    with pytest.raises(Unavailable):
        sweep.sweep()
    assert sweep.take_listing() is None

    monkeypatch.delattr(world.edgelb, "iter_pools")
    assert sweep.sweep() == ["default/own3"]
    outlines = present(sweep.take_listing())
    assert sorted(p["name"] for p in outlines) == ["own0", "own1", "own2", "shared"]
    shared = next(p for p in outlines if p["name"] == "shared")
    assert sorted(f["name"] for f in shared["haproxy"]["frontends"]) == [
        f"{CLUSTER}:default:sh{i}:{90 + i}" for i in range(3)
    ]
    assert all(set(f) == {"name"} for p in outlines for f in p["haproxy"]["frontends"])
