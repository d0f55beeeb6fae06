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

``DatabaseGate`` closes the same fence when the database cannot be reached (decision 5 of the
high-availability design): a transition's side effects in EdgeLB and Kubernetes happen before its
commit, so a replica that cannot commit must not make them. ``engine.app`` folds the gate into
``is_leading`` and tells the Lease elector not to renew while it is closed, so a replica that can
reach the database takes over; when a ping succeeds again the work resumes from what is committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.edgelb import stream
from engine.edgelb.port import EdgeLB, Pool
from engine.kube.port import Kube, Service

log = logging.getLogger("dklb.fence")


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


def _brief(exc: BaseException) -> str:
    # The first line only: SQLAlchemy appends the statement and a link, which say nothing here.
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class DatabaseGate:
    """Whether the database answers, from a ping every ``interval`` seconds.

    Open while the last successful ping is younger than ``stale`` seconds and no failure was seen
    since: a ping that hangs (a database behind a dead link) closes the gate by age, not only a
    ping that fails. ``failed`` closes it at once when any other statement met a connection
    error; only a successful ping opens it again. ``on_change(reachable)`` runs on the gate's
    thread after each change (it must return quickly). Before ``start`` (and the first ping) the
    gate is open: the store was just opened and migrated, so it answered a moment ago.
    """

    def __init__(
        self,
        ping: Callable[[], None],
        *,
        interval: float = 1.0,
        stale: float | None = None,
        on_change: Callable[[bool], None] = lambda reachable: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._ping = ping
        self.interval = interval
        self.stale = 3 * interval if stale is None else stale
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._ok_at = clock()
        self._failed = False
        self._error: str | None = None
        self._reported = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def reachable(self) -> bool:
        with self._lock:
            return not self._failed and self._clock() - self._ok_at < self.stale

    @property
    def error(self) -> str | None:
        """Why the gate is closed (the last failure, or how long no ping answered), or None."""
        with self._lock:
            if not self._failed and self._clock() - self._ok_at < self.stale:
                return None
            if self._failed:
                return self._error
            return f"no answer to a ping for {self._clock() - self._ok_at:.1f}s"

    def failed(self, exc: BaseException) -> None:
        """A statement met a connection error: closed until a ping succeeds."""
        with self._lock:
            self._failed, self._error = True, _brief(exc)
        self._report()

    def ping_once(self) -> bool:
        """One ping; the gate opens or closes on its answer. True when the database answered."""
        try:
            self._ping()
        except Exception as exc:
            self.failed(exc)
            return False
        with self._lock:
            self._failed, self._error, self._ok_at = False, None, self._clock()
        self._report()
        return True

    def _report(self) -> None:
        # One call per change, in the order the changes were seen.
        with self._lock:
            now = not self._failed and self._clock() - self._ok_at < self.stale
            if now == self._reported:
                return
            self._reported = now
            error = self._error
        if now:
            log.warning("the database answers again: resuming")
        else:
            log.error("the database cannot be reached (%s): writes stop until it answers", error)
        try:
            self._on_change(now)
        except Exception:
            log.exception("database gate callback failed")

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("DatabaseGate already started")
        self._thread = threading.Thread(target=self._run, name="dklb-database-gate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A ping stuck on a dead link is not waited for: the thread is a daemon.
            self._thread.join(timeout=self.interval + 1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.ping_once()
            # A ping that hung past ``stale`` closed the gate by age: say so once it returns.
            self._report()


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
