"""The schema is Alembic's: the revisions build exactly the tables the store maps, and undo them.

Proves that the real ``alembic`` command upgrades an empty database to head and downgrades it
to base, from the repository root with ``-x database=PATH`` and from any other directory with
``-c alembic.ini``; that the upgraded schema has every table and index and matches
``engine.store.Base.metadata`` column for column (and by Alembic's own comparison); that
``migrate.check`` refuses a database without the schema or at an unknown revision with a
message that says what to do, and accepts an up-to-date one; that ``dklb migrate`` prints the
revision; and that upgrading twice changes nothing.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from engine import cli
from engine.store import Base, Store, StoreError, database_url, migrate

REPO = Path(__file__).resolve().parents[2]
ALEMBIC = Path(sys.executable).with_name("alembic")

TABLES = {"alembic_version", "bindings", "pools", "history", "history_pruned", "normal_forms", "leadership"}
INDEXES = {
    "ix_bindings_state": "bindings",
    "ix_bindings_pool": "bindings",
    "ix_bindings_next_wakeup": "bindings",
    "ix_history_service_at": "history",
    "ix_history_pool_at": "history",
    "ix_history_state_at": "history",
    "ix_history_at": "history",
}


def alembic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(ALEMBIC), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"alembic {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def master(path: Path) -> dict[str, set[str]]:
    """Names in sqlite_master by type (SQLite's own automatic indexes left out)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, tbl_name FROM sqlite_master").fetchall()
    finally:
        conn.close()
    found: dict[str, set[str]] = {"table": set(), "index": set()}
    for kind, name, _table in rows:
        if not name.startswith("sqlite_autoindex_"):
            found.setdefault(kind, set()).add(name)
    return found


def indexes_by_table(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'").fetchall()
    finally:
        conn.close()
    return {name: table for name, table in rows if not name.startswith("sqlite_autoindex_")}


def version(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    finally:
        conn.close()


INVOCATIONS: list[tuple[str, str]] = [("repo-root", "root"), ("other-cwd-with-config", "elsewhere")]


@pytest.mark.parametrize("where", [w for _, w in INVOCATIONS], ids=[i for i, _ in INVOCATIONS])
def test_alembic_upgrade_head_then_downgrade_base_on_an_empty_database(tmp_path: Path, where: str) -> None:
    db = tmp_path / "data" / "dklb.db"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if where == "root":
        cwd, config = REPO, []
    else:
        cwd, config = elsewhere, ["-c", str(REPO / "alembic.ini")]

    alembic(*config, "-x", f"database={db}", "upgrade", "head", cwd=cwd)
    assert master(db)["table"] == TABLES
    assert indexes_by_table(db) == INDEXES
    assert version(db) == [migrate.head()]

    shown = alembic(*config, "-x", f"database={db}", "current", cwd=cwd)
    assert f"{migrate.head()} (head)" in shown.stdout

    alembic(*config, "-x", f"database={db}", "downgrade", "base", cwd=cwd)
    assert master(db) == {"table": {"alembic_version"}, "index": set()}
    assert version(db) == []
    assert not (elsewhere / "dklb.db").exists(), "-x database is used, not the ini's default"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database without schema, of each dialect (PostgreSQL: a fresh one on the session's server)."""
    if request.param == "sqlite":
        return str(tmp_path / "dklb.db")
    return str(request.getfixturevalue("postgres_url"))


def test_the_upgraded_schema_matches_the_store_metadata_and_downgrades(empty_database: str) -> None:
    url = empty_database
    assert migrate.upgrade(url) == migrate.head()
    engine = create_engine(database_url(url))
    try:
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
        for name, table in Base.metadata.tables.items():
            columns = {c["name"]: c for c in inspector.get_columns(name)}
            assert list(columns) == [c.name for c in table.columns], name
            for column in table.columns:
                assert columns[column.name]["nullable"] == column.nullable, f"{name}.{column.name}"
            # PostgreSQL lists a unique constraint's own index too.
            indexes = {i["name"] for i in inspector.get_indexes(name) if "duplicates_constraint" not in i}
            assert indexes == {i.name for i in table.indexes}, name
            assert inspector.get_pk_constraint(name)["constrained_columns"] == [
                c.name for c in table.primary_key.columns
            ]
        assert [
            (fk["referred_table"], fk["constrained_columns"]) for fk in inspector.get_foreign_keys("bindings")
        ] == [("pools", ["pool"])]
        assert [u["column_names"] for u in inspector.get_unique_constraints("bindings")] == [
            ["namespace", "name"]
        ]
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == [], "autogenerate finds nothing to migrate"
    finally:
        engine.dispose()
    migrate.downgrade(url)
    assert migrate.current(database_url(url)) is None
    assert migrate.upgrade(url) == migrate.head()


def test_upgrading_twice_is_idempotent_and_keeps_the_data(tmp_path: Path) -> None:
    db = tmp_path / "dklb.db"
    assert migrate.upgrade(str(db)) == migrate.head()
    schema = master(db)
    store = Store(database_url(str(db)))
    try:
        store.create(namespace="ns", name="a", uid="u", state="Pending", trigger="observed")
    finally:
        store.close()
    assert migrate.upgrade(str(db)) == migrate.head()
    assert master(db) == schema
    assert version(db) == [migrate.head()]
    store = Store(database_url(str(db)), read_only=True)
    try:
        assert [b.key for b in store.bindings()] == ["ns/a"]
    finally:
        store.close()


def test_downgrade_then_upgrade_in_code(tmp_path: Path) -> None:
    db = tmp_path / "dklb.db"
    migrate.upgrade(str(db))
    migrate.downgrade(str(db))
    assert migrate.current(database_url(str(db))) is None
    assert master(db)["table"] == {"alembic_version"}
    assert migrate.upgrade(str(db)) == migrate.head()
    assert master(db)["table"] == TABLES


# ---- check -----------------------------------------------------------------------------------


def empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.db"
    path.touch()
    return path


def never_migrated(tmp_path: Path) -> Path:
    path = tmp_path / "plain.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE unrelated (x INTEGER)")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("make", [empty_file, never_migrated], ids=["empty-file", "sqlite-without-schema"])
def test_check_refuses_a_database_without_schema_saying_run_dklb_migrate(
    tmp_path: Path, make: Callable[[Path], Path]
) -> None:
    path = make(tmp_path)
    with pytest.raises(StoreError) as caught:
        migrate.check(str(path))
    assert str(caught.value) == f"database {path} has no dklb schema: run `dklb migrate --database {path}`"


def test_check_refuses_a_revision_newer_than_this_dklb(tmp_path: Path) -> None:
    db = tmp_path / "dklb.db"
    migrate.upgrade(str(db))
    conn = sqlite3.connect(db)
    conn.execute("UPDATE alembic_version SET version_num = 'f00dfeed'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as caught:
        migrate.check(str(db))
    message = str(caught.value)
    assert message == f"database {db} is at revision f00dfeed, newer than this dklb (head {migrate.head()})"

    with pytest.raises(StoreError, match="f00dfeed, newer than this dklb"):
        migrate.upgrade(str(db))
    assert version(db) == ["f00dfeed"], "a newer database is not touched"
    assert cli.main(["migrate", "--database", str(db)]) == 1


def test_check_accepts_an_up_to_date_database_without_writing(tmp_path: Path) -> None:
    db = tmp_path / "dklb.db"
    migrate.upgrade(str(db))
    before = db.stat().st_mtime_ns, db.stat().st_size
    migrate.check(str(db))  # no error
    migrate.check(database_url(str(db)))  # a URL works as well as a path
    assert (db.stat().st_mtime_ns, db.stat().st_size) == before


def test_check_refuses_a_missing_database_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="does not exist"):
        migrate.check(str(path))
    assert not path.exists()


def test_check_on_a_missing_database_says_run_dklb_migrate(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(StoreError, match=r"run `dklb migrate --database "):
        migrate.check(str(path))


# ---- dklb migrate ----------------------------------------------------------------------------


def test_dklb_migrate_prints_the_revision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "sub" / "dklb.db"
    assert cli.main(["migrate", "--database", str(db)]) == 0
    assert capsys.readouterr().out == f"database {db} is at revision {migrate.head()}\n"
    assert master(db)["table"] == TABLES
    migrate.check(str(db))

    assert cli.main(["migrate", "--database", str(db)]) == 0, "a second run is a no-op"
    assert capsys.readouterr().out == f"database {db} is at revision {migrate.head()}\n"


def test_a_corrupted_database_is_refused_with_a_clear_error_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "dklb.db"
    garbage = b"this is not sqlite\x00" * 512
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as refused:
        migrate.upgrade(str(path))
    assert "not a usable dklb database" in str(refused.value) and "file is not a database" in str(
        refused.value
    )
    assert path.read_bytes() == garbage, "nothing was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dklb.db"], "no WAL or journal file was created"
