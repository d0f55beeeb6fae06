"""One transition applied inside a write transaction: what ``Store.commit`` runs.

Where it sits: the reconciler hands ``Store.commit`` a ``Change`` (``engine.store.records``); the
store opens ONE write transaction and calls ``apply`` with its DBAPI cursor. ``apply`` checks the
binding is still in the expected state, moves the reference counts of the pools it leaves or
joins, appends the history row (unless the change records none) and updates or deletes the
binding row: a crash leaves the old state or the new one, never a half-counted pool. Its
statements are ``Prepared`` once per store (``Statements``), so a step costs little more than
the SQL SQLite runs.

Two writers at once (PostgreSQL: two replicas, or two workers of one; READ COMMITTED): the binding
is read ``FOR UPDATE``, so a second transition of the same binding waits for the first to commit
and then meets ``StaleBinding``; a pool joined is counted by one atomic upsert and a pool left by
its row read ``FOR UPDATE``, the pools of one transition in name order (a binding moving from a to
b and another from b to a cannot deadlock), and an emptied pool is deleted only after the binding
row no longer refers to it. On SQLite the same statements run under the one writer's lock (the
locking clauses compile to nothing there).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Dialect, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement

from engine.store.prepared import Prepared
from engine.store.records import Change, Fenced, StaleBinding, StoreError, cap_message
from engine.store.schema import BINDINGS, HISTORY, LEADERSHIP, POOLS

_HISTORY_KEYS = (
    "binding_id",
    "namespace",
    "name",
    "pool",
    "from_state",
    "to_state",
    "trigger",
    "reason",
    "message",
    "attempt",
    "at",
    "duration",
)
_NEW_POOL_KEYS = (
    "name",
    "ref_count",
    "created_by_dklb",
    "served",
    "pre_existing",
    "created_at",
    "updated_at",
)
_BY_ID = BINDINGS.c.id == bindparam("_id")
_BY_NAME = POOLS.c.name == bindparam("_name")


class Statements:
    """The store's prepared statements for one dialect; an UPDATE is prepared once per set of
    columns it sets (a handful: the steps set the same fields each time)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._prepared: dict[tuple[str, frozenset[str]], Prepared] = {}
        self._lock = threading.Lock()
        # The row lock every transition of a binding queues on (PostgreSQL; SQLite compiles no
        # FOR UPDATE, its writer lock serializes).
        self.binding_by_id = Prepared(select(BINDINGS).where(_BY_ID).with_for_update(), dialect)
        self.binding_by_key = Prepared(
            select(BINDINGS).where(
                BINDINGS.c.namespace == bindparam("_namespace"), BINDINGS.c.name == bindparam("_name")
            ),
            dialect,
        )
        self.bindings_in_pool = Prepared(
            select(BINDINGS)
            .where(BINDINGS.c.pool == bindparam("_pool"))
            .order_by(BINDINGS.c.namespace, BINDINGS.c.name),
            dialect,
        )
        # Every column given (no default of the table's applies to a prepared INSERT).
        self.insert_binding = Prepared(
            insert(BINDINGS).returning(BINDINGS.c.id), dialect, [c.key for c in BINDINGS.c if c.key != "id"]
        )
        self.insert_history = Prepared(insert(HISTORY), dialect, _HISTORY_KEYS)
        self.delete_binding = Prepared(delete(BINDINGS).where(_BY_ID), dialect)
        self.pool_by_name = Prepared(select(POOLS).where(_BY_NAME), dialect)
        self.pool_count = Prepared(select(POOLS.c.ref_count).where(_BY_NAME).with_for_update(), dialect)
        self.join_pool = Prepared(_join_pool(dialect), dialect, _NEW_POOL_KEYS)
        self.delete_pool = Prepared(delete(POOLS).where(_BY_NAME), dialect)
        # FOR SHARE: a claim of leadership (an UPDATE of the row) waits for the transactions
        # that read the old term, and those after it read the new one (``check_term``).
        self.leadership_term = Prepared(
            select(LEADERSHIP.c.term, LEADERSHIP.c.holder)
            .where(LEADERSHIP.c.id == bindparam("_id"))
            .with_for_update(read=True),
            dialect,
        )

    def update_binding(self, keys: Iterable[str]) -> Prepared:
        return self._cached("binding", keys, lambda: update(BINDINGS).where(_BY_ID))

    def update_pool(self, keys: Iterable[str]) -> Prepared:
        return self._cached("pool", keys, lambda: update(POOLS).where(_BY_NAME))

    def _cached(self, table: str, keys: Iterable[str], build: Callable[[], ClauseElement]) -> Prepared:
        columns = frozenset(keys)
        found = self._prepared.get((table, columns))
        if found is None:
            with self._lock:
                found = self._prepared.get((table, columns))
                if found is None:
                    found = Prepared(build(), self.dialect, sorted(columns))
                    self._prepared[(table, columns)] = found
        return found


def apply(sql: Statements, cursor: Any, change: Change, now: datetime) -> dict[str, Any] | None:
    """Apply ``change`` on ``cursor`` (inside the caller's write transaction); the binding's row
    after it, or None once removed. ``StaleBinding`` (nothing written) when the binding is no
    longer in ``change.expected_state``: the caller's view is out of date."""
    row = sql.binding_by_id.first(cursor, {"_id": change.binding_id})
    if row is None or row["state"] != change.expected_state:
        state = None if row is None else row["state"]
        raise StaleBinding(f"binding {change.binding_id} is {state}, expected {change.expected_state}")
    old_pool = row["pool"]
    updates = change.updates()
    new_pool = None if change.remove else updates.get("pool", old_pool)
    emptied: list[str] = []
    if old_pool != new_pool:
        # In name order: every transition takes its pools' row locks in one global order.
        for name in sorted(p for p in (old_pool, new_pool) if p is not None):
            if name == new_pool:
                # A pool row exists exactly while bindings refer to it; the bindings' foreign key
                # needs it before the binding row points at it.
                sql.join_pool.run(cursor, _new_pool(name, now))
            elif _leave_pool(sql, cursor, name, now) <= 0:
                emptied.append(name)
    if change.record:
        history = {
            "binding_id": row["id"],
            "namespace": row["namespace"],
            "name": row["name"],
            "pool": new_pool if new_pool is not None else old_pool,
            "from_state": row["state"],
            "to_state": change.to_state,
            "trigger": change.trigger,
            "reason": change.reason,
            "message": cap_message(change.message),
            "attempt": updates.get("attempts", row["attempts"]),
            "at": now,
            "duration": (now - row["state_since"]).total_seconds(),
        }
        sql.insert_history.run(cursor, history)
    if change.remove:
        sql.delete_binding.run(cursor, {"_id": row["id"]})
    else:
        values = {**updates, "updated_at": now}
        if change.to_state != row["state"]:
            values.update(state=change.to_state, state_since=now)
        sql.update_binding(values).run(cursor, {"_id": row["id"], **values})
        row.update(values)
    pool_name = new_pool if new_pool is not None else old_pool
    marks = {
        "created_by_dklb": change.pool_created_by_dklb,
        "pre_existing": change.pool_pre_existing,
        "namespace": change.pool_namespace,
        "shared_pool_key": change.pool_shared_pool_key,
        "served": change.pool_served or None,
    }
    flags: dict[str, Any] = {k: v for k, v in marks.items() if v is not None}
    if pool_name is not None and flags and pool_name not in emptied:
        flags["updated_at"] = now
        sql.update_pool(flags).run(cursor, {"_name": pool_name, **flags})
    for name in emptied:
        # Now that no binding row refers to it (the foreign key), under the lock taken above.
        sql.delete_pool.run(cursor, {"_name": name})
    return None if change.remove else row


def _join_pool(dialect: Dialect) -> Any:
    """INSERT a pool row counting one binding, or add one to the row there: ONE statement, so two
    transactions joining a pool that does not exist yet cannot both insert it (PostgreSQL makes
    the second wait for the first, then update)."""
    dialects: dict[str, Any] = {"postgresql": postgresql, "sqlite": sqlite}
    if dialect.name not in dialects:
        raise StoreError(f"database dialect {dialect.name!r} is not supported: use SQLite or PostgreSQL")
    statement = dialects[dialect.name].insert(POOLS)
    # The inserted ref_count is 1: the row there counts one more.
    return statement.on_conflict_do_update(
        index_elements=[POOLS.c.name],
        set_={
            "ref_count": POOLS.c.ref_count + statement.excluded.ref_count,
            "updated_at": statement.excluded.updated_at,
        },
    )


def _new_pool(name: str, now: datetime) -> dict[str, Any]:
    return {
        "name": name,
        "ref_count": 1,
        "created_by_dklb": False,
        "served": False,
        "pre_existing": False,
        "created_at": now,
        "updated_at": now,
    }


def _leave_pool(sql: Statements, cursor: Any, name: str, now: datetime) -> int:
    """One binding fewer in pool ``name`` (its row locked); the count left (0: delete the row)."""
    found = sql.pool_count.first(cursor, {"_name": name})
    if found is None:
        raise StoreError(f"reference count of unknown pool {name!r} cannot drop")
    count = int(found["ref_count"]) - 1
    if count > 0:
        sql.update_pool(("ref_count", "updated_at")).run(
            cursor, {"_name": name, "ref_count": count, "updated_at": now}
        )
    return count


def check_term(sql: Statements, cursor: Any, term: int) -> None:
    """``Fenced`` unless the leadership row still holds ``term``: the first statement of every
    write transaction of a store that claimed leadership (``Store.claim_leadership``).

    On PostgreSQL the row is read ``FOR SHARE``: a claim (an UPDATE of that row) waits for this
    transaction to end, and a transaction starting after the claim committed reads the new term.
    So once ``claim_leadership`` returned in another replica, no write of this one can commit. On
    SQLite the transaction already holds the database's write lock, which a claim needs too."""
    row = sql.leadership_term.first(cursor, {"_id": 1})
    found = None if row is None else row["term"]
    if found != term:
        holder = None if row is None else row["holder"]
        raise Fenced(
            f"leadership term {term} of this replica is over: the database is at term "
            f"{found} (claimed by {holder!r}); nothing was written"
        )
