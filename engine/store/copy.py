"""Copying one dklb database into another: ``dklb migrate --from SOURCE --to TARGET``.

Where it sits: the way from the embedded SQLite file to PostgreSQL (high availability), or
back. ``dklb migrate`` checks that the source is at this dklb's schema and migrates the target
first; ``copy_database`` then copies every table the store declares (``schema.Base``), parents
before children, through the same ``Table`` objects the store uses, so times and JSON are
converted by their column types whatever the two dialects are.

Consistency: the source is read in one transaction (a snapshot: SQLite's WAL reader, PostgreSQL's
REPEATABLE READ), so a controller still running on it cannot tear the copy; stop it first all the
same, or what it does afterwards is not copied. The target is written in one transaction and
must be empty: a half copy or a merge into a live database is never left behind. On PostgreSQL
the sequences of the integer keys are moved past the copied rows, or the next insert would
collide with a copied id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Connection, Table, func, select, text

from engine.store.database import make_engine
from engine.store.records import StoreError
from engine.store.schema import Base

#: Rows per INSERT (executemany): large enough to be fast, small enough to stay light in memory.
BATCH = 1000
#: Tables that are state of the running replicas, not data: the new controller makes its own
#: (the leader's term, issue 17's fence).
SKIPPED = frozenset({"leadership"})


class TargetNotEmpty(StoreError):
    """The target database already holds dklb data: a copy would merge two controllers' worlds."""


def tables() -> list[Table]:
    """What is copied, parents first (foreign keys)."""
    return [t for t in Base.metadata.sorted_tables if t.name not in SKIPPED]


def _rows(conn: Connection, table: Table) -> Iterator[list[Mapping[str, Any]]]:
    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execution_options(yield_per=BATCH).execute(select(table).order_by(*order))
    for chunk in result.mappings().partitions(BATCH):
        yield [dict(row) for row in chunk]


def _refuse_non_empty(conn: Connection, shown: str) -> None:
    full = [t.name for t in tables() if conn.execute(select(1).select_from(t).limit(1)).first() is not None]
    if full:
        raise TargetNotEmpty(
            f"target database {shown} is not empty (rows in {', '.join(full)}): the copy goes into a "
            "new, empty database only; create one (or drop these rows) and run it again"
        )


def _reset_sequences(conn: Connection) -> None:
    """PostgreSQL: each integer key's sequence continues after the largest copied id."""
    if conn.dialect.name != "postgresql":
        return  # SQLite's INTEGER PRIMARY KEY takes max(rowid) + 1 by itself
    for table in tables():
        column = table.autoincrement_column
        if column is None:
            continue
        largest = conn.execute(select(func.max(column))).scalar()
        if largest is None:
            continue
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence(:table, :column), :value)"),
            {"table": table.name, "column": column.name, "value": largest},
        )


def copy_database(source: str, target: str, *, target_shown: str = "") -> dict[str, int]:
    """Copy every table of ``source`` into the empty ``target`` (both URLs, both migrated to
    this dklb's head); the rows copied per table. ``TargetNotEmpty`` when the target holds any."""
    reader = make_engine(source, read_only=True)
    writer = make_engine(target)
    copied: dict[str, int] = {}
    try:
        with reader.connect() as src, writer.begin() as dst:
            if src.dialect.name == "postgresql":
                src = src.execution_options(isolation_level="REPEATABLE READ")
            _refuse_non_empty(dst, target_shown or "(target)")
            with src.begin():
                for table in tables():
                    copied[table.name] = 0
                    for batch in _rows(src, table):
                        dst.execute(table.insert(), batch)
                        copied[table.name] += len(batch)
            _reset_sequences(dst)
    finally:
        reader.dispose()
        writer.dispose()
    return copied
