"""``engine.store.prepared``: a statement run on the DBAPI cursor stores byte for byte what
SQLAlchemy's ``Connection.execute`` stores, reads back what it reads, and fails as it fails (on
SQLite, and on PostgreSQL through psycopg 3)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import bindparam, create_engine, insert, select

from engine.store import Change, StaleBinding, Store, make_engine, migrate
from engine.store.prepared import Connections, Prepared
from engine.store.schema import BINDINGS, Base

WHEN = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)

# (case, column values) inserted into ``bindings`` both ways; every stored cell must match.
ROWS: list[tuple[str, dict[str, Any]]] = [
    ("microseconds", {"next_wakeup": WHEN}),
    ("whole-second", {"next_wakeup": WHEN.replace(microsecond=0)}),
    ("other-zone", {"next_wakeup": datetime.fromisoformat("2026-03-04T07:06:07+02:00")}),
    ("no-wakeup", {"next_wakeup": None}),
    ("json", {"objects": {"b": [1, "x"], "a": None}, "config": {"k": "v"}}),
    ("json-null", {"objects": None}),
    ("error-text", {"last_error": "boom: 'quoted'"}),
]


def _binding(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "namespace": "ns",
        "name": name,
        "uid": "u",
        "state": "Pending",
        "pool": None,
        "config": None,
        "objects": None,
        "fingerprint": None,
        "attempts": 0,
        "next_wakeup": None,
        "last_error": None,
        "state_since": WHEN,
        "created_at": WHEN,
        "updated_at": WHEN,
        "shared_pool_key": None,
    }
    return {**values, **extra}


@pytest.mark.parametrize(("case", "extra"), ROWS, ids=[c for c, _ in ROWS])
@pytest.mark.parametrize("paramstyle", ["qmark", "named"])
def test_stored_and_read_back_as_sqlalchemy_does(
    tmp_path: Any, case: str, extra: dict[str, Any], paramstyle: str
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db'}")
    Base.metadata.create_all(engine)
    values = _binding(case, extra)
    with engine.begin() as conn:
        conn.execute(insert(BINDINGS), {**values, "name": "by-sqlalchemy"})
    dialect = create_engine("sqlite://", paramstyle=paramstyle).dialect
    keys = list(values)
    raw = sqlite3.connect(tmp_path / "db", isolation_level=None)
    Prepared(insert(BINDINGS), dialect, keys).run(raw.cursor(), {**values, "name": "prepared"})
    cells = {
        name: raw.execute(f"SELECT {', '.join(keys[3:])} FROM bindings WHERE name = ?", (name,)).fetchone()
        for name in ("by-sqlalchemy", "prepared")
    }
    assert cells["prepared"] == cells["by-sqlalchemy"]
    by_key = Prepared(select(BINDINGS).where(BINDINGS.c.name == bindparam("_name")), dialect)
    read = by_key.first(raw.cursor(), {"_name": "prepared"})
    with engine.connect() as conn:
        expected = conn.execute(select(BINDINGS).where(BINDINGS.c.name == "by-sqlalchemy")).one()._mapping
    assert read is not None
    assert {**read, "id": None, "name": None} == {**expected, "id": None, "name": None}
    assert by_key.first(raw.cursor(), {"_name": "absent"}) is None
    raw.close()
    engine.dispose()


# (case, values, SQLAlchemy's error): what a refused value or a refused row raises.
FAILURES: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("naive-datetime", {"next_wakeup": datetime(2026, 1, 1)}, sqlalchemy.exc.StatementError),
    ("unknown-pool", {"pool": "nowhere"}, sqlalchemy.exc.IntegrityError),
    ("same-service-twice", {"name": "taken"}, sqlalchemy.exc.IntegrityError),
]


@pytest.mark.parametrize(("case", "extra", "error"), FAILURES, ids=[c for c, _, _ in FAILURES])
def test_refusals_raise_what_sqlalchemy_raises(
    tmp_path: Any, case: str, extra: dict[str, Any], error: type
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db'}")
    Base.metadata.create_all(engine)
    raw = sqlite3.connect(tmp_path / "db", isolation_level=None)
    raw.execute("PRAGMA foreign_keys=ON")
    statement = Prepared(insert(BINDINGS), engine.dialect, list(_binding(case, {})))
    statement.run(raw.cursor(), _binding("taken", {}))
    with pytest.raises(error):
        statement.run(raw.cursor(), _binding(case, extra))
    assert raw.execute("SELECT count(*) FROM bindings").fetchone() == (1,)
    raw.close()
    engine.dispose()


@pytest.mark.parametrize(("case", "extra"), ROWS, ids=[c for c, _ in ROWS])
def test_stored_and_read_back_as_sqlalchemy_does_on_postgresql(
    new_store_url: Callable[[str], str], case: str, extra: dict[str, Any]
) -> None:
    engine = make_engine(new_store_url("postgresql"))
    values = _binding(case, extra)
    keys = list(values)
    try:
        with engine.begin() as conn:
            conn.execute(insert(BINDINGS), {**values, "name": "by-sqlalchemy"})
            cursor = conn.connection.cursor()
            Prepared(insert(BINDINGS), engine.dialect, keys).run(cursor, {**values, "name": "prepared"})
            # As PostgreSQL keeps them, in text: the same cells, byte for byte.
            cells = {
                name: cursor.execute(
                    f"SELECT {', '.join(k + '::text' for k in keys[3:])} FROM bindings WHERE name = %s",
                    (name,),
                ).fetchone()
                for name in ("by-sqlalchemy", "prepared")
            }
            assert cells["prepared"] == cells["by-sqlalchemy"]
            by_key = Prepared(select(BINDINGS).where(BINDINGS.c.name == bindparam("_name")), engine.dialect)
            read = by_key.first(cursor, {"_name": "prepared"})
            expected = conn.execute(select(BINDINGS).where(BINDINGS.c.name == "by-sqlalchemy")).one()._mapping
        assert read is not None
        assert {**read, "id": None, "name": None} == {**expected, "id": None, "name": None}
    finally:
        engine.dispose()


# ---- the store's kept connections ------------------------------------------------------------


def test_a_refused_commit_leaves_the_kept_writer_ready_for_the_next(store_url: str) -> None:
    """SQLite's kept writer, or PostgreSQL's pooled connection after a rolled-back transaction."""
    store = Store(store_url)
    try:
        created = store.create(
            namespace="ns", name="a", uid="u", state="Pending", trigger="observed", now=WHEN
        )
        with pytest.raises(StaleBinding):
            store.commit(Change(created.id, "Ready", "Pending", "spec_changed"), now=WHEN)
        with pytest.raises(sqlalchemy.exc.StatementError):
            store.commit(
                Change(
                    created.id,
                    "Pending",
                    "Provisioning",
                    "accept",
                    pool="p",
                    next_wakeup=datetime(2026, 1, 1),
                )
            )
        after = store.commit(Change(created.id, "Pending", "Provisioning", "accept", pool="p"), now=WHEN)
        assert after is not None and after.state == "Provisioning"
        assert store.live_reference_counts() == {"p": 1} == {p.name: p.ref_count for p in store.pools()}
        assert [h.to_state for h in store.history(key="ns/a")] == ["Provisioning", "Pending"]
    finally:
        store.close()


def test_concurrent_reads_each_get_a_connection_and_few_stay_open(tmp_path: Path) -> None:
    store = migrate.open_store(str(tmp_path / "dklb.db"))
    readers = Connections.IDLE * 2
    try:
        store.create(namespace="ns", name="a", uid="u", state="Pending", trigger="observed", now=WHEN)
        together = threading.Barrier(readers)
        seen: list[str | None] = []

        def read() -> None:
            with store._connections.read() as cursor:
                together.wait(timeout=60)  # every reader holds its connection at once
                row = store._statements.binding_by_key.first(cursor, {"_namespace": "ns", "_name": "a"})
            seen.append(None if row is None else row["state"])

        threads = [threading.Thread(target=read) for _ in range(readers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert seen == ["Pending"] * readers
        assert len(store._connections._readers._idle) == Connections.IDLE
        # A read after a commit sees it: each read is its own snapshot, none is left open.
        binding = store.get("ns/a")
        assert binding is not None
        store.commit(Change(binding.id, "Pending", "Provisioning", "accept", pool="p"), now=WHEN)
        assert [b.key for b in store.bindings(pool="p")] == ["ns/a"]
        assert store.get("ns/a") == store.bindings(states=["Provisioning"])[0]
    finally:
        store.close()
    assert store._connections._readers._idle == []


def test_a_store_without_a_file_runs_the_same_statements_in_pooled_transactions() -> None:
    store = Store("sqlite://")
    try:
        Base.metadata.create_all(store.engine)
        created = store.create(
            namespace="ns", name="a", uid="u", state="Pending", trigger="observed", now=WHEN
        )
        after = store.commit(Change(created.id, "Pending", "Provisioning", "accept", pool="p"), now=WHEN)
        assert after is not None and store.get("ns/a") == after
        assert store.pool("p") is not None and [b.key for b in store.bindings(pool="p")] == ["ns/a"]
        with pytest.raises(StaleBinding):
            store.commit(Change(created.id, "Pending", "Provisioning", "accept", pool="q"), now=WHEN)
        assert store.pool("q") is None and store.write_transactions == 2
    finally:
        store.close()
