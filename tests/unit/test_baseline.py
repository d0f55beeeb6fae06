"""The benchmark's baseline (``bench.baseline``) reproduces the Go dklb's algorithm, not a strawman.

Proves, with an injected clock: the token bucket is golang.org/x/time/rate's (burst, then one
token per 1/qps, borrowed from the future, refilled up to the burst); the controller rate limiter
is client-go's default (per-item 5 ms·2^n until forgotten, max'ed with the bucket); the queue keeps
client-go's promises (dedupe, no key handed out twice at once, re-queue after done, the earlier of
two delayed adds wins). With an in-memory EdgeLB and a recording Kubernetes: what one sync does
(GET -> POST; GET -> PUT always; metadata -> status only when available, written unconditionally),
last-writer-wins settings on a shared pool, deletes (PUT without the objects, DELETE of an empty pool,
re-creation of a pool that is gone: the Go dklb's fault), and errors (counted, a Warning Event,
never re-queued, the item's backoff not forgotten).
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.baseline import (
    Baseline,
    ControllerRateLimiter,
    RateLimitingQueue,
    Stats,
    TokenBucket,
)
from engine.edgelb.errors import Unavailable
from engine.model.services import ANNOTATION
from tests.checks import present
from tests.fakes.edgelb import DELETE, GET, METADATA, POST, PUT, FakeEdgeLB

CLUSTER = "kubernetes-cluster"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingKube:
    def __init__(self) -> None:
        self.statuses: list[tuple[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    def update_status(self, service: dict[str, Any]) -> None:
        self.statuses.append((service["metadata"]["name"], service["status"]["loadBalancer"].get("ingress")))

    def event(self, service: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        self.events.append((service["metadata"]["name"], type, reason))


def service(
    name: str, *, pool: str, port: int = 80, bind: int = 10000, cpus: float = 0.1, kind: str = "LoadBalancer"
) -> dict[str, Any]:
    annotation = f"name: {pool}\ncpus: {cpus}\nfrontends:\n- {{port: {bind}, servicePort: {port}}}\n"
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"uid-{name}",
            "annotations": {ANNOTATION: annotation},
        },
        "spec": {"type": kind, "ports": [{"port": port, "nodePort": 30000 + port, "protocol": "TCP"}]},
    }


@pytest.fixture
def world() -> tuple[Baseline, FakeEdgeLB, RecordingKube, Clock]:
    clock = Clock()
    edgelb, kube = FakeEdgeLB(), RecordingKube()
    queue = RateLimitingQueue(ControllerRateLimiter(clock=clock), clock=clock)
    baseline = Baseline(edgelb=edgelb, kube=kube, queue=queue, stats=Stats(), cluster=CLUSTER)
    return baseline, edgelb, kube, clock


def run_queue(baseline: Baseline) -> int:
    """Let every delay pass, then process every item; how many were processed."""
    clock = baseline.queue.clock
    assert isinstance(clock, Clock)
    clock.now += 3600
    processed = 0
    while baseline.process_next(timeout=0):
        processed += 1
    return processed


# ---- rate limiting --------------------------------------------------------------------------------------


def test_the_bucket_allows_the_burst_then_one_token_per_interval_borrowed_from_the_future() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 100, clock=clock)
    assert [bucket.reserve() for _ in range(100)] == [0.0] * 100
    assert [round(bucket.reserve(), 6) for _ in range(3)] == [0.1, 0.2, 0.3]
    clock.now += 1.0  # 10 tokens come back; 3 were borrowed
    assert [bucket.reserve() for _ in range(7)] == [0.0] * 7
    assert round(bucket.reserve(), 6) == 0.1
    clock.now += 3600  # refills to the burst, no further
    assert [bucket.reserve() for _ in range(100)] == [0.0] * 100
    assert round(bucket.reserve(), 6) == 0.1


def test_the_controller_rate_limiter_is_the_max_of_item_backoff_and_bucket() -> None:
    clock = Clock()
    limiter = ControllerRateLimiter(10, 100, clock=clock)
    assert [limiter.when("a") for _ in range(4)] == [0.005, 0.01, 0.02, 0.04]
    assert limiter.when("b") == 0.005  # per item
    limiter.forget("a")
    assert limiter.when("a") == 0.005
    for _ in range(94):  # 100 tokens taken in all
        limiter.when("c")
    assert round(limiter.when("d"), 6) == 0.1  # the bucket now dominates a fresh item
    fresh = ControllerRateLimiter(clock=clock)
    assert [fresh.when("x") for _ in range(30)][-1] == 1000.0  # capped


# ---- the queue ------------------------------------------------------------------------------------------


def test_the_queue_dedupes_and_requeues_a_key_added_while_processing() -> None:
    clock = Clock()
    queue = RateLimitingQueue(ControllerRateLimiter(clock=clock), clock=clock)
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert queue.get(timeout=0) == "a"
    queue.add("a")  # while a worker holds it: not handed out again before done
    assert queue.get(timeout=0) == "b"
    assert queue.get(timeout=0) is None
    queue.done("a")
    assert queue.get(timeout=0) == "a"
    queue.done("a")
    queue.done("b")
    assert queue.get(timeout=0) is None
    queue.shutdown()
    queue.add("c")
    assert queue.get() is None


def test_delayed_adds_wait_for_their_time_and_the_earlier_one_wins() -> None:
    clock = Clock()
    queue = RateLimitingQueue(ControllerRateLimiter(clock=clock), clock=clock)
    queue.add_after("a", 5.0)
    queue.add_after("a", 2.0)  # earlier: replaces
    queue.add_after("a", 9.0)  # later: ignored
    assert queue.waiting() == 1 and queue.get(timeout=0) is None
    clock.now += 2.0
    assert queue.get(timeout=0) == "a"
    queue.done("a")
    clock.now += 10.0  # the superseded entry at +5 is not handed out again
    assert queue.get(timeout=0) is None and queue.waiting() == 0


# ---- informer handlers ----------------------------------------------------------------------------------


def test_only_load_balancers_are_enqueued_and_deletes_carry_their_tombstone(world: Any) -> None:
    baseline, _, _, _ = world
    baseline.on_upsert(service("plain", pool="p", kind="ClusterIP"))
    assert baseline.queue.waiting() == 0
    baseline.on_upsert(service("web", pool="p"))
    baseline.on_upsert(service("web", pool="p"))  # a resync: deduplicated while waiting
    assert baseline.queue.waiting() == 1
    baseline.on_upsert(service("web", pool="p", kind="ClusterIP"))  # was a LoadBalancer: still enqueued
    baseline.on_delete(service("gone", pool="p"))
    assert baseline.tombstones.keys() == {("ns/gone", "uid-gone")}
    assert baseline.queue.waiting() == 2
    assert baseline.stats.counts["enqueued"] == 4
    assert run_queue(baseline) == 2


# ---- sync -----------------------------------------------------------------------------------------------


def test_a_sync_creates_then_puts_every_time_and_writes_status_only_when_metadata_is_there(
    world: Any,
) -> None:
    baseline, edgelb, kube, _ = world
    baseline.on_upsert(service("web", pool="pool-web"))
    assert run_queue(baseline) == 1
    assert dict(edgelb.calls) == {GET: 1, POST: 1, METADATA: 1}  # 404, create, 504
    assert kube.statuses == []

    baseline.on_upsert(service("web", pool="pool-web"))  # e.g. the resync
    assert len(baseline.queue) == 0 and baseline.queue.waiting() == 1  # AddRateLimited: 5 ms at least
    run_queue(baseline)
    assert (edgelb.calls[GET], edgelb.calls[PUT], edgelb.calls[METADATA]) == (
        2,
        1,
        2,
    )  # PUT of an unchanged pool
    assert kube.statuses == []

    edgelb.ready("pool-web")
    for round_ in (1, 2):
        baseline.on_upsert(service("web", pool="pool-web"))
        run_queue(baseline)
        # Written unconditionally, same value or not.
        assert kube.statuses == [("web", [{"ip": "127.0.0.1"}])] * round_
    assert edgelb.calls[PUT] == 3
    stats = baseline.stats.snapshot()
    assert (stats["syncs"], stats["status_updates"], stats["metadata_not_available"]) == (4, 2, 2)
    assert "errors" not in stats


def test_a_shared_pool_keeps_both_services_and_takes_the_last_writers_settings(world: Any) -> None:
    baseline, edgelb, _, _ = world
    baseline.on_upsert(service("a", pool="shared", bind=10001, cpus=0.1))
    baseline.on_upsert(service("b", pool="shared", bind=10002, cpus=0.5))
    run_queue(baseline)
    pool = edgelb.stored("shared")
    assert [f["bindPort"] for f in pool["haproxy"]["frontends"]] == [10001, 10002]
    assert pool["cpus"] == 0.5
    baseline.on_upsert(service("a", pool="shared", bind=10001, cpus=0.1))
    run_queue(baseline)
    assert edgelb.stored("shared")["cpus"] == 0.1  # last writer wins, back and forth


def test_deletes_remove_the_objects_then_the_empty_pool_and_recreate_a_pool_that_is_gone(world: Any) -> None:
    baseline, edgelb, kube, _ = world
    a, b = service("a", pool="shared", bind=10001), service("b", pool="shared", bind=10002)
    for s in (a, b):
        baseline.on_upsert(s)
    run_queue(baseline)
    edgelb.ready("shared")
    baseline.on_delete(a)
    run_queue(baseline)
    names = [f["name"] for f in edgelb.stored("shared")["haproxy"]["frontends"]]
    assert names == [f"{CLUSTER}:ns:b:80"]
    assert kube.statuses == []  # no status for a deleted Service
    baseline.on_delete(b)
    run_queue(baseline)
    assert edgelb.names() == [] and edgelb.calls[DELETE] == 1

    # A deleted Service whose pool is already gone: the Go dklb created it again.
    baseline.on_upsert(service("c", pool="other"))
    run_queue(baseline)
    edgelb.drop("other")
    baseline.on_delete(service("c", pool="other"))
    run_queue(baseline)
    assert edgelb.names() == ["other"]


def test_errors_are_counted_evented_and_never_requeued(world: Any) -> None:
    baseline, edgelb, kube, _ = world
    edgelb.fail_next("get_pool", Unavailable)
    baseline.on_upsert(service("web", pool="pool-web"))
    run_queue(baseline)
    assert baseline.queue.get(timeout=0) is None and baseline.queue.waiting() == 0
    assert kube.events == [("web", "Warning", "TranslationError")]
    assert baseline.stats.counts["errors"] == 1 and baseline.stats.counts["error_Unavailable"] == 1
    # Not forgotten: the next enqueue of that item waits longer (5 ms, then 10 ms).
    assert baseline.queue.limiter.failures[("ns/web", None)] == 1
    baseline.on_upsert(service("ok", pool="pool-ok"))
    run_queue(baseline)
    assert ("ns/ok", None) not in baseline.queue.limiter.failures  # forgotten after a success

    bad = service("bad", pool="pool-bad")
    bad["metadata"]["annotations"][ANNOTATION] = "name: Not_A_Name\n"
    calls = sum(edgelb.calls.values())
    baseline.on_upsert(bad)
    run_queue(baseline)
    assert sum(edgelb.calls.values()) == calls
    assert kube.events[-1] == ("bad", "Warning", "TranslationError")
    assert baseline.stats.counts["error_ValueError"] == 1


def test_a_tombstone_less_missing_key_is_an_error(world: Any) -> None:
    baseline, _, _, _ = world
    baseline.queue.add(("ns/nobody", None))
    run_queue(baseline)
    assert baseline.stats.counts["error_LookupError"] == 1


def test_an_unchanged_pool_keeps_serving_in_the_local_edgelb_without_dataplane() -> None:
    # The baseline PUTs unchanged pools on every sync, then reads the metadata: if such a PUT restarted
    # the metadata delay (as a change does), the baseline could never report a status, unlike against a
    # real EdgeLB or the HAProxy dataplane. The measurement relies on this.
    from edgelb_local.dataplane import NullDataplane

    dataplane = NullDataplane()
    pool: dict[str, Any] = {
        "name": "p",
        "haproxy": {"frontends": [{"name": "f", "bindPort": 10000}], "stats": {"bindPort": 0}},
    }
    first = dataplane.apply(pool)
    assert dataplane.apply(dict(pool)).since == first.since
    changed = {**pool, "haproxy": {**pool["haproxy"], "frontends": [{"name": "f", "bindPort": 10001}]}}
    assert dataplane.apply(changed) is not first
    assert present(dataplane.status("p")).frontends == {"f": 10001}
