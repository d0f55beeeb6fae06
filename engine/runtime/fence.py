"""The write fence: with several dklb replicas, only the leader writes.

Where it sits in the data flow: between the state handlers (and the reconciler) and the outside
world. ``engine.app`` wraps the EdgeLB client in ``FencedEdgeLB`` and the Kubernetes adapter in
``FencedKube``, both sharing one ``Fence`` whose ``is_leader`` is the app's ``is_leading`` (the
Lease of ``engine.kube.leader``); the reconciler asks the same ``may_write`` before it commits a
transition to the store. Every write asks the fence first, so a replica that loses the
Lease stops writing at the next write, not at the next reconcile. Reads pass through: a follower
may look, and a reconcile that has started may finish looking before it reaches its first write.

``NotLeader`` deliberately does not derive from ``EdgeLBError``: handlers catch ``EdgeLBError``
and turn it into a recorded retry, which would be a write (to the store) by a non-leader. It has
to travel up to the reconciler, which drops the key without committing anything.

The fence is check-then-act: a write that passed ``check`` just before the lease was lost still
lands. The window is bounded by the elector's design (a leader stops considering itself leader
``lease_duration - renew_deadline`` before any other replica can acquire), which is what makes
the check sufficient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from engine.edgelb import stream
from engine.edgelb.port import EdgeLB, Pool
from engine.kube.port import Kube, Service


class NotLeader(Exception):
    """This replica does not hold the Lease (any more): the write was not made."""


class Fence:
    """``check()`` passes while ``is_leader()`` is True and raises ``NotLeader`` otherwise."""

    def __init__(self, is_leader: Callable[[], bool]) -> None:
        self._is_leader = is_leader

    @property
    def leading(self) -> bool:
        return bool(self._is_leader())

    def check(self) -> None:
        # Asked on every write, never cached: leadership can end between two writes of one
        # handler run.
        if not self._is_leader():
            raise NotLeader("this dklb replica is not the leader; write refused")


class FencedEdgeLB:
    """The ``EdgeLB`` port with pool writes fenced; reads go straight through."""

    def __init__(self, edgelb: EdgeLB, fence: Fence) -> None:
        self._edgelb = edgelb
        self._fence = fence

    # ---- reads -------------------------------------------------------------------------------

    def list_pools(self) -> list[Pool]:
        return self._edgelb.list_pools()

    def iter_pools(self) -> Iterator[Pool]:
        return stream.pools(self._edgelb)

    def get_pool(self, name: str) -> Pool:
        return self._edgelb.get_pool(name)

    def get_metadata(self, name: str) -> dict[str, Any]:
        return self._edgelb.get_metadata(name)

    # ---- writes ------------------------------------------------------------------------------

    def create_pool(self, pool: Pool) -> Pool:
        self._fence.check()
        return self._edgelb.create_pool(pool)

    def update_pool(self, pool: Pool) -> Pool:
        self._fence.check()
        return self._edgelb.update_pool(pool)

    def delete_pool(self, name: str) -> None:
        self._fence.check()
        self._edgelb.delete_pool(name)


class FencedKube:
    """The ``Kube`` port fenced. Every method of the port is a write (finalizers, the config
    annotation, the ingress status, Events), so every one asks the fence."""

    def __init__(self, kube: Kube, fence: Fence) -> None:
        self._kube = kube
        self._fence = fence

    def add_finalizer(self, service: Service, *, annotation: str | None = None) -> Service | None:
        self._fence.check()
        return self._kube.add_finalizer(service, annotation=annotation)

    def remove_finalizer(self, service: Service) -> Service | None:
        self._fence.check()
        return self._kube.remove_finalizer(service)

    def set_ingress(self, service: Service, ingress: list[dict[str, str]]) -> Service | None:
        self._fence.check()
        return self._kube.set_ingress(service, ingress)

    def event(self, service: Service, *, type: str, reason: str, message: str) -> None:
        # Events too: a deposed leader's "PoolCreated" would contradict the new leader's story.
        self._fence.check()
        self._kube.event(service, type=type, reason=reason, message=message)
