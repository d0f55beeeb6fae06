"""Opening the database: a target (a path or a SQLAlchemy URL) and an engine tuned for dklb.

SQLite (WAL) is the default; any SQLAlchemy URL works. ``make_engine`` is used by the store (a
writer engine whose transactions take SQLite's write lock at BEGIN, and a reader engine whose
transactions take none), by the CLI (read-only) and by the Alembic environment
(``migrations/env.py``), so a migration runs with the same settings as the controller.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

from engine.store.records import StoreError


def database_url(target: str) -> str:
    """A SQLAlchemy URL as given, or a filesystem path turned into a SQLite URL."""
    if "://" in target:
        return target
    return f"sqlite:///{Path(target).expanduser().resolve()}"


def sqlite_path(url: str) -> Path | None:
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
    path = sqlite_path(url)
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
