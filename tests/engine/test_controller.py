"""The threaded controller: worker threads, APScheduler wake-ups and the database scan, for real.

Unlike ``harness.World`` (which plays the controller without threads and with a fake clock),
these tests run ``Controller`` with its worker threads, its scheduler and the real clock over
a SQLite file and the fakes. They prove that Services observed after ``start`` and
``mark_synced`` all reach Ready (several at once, some sharing a pool); that EdgeLB failures
are retried through scheduler wake-ups; that nothing is reconciled before ``mark_synced``, so a
binding whose Service is not yet in the cache survives a restart (and, as a control, is cleaned
up once the synced cache really lacks it); that a wake-up written into the database by another
``Store`` (as ``dklb retry`` does) is acted on through the periodic scan; that ``stop``
returns promptly and stops the scheduler; and that ``Store.keys`` (what it reads) gives the keys that
``Store.bindings`` and ``Store.due`` would give, in their order.

Waiting is always for a condition, polled every 20 ms up to a deadline; never a fixed sleep.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.edgelb.errors import Unavailable
from engine.model.services import FINALIZER
from engine.model.settings import Settings
from engine.runtime import lifecycle
from engine.runtime.controller import Controller
from engine.runtime.reconciler import Reconciler
from engine.store import Store, database_url, migrate, utcnow
from tests.checks import present
from tests.fakes.edgelb import GET as GET_POOL
from tests.fakes.edgelb import FakeEdgeLB
from tests.fakes.kube import FakeKube, make_service
from tests.processes import wait_for

DEADLINE = 20.0
POLL = 0.02
CLUSTER = "kubernetes-cluster"
REDIS = "name: dklb-redis\nfrontends:\n- port: 16379\n  servicePort: 6379\n"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> float:
    """Poll ``condition`` every 20 ms until it holds; returns the seconds it took."""
    start = time.monotonic()
    wait_for(condition, timeout=timeout, interval=POLL, what=what)
    return time.monotonic() - start


class SpyReconciler(Reconciler):
    """The real reconciler, recording which keys it reconciled and what it answered."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.started = threading.Event()
        self._spy_lock = threading.Lock()
        self._finished: list[tuple[str, float | None]] = []

    def reconcile(self, key: str) -> float | None:
        self.started.set()
        result = super().reconcile(key)
        with self._spy_lock:
            self._finished.append((key, result))
        return result

    def finished(self) -> list[tuple[str, float | None]]:
        with self._spy_lock:
            return list(self._finished)


@dataclass
class Rig:
    """One controller process over a database file, a fake cluster and a fake EdgeLB."""

    db: Path
    kube: FakeKube
    edgelb: FakeEdgeLB
    store: Store = field(init=False)
    reconciler: SpyReconciler = field(init=False)
    controller: Controller = field(init=False)

    def __post_init__(self) -> None:
        self.store = Store(database_url(str(self.db)))
        self.reconciler = SpyReconciler(
            store=self.store,
            lifecycle=lifecycle.load(),
            edgelb=self.edgelb,
            kube=self.kube,
            settings=Settings(cluster_name=CLUSTER),
            rng=random.Random(7),
        )
        self.controller = Controller(self.reconciler, workers=4, scan_interval=0.2)

    def apply(self, service: dict[str, Any]) -> str:
        """A user applies the Service; the watch delivers it to the controller."""
        applied = self.kube.apply(service)
        self.controller.observe(applied)
        meta = applied["metadata"]
        return f"{meta['namespace']}/{meta['name']}"

    def states(self) -> dict[str, str]:
        return {b.key: b.state for b in self.store.bindings()}

    def all_ready(self, keys: list[str]) -> bool:
        states = self.states()
        return all(states.get(k) == "Ready" for k in keys)

    def wake_job(self, key: str) -> Any:
        return self.controller.scheduler.get_job(f"wake:{key}")

    def close(self) -> None:
        self.controller.stop()
        self.store.close()


@pytest.fixture
def rigs(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    db = tmp_path / "dklb.db"
    migrate.upgrade(str(db))
    kube = FakeKube()
    edgelb = FakeEdgeLB(auto_metadata=True)
    made: list[Rig] = []

    def make() -> Rig:
        rig = Rig(db=db, kube=kube, edgelb=edgelb)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def history(store: Store, key: str) -> list[tuple[str | None, str, str]]:
    return [(h.from_state, h.to_state, h.trigger) for h in reversed(store.history(key=key, limit=None))]


CLAIM = ("Provisioning", "Provisioning", "claim_pool")
# The walk of a binding whose pool dklb creates: it claims the pool before creating it.
WALK = [
    (None, "Pending", "observed"),
    ("Pending", "Provisioning", "accept"),
    CLAIM,
    ("Provisioning", "AwaitingMetadata", "provisioned"),
    ("AwaitingMetadata", "Ready", "addresses_found"),
]
# The walk of a binding joining a pool another binding claimed.
JOIN = [step for step in WALK if step != CLAIM]


def test_observed_services_all_reach_ready(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    rig.controller.start()
    rig.controller.mark_synced()
    keys = [
        rig.apply(make_service(f"own{i}", ports=[(80, 30010 + i)], config=f"name: own{i}\n"))
        for i in range(3)
    ]
    keys += [
        rig.apply(
            make_service(
                f"shared{i}",
                namespace=f"ns{i}",
                ports=[(90 + i, 30020 + i)],
                config="name: shared\n",
                # Three namespaces share the pool: all carry the same sharing key.
                shared_pool_key="k",
            )
        )
        for i in range(3)
    ]
    keys.append(rig.apply(make_service("redis", config=REDIS)))

    wait_until(lambda: rig.all_ready(keys), "every binding to reach Ready")

    assert sorted(rig.states()) == sorted(keys)
    assert rig.edgelb.names() == ["dklb-redis", "own0", "own1", "own2", "shared"]
    shared = present(rig.edgelb.stored("shared"))
    assert sorted(f["bindPort"] for f in shared["haproxy"]["frontends"]) == [90, 91, 92]
    pools = {p.name: p.ref_count for p in rig.store.pools()}
    assert pools == {"dklb-redis": 1, "own0": 1, "own1": 1, "own2": 1, "shared": 3}
    assert pools == rig.store.live_reference_counts()
    walks = {key: history(rig.store, key) for key in keys}
    for key, walk in walks.items():
        assert walk in (WALK, JOIN), key
        if "shared" not in key:
            assert walk == WALK, f"{key} created its own pool"
    assert sum(CLAIM in walk for walk in walks.values()) == 5, "each pool is claimed exactly once"
    for key in keys:
        service = rig.kube.get(key)
        assert service is not None
        assert service["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.1"}], key
        assert FINALIZER in service["metadata"]["finalizers"], key
        # Ready waits for its backstop (a day +/- 10 %; the pool sweep is what notices changes)
        # in the database, where the wake-up scan finds it: no APScheduler job per binding.
        binding = present(rig.store.get(key))
        assert binding.next_wakeup is not None, key
        assert timedelta(hours=21) < binding.next_wakeup - utcnow() < timedelta(hours=27), key
        assert rig.wake_job(key) is None, key
    assert rig.edgelb.calls["POST"] == 5, "one pool creation per pool"


def test_edgelb_failures_are_retried_through_scheduler_wakeups(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    rig.edgelb.fail_next("create_pool", Unavailable("boom", status=503))
    rig.edgelb.fail_next("create_pool", Unavailable("boom again", status=503))
    rig.controller.start()
    rig.controller.mark_synced()
    key = rig.apply(make_service("redis", config=REDIS))

    wait_until(lambda: rig.all_ready([key]), "the binding to reach Ready after two failures")

    failures = [h for h in rig.store.history(key=key, limit=None) if h.trigger == "failed"]
    assert [(h.attempt, h.reason) for h in reversed(failures)] == [
        (1, "EdgeLBUnavailable"),
        (2, "EdgeLBUnavailable"),
    ]
    assert "boom" in failures[-1].message and "boom again" in failures[0].message
    assert rig.edgelb.calls["POST"] == 3
    binding = rig.store.get(key)
    assert binding is not None and (binding.attempts, binding.last_error) == (0, None)


def test_a_claimed_pool_is_created_without_reading_it_again(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    rig.controller.start()
    rig.controller.mark_synced()
    key = rig.apply(make_service("redis", config=REDIS))

    wait_until(lambda: rig.all_ready([key]), "the binding to reach Ready")

    assert [h.trigger for h in reversed(rig.store.history(key=key, limit=None))][:4] == [
        "observed",
        "accept",
        "claim_pool",
        "provisioned",
    ]
    # The accept guard found it missing, Provisioning claimed it on that reading, and the run
    # after the claim only POSTs.
    assert (rig.edgelb.calls[GET_POOL], rig.edgelb.calls["POST"]) == (1, 1)


FOREIGN_POOL: dict[str, Any] = {
    "name": "dklb-redis",
    "haproxy": {
        "frontends": [
            {
                "name": "theirs",
                "bindPort": 9999,
                "protocol": "TCP",
                "linkBackend": {"defaultBackend": "theirs"},
            }
        ],
        "backends": [
            {
                "name": "theirs",
                "protocol": "TCP",
                "services": [{"endpoint": {"type": "ADDRESS", "address": "10.0.0.9", "port": 8443}}],
            }
        ],
    },
}


def _post_meets(rig: Rig, *, made_by: Callable[[Any], None]) -> None:
    """The first POST of a pool finds it made meanwhile (``made_by`` makes it), and answers 409."""
    create = rig.edgelb.create_pool
    met = threading.Event()

    def racing(pool: Any) -> Any:
        if not met.is_set():
            met.set()
            made_by(pool)
        return create(pool)

    rig.edgelb.create_pool = racing  # type: ignore[method-assign]


def _delete_and_wait(rig: Rig, key: str) -> None:
    rig.kube.delete(key)
    deleted = rig.kube.get(key)
    if deleted is not None:
        rig.controller.observe(deleted)
    wait_until(lambda: rig.store.get(key) is None, "the binding to be removed")


def test_a_pool_someone_makes_between_the_claim_and_the_post_stays_theirs(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    _post_meets(rig, made_by=lambda _: rig.edgelb.seed(FOREIGN_POOL))
    rig.controller.start()
    rig.controller.mark_synced()
    key = rig.apply(make_service("redis", config=REDIS))

    wait_until(lambda: rig.all_ready([key]), "the binding to reach Ready in the pool met")

    assert [h.reason for h in rig.store.history(key=key, limit=None) if h.trigger == "claim_withdrawn"] == [
        "PoolExists"
    ]
    record = rig.store.pool("dklb-redis")
    assert record is not None and (record.created_by_dklb, record.pre_existing) == (False, True)
    # Merged into, and never deleted: the pool was never dklb's.
    _delete_and_wait(rig, key)
    stored = rig.edgelb.stored("dklb-redis")
    assert stored is not None
    assert [f["name"] for f in stored["haproxy"]["frontends"]] == ["theirs"]


def test_a_pool_whose_post_answer_was_lost_is_dklbs_again(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    # dklb's own POST landed but its answer was lost: the retry meets dklb's own mark.
    _post_meets(rig, made_by=lambda pool: rig.edgelb.seed(pool))
    rig.controller.start()
    rig.controller.mark_synced()
    key = rig.apply(make_service("redis", config=REDIS))

    wait_until(lambda: rig.all_ready([key]), "the binding to reach Ready after the 409")

    record = rig.store.pool("dklb-redis")
    assert record is not None and (record.created_by_dklb, record.pre_existing) == (True, False)
    _delete_and_wait(rig, key)
    assert rig.edgelb.names() == []


def test_nothing_is_reconciled_before_mark_synced(rigs: Callable[..., Rig]) -> None:
    first = rigs()
    first.controller.start()
    first.controller.mark_synced()
    key = first.apply(make_service("redis", config=REDIS))
    wait_until(lambda: first.all_ready([key]), "redis to reach Ready")
    first.controller.stop()
    before = first.store.get(key)
    assert before is not None

    # A restart: the binding is in the database, the new process's cache is still empty.
    second = rigs()
    second.controller.start()
    other = second.apply(make_service("web", ports=[(80, 30080)], config="name: web\n"))
    assert not second.reconciler.started.wait(0.5), "no worker may run before mark_synced"
    # It waits in the cache; mark_synced's pass judges every cached key.
    assert len(second.controller.queue) == 0 and second.reconciler.cache.get(other) is not None
    assert second.store.get(key) == before
    assert second.edgelb.names() == ["dklb-redis"]

    # The watch's initial list delivers the redis Service; only then is the cache synced.
    second.controller.observe(present(second.kube.get(key)))
    second.controller.mark_synced()
    wait_until(lambda: second.all_ready([other]), "the other Service to reach Ready")
    wait_until(
        lambda: key in [k for k, _ in second.reconciler.finished()], "the restored binding to be reconciled"
    )

    after = second.store.get(key)
    assert after is not None and (after.id, after.state, after.pool) == (before.id, "Ready", "dklb-redis")
    assert history(second.store, key) == WALK, "no delete was ever fired"
    assert second.edgelb.names() == ["dklb-redis", "web"]
    service = second.kube.get(key)
    assert service is not None and FINALIZER in service["metadata"]["finalizers"]


def test_control_a_synced_cache_without_the_service_cleans_the_binding_up(rigs: Callable[..., Rig]) -> None:
    first = rigs()
    first.controller.start()
    first.controller.mark_synced()
    key = first.apply(make_service("redis", config=REDIS))
    wait_until(lambda: first.all_ready([key]), "redis to reach Ready")
    first.controller.stop()

    # What the gate prevents: reconciling against a cache that does not hold the Service.
    second = rigs()
    second.controller.start()
    second.controller.mark_synced()
    wait_until(lambda: second.store.get(key) is None, "the binding to be removed")
    assert history(second.store, key)[-2:] == [
        ("Ready", "Deleting", "delete"),
        ("Deleting", "Removed", "deleted"),
    ]
    assert second.edgelb.names() == [] and second.store.pools() == []


def test_a_wakeup_written_by_another_store_is_picked_up_by_the_scan(rigs: Callable[..., Rig]) -> None:
    rig = rigs()
    rig.controller.start()
    rig.controller.mark_synced()
    key = rig.apply(make_service("redis", config=REDIS))
    wait_until(lambda: rig.all_ready([key]), "redis to reach Ready")

    ready = rig.store.get(key)
    assert ready is not None and ready.next_wakeup is not None
    assert ready.next_wakeup - utcnow() > timedelta(minutes=4), "the resync is minutes away"
    assert rig.wake_job(key) is None, "a day-long wake-up is the scan's, not an APScheduler job"

    # The pool disappears out of band; nothing would notice before the resync...
    rig.edgelb.delete_pool("dklb-redis")
    gets = rig.edgelb.calls["GET /v2/pools/{name}"]
    # ...unless someone runs `dklb retry`: another process writes the wake-up into the database.
    other = Store(database_url(str(rig.db)))
    try:
        assert other.set_wakeup(key, utcnow()) is True
    finally:
        other.close()

    took = wait_until(lambda: rig.edgelb.stored("dklb-redis") is not None, "the scan to act on the wake-up")
    wait_until(lambda: rig.all_ready([key]), "redis to be Ready again")

    assert took < 10.0, f"acted on within a few scan intervals, took {took:.1f}s"
    assert rig.edgelb.calls["GET /v2/pools/{name}"] > gets, "the Ready handler verified the pool"
    assert history(rig.store, key)[len(WALK) :] == [
        ("Ready", "Provisioning", "drift"),
        ("Provisioning", "AwaitingMetadata", "provisioned"),
        ("AwaitingMetadata", "Ready", "addresses_found"),
    ]
    again = rig.store.get(key)
    assert again is not None and again.next_wakeup is not None
    assert again.next_wakeup - utcnow() > timedelta(minutes=4), "back to waiting for the resync"


STOP_POINTS: list[tuple[str, bool, bool]] = [
    ("before-sync", False, False),
    ("synced-idle", True, False),
    ("after-work", True, True),
]


@pytest.mark.parametrize(
    ("synced", "worked"), [(s, w) for _, s, w in STOP_POINTS], ids=[i for i, _, _ in STOP_POINTS]
)
def test_stop_returns_promptly_and_stops_the_scheduler(
    rigs: Callable[..., Rig], synced: bool, worked: bool
) -> None:
    rig = rigs()
    controller = rig.controller
    controller.start()
    assert controller.scheduler.running
    assert all(t.is_alive() for t in controller._threads) and len(controller._threads) == 4
    if synced:
        controller.mark_synced()
        assert controller.scheduler.get_job("scan-wakeups") is not None
    if worked:
        key = rig.apply(make_service("redis", config=REDIS))
        wait_until(lambda: rig.all_ready([key]), "redis to reach Ready")

    started = time.monotonic()
    controller.stop()
    took = time.monotonic() - started

    assert took < 2.0, f"stop took {took:.2f}s"
    assert not controller.scheduler.running
    assert not any(t.is_alive() for t in controller._threads), "every worker thread has exited"
    finished = len(rig.reconciler.finished())
    controller.observe(rig.kube.apply(make_service("late", ports=[(81, 30081)])))
    assert len(controller.queue) == 0, "a stopped controller queues nothing"
    assert len(rig.reconciler.finished()) == finished


def test_on_start_every_binding_is_verified_once_and_that_is_reported_once(
    rigs: Callable[..., Rig],
) -> None:
    first = rigs()
    first.controller.start()
    first.controller.mark_synced()
    keys = [first.apply(make_service(f"svc-{i}", ports=[(6379, 30000 + i)])) for i in range(5)]
    wait_until(lambda: first.all_ready(keys), "5 Services Ready")
    first.close()

    # A restart: the new process knows the 5 bindings from the database.
    second = rigs()
    reported: list[float] = []
    second.controller.on_verified = reported.append
    reads, writes = second.edgelb.calls[GET_POOL], second.edgelb.writes()
    for key in keys:
        second.reconciler.cache.put(present(second.kube.get(key)))
    second.controller.start()
    second.controller.mark_synced()

    wait_until(lambda: bool(reported), "the verification report")
    reconciled = {key for key, _ in second.reconciler.finished()}
    assert set(keys) <= reconciled, "reported only after every binding was reconciled"
    assert len(reported) == 1 and reported[0] >= 0
    # Verified for real: each Ready binding read its pool again, though its resync was minutes away.
    assert second.edgelb.calls[GET_POOL] >= reads + 5
    assert second.edgelb.writes() == writes, "verifying writes nothing"
    before = len(second.reconciler.finished())
    second.controller.enqueue_all()
    wait_until(lambda: len(second.reconciler.finished()) >= before + 5, "a second pass")
    assert len(reported) == 1, "reported once, not on every later pass"


def test_store_keys_are_the_keys_of_bindings_and_of_due_in_their_order(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    migrate.upgrade(str(db))
    store = Store(database_url(str(db)))
    try:
        now = utcnow()
        wakeups = {"ns/b": 30.0, "ns/a": -10.0, "ns/c": -20.0, "aa/z": 60.0, "ns/d": 0.0}
        for key, seconds in wakeups.items():
            namespace, name = key.split("/")
            store.create(
                namespace=namespace, name=name, uid=name, state="Pending", trigger="observed", now=now
            )
            store.set_wakeup(key, now + timedelta(seconds=seconds))

        assert store.keys() == [b.key for b in store.bindings()]
        assert store.keys() == ["aa/z", "ns/a", "ns/b", "ns/c", "ns/d"]
        assert store.keys(due=now) == [b.key for b in store.due(now)]
        assert store.keys(due=now) == ["ns/c", "ns/a", "ns/d"]
    finally:
        store.close()
