"""The EdgeLB outage detector (``engine.runtime.recovery``), driven by calls with a fake clock.

``observe`` is fed what the client's hook would report, ``step`` is one round of the thread, the
clock is a number the test moves, the ping a fake that fails or answers, and ``wake`` counts its
calls: no thread, no sleep, except in the last tests, which run the real thread and wait on
conditions with deadlines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from engine.edgelb.errors import Unavailable
from engine.runtime.recovery import EdgeLBRecovery, answered
from engine.telemetry.metrics import Metrics
from tests.processes import wait_for

POOL = "/v2/pools/{name}"
METADATA = "/v2/pools/{name}/metadata"
OUTAGE = 10.0


class FakeEdgeLB:
    """A ping that answers or not, as the test says."""

    def __init__(self) -> None:
        self.up = True
        self.pings = 0

    def ping(self) -> str:
        self.pings += 1
        if not self.up:
            raise Unavailable("GET /ping: 503 injected fault", status=503)
        return "pong"


class Rig:
    def __init__(self, *, may_act: Callable[[], bool] = lambda: True, interval: float = 2.0) -> None:
        self.now = 1000.0
        self.edgelb = FakeEdgeLB()
        self.woken = 0
        self.wake_fails = False
        self.recovery = EdgeLBRecovery(
            ping=self.edgelb.ping,
            wake=self.wake,
            may_act=may_act,
            interval=interval,
            outage_after=OUTAGE,
            clock=lambda: self.now,
        )

    def wake(self) -> int:
        if self.wake_fails:
            raise RuntimeError("database is locked")
        self.woken += 1
        return 3

    def response(self, status: int, route: str = POOL) -> None:
        self.recovery.observe("GET", route, status, 0.01)


@pytest.mark.parametrize(
    ("route", "status", "expected"),
    [
        (POOL, 200, True),
        ("/ping", 200, True),
        (POOL, 404, True),  # the pool is gone: EdgeLB answered
        ("/v2/pools", 409, True),
        ("/v2/pools", 400, True),
        (POOL, 401, True),
        (POOL, 0, False),  # refused, reset, timed out
        (POOL, 500, False),
        (POOL, 502, False),
        (POOL, 503, False),
        (POOL, 504, False),
        (POOL, 429, False),
        (METADATA, 504, None),  # the pool is not deployed yet: says nothing about EdgeLB
        (METADATA, 503, False),
        (METADATA, 200, True),
    ],
)
def test_which_answers_are_failures(route: str, status: int, expected: bool | None) -> None:
    assert answered(route, status) is expected


def test_while_edgelb_answers_nothing_is_probed_or_woken() -> None:
    rig = Rig()
    for status in (200, 404, 409):
        rig.response(status)
    rig.now += 3600
    assert rig.recovery.step()
    assert not rig.recovery.failing and not rig.recovery.outage
    assert (rig.edgelb.pings, rig.woken) == (0, 0)


def test_a_failure_is_probed_until_edgelb_answers_and_an_outage_wakes_the_retrying_bindings() -> None:
    rig = Rig()
    rig.edgelb.up = False
    rig.response(503)
    assert rig.recovery.failing and not rig.recovery.outage
    for _ in range(3):
        rig.now += 4
        assert rig.recovery.step()
    assert rig.edgelb.pings == 3 and rig.woken == 0
    assert rig.recovery.failing and rig.recovery.outage
    rig.edgelb.up = True
    rig.now += 2
    rig.recovery.step()  # the probe answers: the outage is over
    assert not rig.recovery.failing and not rig.recovery.outage
    assert rig.woken == 0, "woken by the thread's next round, not inside the probe"
    assert rig.recovery.step()
    assert rig.woken == 1
    # Healthy again: no more probes, nothing more to wake.
    rig.now += 60
    rig.recovery.step()
    assert (rig.edgelb.pings, rig.woken) == (4, 1)


def test_any_answer_from_regular_work_ends_the_outage() -> None:
    rig = Rig()
    rig.response(0)
    rig.now += OUTAGE
    rig.response(404)
    assert not rig.recovery.failing
    rig.recovery.step()
    assert (rig.edgelb.pings, rig.woken) == (0, 1)


@pytest.mark.parametrize("lasted", [0.0, 3.0, OUTAGE - 0.1])
def test_a_failure_shorter_than_an_outage_wakes_nothing(lasted: float) -> None:
    # A flaky EdgeLB: a 503 now and then between answers is what backoff is for.
    rig = Rig()
    rig.response(503)
    rig.now += lasted
    rig.response(200)
    rig.recovery.step()
    assert not rig.recovery.failing
    assert (rig.edgelb.pings, rig.woken) == (0, 0)


def test_more_failures_do_not_restart_the_outage_clock() -> None:
    rig = Rig()
    rig.response(503)
    for _ in range(5):
        rig.now += 2.5
        rig.response(0)
    assert rig.recovery.outage
    rig.response(200)
    rig.recovery.step()
    assert rig.woken == 1


def test_not_yet_deployed_metadata_neither_starts_nor_ends_a_failure() -> None:
    rig = Rig()
    rig.response(504, METADATA)
    assert not rig.recovery.failing
    rig.response(503)
    rig.now += OUTAGE
    rig.response(504, METADATA)
    assert rig.recovery.failing and rig.recovery.outage


def test_only_a_replica_that_may_act_probes_and_wakes() -> None:
    leading = False
    rig = Rig(may_act=lambda: leading)
    rig.edgelb.up = False
    rig.response(503)
    rig.now += OUTAGE
    assert not rig.recovery.step(), "nothing done: the thread waits an interval"
    assert rig.edgelb.pings == 0
    rig.response(200)  # a request in flight when leadership was lost
    assert not rig.recovery.step()
    assert rig.woken == 0
    leading = True
    assert rig.recovery.step()
    assert (rig.edgelb.pings, rig.woken) == (0, 1), "the wake waited for leadership"


def test_a_failed_wake_is_tried_again() -> None:
    rig = Rig()
    rig.response(503)
    rig.now += OUTAGE
    rig.response(200)
    rig.wake_fails = True
    assert not rig.recovery.step()
    rig.wake_fails = False
    assert rig.recovery.step()
    assert rig.woken == 1
    rig.recovery.step()
    assert rig.woken == 1


def test_the_outage_is_announced_once(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.edgelb.up = False
    rig.response(503)
    with caplog.at_level(logging.INFO, logger="dklb.recovery"):
        for _ in range(10):
            rig.now += 2
            rig.recovery.step()
        rig.edgelb.up = True
        rig.recovery.step()
        rig.recovery.step()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "EdgeLB has not answered for 10s" in warnings[0], warnings
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("EdgeLB answers again after 20s" in m for m in infos), infos
    assert any(
        "bindings waiting on a retry queued to run now that EdgeLB answers again: 3" in m for m in infos
    )


def test_the_outage_gauge_follows_the_outage() -> None:
    rig = Rig()
    metrics = Metrics()
    metrics.watch_edgelb_outage(lambda: rig.recovery.outage)

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("dklb_edgelb_outage")

    assert gauge() == 0.0
    rig.response(0)
    assert gauge() == 0.0, "a failure is not an outage yet"
    rig.now += OUTAGE
    assert gauge() == 1.0
    rig.response(200)
    assert gauge() == 0.0


# ---- the thread ----------------------------------------------------------------------------------


def test_the_thread_probes_wakes_and_stops() -> None:
    rig = Rig(interval=0.01)
    recovery = rig.recovery
    recovery.start()
    try:
        thread = recovery.thread
        assert thread is not None and thread.is_alive()
        rig.edgelb.up = False
        rig.response(503)
        rig.now += OUTAGE  # the fake clock: the failures are an outage already
        wait_for(lambda: rig.edgelb.pings >= 2, timeout=10, what="the thread probing")
        rig.edgelb.up = True
        wait_for(lambda: rig.woken == 1, timeout=10, what="the retrying bindings woken")
        pings = rig.edgelb.pings
    finally:
        recovery.stop(timeout=10)
    assert not thread.is_alive()
    # The first ping that answered was the last: a healthy EdgeLB is not probed.
    assert rig.edgelb.pings == pings
    assert not recovery.failing


def test_stop_ends_an_idle_thread_and_a_probing_one() -> None:
    idle = Rig(interval=30.0)
    idle.recovery.start()
    probing = Rig(interval=30.0)
    probing.edgelb.up = False
    probing.recovery.start()
    probing.response(503)
    for rig in (idle, probing):
        # The probing thread waits 30 s between probes: stop cuts that wait short.
        rig.recovery.stop(timeout=10)
        thread = rig.recovery.thread
        assert thread is not None and not thread.is_alive()
    # A request finishing after stop starts nothing.
    idle.response(503)
    assert not idle.recovery.failing
    assert (idle.edgelb.pings, idle.woken) == (0, 0)
