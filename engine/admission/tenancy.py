"""What the database knows of a pool, read for the admission webhook's tenancy check: bounded.

Where it sits in the data flow: ``engine.app`` hands a ``StoreTenancy`` over the controller's
``Store`` to the webhook server, which passes it to ``engine.admission.review.review`` as its
``pool_tenancy``. The review calls it with the pool a CREATE or UPDATE names and judges the
answer with the controller's rule (``engine.model.tenancy``). It reads what the ``accept`` guard
reads: the pool's row (owner namespace, sharing-key digest, pre-existing) and the bindings on
the pool. Every replica serves the webhook, followers included, so it only ever reads.

A review must answer within the webhook's deadline, whatever the database does: each read runs
on a thread of its own and is waited for ``READ_DEADLINE`` seconds at most (a locked SQLite file
makes a statement wait up to its busy timeout, an unreachable server up to its connect timeout),
and at most ``READ_SLOTS`` reads are under way at once. Beyond either, and on any error, the
review is told ``TenancyUnknown``: it lets the Service in with a warning, and the controller
judges it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from engine.admission.review import TenancyUnknown
from engine.model.report import described
from engine.model.tenancy import LEAVING, Member, PoolTenancy, Tenant

log = logging.getLogger("dklb.admission")

#: Seconds one review waits for the database: the API server gives each webhook 5 s (ours), and
#: a review makes one read at most.
READ_DEADLINE = 2.0
#: Reads under way at once; a database that stopped answering holds them all, and from then on
#: reviews answer at once, with the warning, instead of piling up threads.
READ_SLOTS = 4


class PoolRecord(Protocol):
    """The pools table's row, as ``engine.store.Pool`` has it."""

    @property
    def namespace(self) -> str | None: ...
    @property
    def shared_pool_key(self) -> str | None: ...
    @property
    def created_by_dklb(self) -> bool: ...
    @property
    def pre_existing(self) -> bool: ...


class BindingRecord(Protocol):
    """A binding, as ``engine.store.Binding`` has it."""

    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def config(self) -> dict[str, Any] | None: ...
    @property
    def shared_pool_key(self) -> str | None: ...


class Records(Protocol):
    """The two reads of ``engine.store.Store`` the ``accept`` guard makes (the webhook may not
    import the store: it is handed one)."""

    def pool(self, name: str) -> PoolRecord | None: ...
    def bindings(self, *, pool: str) -> Sequence[BindingRecord]: ...


def known(records: Records, pool: str) -> PoolTenancy | None:
    """What ``records`` knows of ``pool`` for the tenancy rule; None when it knows nothing of it
    (a pool only EdgeLB knows, or a row that says not whose it is: the guard asks EdgeLB's marks,
    which the webhook never does)."""
    record = records.pool(pool)
    members = tuple(
        Member(
            b.namespace,
            b.name,
            b.shared_pool_key,
            cloud=b.config.get("cloudProviderConfiguration") is not None,
        )
        for b in records.bindings(pool=pool)
        # As the guard counts them: recorded as accepted (a configuration) and not leaving.
        if b.state not in LEAVING and b.config is not None
    )
    if not members and (record is None or not (record.created_by_dklb or record.pre_existing)):
        return None
    owner = Tenant(record.namespace, record.shared_pool_key) if record and record.namespace else None
    return PoolTenancy(owner=owner, pre_existing=bool(record and record.pre_existing), members=members)


class StoreTenancy:
    """``known`` on ``records``, bounded in time and in reads under way; a ``PoolLookup``."""

    def __init__(self, records: Records, *, deadline: float = READ_DEADLINE, slots: int = READ_SLOTS) -> None:
        self._records = records
        self._deadline = deadline
        self._slots = threading.BoundedSemaphore(slots)

    def __call__(self, pool: str) -> PoolTenancy | None:
        """Raises ``TenancyUnknown`` (and logs a WARNING) when the database does not answer."""
        try:
            return self._read(pool)
        except TenancyUnknown as exc:
            log.warning("who may use EdgeLB pool %s not checked by the webhook: %s", pool, exc)
            raise

    def _read(self, pool: str) -> PoolTenancy | None:
        if not self._slots.acquire(blocking=False):
            raise TenancyUnknown("the database has not answered earlier reads yet")
        outcome: list[PoolTenancy | None] = []
        failure: list[BaseException] = []
        done = threading.Event()

        def read() -> None:
            try:
                outcome.append(known(self._records, pool))
            except Exception as exc:
                failure.append(exc)
            finally:
                # Released by the reader, not the waiter: a read still stuck keeps its slot.
                self._slots.release()
                done.set()

        threading.Thread(target=read, name="dklb-admission-read", daemon=True).start()
        if not done.wait(self._deadline):
            raise TenancyUnknown(f"the database did not answer within {self._deadline:g} s")
        if failure:
            raise TenancyUnknown(f"reading the database failed: {described(failure[0])}")
        return outcome[0]
