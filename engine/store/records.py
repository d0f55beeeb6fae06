"""What the store hands out and takes in: immutable records, and the errors it raises.

``Binding``, ``Pool`` and ``HistoryEntry`` are snapshots of rows (``engine.store.schema``);
``BindingSummary`` is the four columns the orphan sweep reads of every binding. A ``Change`` is
one transition as the reconciler computed it, which ``Store.commit`` applies in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.model.services import join_key


class StoreError(Exception):
    """The database cannot be used as asked (missing, too new, unreadable)."""


class StaleBinding(Exception):
    """The binding changed under us (another worker or process committed first)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Binding:
    """A read-only snapshot of one Service↔pool binding."""

    id: int
    namespace: str
    name: str
    uid: str
    state: str
    pool: str | None
    config: dict[str, Any] | None
    objects: dict[str, Any] | None
    fingerprint: str | None
    attempts: int
    next_wakeup: datetime | None
    last_error: str | None
    state_since: datetime
    created_at: datetime
    updated_at: datetime
    # Digest of the Service's sharing key when last accepted (``engine.model.services.shared_pool_key``).
    shared_pool_key: str | None = None

    @property
    def key(self) -> str:
        return join_key(self.namespace, self.name)


@dataclass(frozen=True)
class Pool:
    name: str
    ref_count: int
    created_by_dklb: bool
    served: bool
    created_at: datetime
    updated_at: datetime
    pre_existing: bool
    # Created by dklb for this namespace (None: not created by dklb, or created before 0003).
    namespace: str | None = None
    # Digest of the creating Service's sharing key (None: it had none).
    shared_pool_key: str | None = None


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    binding_id: int | None
    namespace: str
    name: str
    pool: str | None
    from_state: str | None
    to_state: str
    trigger: str
    reason: str
    message: str
    attempt: int
    at: datetime
    duration: float | None

    @property
    def key(self) -> str:
        return join_key(self.namespace, self.name)


@dataclass(frozen=True)
class BindingSummary:
    """What the orphan sweep reads of a binding: its key, its pool and its recorded configuration."""

    namespace: str
    name: str
    pool: str | None
    config: dict[str, Any] | None

    @property
    def key(self) -> str:
        return join_key(self.namespace, self.name)


_UNSET: Any = object()


@dataclass(frozen=True)
class Change:
    """Everything one transition writes; ``Store.commit`` applies it atomically.

    ``remove`` deletes the binding row (its history stays, ending in ``to_state``). Fields left
    ``_UNSET`` keep their value. ``record`` False writes no history row (polls and resync
    bookkeeping).
    """

    binding_id: int
    expected_state: str
    to_state: str
    trigger: str
    reason: str = ""
    message: str = ""
    record: bool = True
    pool: Any = _UNSET
    config: Any = _UNSET
    objects: Any = _UNSET
    fingerprint: Any = _UNSET
    uid: Any = _UNSET
    attempts: Any = _UNSET
    next_wakeup: Any = _UNSET
    last_error: Any = _UNSET
    shared_pool_key: Any = _UNSET
    pool_created_by_dklb: bool | None = None
    pool_served: bool | None = None
    pool_pre_existing: bool | None = None
    pool_namespace: str | None = None
    pool_shared_pool_key: str | None = None
    remove: bool = False

    def updates(self) -> dict[str, Any]:
        names = (
            "pool",
            "config",
            "objects",
            "fingerprint",
            "uid",
            "attempts",
            "next_wakeup",
            "last_error",
            "shared_pool_key",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not _UNSET}
