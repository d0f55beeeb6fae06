"""The contract between the engine and the state handlers of ``states/``.

The reconciler builds a ``Context`` (the binding as persisted, the Service as last observed, the
ports to EdgeLB and Kubernetes) and calls the handler of the binding's state. The handler does
its side effects through the ports and answers with one ``Outcome``:

- ``Fire``: fire a trigger of the declared lifecycle (with what to record on the binding);
- ``Retry``: it failed; try again after the state's retry backoff (recorded in history);
- ``Poll``: not yet; look again after the state's poll backoff (not recorded in history);
- ``Stay``: nothing to do until the state's resync period or an external trigger.

The engine turns the outcome into one durable ``store.Change`` and posts the events after the
commit, so an Event never announces a transition that was not recorded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from engine.edgelb.port import EdgeLB
from engine.kube.port import Kube
from engine.model.settings import Settings
from engine.store import Binding, Pool


@dataclass(frozen=True)
class Event:
    type: str  # "Normal" or "Warning"
    reason: str
    message: str


def normal(reason: str, message: str) -> Event:
    return Event("Normal", reason, message)


def warning(reason: str, message: str) -> Event:
    return Event("Warning", reason, message)


@dataclass(frozen=True)
class Fire:
    trigger: str
    reason: str = ""
    message: str = ""
    events: tuple[Event, ...] = ()
    # Binding fields to record with the transition: pool, config, objects, fingerprint, uid,
    # shared_pool_key.
    updates: dict[str, Any] = field(default_factory=dict)
    pool_created_by_dklb: bool | None = None
    pool_served: bool | None = None
    pool_pre_existing: bool | None = None
    # Recorded with pool_created_by_dklb: whom dklb created the pool for (see states.tenancy).
    pool_namespace: str | None = None
    pool_shared_pool_key: str | None = None


@dataclass(frozen=True)
class Retry:
    reason: str
    message: str
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Poll:
    reason: str
    message: str = ""
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Stay:
    events: tuple[Event, ...] = ()
    updates: dict[str, Any] = field(default_factory=dict)


Outcome = Fire | Retry | Poll | Stay


class PoolRecords(Protocol):
    """What a handler may read of the store: the bindings on a pool and the pool's record.
    (``engine.store.Store`` is one; handlers never write to it, the engine commits for them.)"""

    def bindings(self, *, pool: str | None = None) -> list[Binding]: ...

    def pool(self, name: str) -> Pool | None: ...


@dataclass
class Context:
    """What a handler may look at and act on; built fresh for every run."""

    binding: Binding
    service: dict[str, Any] | None
    edgelb: EdgeLB
    kube: Kube
    store: PoolRecords
    settings: Settings
    rng: random.Random
    now: datetime
    node_addresses: tuple[str, ...] = ()
