"""Statements compiled once and run on the DBAPI cursor: the store's hot path (``Store.commit``,
``Store.get``).

Where it sits: ``engine.store.store`` builds its statements with SQLAlchemy Core on the tables of
``engine.store.schema``; for the few that run on every step of every reconcile, a ``Prepared``
compiles the statement once for the engine's dialect, keeps the SQL text and each parameter's
bind processor (the same conversion SQLAlchemy applies: JSON as text, aware UTC as naive), and
runs it on a DBAPI cursor of the transaction the store opened. What SQLite stores is therefore
byte for byte what SQLAlchemy would have stored, while a commit no longer pays SQLAlchemy's
per-execution work (compiled-cache lookup, execution context, events, result proxy), which cost
more CPU than SQLite spent running the statements. A DBAPI error is re-raised as SQLAlchemy's
own wrapper (``IntegrityError``, ``OperationalError``...), as ``Connection.execute`` raises it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Dialect, Engine
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ReturnsRows
from sqlalchemy.types import TypeEngine

Processor = Callable[[Any], Any] | None


class Prepared:
    """One statement for one dialect: its SQL, its parameters in order, their conversions.

    ``keys``: the columns an INSERT or UPDATE sets (the parameters it is run with must name
    exactly those, plus the statement's own ``bindparam``s). A SELECT's rows come back as tuples
    of converted values, in the order of ``columns``.
    """

    __slots__ = ("_binds", "_dialect", "_names", "_positional", "_results", "columns", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: Iterable[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=None if keys is None else list(keys))
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {statement!r}")
        self.sql = compiled.string
        self._dialect = dialect
        # A positional paramstyle (SQLite's qmark) takes a tuple, a named one a mapping.
        self._positional = bool(compiled.positional)
        order = compiled.positiontup if compiled.positional else None
        self._names: tuple[str, ...] = tuple(order if order is not None else compiled.binds)
        self._binds: tuple[Processor, ...] = tuple(
            _bind(compiled.binds[name].type, dialect) for name in self._names
        )
        self.columns: tuple[str, ...] = ()
        self._results: tuple[Processor, ...] = ()
        if isinstance(statement, ReturnsRows):
            # A SELECT's columns, or those an INSERT ... RETURNING gives back.
            selected = list(statement.exported_columns)
            self.columns = tuple(str(c.key) for c in selected)
            self._results = tuple(_result(c.type, dialect) for c in selected)

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        try:
            converted = [
                values[name] if convert is None else convert(values[name])
                for name, convert in zip(self._names, self._binds, strict=True)
            ]
        except (TypeError, ValueError) as exc:
            # What SQLAlchemy raises for a value its type refuses (a naive datetime, say).
            raise StatementError(
                f"({type(exc).__module__}.{type(exc).__name__}) {exc}", self.sql, dict(values), exc
            ) from exc
        return tuple(converted) if self._positional else dict(zip(self._names, converted, strict=True))

    def run(self, cursor: Any, values: Mapping[str, Any]) -> Any:
        """Execute with ``values`` (by parameter name); the cursor, for its rows or rowcount."""
        params = self.params(values)
        try:
            cursor.execute(self.sql, params)
        except self._dialect.loaded_dbapi.Error as exc:
            raise _wrapped(self.sql, params, exc, self._dialect) from exc
        return cursor

    def first(self, cursor: Any, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """A SELECT's first row as ``{column: converted value}``, or None."""
        # Every row fetched: the statement is then finished (an INSERT ... RETURNING left
        # half-stepped would keep COMMIT from going through).
        rows = self.run(cursor, values).fetchall()
        return self.decode(rows[0]) if rows else None

    def decode(self, row: Sequence[Any]) -> dict[str, Any]:
        return {
            name: value if convert is None else convert(value)
            for name, convert, value in zip(self.columns, self._results, row, strict=True)
        }


def wrapped_error(statement: str, exc: Exception, dialect: Dialect) -> Exception:
    """A DBAPI error of a statement run outside ``Prepared`` (BEGIN, COMMIT) as SQLAlchemy raises it."""
    return _wrapped(statement, (), exc, dialect)


def _wrapped(statement: str, params: Any, exc: Exception, dialect: Dialect) -> Exception:
    return DBAPIError.instance(statement, params, exc, dialect.loaded_dbapi.Error)


def _bind(kind: TypeEngine[Any], dialect: Dialect) -> Processor:
    # The dialect's own implementation (SQLite's DATETIME writes its fixed text format), as
    # SQLAlchemy converts: the generic type's processor would leave the value to the driver.
    return kind.dialect_impl(dialect).bind_processor(dialect)


def _result(kind: TypeEngine[Any], dialect: Dialect) -> Processor:
    return kind.dialect_impl(dialect).result_processor(dialect, None)


class Connections:
    """The DBAPI connections prepared statements run on, kept rather than checked out per call.

    ``keep`` (a SQLite file, PostgreSQL): writer connections on which ``write`` says BEGIN and
    COMMIT itself (on SQLite one, since the store's writer lock lets one write at a time; on
    PostgreSQL one per concurrent writer), and a few idle reader connections in autocommit (each
    read is one statement, so its own snapshot). Checking a
    connection out of SQLAlchemy's pool, its events, its BEGIN/COMMIT and, on PostgreSQL, the
    pre-ping and the ROLLBACK that resets it on return cost as much CPU as the statements (and a
    server round trip each). A kept connection that broke (a server restart, a session ended by a
    new leader's claim) is dropped, and the next call connects again: its error has already told
    ``Reachability``, whose ping decides when the database is back. Otherwise (``:memory:``) each
    call takes a pooled connection and SQLAlchemy's transaction, as the rest of the store does.
    """

    #: Connections kept idle at most, per kind; a burst of more concurrent calls opens and closes.
    IDLE = 8

    def __init__(self, writer: Engine, reader: Engine, *, keep: bool) -> None:
        self._writer_engine = writer
        self._reader_engine = reader
        self._keep = keep
        # On SQLite the store's writer lock lets one write at a time: one writer is kept. On
        # PostgreSQL writes run side by side, each on a connection of its own.
        self._writers = _Idle(writer, self.IDLE)
        self._readers = _Idle(reader, self.IDLE)

    @contextmanager
    def write(self) -> Iterator[Any]:
        """A cursor inside one write transaction (on SQLite the caller holds the store's writer lock)."""
        if not self._keep:
            with self._writer_engine.begin() as conn:
                yield conn.connection.cursor()
            return
        dialect = self._writer_engine.dialect
        with self._writers.connection() as connection:
            cursor = connection.cursor()
            try:
                # IMMEDIATE: SQLite takes its write lock now, not at the first write (no upgrade deadlock).
                _plain(cursor, "BEGIN IMMEDIATE" if dialect.name == "sqlite" else "BEGIN", dialect)
                yield cursor
                _plain(cursor, "COMMIT", dialect)
            except BaseException:
                if not _broken(connection):
                    connection.rollback()  # nothing to do outside a transaction
                raise
            finally:
                cursor.close()

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A cursor for ONE statement, outside any transaction."""
        if not self._keep:
            with self._reader_engine.connect() as conn:
                yield conn.connection.cursor()
            return
        with self._readers.connection() as connection:
            cursor = connection.cursor()
            try:
                yield cursor
            finally:
                # Closing the cursor ends its statement, and with it the read snapshot it held.
                cursor.close()

    def close(self) -> None:
        self._writers.close()
        self._readers.close()


class _Idle:
    """Idle DBAPI connections of one engine, taken and given back; a broken one is dropped."""

    def __init__(self, engine: Engine, most: int) -> None:
        self._engine = engine
        self._most = most
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = _detached(self._engine)
        try:
            yield connection
        finally:
            with self._lock:
                kept = len(self._idle) < self._most and not _broken(connection)
                if kept:
                    self._idle.append(connection)
            if not kept:
                _close(connection)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            _close(connection)


def _detached(engine: Engine) -> Any:
    """A DBAPI connection of ``engine`` (its connect event ran: pragmas, autocommit) that its pool
    no longer counts: kept for good, it must not hold one of the pool's slots."""
    try:
        proxied = engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as exc:
        # The pool raises the driver's own error; the store raises SQLAlchemy's everywhere.
        raise wrapped_error("connect", exc, engine.dialect) from exc
    proxied.detach()
    connection: Any = proxied.dbapi_connection
    if engine.dialect.name == "postgresql":
        # Reads are single statements, writes say BEGIN themselves (SQLite's connect event does
        # the same with isolation_level None).
        connection.autocommit = True
    return connection


def _broken(connection: Any) -> bool:
    """The connection can no longer be used (psycopg says so; a SQLite connection never breaks)."""
    return bool(getattr(connection, "closed", False) or getattr(connection, "broken", False))


def _close(connection: Any) -> None:
    with contextlib.suppress(Exception):  # closing what broke: its error was raised already
        connection.close()


def _plain(cursor: Any, statement: str, dialect: Dialect) -> None:
    try:
        cursor.execute(statement)
    except dialect.loaded_dbapi.Error as exc:
        raise wrapped_error(statement, exc, dialect) from exc
