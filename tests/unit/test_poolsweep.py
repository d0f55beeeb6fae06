"""The pool sweep's pure parts: which bindings a listing wakes, which statuses are stale, when
each pool's metadata is due, and the per-pool metadata sharing; tables of cases."""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any

import pytest

from engine.edgelb.errors import Unavailable
from engine.model.translation import ServicePort, pool_outline, service_objects
from engine.runtime.poolsweep import MetadataSchedule, current_ingress, index_pools, stale_statuses, to_wake
from engine.runtime.sharedmetadata import SharedMetadata
from tests.fakes.edgelb import METADATA, FakeEdgeLB

CLUSTER = "kubernetes-cluster"


def objects(name: str, port: int, namespace: str = "default") -> dict[str, Any]:
    frontends, backends = service_objects(
        cluster=CLUSTER,
        namespace=namespace,
        service=name,
        ports=[ServicePort(port=port, node_port=30000 + port)],
        bind_ports={},
    )
    return {"frontends": frontends, "backends": backends}


def pool(name: str, *owned: dict[str, Any], extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "haproxy": {
            "frontends": [f for o in owned for f in copy.deepcopy(o["frontends"])] + (extra or []),
            "backends": [b for o in owned for b in copy.deepcopy(o["backends"])],
        },
    }


A, B, C = objects("a", 80), objects("b", 81), objects("c", 82, namespace="other")


def _changed(o: dict[str, Any], **frontend: Any) -> dict[str, Any]:
    changed = copy.deepcopy(o)
    changed["frontends"][0].update(frontend)
    return changed


TO_WAKE_CASES = [
    ("everything as recorded", [pool("p", A, B), pool("q", C)], []),
    ("a pool missing from the listing", [pool("p", A, B)], ["other/c"]),
    (
        "one frontend of a shared pool changed",
        [pool("p", A, _changed(B, bindPort=9)), pool("q", C)],
        ["default/b"],
    ),
    ("a binding's objects gone from its pool", [pool("p", A), pool("q", C)], ["default/b"]),
    (
        "foreign objects beside ours are not ours",
        [pool("p", A, B, extra=[{"name": "theirs", "bindPort": 1}]), pool("q", C)],
        [],
    ),
    ("an empty listing wakes every binding", [], ["default/a", "default/b", "other/c"]),
    ("garbage in the listing is skipped", ["x", {"no": "name"}, pool("p", A, B), pool("q", C)], []),
]


@pytest.mark.parametrize(
    ("listed", "woken"), [c[1:] for c in TO_WAKE_CASES], ids=[c[0] for c in TO_WAKE_CASES]
)
def test_to_wake(listed: list[Any], woken: list[str]) -> None:
    expectations = [("default/a", "p", A), ("default/b", "p", B), ("other/c", "q", C)]
    assert sorted(to_wake(expectations, index_pools(listed, cluster=CLUSTER))) == woken


def test_server_filled_defaults_are_no_difference() -> None:
    # What EdgeLB returns carries defaults dklb never sent: normalized away on both sides.
    listed = FakeEdgeLB()
    listed.seed(pool("p", A))
    assert to_wake([("default/a", "p", A)], index_pools([listed.stored("p")], cluster=CLUSTER)) == []


def test_unreadable_recorded_objects_wake_the_binding() -> None:
    assert to_wake([("default/a", "p", {"frontends": 3})], index_pools([pool("p", A)], cluster=CLUSTER)) == [
        "default/a"
    ]


def metadata(ip: str, *names: str) -> dict[str, Any]:
    return {"frontends": [{"name": n, "endpoints": [{"private": [ip], "public": []}]} for n in names]}


NAME_A, NAME_B = A["frontends"][0]["name"], B["frontends"][0]["name"]
STALE_CASES = [
    ("statuses match", {"p": metadata("10.0.0.1", NAME_A, NAME_B)}, {"default/a": [{"ip": "10.0.0.1"}]}, []),
    (
        "a status differs",
        {"p": metadata("10.0.0.2", NAME_A, NAME_B)},
        {"default/a": [{"ip": "10.0.0.1"}]},
        ["default/a", "default/b"],
    ),
    ("a status is empty", {"p": metadata("10.0.0.1", NAME_A, NAME_B)}, {"default/a": []}, ["default/a"]),
    ("no address for a Service: no reason", {"p": metadata("10.0.0.1", NAME_A)}, {"default/b": []}, []),
    ("a pool without metadata read: no reason", {}, {"default/a": []}, []),
    (
        "a Service not observed: the reconciler's business",
        {"p": metadata("10.0.0.3", NAME_A, NAME_B)},
        {"default/a": None, "default/b": None},
        [],
    ),
]


@pytest.mark.parametrize(
    ("found", "statuses", "woken"), [c[1:] for c in STALE_CASES], ids=[c[0] for c in STALE_CASES]
)
def test_stale_statuses(found: dict[str, Any], statuses: dict[str, Any], woken: list[str]) -> None:
    status = {"default/a": [{"ip": "10.0.0.1"}], "default/b": [{"ip": "10.0.0.1"}], **statuses}
    expectations = [("default/a", "p", A), ("default/b", "p", B)]
    assert sorted(stale_statuses(expectations, found, status.get)) == woken


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (None, []),
        ({}, []),
        ({"status": {}}, []),
        ({"status": {"loadBalancer": {}}}, []),
        ({"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}, [{"ip": "1.2.3.4"}]),
    ],
)
def test_current_ingress(service: Any, expected: list[Any]) -> None:
    assert current_ingress(service) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_pool_is_due_once_per_period_at_its_own_time() -> None:
    clock = Clock()
    schedule = MetadataSchedule(100.0, rng=random.Random(3), clock=clock)
    pools = [f"p{i}" for i in range(50)]
    schedule.track(pools)
    reads: dict[str, list[float]] = {p: [] for p in pools}
    for _ in range(1000):  # 1,000 s in steps of 1 s: ten periods
        clock.now += 1
        for name in schedule.due():
            reads[name].append(clock.now)
    firsts = sorted(times[0] for times in reads.values())
    assert firsts[-1] - firsts[0] > 50, "spread over the period, not read together"
    assert all(9 <= len(times) <= 11 for times in reads.values())
    gaps = [b - a for times in reads.values() for a, b in itertools.pairwise(times)]
    assert all(89 <= g <= 111 for g in gaps), (min(gaps), max(gaps))


def test_tracking_adds_new_pools_and_drops_gone_ones() -> None:
    clock = Clock()
    schedule = MetadataSchedule(10.0, rng=random.Random(1), clock=clock)
    schedule.track(["a", "b"])
    schedule.track(["b", "c"])
    assert len(schedule) == 2
    clock.now += 11
    assert schedule.due() == ["b", "c"]
    assert schedule.due() == [], "rescheduled one period later"


def shared(ttl: float = 2.0) -> tuple[SharedMetadata, FakeEdgeLB, Clock]:
    edgelb, clock = FakeEdgeLB(auto_metadata=True), Clock()
    edgelb.create_pool({"name": "p", "haproxy": {"frontends": [], "backends": []}})
    return SharedMetadata(edgelb, ttl=ttl, clock=clock), edgelb, clock


def test_metadata_reads_of_one_pool_are_shared_for_the_ttl() -> None:
    port, edgelb, clock = shared()
    first = port.get_metadata("p")
    first["mutated"] = True  # a reader's copy is its own
    assert "mutated" not in port.get_metadata("p")
    assert edgelb.calls[METADATA] == 1
    clock.now += 2.5
    port.get_metadata("p")
    assert edgelb.calls[METADATA] == 2, "read again once the ttl has passed"


@pytest.mark.parametrize("write", ["update", "delete", "create"])
def test_a_write_to_the_pool_forgets_its_metadata(write: str) -> None:
    port, edgelb, _ = shared()
    port.get_metadata("p")
    if write == "update":
        port.update_pool({"name": "p", "haproxy": {"frontends": [], "backends": []}})
    elif write == "delete":
        port.delete_pool("p")
        port.create_pool({"name": "p", "haproxy": {"frontends": [], "backends": []}})
    else:
        port.forget("p")
    port.get_metadata("p")
    assert edgelb.calls[METADATA] == 2


def test_failures_are_not_shared() -> None:
    port, edgelb, _ = shared()
    edgelb.fail_next("GET metadata", Unavailable("not yet", status=504))
    with pytest.raises(Unavailable):
        port.get_metadata("p")
    port.get_metadata("p")
    assert edgelb.calls[METADATA] == 2


def test_index_pools_digests_only_the_wanted_owners() -> None:
    listed = [pool("p", A, B), pool("q", C)]
    index = index_pools(listed, cluster=CLUSTER, wanted={("p", ("default", "a"))})
    assert index == {
        "p": {("default", "a"): index_pools(listed, cluster=CLUSTER)["p"][("default", "a")]},
        "q": {},
    }
    # The digest is the content's, whichever ``Digests`` computed it: comparable across sweeps.
    assert to_wake([("default/a", "p", A), ("default/b", "p", B)], index) == ["default/b"]


MARK = {"DKLB_CREATED_BY": CLUSTER}
OUTLINE_CASES = [
    (
        "name, mark, object names",
        {"name": "p", "count": 1, "environmentVariables": {**MARK, "X": "y"}, **pool("p", A)},
        {
            "name": "p",
            "environmentVariables": MARK,
            "haproxy": {
                "frontends": [{"name": f["name"]} for f in A["frontends"]],
                "backends": [{"name": b["name"]} for b in A["backends"]],
            },
        },
    ),
    ("no mark, no haproxy", {"name": "p", "environmentVariables": {"X": "y"}}, {"name": "p"}),
    (
        "empty object lists",
        {"name": "p", "haproxy": {"frontends": [], "backends": None}},
        {"name": "p", "haproxy": {}},
    ),
    # What the orphan sweep cannot read is kept as listed: it judges it as it would the whole pool.
    (
        "objects that are no dicts",
        {"name": "p", "haproxy": {"frontends": [3, {"x": 1}]}},
        {"name": "p", "haproxy": {"frontends": [3, {"name": None}]}},
    ),
    ("a haproxy that is no dict", {"name": "p", "haproxy": ["f"]}, {"name": "p", "haproxy": ["f"]}),
    (
        "a frontends that is no list",
        {"name": "p", "haproxy": {"frontends": "f"}},
        {"name": "p", "haproxy": {"frontends": "f"}},
    ),
]


@pytest.mark.parametrize(("case", "listed", "outline"), OUTLINE_CASES, ids=[c[0] for c in OUTLINE_CASES])
def test_pool_outline(case: str, listed: dict[str, Any], outline: dict[str, Any]) -> None:
    assert pool_outline(listed) == outline
