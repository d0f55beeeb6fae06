"""What the store hands out and takes in: immutable records, and the errors it raises.

``Binding``, ``Pool`` and ``HistoryEntry`` are snapshots of rows (``engine.store.schema``);
``BindingSummary`` is the four columns the orphan sweep reads of every binding. A ``Change`` is
one transition as the reconciler computed it, which ``Store.commit`` applies in one transaction.
``HistoryPruned`` is what retention (``engine.store.pruning``) left as a trace of what it
deleted; ``cap_message`` bounds what one history row may hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.model.services import join_key


class StoreError(Exception):
    """The database cannot be used as asked (missing, too new, unreadable)."""


class Fenced(StoreError):
    """This store's leadership term is over: another replica claimed since (``Store.claim_leadership``),
    so the database refused the write and nothing was written."""


class StaleBinding(Exception):
    """The binding changed under us (another worker or process committed first)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


#: The most a history message keeps, in UTF-8 bytes: one hostile annotation's error report must
#: not cost megabytes per row (S4 of the security review).
MESSAGE_CAP = 4096


def cap_message(message: str, cap: int = MESSAGE_CAP) -> str:
    """``message`` if it fits in ``cap`` UTF-8 bytes, else its head and a marker saying how long it
    was, together exactly within ``cap`` (never a character cut in half)."""
    data = message.encode("utf-8", errors="replace")
    if len(data) <= cap:
        return message
    marker = f" … [truncated: {len(data):,} bytes, the first {{kept:,}} kept]"
    room = cap - len(marker.format(kept=cap).encode())
    head = data[: max(room, 0)].decode("utf-8", errors="ignore")
    return head + marker.format(kept=len(head.encode()))


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
class HistoryPruned:
    """A trace retention left: entries older than ``before`` were deleted by ``rule``.

    ``rule`` is ``max-age`` (every Service's history; ``services`` is 0) or
    ``max-rows-per-service`` (``services`` Services' oldest rows; ``before`` is the latest cut
    among them). ``rows``: how many rows the rule deleted so far; ``at``: when it last did.
    """

    rule: str
    before: datetime
    rows: int
    at: datetime
    services: int = 0


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
