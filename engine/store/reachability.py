"""Whether the database can be reached: lost on a connection error of any statement, regained by a ping.

Where it sits: every ``Store`` has one (``Store.reachability``). A statement that fails because
the server is gone (refused, restarting, shut down, a connection broken mid-statement) marks it
lost: SQLAlchemy's ``handle_error`` event sees the store's Core statements and its connection
attempts, ``guard`` the prepared statements run on DBAPI cursors. Only ``Store.ping`` (``/readyz``,
the runtime's probe) marks it reachable again, so one lucky statement does not reopen what a
failing server closed. The runtime reads it to close its fence (decision 5 of issue 17: while the
database is lost, no EdgeLB or Kubernetes write, and the leader stops renewing its Lease); a
SQL error of the statement itself (a constraint, a lock timeout) says nothing about reachability.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("dklb.store")

#: SQLSTATE classes of a lost server: connection exceptions, and operator intervention (shutdown,
#: "the database system is starting up").
_LOST_STATES = ("08", "57P")


def is_connection_error(exc: BaseException, engine: Engine) -> bool:
    """``exc`` (a DBAPI error, or SQLAlchemy's wrapper of one) means the server cannot be reached."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig  # type: ignore[assignment]
    if engine.dialect.name != "postgresql":
        return False
    if not isinstance(exc, engine.dialect.loaded_dbapi.OperationalError):
        return False
    # psycopg gives no SQLSTATE when it could not talk to the server at all.
    state = getattr(exc, "sqlstate", None)
    return state is None or str(state).startswith(_LOST_STATES)


class Reachability:
    """``reachable`` and its changes, told to ``on_change`` (set by the runtime) and the log."""

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self._name = name
        self._lock = threading.Lock()
        self.reachable = True
        self.on_change: Callable[[bool], None] | None = None
        event.listen(engine, "handle_error", self._on_error)
        self._guard: AbstractContextManager[None] = (
            _Guard(self._exit) if engine.dialect.name == "postgresql" else nullcontext()
        )

    def _on_error(self, context: ExceptionContext) -> None:
        if context.is_disconnect or is_connection_error(context.original_exception, self._engine):
            self._set(False, context.original_exception)

    def guard(self) -> AbstractContextManager[None]:
        """Around statements run outside SQLAlchemy's execution (``Prepared`` on a DBAPI cursor):
        one object built once, since it is on every commit's path (nothing to watch on SQLite,
        whose kept connections never lose a server)."""
        return self._guard

    def _exit(self, exc: BaseException | None) -> None:
        # A DBAPI cursor raises the driver's own errors, unwrapped: both kinds are judged.
        if exc is not None and is_connection_error(exc, self._engine):
            self._set(False, exc.orig if isinstance(exc, DBAPIError) else exc)

    def regained(self) -> None:
        self._set(True, None)

    def _set(self, reachable: bool, cause: Any) -> None:
        with self._lock:
            if self.reachable == reachable:
                return
            self.reachable = reachable
        if reachable:
            log.warning("database %s answers again", self._name)
        else:
            log.error("database %s cannot be reached: %s", self._name, cause)
        if self.on_change is not None:
            self.on_change(reachable)


class _Guard:
    """A context manager with no state of its own: one serves every thread."""

    __slots__ = ("_exit",)

    def __init__(self, on_exit: Callable[[BaseException | None], None]) -> None:
        self._exit = on_exit

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._exit(exc)
