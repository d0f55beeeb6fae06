"""Claiming a leadership term: the one UPDATE that fences every earlier leader's writes.

Where it sits: ``Store.claim_leadership`` runs ``claim`` in its own transaction each time this
replica starts leading (``engine.app``); every later write transaction reads the term back first
(``transitions.check_term``) and is ``Fenced`` when another replica claimed since.

On PostgreSQL a write of the old term holds the leadership row FOR SHARE until it ends, so the
claim's UPDATE waits for it. A healthy transaction ends in milliseconds; one of a replica cut off
from the server mid-transaction would hold the row until the server gives up on it
(``idle_in_transaction_session_timeout``, seconds) or on its TCP connection (minutes). The claim
does not wait that long: this replica holds the Lease, so any session still holding the row is a
write of a term that is over, and it is ended (``pg_terminate_backend``). Its transaction rolls
back, which is what a crash of that replica would have done: the design already survives that.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, update
from sqlalchemy.exc import DBAPIError

from engine.store.schema import LEADERSHIP

log = logging.getLogger("dklb.store")

#: How long the claim waits for the old term's writes to end by themselves (they take ms).
GRACE_MS = 2_000

#: The sessions holding the leadership row of a term that is over: a write transaction took the
#: table's ROW SHARE lock with its FOR SHARE read of the term, and keeps it until it ends. Only
#: writes check a term (readers and the CLI take no such lock).
_HOLDERS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'relation' AND mode = 'RowShareLock'"
    " AND relation = 'leadership'::regclass AND pid <> pg_backend_pid()"
)

#: SQLSTATE lock_not_available: ``lock_timeout`` ran out.
_LOCK_NOT_AVAILABLE = "55P03"


def claim(conn: Connection, holder: str, now: datetime, *, wait_ms: int) -> int | None:
    """term + 1 for ``holder`` in ``conn``'s transaction; the new term (None: no leadership row).
    ``wait_ms`` bounds the last wait on PostgreSQL, once the old term's sessions were ended."""
    if conn.dialect.name != "postgresql":
        return _update(conn, holder, now)  # SQLite: the claim holds the database's write lock
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {GRACE_MS}")
    try:
        with conn.begin_nested():
            return _update(conn, holder, now)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
    ended = _end_old_term_sessions(conn)
    log.warning(
        "claiming leadership: %d session(s) of an earlier term still held the fence after %d ms "
        "(a replica cut off mid-transaction, or hung); %s",
        len(ended),
        GRACE_MS,
        f"ended them (pids {', '.join(map(str, ended))})" if ended else "waiting for the server to end them",
    )
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {wait_ms}")
    return _update(conn, holder, now)


def _end_old_term_sessions(conn: Connection) -> list[int]:
    """The pids of the sessions ended. Without the right to end them (another database role,
    without pg_signal_backend), none: the claim then waits for the server to end them."""
    ended: list[int] = []
    for (pid,) in conn.exec_driver_sql(_HOLDERS).all():
        try:
            with conn.begin_nested():
                if conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar():
                    ended.append(int(pid))
        except DBAPIError as exc:
            log.warning("claiming leadership: cannot end session %d: %s", pid, exc.orig)
    return ended


def _update(conn: Connection, holder: str, now: datetime) -> int | None:
    term = conn.execute(
        update(LEADERSHIP)
        .where(LEADERSHIP.c.id == 1)
        .values(term=LEADERSHIP.c.term + 1, holder=holder, claimed_at=now)
        .returning(LEADERSHIP.c.term)
    ).scalar_one_or_none()
    return None if term is None else int(term)
