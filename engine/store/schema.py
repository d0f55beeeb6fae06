"""The database schema: six tables, as SQLAlchemy declares them and Alembic migrates them.

``bindings`` (one row per Service dklb handles), ``pools`` (a row exactly while bindings refer to
the pool: its reference count), the ``history`` (appended to by every transition, pruned by
retention only), ``history_pruned`` (what retention deleted, so ``dklb history`` can say so) and
``normal_forms`` (the pool sweep's memo, so that a restart does not normalize again every set of
EdgeLB objects it knows) and ``leadership`` (one row: the term of the replica that leads, the
database's own fence against a deposed leader's late commit). ``migrations/`` creates them;
``engine.store.store`` reads and writes them with statements built on the ``Table`` objects
below. Column types keep SQLite readable (JSON as text) and times comparable (UTC only).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


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
    # A digest of the Service's kubernetes.dcos.io/dklb-shared-pool-key when it was last accepted:
    # what the sharing guard compares across namespaces (the value itself is never stored).
    shared_pool_key: Mapped[str | None] = mapped_column(String(64), nullable=True)


class PoolRow(Base):
    __tablename__ = "pools"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    ref_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by_dklb: Mapped[bool] = mapped_column(Boolean, default=False)
    served: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # dklb found the pool made by someone else (neither its mark nor only its objects): it is never
    # adopted later, even once it holds nothing but dklb's objects (see states.provisioning).
    pre_existing: Mapped[bool] = mapped_column(Boolean, default=False)
    # The namespace dklb created the pool for, and the digest of the creating Service's sharing key
    # (both also marked in EdgeLB, so a lost database cannot widen who may use the pool).
    namespace: Mapped[str | None] = mapped_column(String(253), nullable=True)
    shared_pool_key: Mapped[str | None] = mapped_column(String(64), nullable=True)


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


class HistoryPrunedRow(Base):
    """One row per retention rule and Service: entries older than ``before`` are gone.

    The key ``("", "")`` is the age rule (every Service's history); a Service's key is its row
    cap. A Service's row is dropped once the age rule's ``before`` passes it (it says no more).
    """

    __tablename__ = "history_pruned"

    namespace: Mapped[str] = mapped_column(String(253), primary_key=True)
    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    before: Mapped[datetime] = mapped_column(UTCDateTime)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class NormalFormRow(Base):
    """``engine.runtime.poolsweep.Digests`` kept: the digest of a set of EdgeLB objects as stored or
    listed -> the digest of its normalized form. A pure function of the content (and of the
    normalization, whose version is in the content digest's key), so a row is never wrong, only
    unused: the sweep rewrites the table when most rows are."""

    __tablename__ = "normal_forms"

    content: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    normal: Mapped[bytes] = mapped_column(LargeBinary(16))


class LeadershipRow(Base):
    """The one row (``id`` 1) of the leader fence: every ``Store.claim_leadership`` adds one to
    ``term``; a store that claimed writes only while the row still holds its term."""

    __tablename__ = "leadership"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str] = mapped_column(String(253), default="")
    term: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# The Table objects, for SQLAlchemy Core statements (the store's reads and writes).
BINDINGS = cast(Table, BindingRow.__table__)
POOLS = cast(Table, PoolRow.__table__)
HISTORY = cast(Table, HistoryRow.__table__)
HISTORY_PRUNED = cast(Table, HistoryPrunedRow.__table__)
NORMAL_FORMS = cast(Table, NormalFormRow.__table__)
LEADERSHIP = cast(Table, LeadershipRow.__table__)
