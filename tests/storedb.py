"""Migrated databases of both dialects for the store's tests: ``store_url`` runs a test on SQLite
and on PostgreSQL.

Each test gets a fresh, migrated, empty database: on SQLite a copy of a file migrated once per
session; on PostgreSQL a ``CREATE DATABASE ... TEMPLATE`` of a database migrated once per session
on the session's server (``postgres_server``, tests/conftest.py). Migrating is the slow part
(Alembic imports and runs six revisions); copying costs milliseconds. Import the fixtures into a
test module (``from tests.storedb import store_url, ...``) or a conftest.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import localpg
from engine.store import database_url, migrate

DIALECTS = ["sqlite", "postgresql"]
_names = itertools.count(1)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store-template") / "dklb.db"
    migrate.upgrade(str(path))
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_server: localpg.LocalPostgres) -> str:
    name = f"dklb_template_{os.getpid()}"
    postgres_server.drop_database(name)
    migrate.upgrade(postgres_server.create_database(name))
    return name


@pytest.fixture
def new_store_url(
    request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path
) -> Iterator[Callable[[str], str]]:
    """A factory: ``new_store_url(dialect)`` is the URL of a fresh migrated database (dropped at
    the end of the test)."""
    dropped: list[tuple[localpg.LocalPostgres, str]] = []

    def make(dialect: str) -> str:
        if dialect == "sqlite":
            path = tmp_path / f"dklb-{next(_names)}.db"
            shutil.copyfile(sqlite_template, path)
            path.chmod(0o600)
            return database_url(str(path))
        server: localpg.LocalPostgres = request.getfixturevalue("postgres_server")
        template = request.getfixturevalue("postgres_template")
        name = f"t{os.getpid()}_s{next(_names)}"
        url = server.create_database(name, template=template)
        dropped.append((server, name))
        return database_url(url)

    yield make
    for server, name in dropped:
        server.drop_database(name)


@pytest.fixture(params=DIALECTS)
def store_url(request: pytest.FixtureRequest, new_store_url: Callable[[str], str]) -> str:
    """A fresh migrated database of each dialect in turn, as a SQLAlchemy URL."""
    return new_store_url(request.param)
