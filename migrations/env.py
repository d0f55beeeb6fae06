"""Alembic environment: runs the revisions in ``versions/`` against one database.

Reached from ``alembic upgrade head`` (URL from alembic.ini or ``-x database=...``) and from
``engine.store.migrate.upgrade`` (URL passed in the Alembic config by code, on PostgreSQL under
the migration's advisory lock). Uses the same engine settings as the controller (SQLite: WAL,
immediate transactions, 0600 file; PostgreSQL: psycopg 3, where Alembic runs the whole upgrade in
one transaction, DDL included). ``postgresql://`` URLs are normalized by ``database_url`` like
the controller's. A new SQLite file is made with ``auto_vacuum=INCREMENTAL``, so that pages
freed by history retention (``engine.store.pruning``) can be given back to the file system.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from engine.store import Base, database_url, make_engine

config = context.config
target = context.get_x_argument(as_dictionary=True).get("database") or config.get_main_option(
    "sqlalchemy.url"
)
# A URL object from ``engine.store.migrate`` (its password never made text), else the text.
url = config.attributes.get("dklb_url") or database_url(target or "dklb.db")


def run_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def incremental_vacuum_if_new(connection: Any) -> None:
    """``auto_vacuum`` changes only by a whole ``VACUUM`` once the file has a header (WAL mode,
    set on connect, writes one): on an empty SQLite file that costs nothing, on a full one it
    could take minutes at start-up, so only a new file gets it. Outside any transaction (the
    raw connection is in autocommit)."""
    if connection.dialect.name != "sqlite":
        return
    raw = connection.connection.driver_connection
    if raw.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        raw.execute("PRAGMA auto_vacuum=INCREMENTAL")
        raw.execute("VACUUM")


def run_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        incremental_vacuum_if_new(connection)
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
