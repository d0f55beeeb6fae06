"""How the operator commands name and show bindings, pools and history.

Where it sits: ``inspect``, ``history``, ``pools`` and ``retry`` (``engine.cli.<command>``) read
the store opened read-only by ``engine.store.migrate.open_read_only``; they parse the
``NAMESPACE/NAME`` and state names the operator types here (``parse_key``, ``state_named``),
explain an unknown one (``unknown_binding``), and turn records into the documents of
``-o json|yaml`` (``binding_doc``, ``history_doc``) and the history table. ``edgelb_to_read``
is the EdgeLB that ``inspect`` and ``pools`` also read, when their flags name one. What a state means
(settled, wanting objects, what the user must do) comes from the declared lifecycle.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from engine.cli import options
from engine.cli.options import UsageError
from engine.cli.output import arrow, relative, table, timestamp
from engine.edgelb.port import EdgeLB
from engine.model.services import join_key, split_key
from engine.runtime import lifecycle
from engine.store import Binding, HistoryEntry, Pool, Store, utcnow

#: Columns of a message or error in a table; ``--wide`` shows them whole.
MESSAGE_WIDTH = 60
#: The controller scans for due wake-ups every 2 s; a wake-up overdue by this much means no
#: controller is acting on this database (stopped, or not leading).
OVERDUE_AFTER = 60.0
KNOWN_SHOWN = 5


@contextlib.contextmanager
def edgelb_to_read(args: argparse.Namespace) -> Iterator[tuple[EdgeLB | None, str]]:
    """The EdgeLB the flags name (None: they name none) and how to call it, closed afterwards."""
    client = options.edgelb_client(args)
    if client is None:
        yield None, ""
        return
    with contextlib.closing(client):
        yield client, f"EdgeLB at {client.base_url}"


def now() -> datetime:
    """What the commands take as "now" (one place, so tests on a fake clock can move it)."""
    return utcnow()


@functools.cache
def machine() -> lifecycle.Lifecycle:
    return lifecycle.load()


def parse_key(text: str) -> str:
    try:
        namespace, name = split_key(text)
    except ValueError:
        raise UsageError(f"{text!r} is not NAMESPACE/NAME (e.g. default/redis)") from None
    return join_key(namespace, name)


def state_named(text: str, *, removed: bool = False) -> str:
    """The state named ``text``, spelled as stored (``ready`` -> ``Ready``), or a clear error."""
    names = [*machine().states, *([machine().final] if removed else [])]
    for name in names:
        if name.lower() == text.strip().lower():
            return name
    raise UsageError(f"unknown state {text!r} (states: {', '.join(names)})")


def unknown_binding(store: Store, key: str, database: str) -> str:
    """``no binding for KEY`` with the keys the operator most likely meant."""
    keys = store.keys()
    message = f"no binding for {key}"
    gone = store.history(key=key, limit=1)
    if gone and gone[0].to_state == machine().final:
        message += f" (removed {timestamp(gone[0].at)}: see `dklb history {key}`)"
    if not keys:
        return f"{message} (the database {database} has no bindings)"
    name = key.rpartition("/")[2]
    # Same name in another namespace first (the usual slip), then look-alikes, then any.
    picks = [k for k in keys if k.rpartition("/")[2] == name]
    picks += [k for k in difflib.get_close_matches(key, keys, n=KNOWN_SHOWN, cutoff=0.6) if k not in picks]
    picks += [k for k in keys if k not in picks]
    shown = picks[:KNOWN_SHOWN]
    more = f", and {len(keys) - len(shown)} more" if len(keys) > len(shown) else ""
    return f"{message} (known: {', '.join(shown)}{more})"


def binding_doc(b: Binding, at: datetime) -> dict[str, Any]:
    return {
        "key": b.key,
        "namespace": b.namespace,
        "name": b.name,
        "uid": b.uid,
        "pool": b.pool,
        "state": b.state,
        "state_since": b.state_since,
        "state_seconds": round((at - b.state_since).total_seconds(), 3),
        "attempts": b.attempts,
        "next_wakeup": b.next_wakeup,
        "last_error": b.last_error,
        "fingerprint": b.fingerprint,
        "created_at": b.created_at,
        "updated_at": b.updated_at,
    }


def history_doc(h: HistoryEntry) -> dict[str, Any]:
    return {
        "id": h.id,
        "at": h.at,
        "key": h.key,
        "namespace": h.namespace,
        "name": h.name,
        "pool": h.pool,
        "from_state": h.from_state,
        "to_state": h.to_state,
        "trigger": h.trigger,
        "reason": h.reason,
        "attempt": h.attempt,
        "message": h.message,
        "duration_seconds": h.duration,
    }


def pool_doc(p: Pool) -> dict[str, Any]:
    return dataclasses.asdict(p)


def history_table(entries: Sequence[HistoryEntry], at: datetime, *, wide: bool, service: bool = True) -> str:
    """The history as a table; ``service`` False drops the SERVICE column (one binding's view)."""
    columns: list[tuple[str, Callable[[HistoryEntry], object]]] = [
        ("TIME", lambda h: timestamp(h.at)),
        ("AGE", lambda h: relative(h.at, at)),
        *([("SERVICE", lambda h: h.key)] if service else []),
        ("POOL", lambda h: h.pool),
        (f"FROM {arrow()} TO", lambda h: f"{h.from_state or '(new)'} {arrow()} {h.to_state}"),
        ("TRIGGER", lambda h: h.trigger),
        ("REASON", lambda h: h.reason),
        ("ATTEMPT", lambda h: h.attempt),
        ("MESSAGE", lambda h: h.message),
    ]
    headers = [name for name, _ in columns]
    rows = [[cell(h) for _, cell in columns] for h in entries]
    last = len(columns) - 1
    return table(headers, rows, right=(last - 1,), limits={last: None if wide else MESSAGE_WIDTH})


def overdue(binding: Binding, at: datetime) -> bool:
    """A wake-up this late means no controller acts on the database."""
    return binding.next_wakeup is not None and (at - binding.next_wakeup).total_seconds() > OVERDUE_AFTER
