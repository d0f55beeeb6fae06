"""The durable store: bindings, pools and the append-only history, in one SQL database.

The reconciler reads a ``Binding`` here, runs the handler of its state, and hands the outcome
back as a ``Change``; ``Store.commit`` applies it in ONE transaction: the binding's row, the
reference counts of the pools it leaves or joins, and a history row. A crash therefore leaves
either the old state or the new one, never a half-counted pool. The CLI reads the same tables.

SQLite (WAL) is the default; any SQLAlchemy URL works. The schema is owned by Alembic
(``migrations/``): open a store through ``engine.migrate`` (``open_store`` upgrades, ``check``
refuses a database that is missing, unmigrated or newer than this dklb).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class StoreError(Exception):
    """The database cannot be used as asked (missing, too new, unreadable)."""


class StaleBinding(Exception):
    """The binding changed under us (another worker or process committed first)."""


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite has no time zones and comparisons must not mix."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class JSONText(TypeDecorator[Any]):
    """JSON kept as readable text, so ``sqlite3 dklb.db`` shows what was recorded."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


class Base(DeclarativeBase):
    pass


class BindingRow(Base):
    __tablename__ = "bindings"
    __table_args__ = (UniqueConstraint("namespace", "name", name="uq_bindings_service"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(253))
    name: Mapped[str] = mapped_column(String(253))
    uid: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(32), index=True)
    pool: Mapped[str | None] = mapped_column(String(63), ForeignKey("pools.name"), index=True)
    config: Mapped[Any] = mapped_column(JSONText, nullable=True)
    objects: Mapped[Any] = mapped_column(JSONText, nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_wakeup: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    state_since: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PoolRow(Base):
    __tablename__ = "pools"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    ref_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by_dklb: Mapped[bool] = mapped_column(Boolean, default=False)
    served: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HistoryRow(Base):
    __tablename__ = "history"
    __table_args__ = (
        Index("ix_history_service_at", "namespace", "name", "at"),
        Index("ix_history_pool_at", "pool", "at"),
        Index("ix_history_state_at", "to_state", "at"),
        Index("ix_history_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No foreign key: history outlives the binding it describes.
    binding_id: Mapped[int | None] = mapped_column(Integer)
    namespace: Mapped[str] = mapped_column(String(253))
    name: Mapped[str] = mapped_column(String(253))
    pool: Mapped[str | None] = mapped_column(String(63))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    trigger: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(128), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Seconds spent in from_state; lets history answer "how long was it stuck" without a self-join.
    duration: Mapped[float | None] = mapped_column(Float)


BINDINGS = BindingRow.__table__
POOLS = PoolRow.__table__
HISTORY = HistoryRow.__table__

# The controller's statements, built once and run with parameters: building a statement (coercing
# every value into the expression tree and keying the compiled cache on it) cost more CPU than
# SQLite spent running it. An UPDATE sets the columns its parameters name.
_BINDING_BY_ID = select(BINDINGS).where(BINDINGS.c.id == bindparam("_id"))
_BINDING_BY_KEY = select(BINDINGS).where(
    BINDINGS.c.namespace == bindparam("_namespace"), BINDINGS.c.name == bindparam("_name")
)
_BINDINGS_IN_POOL = (
    select(BINDINGS)
    .where(BINDINGS.c.pool == bindparam("_pool"))
    .order_by(BINDINGS.c.namespace, BINDINGS.c.name)
)
_INSERT_BINDING = insert(BINDINGS)
_UPDATE_BINDING = update(BINDINGS).where(BINDINGS.c.id == bindparam("_id"))
_DELETE_BINDING = delete(BINDINGS).where(BINDINGS.c.id == bindparam("_id"))
_INSERT_HISTORY = insert(HISTORY)
_POOL_BY_NAME = select(POOLS).where(POOLS.c.name == bindparam("_name"))
_INSERT_POOL = insert(POOLS)
_UPDATE_POOL = update(POOLS).where(POOLS.c.name == bindparam("_name"))
_DELETE_POOL = delete(POOLS).where(POOLS.c.name == bindparam("_name"))


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

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Pool:
    name: str
    ref_count: int
    created_by_dklb: bool
    served: bool
    created_at: datetime
    updated_at: datetime


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
        return f"{self.namespace}/{self.name}"


_UNSET: Any = object()


@dataclass(frozen=True)
class Change:
    """Everything one transition writes; ``Store.commit`` applies it atomically.

    ``to_state`` None removes the binding (its history stays). Fields left ``_UNSET`` keep their
    value. ``record`` False writes no history row (polls and resync bookkeeping).
    """

    binding_id: int
    expected_state: str
    to_state: str | None
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
    pool_created_by_dklb: bool | None = None
    pool_served: bool | None = None

    def updates(self) -> dict[str, Any]:
        names = ("pool", "config", "objects", "fingerprint", "uid", "attempts", "next_wakeup", "last_error")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not _UNSET}


def utcnow() -> datetime:
    return datetime.now(UTC)


def database_url(target: str) -> str:
    """A SQLAlchemy URL as given, or a filesystem path turned into a SQLite URL."""
    if "://" in target:
        return target
    return f"sqlite:///{Path(target).expanduser().resolve()}"


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    rest = url.removeprefix("sqlite:///").split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


# Execution option of a connection that runs one read-only statement (``Store._read``).
SINGLE_STATEMENT = "dklb_single_statement"


def make_engine(url: str, *, read_only: bool = False, deferred: bool = False) -> Engine:
    """An engine configured for this workload: WAL, immediate write locks, a busy timeout.

    ``read_only`` opens SQLite with ``mode=ro`` so the CLI can never write beside a live
    controller, and never creates a missing file. ``deferred``: transactions start with a plain
    BEGIN (the store's reads: a WAL reader needs no lock and never waits for a writer).
    """
    path = _sqlite_path(url)
    if path is None:
        return create_engine(url, future=True)
    if read_only:
        if not path.exists():
            raise StoreError(f"database {path} does not exist")
        engine = create_engine(
            f"sqlite:///file:{path}?mode=ro&uri=true", future=True, connect_args={"timeout": 30}
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # The database holds pool names and recorded configurations: owner-only from birth.
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        engine = create_engine(url, future=True, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's implicit BEGIN is deferred: two writers would deadlock upgrading their read
        # locks. Take control of BEGIN so that every transaction starts IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(SINGLE_STATEMENT):
            # One SELECT is a consistent snapshot on its own: no BEGIN and COMMIT around it.
            return
        conn.exec_driver_sql("BEGIN" if read_only or deferred else "BEGIN IMMEDIATE")

    return engine


def split_key(key: str) -> tuple[str, str]:
    namespace, sep, name = key.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"{key!r} is not a NAMESPACE/NAME key")
    return namespace, name


class Store:
    """Typed access to the database; every write method is one transaction."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        self.engine = make_engine(url, read_only=read_only)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Reads on an engine of their own whose transactions take no write lock, so readers never
        # queue behind a worker's commit (only for a file: another engine on :memory: is another
        # database).
        separate = not read_only and _sqlite_path(url) is not None
        self._reader = make_engine(url, deferred=True) if separate else self.engine
        self._read_sessions = sessionmaker(self._reader, expire_on_commit=False)
        # Writers queue here rather than in SQLite's busy handler, which sleeps 1, 2, 5, 10... ms
        # between attempts and so leaves the lock idle; other processes still meet the handler.
        self._writer = threading.Lock()
        # Write transactions committed by this process: what /metrics and the benchmark count.
        self.write_transactions = 0
        self._writes_lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()
        self._reader.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """An ORM read transaction (a snapshot of the last commit), for ad-hoc queries."""
        with self._read_sessions() as session, session.begin():
            yield session

    # The controller's own reads and writes go through SQLAlchemy Core on plain connections:
    # the ORM's unit of work cost more CPU than everything else a reconcile does.

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for ONE statement (each read below is one)."""
        with self._reader.connect() as conn:
            yield conn.execution_options(**{SINGLE_STATEMENT: True})

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._writer, self.engine.begin() as conn:
            yield conn
        with self._writes_lock:
            self.write_transactions += 1

    # ---- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> Binding | None:
        namespace, name = split_key(key)
        with self._read() as conn:
            row = conn.execute(_BINDING_BY_KEY, {"_namespace": namespace, "_name": name}).first()
        return None if row is None else Binding(**row._mapping)

    def bindings(self, *, pool: str | None = None, states: Sequence[str] | None = None) -> list[Binding]:
        if pool is not None and states is None:
            # The guards' question on every transition into a pool.
            query, params = _BINDINGS_IN_POOL, {"_pool": pool}
        else:
            query, params = select(BINDINGS).order_by(BINDINGS.c.namespace, BINDINGS.c.name), {}
            if pool is not None:
                query = query.where(BINDINGS.c.pool == pool)
            if states is not None:
                query = query.where(BINDINGS.c.state.in_(list(states)))
        with self._read() as conn:
            return [Binding(**r._mapping) for r in conn.execute(query, params)]

    def pool(self, name: str) -> Pool | None:
        with self._read() as conn:
            row = conn.execute(_POOL_BY_NAME, {"_name": name}).first()
        return None if row is None else Pool(**row._mapping)

    def pools(self) -> list[Pool]:
        with self._read() as conn:
            return [Pool(**r._mapping) for r in conn.execute(select(POOLS).order_by(POOLS.c.name))]

    def keys(self, *, due: datetime | None = None) -> list[str]:
        """The keys of the bindings, in ``bindings()``'s order; with ``due``, of those whose
        wake-up is at or before it, earliest first (``due()``'s order). Two columns only: a whole
        ``Binding`` carries its decoded configuration and EdgeLB objects."""
        query = select(BINDINGS.c.namespace, BINDINGS.c.name)
        if due is None:
            query = query.order_by(BINDINGS.c.namespace, BINDINGS.c.name)
        else:
            query = query.where(BINDINGS.c.next_wakeup.is_not(None), BINDINGS.c.next_wakeup <= due)
            query = query.order_by(BINDINGS.c.next_wakeup)
        with self._read() as conn:
            return [f"{namespace}/{name}" for namespace, name in conn.execute(query)]

    def due(self, now: datetime) -> list[Binding]:
        query = (
            select(BINDINGS)
            .where(BINDINGS.c.next_wakeup.is_not(None), BINDINGS.c.next_wakeup <= now)
            .order_by(BINDINGS.c.next_wakeup)
        )
        with self._read() as conn:
            return [Binding(**r._mapping) for r in conn.execute(query)]

    def history(
        self,
        *,
        key: str | None = None,
        pool: str | None = None,
        since: datetime | None = None,
        state: str | None = None,
        limit: int | None = 50,
    ) -> list[HistoryEntry]:
        """Newest first."""
        query = select(HISTORY).order_by(HISTORY.c.at.desc(), HISTORY.c.id.desc())
        if key is not None:
            namespace, name = split_key(key)
            query = query.where(HISTORY.c.namespace == namespace, HISTORY.c.name == name)
        if pool is not None:
            query = query.where(HISTORY.c.pool == pool)
        if since is not None:
            query = query.where(HISTORY.c.at >= since)
        if state is not None:
            query = query.where(HISTORY.c.to_state == state)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [HistoryEntry(**r._mapping) for r in conn.execute(query)]

    def live_reference_counts(self) -> dict[str, int]:
        """Bindings per pool counted from the bindings table: the truth ``ref_count`` must equal."""
        with self._read() as conn:
            rows = conn.execute(
                select(BINDINGS.c.pool, func.count())
                .where(BINDINGS.c.pool.is_not(None))
                .group_by(BINDINGS.c.pool)
            )
            return {str(p): int(n) for p, n in rows}

    # ---- writes ------------------------------------------------------------------------------

    def create(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        state: str,
        trigger: str,
        reason: str = "",
        message: str = "",
        now: datetime | None = None,
    ) -> Binding:
        """A new binding and its first history row (from nothing to ``state``)."""
        now = now or utcnow()
        values: dict[str, Any] = {
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "state": state,
            "pool": None,
            "config": None,
            "objects": None,
            "fingerprint": None,
            "attempts": 0,
            "next_wakeup": now,
            "last_error": None,
            "state_since": now,
            "created_at": now,
            "updated_at": now,
        }
        with self._write() as conn:
            binding_id = conn.execute(_INSERT_BINDING, values).inserted_primary_key[0]
            conn.execute(
                _INSERT_HISTORY,
                {
                    "binding_id": binding_id,
                    "namespace": namespace,
                    "name": name,
                    "pool": None,
                    "from_state": None,
                    "to_state": state,
                    "trigger": trigger,
                    "reason": reason,
                    "message": message,
                    "attempt": 0,
                    "at": now,
                    "duration": None,
                },
            )
        return Binding(id=binding_id, **values)

    def commit(self, change: Change, *, now: datetime | None = None) -> Binding | None:
        """Apply one transition atomically; returns the binding after it (None once removed).

        Raises ``StaleBinding`` when the binding is no longer in ``change.expected_state``: the
        caller's view is out of date and nothing is written.
        """
        now = now or utcnow()
        with self._write() as conn:
            found = conn.execute(_BINDING_BY_ID, {"_id": change.binding_id}).first()
            if found is None or found.state != change.expected_state:
                state = None if found is None else found.state
                raise StaleBinding(
                    f"binding {change.binding_id} is {state}, expected {change.expected_state}"
                )
            row = dict(found._mapping)
            old_pool = row["pool"]
            updates = change.updates()
            new_pool = updates.get("pool", old_pool) if change.to_state is not None else None
            if old_pool != new_pool and new_pool is not None:
                # A pool row exists exactly while bindings refer to it; the bindings' foreign key
                # needs it before the binding row points at it.
                self._adjust_pool(conn, new_pool, +1, now)
            if change.record:
                conn.execute(
                    _INSERT_HISTORY,
                    {
                        "binding_id": row["id"],
                        "namespace": row["namespace"],
                        "name": row["name"],
                        "pool": new_pool if new_pool is not None else old_pool,
                        "from_state": row["state"],
                        "to_state": change.to_state or "Removed",
                        "trigger": change.trigger,
                        "reason": change.reason,
                        "message": change.message,
                        "attempt": updates.get("attempts", row["attempts"]),
                        "at": now,
                        "duration": (now - row["state_since"]).total_seconds(),
                    },
                )
            if change.to_state is None:
                conn.execute(_DELETE_BINDING, {"_id": row["id"]})
            else:
                values = {**updates, "updated_at": now}
                if change.to_state != row["state"]:
                    values.update(state=change.to_state, state_since=now)
                conn.execute(_UPDATE_BINDING, {"_id": row["id"], **values})
                row.update(values)
            pool_name = new_pool if new_pool is not None else old_pool
            if pool_name is not None and (change.pool_created_by_dklb is not None or change.pool_served):
                flags: dict[str, Any] = {"updated_at": now}
                if change.pool_created_by_dklb is not None:
                    flags["created_by_dklb"] = change.pool_created_by_dklb
                if change.pool_served:
                    flags["served"] = True
                conn.execute(_UPDATE_POOL, {"_name": pool_name, **flags})
            if old_pool != new_pool and old_pool is not None:
                self._adjust_pool(conn, old_pool, -1, now)
        return None if change.to_state is None else Binding(**row)

    def _adjust_pool(self, conn: Connection, name: str, delta: int, now: datetime) -> None:
        found = conn.execute(_POOL_BY_NAME, {"_name": name}).first()
        if found is None:
            if delta < 0:
                raise StoreError(f"reference count of unknown pool {name!r} cannot drop")
            conn.execute(
                _INSERT_POOL,
                {
                    "name": name,
                    "ref_count": delta,
                    "created_by_dklb": False,
                    "served": False,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            return
        count = found.ref_count + delta
        if count <= 0:
            conn.execute(_DELETE_POOL, {"_name": name})
        else:
            conn.execute(_UPDATE_POOL, {"_name": name, "ref_count": count, "updated_at": now})

    def set_wakeup(self, key: str, at: datetime) -> bool:
        """Wake a binding at ``at`` (``dklb retry``); a running controller's scan picks it up."""
        namespace, name = split_key(key)
        with self._write() as conn:
            result = conn.execute(
                update(BINDINGS)
                .where(BINDINGS.c.namespace == namespace, BINDINGS.c.name == name)
                .values(next_wakeup=at)
            )
            return bool(result.rowcount)
