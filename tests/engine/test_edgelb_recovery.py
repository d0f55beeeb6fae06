"""After an EdgeLB outage, the threaded controller re-verifies at once what the outage left waiting.

The real ``Controller`` (worker threads, APScheduler wake-ups) and ``EdgeLBRecovery`` (its probe
thread) over a SQLite file, the fake cluster and a fake EdgeLB behind a switch that reports every
call the way the HTTP client's ``on_response`` hook does. Ready's retry backoff is made 10 minutes
and its own (declared) resync a fraction of a second, so one failed resync during the outage leaves
the binding waiting far longer than the test: only the recovery can make it run again within the deadline.
The recovery's clock is a number the test moves (an outage is failures lasting 10 s or more);
everything else runs on the real clock, and every wait is a condition with a deadline.

Also here: ``Store.retrying_keys`` (what ``Controller.retry_now`` reads), as a table.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine.edgelb.errors import EdgeLBError, Unavailable
from engine.model.settings import Settings
from engine.runtime import lifecycle
from engine.runtime.controller import Controller
from engine.runtime.lifecycle import Backoff
from engine.runtime.reconciler import Reconciler
from engine.runtime.recovery import OUTAGE_AFTER, EdgeLBRecovery
from engine.store import Binding, Change, Store, database_url, migrate, utcnow
from tests.checks import present
from tests.fakes.edgelb import FakeEdgeLB
from tests.fakes.kube import FakeKube, make_service
from tests.processes import wait_for

T = TypeVar("T")
CLUSTER = "kubernetes-cluster"
DEADLINE = 10.0
RESYNC = 0.3
LONG_BACKOFF = 600.0


class SwitchedEdgeLB(FakeEdgeLB):
    """The fake EdgeLB, down (every call 503) while ``down``; each call reported to ``on_response``."""

    def __init__(self) -> None:
        super().__init__(auto_metadata=True)
        self.down = False
        self.on_response: Callable[[str, str, int, float], None] = lambda *_: None

    def _answer(self, method: str, route: str, call: Callable[[], T]) -> T:
        if self.down:
            self.on_response(method, route, 503, 0.001)
            raise Unavailable(f"{method} {route}: 503 EdgeLB is down", status=503)
        try:
            result = call()
        except EdgeLBError as exc:
            self.on_response(method, route, exc.status or 0, 0.001)
            raise
        self.on_response(method, route, 200, 0.001)
        return result

    def ping(self) -> str:
        return self._answer("GET", "/ping", lambda: "pong")

    def list_pools(self) -> list[dict[str, Any]]:
        return self._answer("GET", "/v2/pools", super().list_pools)

    def get_pool(self, name: str) -> dict[str, Any]:
        return self._answer("GET", "/v2/pools/{name}", lambda: super(SwitchedEdgeLB, self).get_pool(name))

    def create_pool(self, pool: dict[str, Any]) -> dict[str, Any]:
        return self._answer("POST", "/v2/pools", lambda: super(SwitchedEdgeLB, self).create_pool(pool))

    def update_pool(self, pool: dict[str, Any]) -> dict[str, Any]:
        return self._answer("PUT", "/v2/pools/{name}", lambda: super(SwitchedEdgeLB, self).update_pool(pool))

    def delete_pool(self, name: str) -> None:
        self._answer("DELETE", "/v2/pools/{name}", lambda: super(SwitchedEdgeLB, self).delete_pool(name))

    def get_metadata(self, name: str) -> dict[str, Any]:
        return self._answer(
            "GET", "/v2/pools/{name}/metadata", lambda: super(SwitchedEdgeLB, self).get_metadata(name)
        )


class Rig:
    """A controller with its recovery over a database file, the fake cluster and the switched EdgeLB."""

    def __init__(self, db: Path) -> None:
        self.now = 0.0  # the recovery's clock
        self.kube = FakeKube()
        self.edgelb = SwitchedEdgeLB()
        self.store = Store(database_url(str(db)))
        machine = lifecycle.load()
        # One failed resync makes the binding wait 10 minutes: far beyond any deadline here.
        # Its own resync (declared; the pool sweep is left out here) runs every fraction of a
        # second, so a Ready binding meets the outage through its handler.
        machine.states["Ready"] = dataclasses.replace(
            machine.states["Ready"],
            retry=Backoff(base=LONG_BACKOFF, factor=2, cap=LONG_BACKOFF, jitter=0),
            resync=RESYNC,
        )
        self.reconciler = Reconciler(
            store=self.store,
            lifecycle=machine,
            edgelb=self.edgelb,
            kube=self.kube,
            settings=Settings(cluster_name=CLUSTER, resync_period=RESYNC),
            rng=random.Random(7),
        )
        self.controller = Controller(self.reconciler, workers=2, scan_interval=0.2)
        self.recovery = EdgeLBRecovery(
            ping=self.edgelb.ping,
            wake=self.controller.retry_now,
            may_act=lambda: self.controller.synced,
            interval=0.05,
            clock=lambda: self.now,
        )
        self.edgelb.on_response = self.recovery.observe

    def start(self) -> None:
        self.controller.start()
        self.controller.mark_synced()
        self.recovery.start()

    def apply(self, service: dict[str, Any]) -> str:
        applied = self.kube.apply(service)
        self.controller.observe(applied)
        meta = applied["metadata"]
        return f"{meta['namespace']}/{meta['name']}"

    def binding_where(self, key: str, condition: Callable[[Binding], bool]) -> Callable[[], Binding | None]:
        """What ``wait_for`` polls: the binding once ``condition`` holds for it."""

        def found() -> Binding | None:
            binding = self.store.get(key)
            return binding if binding is not None and condition(binding) else None

        return found

    def close(self) -> None:
        self.recovery.stop()
        self.controller.stop()
        self.store.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    db = tmp_path / "dklb.db"
    migrate.upgrade(str(db))
    made = Rig(db)
    yield made
    made.close()


def test_a_ready_binding_failed_during_an_outage_is_reverified_as_soon_as_edgelb_answers(rig: Rig) -> None:
    rig.start()
    key = rig.apply(make_service("redis", config="name: dklb-redis\n"))
    wait_for(
        rig.binding_where(key, lambda b: b.state == "Ready"),
        timeout=DEADLINE,
        what="the binding Ready",
    )

    rig.edgelb.down = True
    failed = wait_for(
        rig.binding_where(key, lambda b: b.last_error is not None),
        timeout=DEADLINE,
        what="a resync failing during the outage",
    )
    assert failed.state == "Ready" and failed.attempts == 1
    assert "503 EdgeLB is down" in present(failed.last_error)
    waits = present(failed.next_wakeup) - utcnow()
    assert waits > timedelta(seconds=LONG_BACKOFF / 2), "only a wake can make it run within the deadline"
    assert rig.recovery.failing, "the failed request was reported to the recovery"
    rig.now += OUTAGE_AFTER  # the failures have lasted long enough to be an outage
    assert rig.recovery.outage

    rig.edgelb.down = False
    verified = wait_for(
        rig.binding_where(key, lambda b: b.last_error is None),
        timeout=DEADLINE,
        what="the binding re-verified once EdgeLB answers",
    )
    assert verified.state == "Ready" and verified.attempts == 0
    assert not rig.recovery.failing and not rig.recovery.outage
    # Back to its resync period, not to what was left of the backoff.
    assert present(verified.next_wakeup) - utcnow() < timedelta(seconds=5)


def test_a_short_failure_leaves_the_backoff_alone(rig: Rig) -> None:
    rig.start()
    key = rig.apply(make_service("redis", config="name: dklb-redis\n"))
    wait_for(rig.binding_where(key, lambda b: b.state == "Ready"), what="the binding Ready")
    rig.edgelb.down = True
    wait_for(
        rig.binding_where(key, lambda b: b.last_error is not None),
        timeout=DEADLINE,
        what="a resync failing",
    )
    rig.edgelb.down = False
    # The probe answers after a failure shorter than an outage (the clock did not move).
    wait_for(lambda: not rig.recovery.failing, timeout=DEADLINE, what="the probe answered")
    binding = present(rig.store.get(key))
    assert binding.last_error is not None and binding.attempts == 1, "still waiting on its backoff"
    assert present(binding.next_wakeup) - utcnow() > timedelta(seconds=LONG_BACKOFF / 2)


def test_retry_now_does_nothing_before_the_cache_is_synced(rig: Rig) -> None:
    rig.controller.start()
    assert rig.controller.retry_now() == 0


# ---- Store.retrying_keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bindings", "expected"),
    [
        ({}, []),
        # name: (last_error, wake-up in seconds from now or None)
        ({"settled": (None, 300.0)}, []),
        ({"failing": ("503", 300.0)}, ["default/failing"]),
        ({"due": ("503", -5.0)}, ["default/due"]),
        ({"no-wakeup": ("pool conflict", None)}, []),
        (
            {
                "late": ("503", 600.0),
                "settled": (None, 60.0),
                "soon": ("reset", 30.0),
                "rejected": ("x", None),
            },
            ["default/soon", "default/late"],
        ),
    ],
)
def test_retrying_keys(
    tmp_path: Path, bindings: dict[str, tuple[str | None, float | None]], expected: list[str]
) -> None:
    db = tmp_path / "dklb.db"
    migrate.upgrade(str(db))
    store = Store(database_url(str(db)))
    try:
        now = utcnow()
        for name, (error, wakeup) in bindings.items():
            created = store.create(
                namespace="default", name=name, uid=name, state="Ready", trigger="observed"
            )
            store.commit(
                Change(
                    binding_id=created.id,
                    expected_state="Ready",
                    to_state="Ready",
                    trigger="failed" if error else "resync",
                    record=False,
                    last_error=error,
                    next_wakeup=None if wakeup is None else now + timedelta(seconds=wakeup),
                )
            )
        assert store.retrying_keys() == expected
    finally:
        store.close()
