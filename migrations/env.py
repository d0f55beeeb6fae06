"""Alembic environment: runs the revisions in ``versions/`` against one database.

Reached from ``alembic upgrade head`` (URL from alembic.ini or ``-x database=...``) and from
``engine.store.migrate.upgrade`` (URL passed in the Alembic config by code). Uses the same engine
settings as the controller (WAL, immediate transactions, 0600 file).
"""

from __future__ import annotations

from alembic import context

from engine.store import Base, database_url, make_engine

config = context.config
target = context.get_x_argument(as_dictionary=True).get("database") or config.get_main_option(
    "sqlalchemy.url"
)
url = database_url(target or "dklb.db")


def run_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
