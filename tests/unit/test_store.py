"""The durable store: one transition is one transaction, and the counts never drift.

Every test taking ``store``/``db`` runs twice: on a real SQLite file and on a real PostgreSQL
database (``tests.storedb``); those about the file (mode, WAL) are SQLite's alone. Proves that
``Store.commit`` writes the binding's state, the pools'
reference counts and the history row together, and nothing at all when the binding is stale or
the write fails half-way; that ``ref_count`` equals ``live_reference_counts()`` after any
sequence of creates, joins, moves, leaves and removals, and pool rows exist exactly while
referenced; that history outlives bindings, is newest first and filters by key, pool, since,
state and limit; ``due`` and ``set_wakeup``; the file's 0600 mode, WAL journal and read-only
mode; the refusal of naive datetimes; ``database_url``; and that two threads committing to
different bindings of one file at once both succeed.
"""

from __future__ import annotations

import shutil
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.store import (
    Binding,
    Change,
    StaleBinding,
    Store,
    StoreError,
    database_url,
    migrate,
)
from engine.store.database import sqlite_path

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file, copied for each example of the property test."""
    path = tmp_path_factory.mktemp("template") / "dklb.db"
    migrate.upgrade(str(path))
    return path


def fresh_db(template: Path, directory: Path) -> Path:
    path = directory / "dklb.db"
    shutil.copyfile(template, path)
    return path


@pytest.fixture
def db(store_url: str) -> str:
    """A fresh migrated database of each dialect, as a URL."""
    return store_url


@pytest.fixture
def sqlite_db(new_store_url: Callable[[str], str]) -> Path:
    """A fresh migrated SQLite file: for what only a file has (mode, WAL)."""
    path = sqlite_path(new_store_url("sqlite"))
    assert path is not None
    return path


@pytest.fixture
def store(db: str) -> Iterator[Store]:
    s = Store(db)
    yield s
    s.close()


def create(store: Store, key: str, *, state: str = "Pending", now: datetime = T0) -> Binding:
    namespace, name = key.split("/")
    return store.create(
        namespace=namespace,
        name=name,
        uid=f"uid-{name}",
        state=state,
        trigger="observed",
        reason="ServiceObserved",
        message="LoadBalancer Service observed",
        now=now,
    )


def ref_counts(store: Store) -> dict[str, int]:
    return {p.name: p.ref_count for p in store.pools()}


@dataclass(frozen=True)
class Snapshot:
    bindings: list[Binding]
    pools: list[Any]
    history: list[Any]
    live: dict[str, int]


def snapshot(store: Store) -> Snapshot:
    return Snapshot(store.bindings(), store.pools(), store.history(limit=None), store.live_reference_counts())


# ---- commit ----------------------------------------------------------------------------------


def test_create_writes_the_binding_and_its_first_history_row(store: Store) -> None:
    binding = create(store, "default/redis")
    assert binding.key == "default/redis"
    assert (binding.state, binding.pool, binding.attempts, binding.uid) == ("Pending", None, 0, "uid-redis")
    assert binding.next_wakeup == binding.state_since == binding.created_at == binding.updated_at == T0
    assert store.get("default/redis") == binding
    [entry] = store.history(limit=None)
    assert (entry.key, entry.from_state, entry.to_state, entry.trigger) == (
        "default/redis",
        None,
        "Pending",
        "observed",
    )
    assert (entry.binding_id, entry.pool, entry.at, entry.reason) == (binding.id, None, T0, "ServiceObserved")
    assert store.pools() == []


def test_a_service_has_at_most_one_binding(store: Store) -> None:
    create(store, "default/redis")
    before = snapshot(store)
    with pytest.raises(sqlalchemy.exc.IntegrityError, match=r"UNIQUE constraint failed|uq_bindings_service"):
        create(store, "default/redis", now=at(5))
    assert snapshot(store) == before, "neither a second binding nor a second history row"
    create(store, "other/redis", now=at(6))
    assert [b.key for b in store.bindings()] == ["default/redis", "other/redis"]


def test_commit_writes_state_history_and_reference_counts_together(store: Store) -> None:
    binding = create(store, "default/redis")
    after = store.commit(
        Change(
            binding_id=binding.id,
            expected_state="Pending",
            to_state="Provisioning",
            trigger="accept",
            reason="Accepted",
            message="joining dklb-redis",
            pool="dklb-redis",
            config={"name": "dklb-redis", "cpus": 0.1},
            fingerprint="f" * 32,
            attempts=0,
            next_wakeup=at(90),
            pool_created_by_dklb=True,
        ),
        now=at(90),
    )
    assert after is not None and after == store.get("default/redis")
    assert (after.state, after.pool, after.fingerprint) == ("Provisioning", "dklb-redis", "f" * 32)
    assert after.config == {"name": "dklb-redis", "cpus": 0.1}
    assert (after.state_since, after.updated_at, after.created_at) == (at(90), at(90), T0)
    assert after.next_wakeup == at(90)

    [pool] = store.pools()
    assert (pool.name, pool.ref_count, pool.created_by_dklb, pool.served) == ("dklb-redis", 1, True, False)
    assert (pool.created_at, pool.updated_at) == (at(90), at(90))

    newest = store.history(limit=1)[0]
    assert (newest.from_state, newest.to_state, newest.trigger, newest.reason, newest.message) == (
        "Pending",
        "Provisioning",
        "accept",
        "Accepted",
        "joining dklb-redis",
    )
    assert (newest.pool, newest.at, newest.duration, newest.attempt) == ("dklb-redis", at(90), 90.0, 0)


def test_a_same_state_commit_keeps_state_since_and_records_only_when_asked(store: Store) -> None:
    binding = create(store, "default/redis", state="Provisioning")
    failed = store.commit(
        Change(
            binding_id=binding.id,
            expected_state="Provisioning",
            to_state="Provisioning",
            trigger="failed",
            reason="EdgeLBUnavailable",
            message="boom",
            attempts=1,
            next_wakeup=at(11),
            last_error="boom",
        ),
        now=at(10),
    )
    assert failed is not None
    assert (failed.attempts, failed.last_error, failed.next_wakeup) == (1, "boom", at(11))
    assert failed.state_since == T0 and failed.updated_at == at(10)
    entry = store.history(limit=1)[0]
    assert (entry.from_state, entry.to_state, entry.trigger, entry.attempt) == (
        "Provisioning",
        "Provisioning",
        "failed",
        1,
    )

    polled = store.commit(
        Change(
            binding_id=binding.id,
            expected_state="Provisioning",
            to_state="Provisioning",
            trigger="poll",
            record=False,
            attempts=2,
        ),
        now=at(20),
    )
    assert polled is not None and polled.attempts == 2
    assert polled.last_error == "boom" and polled.next_wakeup == at(11), "unset fields keep their value"
    assert [h.trigger for h in store.history(limit=None)] == ["failed", "observed"], "polls are not recorded"


def test_pool_flags_are_set_by_the_change_and_served_only_latches(store: Store) -> None:
    binding = create(store, "default/a")
    store.commit(
        Change(binding.id, "Pending", "Provisioning", "accept", pool="p", pool_created_by_dklb=True),
        now=at(1),
    )
    store.commit(
        Change(binding.id, "Provisioning", "AwaitingMetadata", "provisioned", pool_served=True), now=at(2)
    )
    pool = store.pool("p")
    assert pool is not None and (pool.created_by_dklb, pool.served, pool.updated_at) == (True, True, at(2))
    store.commit(
        Change(binding.id, "AwaitingMetadata", "Ready", "addresses_found", pool_served=False), now=at(3)
    )
    pool = store.pool("p")
    assert pool is not None and pool.served is True


STALE: list[tuple[str, dict[str, Any]]] = [
    ("wrong-expected-state", {"expected_state": "Ready"}),
    ("unknown-binding", {"binding_id": 999}),
]


@pytest.mark.parametrize("override", [o for _, o in STALE], ids=[i for i, _ in STALE])
def test_a_stale_binding_writes_nothing_at_all(store: Store, override: dict[str, Any]) -> None:
    joined = create(store, "default/a")
    store.commit(Change(joined.id, "Pending", "Provisioning", "accept", pool="shared"), now=at(1))
    other = create(store, "default/b", now=at(2))
    before = snapshot(store)
    fields: dict[str, Any] = {
        "binding_id": other.id,
        "expected_state": "Pending",
        "to_state": "Provisioning",
        "trigger": "accept",
        "pool": "fresh",
        "config": {"name": "fresh"},
        "attempts": 3,
        "next_wakeup": at(100),
        "pool_created_by_dklb": True,
        "pool_served": True,
        **override,
    }
    with pytest.raises(StaleBinding) as caught:
        store.commit(Change(**fields), now=at(3))
    found = "Pending" if override.get("binding_id") is None else "None"
    assert (
        str(caught.value) == f"binding {fields['binding_id']} is {found}, expected {fields['expected_state']}"
    )
    assert snapshot(store) == before


def test_a_stale_removal_keeps_the_binding_and_its_pool(store: Store) -> None:
    binding = create(store, "default/a")
    store.commit(Change(binding.id, "Pending", "Provisioning", "accept", pool="p"), now=at(1))
    before = snapshot(store)
    with pytest.raises(StaleBinding):
        store.commit(Change(binding.id, "Deleting", "Removed", "deleted", remove=True), now=at(2))
    assert snapshot(store) == before
    assert ref_counts(store) == {"p": 1}


def test_a_commit_that_fails_half_way_is_rolled_back_entirely(store: Store) -> None:
    binding = create(store, "default/a")
    before = snapshot(store)
    # The pool row is created and flushed first; the naive datetime fails the binding's update.
    with pytest.raises(sqlalchemy.exc.StatementError):
        store.commit(
            Change(
                binding.id, "Pending", "Provisioning", "accept", pool="p", next_wakeup=datetime(2026, 1, 1)
            ),
            now=at(1),
        )
    assert snapshot(store) == before
    assert store.pool("p") is None


# ---- reference counts ------------------------------------------------------------------------

# (step, operation, key, pool) -> reference counts expected after the step.
REF_STEPS: list[tuple[str, str, str, str | None, dict[str, int]]] = [
    ("create-a", "create", "ns/a", None, {}),
    ("create-b", "create", "ns/b", None, {}),
    ("create-c", "create", "ns/c", None, {}),
    ("a-joins-p", "join", "ns/a", "p", {"p": 1}),
    ("b-joins-p", "join", "ns/b", "p", {"p": 2}),
    ("c-joins-q", "join", "ns/c", "q", {"p": 2, "q": 1}),
    ("a-moves-to-q", "join", "ns/a", "q", {"p": 1, "q": 2}),
    ("b-leaves-p", "join", "ns/b", None, {"q": 2}),
    ("b-rejoins-p", "join", "ns/b", "p", {"p": 1, "q": 2}),
    ("b-removed", "remove", "ns/b", None, {"q": 2}),
    ("c-removed", "remove", "ns/c", None, {"q": 1}),
    ("a-removed", "remove", "ns/a", None, {}),
]


def apply_step(store: Store, operation: str, key: str, pool: str | None, now: datetime) -> None:
    if operation == "create":
        create(store, key, now=now)
        return
    binding = store.get(key)
    assert binding is not None
    if operation == "join":
        state = "Provisioning" if binding.state == "Pending" else "Pending"
        trigger = "accept" if state == "Provisioning" else "spec_changed"
        store.commit(Change(binding.id, binding.state, state, trigger, pool=pool), now=now)
    else:
        store.commit(Change(binding.id, binding.state, "Removed", "deleted", remove=True), now=now)


def test_ref_count_equals_live_references_after_every_step(store: Store) -> None:
    for i, (step, operation, key, pool, expected) in enumerate(REF_STEPS):
        apply_step(store, operation, key, pool, at(i))
        assert ref_counts(store) == expected, step
        assert store.live_reference_counts() == expected, step
    assert store.bindings() == [] and store.pools() == []


def test_a_pool_row_disappears_at_zero_and_a_rejoin_starts_a_fresh_row(store: Store) -> None:
    binding = create(store, "default/a")
    store.commit(
        Change(
            binding.id,
            "Pending",
            "Provisioning",
            "accept",
            pool="p",
            pool_created_by_dklb=True,
            pool_served=True,
        ),
        now=at(1),
    )
    store.commit(Change(binding.id, "Provisioning", "Pending", "spec_changed", pool=None), now=at(2))
    assert store.pool("p") is None and store.pools() == []
    assert store.get("default/a") is not None, "the binding stays, only the pool row goes"

    store.commit(Change(binding.id, "Pending", "Provisioning", "accept", pool="p"), now=at(3))
    pool = store.pool("p")
    assert pool is not None
    assert (pool.ref_count, pool.created_by_dklb, pool.served, pool.created_at) == (1, False, False, at(3))


Op = tuple[str, int, int]  # (operation, binding index, pool index)


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["create", "join", "leave", "remove"]),
        st.integers(min_value=0, max_value=3),
        st.integers(min_value=0, max_value=2),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPERATIONS)
def test_ref_count_equals_live_references_for_any_sequence(template: Path, ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = Store(database_url(str(fresh_db(template, Path(directory)))))
        try:
            check_sequence(store, ops)
        finally:
            store.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPERATIONS)
def test_ref_count_equals_live_references_for_any_sequence_on_postgresql(
    new_store_url: Callable[[str], str], ops: list[Op]
) -> None:
    store = Store(new_store_url("postgresql"))
    try:
        check_sequence(store, ops)
    finally:
        store.close()


def check_sequence(store: Store, ops: list[Op]) -> None:
    model: dict[str, str | None] = {}
    for i, (operation, b, p) in enumerate(ops):
        key, pool = f"ns/b{b}", f"pool-{p}"
        if operation == "create":
            if key not in model:
                create(store, key, now=at(i))
                model[key] = None
        elif key in model:
            if operation == "remove":
                apply_step(store, "remove", key, None, at(i))
                del model[key]
            else:
                target = pool if operation == "join" else None
                apply_step(store, "join", key, target, at(i))
                model[key] = target
        expected: dict[str, int] = {}
        for name in model.values():
            if name is not None:
                expected[name] = expected.get(name, 0) + 1
        assert ref_counts(store) == expected
        assert store.live_reference_counts() == expected


# ---- history ---------------------------------------------------------------------------------


def test_history_survives_the_removal_of_its_binding(store: Store) -> None:
    binding = create(store, "default/a")
    store.commit(Change(binding.id, "Pending", "Provisioning", "accept", pool="p"), now=at(10))
    store.commit(Change(binding.id, "Provisioning", "Deleting", "delete"), now=at(20))
    assert (
        store.commit(
            Change(binding.id, "Deleting", "Removed", "deleted", message="gone", remove=True), now=at(35)
        )
        is None
    )
    assert store.get("default/a") is None and store.bindings() == [] and store.pools() == []
    entries = store.history(key="default/a", limit=None)
    assert [(h.from_state, h.to_state, h.trigger, h.pool) for h in entries] == [
        ("Deleting", "Removed", "deleted", "p"),
        ("Provisioning", "Deleting", "delete", "p"),
        ("Pending", "Provisioning", "accept", "p"),
        (None, "Pending", "observed", None),
    ]
    assert {h.binding_id for h in entries} == {binding.id}
    assert entries[0].duration == 15.0 and entries[0].message == "gone"


@pytest.fixture
def busy_history(store: Store) -> Store:
    """Two bindings, two pools, transitions at known times (seconds after T0)."""
    a = create(store, "one/a", now=at(0))
    b = create(store, "two/b", now=at(1))
    store.commit(Change(a.id, "Pending", "Provisioning", "accept", pool="p"), now=at(10))
    store.commit(Change(b.id, "Pending", "Provisioning", "accept", pool="q"), now=at(20))
    store.commit(Change(a.id, "Provisioning", "Rejected", "reject", pool=None), now=at(30))
    store.commit(Change(b.id, "Provisioning", "Rejected", "reject"), now=at(40))
    store.commit(Change(a.id, "Rejected", "Pending", "spec_changed"), now=at(50))
    return store


HISTORY_FILTERS: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    (
        "all-newest-first",
        {"limit": None},
        [
            ("one/a", "Pending"),
            ("two/b", "Rejected"),
            ("one/a", "Rejected"),
            ("two/b", "Provisioning"),
            ("one/a", "Provisioning"),
            ("two/b", "Pending"),
            ("one/a", "Pending"),
        ],
    ),
    ("limit", {"limit": 2}, [("one/a", "Pending"), ("two/b", "Rejected")]),
    (
        "key",
        {"key": "one/a"},
        [("one/a", "Pending"), ("one/a", "Rejected"), ("one/a", "Provisioning"), ("one/a", "Pending")],
    ),
    ("pool", {"pool": "q"}, [("two/b", "Rejected"), ("two/b", "Provisioning")]),
    ("pool-recorded-when-leaving", {"pool": "p"}, [("one/a", "Rejected"), ("one/a", "Provisioning")]),
    (
        "since-inclusive",
        {"since": at(30)},
        [("one/a", "Pending"), ("two/b", "Rejected"), ("one/a", "Rejected")],
    ),
    (
        "since-in-another-zone",
        {"since": at(40).astimezone(timezone(timedelta(hours=5)))},
        [("one/a", "Pending"), ("two/b", "Rejected")],
    ),
    ("state", {"state": "Rejected"}, [("two/b", "Rejected"), ("one/a", "Rejected")]),
    ("key-and-state", {"key": "one/a", "state": "Pending"}, [("one/a", "Pending"), ("one/a", "Pending")]),
    ("pool-and-since", {"pool": "q", "since": at(21)}, [("two/b", "Rejected")]),
    ("nothing-matches", {"key": "three/c"}, []),
]


@pytest.mark.parametrize(
    ("filters", "expected"), [(f, e) for _, f, e in HISTORY_FILTERS], ids=[i for i, _, _ in HISTORY_FILTERS]
)
def test_history_is_newest_first_and_filtered(
    busy_history: Store, filters: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    entries = busy_history.history(**filters)
    assert [(h.key, h.to_state) for h in entries] == expected
    assert [h.at for h in entries] == sorted((h.at for h in entries), reverse=True)


def test_history_breaks_ties_of_the_same_instant_by_insertion_order(store: Store) -> None:
    a = create(store, "ns/a", now=T0)
    create(store, "ns/b", now=T0)
    store.commit(Change(a.id, "Pending", "Rejected", "reject"), now=T0)
    assert [(h.key, h.to_state) for h in store.history()] == [
        ("ns/a", "Rejected"),
        ("ns/b", "Pending"),
        ("ns/a", "Pending"),
    ]


def test_history_defaults_to_the_50_newest(store: Store) -> None:
    binding = create(store, "ns/a")
    for i in range(1, 60):
        store.commit(Change(binding.id, "Pending", "Pending", "failed", attempts=i, record=True), now=at(i))
    entries = store.history()
    assert len(entries) == 50
    assert entries[0].attempt == 59 and entries[-1].attempt == 10
    assert len(store.history(limit=None)) == 60


def test_history_refuses_a_key_that_is_not_namespace_slash_name(store: Store) -> None:
    with pytest.raises(ValueError, match="'no-slash' is not a NAMESPACE/NAME key"):
        store.history(key="no-slash")


# ---- wake-ups --------------------------------------------------------------------------------


def test_due_lists_bindings_whose_wakeup_has_come_earliest_first(store: Store) -> None:
    wakeups = {"ns/late": at(30), "ns/early": at(10), "ns/exact": at(20), "ns/future": at(100)}
    for key, when in wakeups.items():
        binding = create(store, key)
        store.commit(Change(binding.id, "Pending", "Pending", "poll", record=False, next_wakeup=when), now=T0)
    never = create(store, "ns/never")
    store.commit(Change(never.id, "Pending", "Rejected", "reject", next_wakeup=None), now=T0)

    assert [b.key for b in store.due(at(30))] == ["ns/early", "ns/exact", "ns/late"]
    assert [b.key for b in store.due(at(20))] == ["ns/early", "ns/exact"], "a wake-up at now is due"
    assert store.due(at(9)) == []
    assert [b.key for b in store.due(at(10**6))] == ["ns/early", "ns/exact", "ns/late", "ns/future"]


def test_set_wakeup_moves_one_binding_and_is_seen_by_another_store(store: Store, db: str) -> None:
    a = create(store, "ns/a")
    create(store, "ns/b")
    store.commit(Change(a.id, "Pending", "Pending", "poll", record=False, next_wakeup=at(3600)), now=T0)
    history_before = store.history(limit=None)
    other = Store(db)
    try:
        assert other.set_wakeup("ns/a", at(5)) is True
        assert other.set_wakeup("ns/missing", at(5)) is False
    finally:
        other.close()
    woken = store.get("ns/a")
    assert woken is not None and woken.next_wakeup == at(5)
    assert woken.state == "Pending" and woken.updated_at == T0
    assert [b.key for b in store.due(at(5))] == ["ns/b", "ns/a"], "earliest wake-up first"
    unchanged = store.get("ns/b")
    assert unchanged is not None and unchanged.next_wakeup == T0
    assert store.history(limit=None) == history_before, "a wake-up is not a transition"


# ---- the file --------------------------------------------------------------------------------


def test_a_new_database_file_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "dklb.db"
    store = Store(database_url(str(path)))
    try:
        assert path.exists(), "the file is created with the engine, before any connection"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with store.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE probe (x INTEGER)")
        sidecars = [Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(p.exists() for p in sidecars), "WAL files exist while a connection is open"
        for sidecar in [path, *sidecars]:
            assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600, sidecar.name
    finally:
        store.close()


def test_a_migrated_database_file_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "migrated.db"
    migrate.upgrade(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_wal_journal_mode_is_on(sqlite_db: Path) -> None:
    db = sqlite_db
    store = Store(database_url(str(db)))
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",), "WAL is persisted in the file"
    finally:
        raw.close()


READ_ONLY_WRITES: list[tuple[str, Callable[[Store, Binding], object]]] = [
    ("create", lambda s, b: create(s, "ns/new")),
    ("commit", lambda s, b: s.commit(Change(b.id, "Pending", "Provisioning", "accept", pool="p"), now=at(1))),
    ("set_wakeup", lambda s, b: s.set_wakeup(b.key, at(1))),
]


@pytest.mark.parametrize("write", [w for _, w in READ_ONLY_WRITES], ids=[i for i, _ in READ_ONLY_WRITES])
def test_a_read_only_store_reads_but_cannot_write(
    store: Store, db: str, write: Callable[[Store, Binding], object]
) -> None:
    binding = create(store, "ns/a")
    before = snapshot(store)
    reader = Store(db, read_only=True)
    try:
        assert reader.get("ns/a") == binding
        with pytest.raises(sqlalchemy.exc.DBAPIError) as caught:
            write(reader, binding)
        if store.dialect == "sqlite":
            assert type(caught.value.orig) is sqlite3.OperationalError
            assert str(caught.value.orig) == "attempt to write a readonly database"
        else:
            assert type(caught.value.orig).__name__ == "ReadOnlySqlTransaction"
            assert "read-only transaction" in str(caught.value.orig)
    finally:
        reader.close()
    assert snapshot(store) == before


def test_a_read_only_store_refuses_a_missing_file_and_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(StoreError, match=f"database {path} does not exist"):
        Store(database_url(str(path)), read_only=True)
    assert not path.exists()


NAIVE = datetime(2026, 11, 28, 12, 0)

NAIVE_USES: list[tuple[str, Callable[[Store, Binding], object]]] = [
    ("create-now", lambda s, b: create(s, "ns/naive", now=NAIVE)),
    ("set_wakeup", lambda s, b: s.set_wakeup(b.key, NAIVE)),
    ("due", lambda s, b: s.due(NAIVE)),
    ("keys-due", lambda s, b: s.keys(due=NAIVE)),
    ("history-since", lambda s, b: s.history(since=NAIVE)),
    (
        "commit-next_wakeup",
        lambda s, b: s.commit(Change(b.id, "Pending", "Pending", "poll", next_wakeup=NAIVE), now=at(1)),
    ),
]


@pytest.mark.parametrize("use", [u for _, u in NAIVE_USES], ids=[i for i, _ in NAIVE_USES])
def test_naive_datetimes_are_refused(store: Store, use: Callable[[Store, Binding], object]) -> None:
    binding = create(store, "ns/a")
    before = snapshot(store)
    with pytest.raises(sqlalchemy.exc.StatementError) as caught:
        use(store, binding)
    assert isinstance(caught.value.orig, ValueError)
    assert "naive datetimes are not stored: pass an aware UTC datetime" in str(caught.value)
    assert snapshot(store) == before


def test_aware_datetimes_in_other_zones_are_stored_as_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    binding = create(store, "ns/a", now=datetime(2026, 11, 28, 14, 0, tzinfo=plus_two))
    stored = store.get("ns/a")
    assert stored == binding
    assert stored.created_at == T0 and stored.created_at.tzinfo is UTC
    assert store.history(since=datetime(2026, 11, 28, 14, 0, tzinfo=plus_two))[0].at == T0


URLS: list[tuple[str, str, str]] = [
    ("relative-path", "dklb.db", "sqlite:///{cwd}/dklb.db"),
    ("relative-with-dots", "sub/../x.db", "sqlite:///{cwd}/x.db"),
    ("absolute-path", "/var/lib/dklb/dklb.db", "sqlite:////var/lib/dklb/dklb.db"),
    ("home-path", "~/dklb.db", "sqlite:///{home}/dklb.db"),
    ("sqlite-url-kept", "sqlite:///relative.db", "sqlite:///relative.db"),
    ("sqlite-memory-url-kept", "sqlite://", "sqlite://"),
    (
        "postgres-url-kept",
        "postgresql+psycopg://dklb:pw@db:5432/dklb",
        "postgresql+psycopg://dklb:pw@db:5432/dklb",
    ),
]


@pytest.mark.parametrize(("target", "expected"), [(t, e) for _, t, e in URLS], ids=[i for i, _, _ in URLS])
def test_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, expected: str) -> None:
    cwd = tmp_path / "cwd"
    home = tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    assert database_url(target) == expected.format(cwd=cwd.resolve(), home=home.resolve())


# ---- concurrency -----------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False], ids=["one-store-shared", "one-store-per-thread"])
def test_two_threads_commit_to_different_bindings_at_once(db: str, shared: bool) -> None:
    url = db
    setup = Store(url)
    keys = ["ns/a", "ns/b"]
    ids = [create(setup, key).id for key in keys]
    stores = [setup, setup] if shared else [Store(url), Store(url)]
    rounds = 60
    start = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def worker(store: Store, binding_id: int) -> None:
        try:
            start.wait()
            state = "Pending"
            for i in range(rounds):
                # Both threads join and leave the same pool: their commits touch one pool row.
                if state == "Pending":
                    store.commit(
                        Change(binding_id, "Pending", "Provisioning", "accept", pool="shared", attempts=i)
                    )
                    state = "Provisioning"
                else:
                    store.commit(Change(binding_id, "Provisioning", "Pending", "spec_changed", pool=None))
                    state = "Pending"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s, i)) for s, i in zip(stores, ids, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    try:
        assert errors == [], f"concurrent commits failed: {errors!r}"
        assert [b.state for b in setup.bindings()] == ["Pending", "Pending"]
        assert setup.pools() == [] and setup.live_reference_counts() == {}
        for key in keys:
            assert len(setup.history(key=key, limit=None)) == rounds + 1
    finally:
        for s in {id(s): s for s in stores}.values():
            s.close()


def test_summaries_and_expectations_stream_every_row_in_order(store: Store) -> None:
    """The orphan and pool sweeps' reads, streamed (a server-side cursor on PostgreSQL)."""
    keys = [f"ns/b{i:04d}" for i in range(600)]  # more than the 500 rows psycopg buffers at a time
    for i, key in enumerate(keys):
        binding = create(store, key)
        store.commit(
            Change(binding.id, "Pending", "Ready", "ok", pool=f"p{i % 3}", config={"i": i}, objects={"o": i}),
            now=at(1),
        )
    summaries = list(store.summaries())
    assert [s.key for s in summaries] == keys
    assert [s.config for s in summaries] == [{"i": i} for i in range(len(keys))]
    expected = {(key, f"p{i % 3}", f'{{"o":{i}}}') for i, key in enumerate(keys)}
    assert set(store.expectations(["Ready"])) == expected
    assert set(store.expectations(["Ready"], pools=["p1"])) == {e for e in expected if e[1] == "p1"}
