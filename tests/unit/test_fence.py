"""``engine.runtime.fence``: while not leading, every write through ``FencedEdgeLB``/``FencedKube`` raises
``NotLeader`` and never reaches the wrapped port; reads always go through.

The method lists are checked against the Protocols themselves, so a method added to a port
without a decision here (read or write?) fails this file.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import pytest

from engine.edgelb.errors import EdgeLBError
from engine.edgelb.port import EdgeLB
from engine.kube.port import Kube
from engine.runtime.fence import DatabaseGate, Fence, FencedEdgeLB, FencedKube, NotLeader
from tests.fakes.edgelb import FakeEdgeLB
from tests.fakes.kube import FakeKube, make_service

POOL = {
    "name": "pool-a",
    "haproxy": {
        "frontends": [
            {"name": "fe", "bindPort": 8080, "protocol": "TCP", "linkBackend": {"defaultBackend": "be"}}
        ],
        "backends": [
            {
                "name": "be",
                "protocol": "TCP",
                "services": [{"endpoint": {"type": "ADDRESS", "address": "10.0.0.1", "port": 8080}}],
            }
        ],
    },
}

EDGELB_READS = {"list_pools", "get_pool", "get_metadata"}
EDGELB_WRITES = {"create_pool", "update_pool", "delete_pool"}
KUBE_WRITES = {"add_finalizer", "remove_finalizer", "set_ingress", "event"}


def protocol_methods(protocol: type) -> set[str]:
    return {name for name, value in vars(protocol).items() if not name.startswith("_") and callable(value)}


class Switch:
    """A settable ``is_leader``."""

    def __init__(self, leading: bool) -> None:
        self.leading = leading

    def __call__(self) -> bool:
        return self.leading


class Spy:
    """Records every method called on the object it wraps, then delegates."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.called: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.target, name)
        if not callable(attr):
            return attr

        def record(*args: Any, **kwargs: Any) -> Any:
            self.called.append(name)
            return attr(*args, **kwargs)

        return record


def edgelb_calls(edgelb: FakeEdgeLB) -> dict[str, Callable[[EdgeLB], Any]]:
    return {
        "list_pools": lambda f: f.list_pools(),
        "get_pool": lambda f: f.get_pool("pool-a"),
        "get_metadata": lambda f: f.get_metadata("pool-a"),
        "create_pool": lambda f: f.create_pool({**POOL, "name": "pool-b"}),
        "update_pool": lambda f: f.update_pool(edgelb.stored("pool-a")),
        "delete_pool": lambda f: f.delete_pool("pool-a"),
    }


def kube_calls(service: dict[str, Any]) -> dict[str, Callable[[Kube], Any]]:
    return {
        "add_finalizer": lambda f: f.add_finalizer(service),
        "remove_finalizer": lambda f: f.remove_finalizer(service),
        "set_ingress": lambda f: f.set_ingress(service, [{"ip": "10.0.0.1"}]),
        "event": lambda f: f.event(service, type="Normal", reason="Test", message="hello"),
    }


@pytest.fixture
def edgelb() -> FakeEdgeLB:
    fake = FakeEdgeLB(auto_metadata=True)
    fake.seed(POOL)
    return fake


@pytest.fixture
def kube() -> tuple[FakeKube, dict[str, Any]]:
    fake = FakeKube()
    service = fake.apply(make_service("redis"))
    return fake, service


# ---- the method lists are the Protocols ------------------------------------------------------


def test_every_edgelb_method_is_classified_and_wrapped() -> None:
    assert protocol_methods(EdgeLB) == EDGELB_READS | EDGELB_WRITES
    for name in protocol_methods(EdgeLB):
        assert inspect.signature(getattr(FencedEdgeLB, name)) == inspect.signature(getattr(EdgeLB, name))


def test_every_kube_method_is_a_write_and_wrapped() -> None:
    assert protocol_methods(Kube) == KUBE_WRITES
    for name in protocol_methods(Kube):
        assert inspect.signature(getattr(FencedKube, name)) == inspect.signature(getattr(Kube, name))


def test_not_leader_is_no_edgelb_error() -> None:
    # Handlers turn EdgeLBError into a recorded retry, i.e. a store write by a non-leader.
    assert not issubclass(NotLeader, EdgeLBError)


# ---- the fence -------------------------------------------------------------------------------


def test_fence_asks_on_every_check() -> None:
    switch = Switch(True)
    fence = Fence(switch)
    fence.check()
    assert fence.leading
    switch.leading = False
    assert not fence.leading
    with pytest.raises(NotLeader):
        fence.check()
    switch.leading = True
    fence.check()


# ---- EdgeLB ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(EDGELB_WRITES))
def test_edgelb_write_is_blocked_while_not_leading(edgelb: FakeEdgeLB, method: str) -> None:
    spy = Spy(edgelb)
    fenced = FencedEdgeLB(spy, Fence(Switch(False)))
    with pytest.raises(NotLeader):
        edgelb_calls(edgelb)[method](fenced)
    assert spy.called == []
    assert sum(edgelb.calls.values()) == 0
    assert edgelb.names() == ["pool-a"]


@pytest.mark.parametrize("method", sorted(EDGELB_WRITES))
def test_edgelb_write_goes_through_while_leading(edgelb: FakeEdgeLB, method: str) -> None:
    spy = Spy(edgelb)
    fenced = FencedEdgeLB(spy, Fence(Switch(True)))
    edgelb_calls(edgelb)[method](fenced)
    assert spy.called == [method]
    assert edgelb.writes() == 1


@pytest.mark.parametrize("leading", [False, True])
@pytest.mark.parametrize("method", sorted(EDGELB_READS))
def test_edgelb_read_goes_through_either_way(edgelb: FakeEdgeLB, method: str, leading: bool) -> None:
    spy = Spy(edgelb)
    fenced = FencedEdgeLB(spy, Fence(Switch(leading)))
    result = edgelb_calls(edgelb)[method](fenced)
    assert spy.called == [method]
    assert result == edgelb_calls(edgelb)[method](edgelb)  # unchanged by the wrapper


def test_edgelb_read_errors_pass_through(edgelb: FakeEdgeLB) -> None:
    from engine.edgelb.errors import NotFound

    fenced = FencedEdgeLB(edgelb, Fence(Switch(False)))
    with pytest.raises(NotFound):
        fenced.get_pool("missing")


# ---- Kubernetes ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(KUBE_WRITES))
def test_kube_write_is_blocked_while_not_leading(kube: tuple[FakeKube, dict[str, Any]], method: str) -> None:
    fake, service = kube
    before = fake.get("default/redis")
    spy = Spy(fake)
    fenced = FencedKube(spy, Fence(Switch(False)))
    with pytest.raises(NotLeader):
        kube_calls(service)[method](fenced)
    assert spy.called == []
    assert fake.writes == 0
    assert fake.events == []
    assert fake.get("default/redis") == before


@pytest.mark.parametrize("method", sorted(KUBE_WRITES))
def test_kube_write_goes_through_while_leading(kube: tuple[FakeKube, dict[str, Any]], method: str) -> None:
    fake, service = kube
    spy = Spy(fake)
    fenced = FencedKube(spy, Fence(Switch(True)))
    if method == "remove_finalizer":
        fake.add_finalizer(service)
    writes, events = fake.writes, len(fake.events)
    result = kube_calls(service)[method](fenced)
    assert spy.called == [method]
    assert (fake.writes - writes) + (len(fake.events) - events) == 1
    if method != "event":
        assert result == fake.get("default/redis")


def test_leadership_lost_between_two_writes_blocks_the_second(edgelb: FakeEdgeLB) -> None:
    switch = Switch(True)
    fenced = FencedEdgeLB(edgelb, Fence(switch))
    fenced.create_pool({**POOL, "name": "pool-b"})
    switch.leading = False
    with pytest.raises(NotLeader):
        fenced.delete_pool("pool-b")
    assert edgelb.names() == ["pool-a", "pool-b"]
    assert fenced.get_pool("pool-b")["name"] == "pool-b"


# ---- the database gate --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Ping:
    """A database that answers or raises, switched by the test."""

    def __init__(self) -> None:
        self.error: Exception | None = None

    def __call__(self) -> None:
        if self.error is not None:
            raise self.error


def gate(clock: Clock, ping: Ping, changes: list[bool]) -> DatabaseGate:
    return DatabaseGate(ping, interval=1.0, clock=clock, on_change=changes.append)


def test_the_gate_is_open_until_a_ping_fails_and_opens_again_only_on_a_successful_ping() -> None:
    clock, ping, changes = Clock(), Ping(), list[bool]()
    g = gate(clock, ping, changes)
    assert g.reachable and g.error is None
    ping.error = ConnectionError("connection refused\n[SQL: SELECT 1]")
    assert g.ping_once() is False
    assert not g.reachable
    # The first line only: the statement SQLAlchemy appends says nothing.
    assert g.error == "ConnectionError: connection refused"
    ping.error = None
    clock.now += 0.5
    assert g.ping_once() is True
    assert g.reachable and g.error is None
    assert changes == [False, True]


def test_a_statement_error_closes_the_gate_at_once_and_only_a_ping_reopens_it() -> None:
    clock, ping, changes = Clock(), Ping(), list[bool]()
    g = gate(clock, ping, changes)
    g.failed(OSError("server closed the connection unexpectedly"))
    g.failed(OSError("again"))
    assert not g.reachable
    assert changes == [False], "one call per change"
    assert g.ping_once()
    assert changes == [False, True]


@pytest.mark.parametrize(
    ("silent_for", "reachable"),
    [(0.0, True), (2.9, True), (3.0, False), (30.0, False)],
)
def test_a_ping_that_does_not_come_back_closes_the_gate_by_age(silent_for: float, reachable: bool) -> None:
    # A ping stuck on a dead link never fails: three intervals without an answer close the gate.
    clock, ping, changes = Clock(), Ping(), list[bool]()
    g = gate(clock, ping, changes)
    clock.now += silent_for
    assert g.reachable is reachable
    assert (g.error is None) is reachable
    if not reachable:
        assert g.error is not None and "no answer to a ping" in g.error


def test_the_gate_thread_pings_until_stopped() -> None:
    answered = threading.Event()
    pings: list[int] = []

    def ping() -> None:
        pings.append(1)
        if len(pings) >= 3:
            answered.set()

    g = DatabaseGate(ping, interval=0.01)
    g.start()
    try:
        assert answered.wait(10.0)
    finally:
        g.stop()
    assert g.reachable
    assert g._thread is not None and not g._thread.is_alive(), "stopped: no ping any more"


def test_a_closed_gate_closes_the_fence_around_every_write() -> None:
    clock, ping, changes = Clock(), Ping(), list[bool]()
    g = gate(clock, ping, changes)
    fence = Fence(lambda: g.reachable)
    edgelb = FakeEdgeLB()
    fenced = FencedEdgeLB(edgelb, fence)
    g.failed(ConnectionError("refused"))
    with pytest.raises(NotLeader):
        fenced.create_pool(POOL)
    assert edgelb.list_pools() == []
    assert g.ping_once()
    fenced.create_pool(POOL)
    assert [p["name"] for p in edgelb.list_pools()] == ["pool-a"]
