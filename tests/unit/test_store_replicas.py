"""Two replicas on one database: the leader fence in the database, row locks, migrations, names.

Proves, on a real PostgreSQL server (and on SQLite where the property is the dialect's too):
that once a second store claimed leadership, the first one's writes are refused (``Fenced``) and
write nothing, that a claim waits for a write transaction of the old term that is already in
flight, and ends the session of one cut off mid-transaction; that two ``Store`` objects (two
replicas) committing at once, many times, to bindings crossing between the same pools keep every
``ref_count`` equal to its live references, with no deadlock, and that two transitions of ONE
binding at once give one commit and one ``StaleBinding``; that two migrations at once migrate
once (the advisory lock) and both end at head (the migrated schema on both dialects:
tests/unit/test_migrations.py); that a ``URL`` object's password reaches the server without ever
being text; that a store survives a server restart (broken kept connections dropped,
``pool_pre_ping``) and says it lost the database meanwhile (``reachability``, until a ping
answers); that PostgreSQL URLs are normalized for psycopg 3 and never named with their password
(``redacted``).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError

import localpg
from engine.store import (
    Change,
    Fenced,
    StaleBinding,
    Store,
    StoreError,
    database,
    database_url,
    leadership,
    migrate,
    redacted,
    transitions,
)
from localcluster.processes import wait_for

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def create(store: Store, key: str) -> int:
    namespace, name = key.split("/")
    return store.create(
        namespace=namespace, name=name, uid="u", state="Pending", trigger="observed", now=T0
    ).id


@pytest.fixture
def pg_url(new_store_url: Callable[[str], str]) -> str:
    return new_store_url("postgresql")


def opened(url: str, count: int) -> Iterator[list[Store]]:
    stores = [Store(url) for _ in range(count)]
    try:
        yield stores
    finally:
        for store in stores:
            store.close()


@pytest.fixture
def two_stores(store_url: str) -> Iterator[list[Store]]:
    """Two replicas' stores on one database of each dialect."""
    yield from opened(store_url, 2)


@pytest.fixture
def two_pg_stores(pg_url: str) -> Iterator[list[Store]]:
    yield from opened(pg_url, 2)


# ---- the leader fence ------------------------------------------------------------------------


def test_after_a_second_store_claimed_the_first_one_writes_nothing(two_stores: list[Store]) -> None:
    old, new = two_stores
    binding = create(old, "ns/a")
    assert old.claim_leadership("replica-1", now=T0) == 1
    old.commit(Change(binding, "Pending", "Provisioning", "accept", pool="p"), now=at(1))
    assert new.claim_leadership("replica-2", now=at(2)) == 2
    assert new.leadership() == ("replica-2", 2)
    before = (old.bindings(), old.pools(), old.history(limit=None))
    writes: list[tuple[str, Callable[[], object]]] = [
        ("commit", lambda: old.commit(Change(binding, "Provisioning", "Pending", "x", pool=None), now=at(3))),
        ("create", lambda: create(old, "ns/b")),
        ("set_wakeup", lambda: old.set_wakeup("ns/a", at(9))),
        ("keep_normal_forms", lambda: old.keep_normal_forms({b"c" * 16: b"n" * 16})),
    ]
    for name, write in writes:
        with pytest.raises(
            Fenced, match=r"leadership term 1 of this replica is over: .* term 2 .*'replica-2'"
        ):
            write()
        assert (old.bindings(), old.pools(), old.history(limit=None)) == before, name
    assert isinstance(Fenced("x"), StoreError), "callers that handle StoreError handle Fenced"
    # The new leader writes; a store that never claimed (the CLI) is not fenced.
    new.commit(Change(binding, "Provisioning", "Pending", "x", pool=None), now=at(4))
    cli = Store(old.url)
    try:
        assert cli.set_wakeup("ns/a", at(5)) is True
    finally:
        cli.close()
    # Claiming again makes the old replica the leader again, and the other one fenced.
    assert old.claim_leadership("replica-1", now=at(6)) == 3
    create(old, "ns/c")
    with pytest.raises(Fenced):
        create(new, "ns/d")
    assert [b.key for b in old.bindings()] == ["ns/a", "ns/c"]


def test_a_claim_waits_for_a_write_of_the_old_term_already_in_flight(
    two_pg_stores: list[Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old leader's transaction read its term FOR SHARE: the claim (an UPDATE of that row)
    cannot commit in between, so "claimed" really means "no old-term write can commit after"."""
    monkeypatch.setattr(leadership, "GRACE_MS", 600_000)  # a write in flight, not a cut-off one
    old, new = two_pg_stores
    binding = create(old, "ns/a")
    old.claim_leadership("replica-1")
    claimed: list[int] = []
    claimer = threading.Thread(target=lambda: claimed.append(new.claim_leadership("replica-2")))
    with old._raw_write() as cursor:
        # The fence has been checked in this transaction; the claim starts now.
        claimer.start()
        wait_for(lambda: _waiting_on_a_lock(old, "UPDATE leadership"), timeout=30, what="the claim to wait")
        assert claimed == []
        transitions.apply(
            old._statements, cursor, Change(binding, "Pending", "Provisioning", "a", pool="p"), T0
        )
    claimer.join(30)
    assert claimed == [2]
    assert old.get("ns/a") is not None and old.get("ns/a").state == "Provisioning"  # type: ignore[union-attr]
    with pytest.raises(Fenced):
        old.commit(Change(binding, "Provisioning", "Pending", "x", pool=None))


def test_a_claim_ends_the_session_of_a_replica_cut_off_mid_transaction(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The cut-off replica's transaction (its term read FOR SHARE) never ends from its side, and
    here the server would not end it for an hour either: the claim, holding the Lease, ends that
    session itself after ``leadership.GRACE_MS``, and the old transaction's write is lost."""
    monkeypatch.setattr(database, "IDLE_IN_TRANSACTION_MS", 3_600_000)
    old = Store(pg_url)
    monkeypatch.undo()
    new = Store(pg_url)
    try:
        binding = create(old, "ns/a")
        old.claim_leadership("replica-1")
        with contextlib.ExitStack() as cut_off:
            cursor = cut_off.enter_context(old._raw_write())
            claimed: list[int] = []
            claimer = threading.Thread(target=lambda: claimed.append(new.claim_leadership("replica-2")))
            claimer.start()
            claimer.join(120)
            assert claimed == [2], "the claim went through without the server's hour"
            assert "ended them (pids" in caplog.text
            with pytest.raises(DBAPIError):
                transitions.apply(old._statements, cursor, Change(binding, "Pending", "Ready", "x"), T0)
            with pytest.raises(DBAPIError):
                cut_off.close()
        assert old.get("ns/a").state == "Pending"  # type: ignore[union-attr]
        with pytest.raises(Fenced):
            old.commit(Change(binding, "Pending", "Ready", "x"))
    finally:
        old.close()
        new.close()


def _waiting_on_a_lock(store: Store, query: str) -> bool:
    with store._read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT query FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).all()
    return any(query in row[0] for row in rows)


# ---- two writers at once ---------------------------------------------------------------------

POOLS = ["pool-a", "pool-b", "pool-c", None]


def test_two_replicas_moving_bindings_between_the_same_pools_keep_every_count(
    two_stores: list[Store],
) -> None:
    """Four threads, two per store, each moving its own binding through a fixed pseudo-random
    walk of the same three pools (so moves cross: a->b in one thread while b->a in another)."""
    setup = two_stores[0]
    keys = [f"ns/b{i}" for i in range(4)]
    ids = [create(setup, key) for key in keys]
    rounds = 120
    start = threading.Barrier(len(keys), timeout=30)
    errors: list[BaseException] = []

    def worker(store: Store, binding: int, seed: int) -> None:
        walk = random.Random(seed)
        state, pool = "Pending", None
        try:
            start.wait()
            for i in range(rounds):
                target = walk.choice([p for p in POOLS if p != pool])
                to = "Provisioning" if state == "Pending" else "Pending"
                store.commit(Change(binding, state, to, "move", pool=target, attempts=i), now=at(i))
                state, pool = to, target
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(two_stores[i % 2], binding, i)) for i, binding in enumerate(ids)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()
    assert errors == [], f"concurrent commits failed: {errors!r}"
    counts = {p.name: p.ref_count for p in setup.pools()}
    assert counts == setup.live_reference_counts()
    assert all(n > 0 for n in counts.values()), "a pool row exists exactly while referenced"
    for key in keys:
        assert len(setup.history(key=key, limit=None)) == rounds + 1


def test_one_binding_committed_by_two_replicas_at_once_commits_once(two_pg_stores: list[Store]) -> None:
    """The binding row lock: the second transition waits, then finds the state moved on."""
    first, second = two_pg_stores
    outcomes: list[str] = []
    for round_ in range(40):
        binding = create(first, f"ns/r{round_}")
        start = threading.Barrier(2, timeout=30)
        results: list[str] = []

        def attempt(
            store: Store,
            pool: str,
            binding: int = binding,
            start: threading.Barrier = start,
            results: list[str] = results,
        ) -> None:
            start.wait()
            try:
                store.commit(Change(binding, "Pending", "Provisioning", "accept", pool=pool))
                results.append(pool)
            except StaleBinding:
                results.append("stale")

        threads = [
            threading.Thread(target=attempt, args=(store, pool))
            for store, pool in ((first, "pool-a"), (second, "pool-b"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(results)[-1] == "stale" and len(results) == 2, results
        outcomes.append(next(r for r in results if r != "stale"))
        committed = first.get(f"ns/r{round_}")
        assert committed is not None and committed.pool == outcomes[-1]
        assert len(first.history(key=f"ns/r{round_}", limit=None)) == 2
    counts = {p.name: p.ref_count for p in first.pools()}
    assert counts == first.live_reference_counts()
    assert sum(counts.values()) == 40


# ---- migrations ------------------------------------------------------------------------------


def test_two_migrations_at_once_migrate_once_and_both_end_at_head(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    upgrade = command.upgrade

    def counted(config: Any, revision: str, **kwargs: Any) -> None:
        ran.append(revision)
        upgrade(config, revision, **kwargs)

    monkeypatch.setattr(command, "upgrade", counted)
    start = threading.Barrier(2, timeout=30)
    results: list[object] = []

    def migrate_now() -> None:
        start.wait()
        try:
            results.append(migrate.upgrade(postgres_url))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=migrate_now) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == [migrate.head(), migrate.head()]
    assert ran == ["head"], "the second one found the database at head once the first was done"
    migrate.check(postgres_url)


def test_check_names_an_unreachable_server_without_its_password(
    postgres_server: localpg.LocalPostgres,
) -> None:
    url = postgres_server.url("nothere", password="s3cret-pw")
    with pytest.raises(StoreError) as caught:
        migrate.check(url)
    assert "s3cret-pw" not in str(caught.value)
    assert str(caught.value).startswith(f"database {redacted(database_url(url))} cannot be used:")


def test_a_url_object_carries_the_password_through_migrate_and_the_store(
    postgres_server: localpg.LocalPostgres, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``--database-password-file``: the password goes into the URL object, never into text."""
    password = postgres_server.password
    url = make_url(postgres_url.replace(f":{password}@", "@", 1)).set(password=password)
    assert password not in str(url) and url.drivername == "postgresql"
    assert database_url(url).drivername == "postgresql+psycopg"
    with caplog.at_level(logging.DEBUG):
        assert migrate.upgrade(url) == migrate.head()
        migrate.check(url)
        store = migrate.open_store(url)
        try:
            create(store, "ns/a")
        finally:
            store.close()
        reader = migrate.open_read_only(url)
        try:
            assert [b.key for b in reader.bindings()] == ["ns/a"]
        finally:
            reader.close()
    assert password not in caplog.text


# ---- a server restart ------------------------------------------------------------------------


def test_a_store_survives_a_server_restart_and_says_when_it_lost_it() -> None:
    """``pool_pre_ping``: connections of the old server are replaced, not handed out broken; a
    connection error marks the database unreachable, and only a ping marks it reachable again."""
    server = localpg.start()
    try:
        url = server.create_database("restart")
        migrate.upgrade(url)
        store = Store(database_url(url))
        changes: list[bool] = []
        store.reachability.on_change = changes.append
        try:
            binding = create(store, "ns/a")
            assert [b.key for b in store.bindings()] == ["ns/a"]
            with store._connections.read(), store._connections.read():
                pass  # two kept readers: the outage below breaks one that no statement meets
            localpg.stop(server)
            lost: list[tuple[str, Callable[[], object]]] = [
                ("prepared-read", lambda: store.get("ns/a")),
                ("commit", lambda: store.commit(Change(binding, "Pending", "Provisioning", "a", pool="p"))),
                ("core-read", store.bindings),
                ("ping", store.ping),
            ]
            for name, use in lost:
                with pytest.raises(DBAPIError):
                    use()
                assert store.reachability.reachable is False, name
            assert changes == [False], "told once"
            localpg.start(server)
            assert [b.key for b in store.bindings()] == ["ns/a"]
            assert store.reachability.reachable is False, "a statement that works is not a ping"
            store.ping()
            assert store.reachability.reachable is True and changes == [False, True]
            assert store.get("ns/a") is not None, "the ping dropped the kept connections the outage broke"
            assert changes == [False, True]
            create(store, "ns/b")
            assert [b.key for b in store.bindings()] == ["ns/a", "ns/b"]
        finally:
            store.close()
    finally:
        localpg.remove(server)


def test_an_error_of_the_statement_itself_is_not_a_lost_database(two_pg_stores: list[Store]) -> None:
    store = two_pg_stores[0]
    create(store, "ns/a")
    with pytest.raises(DBAPIError):
        create(store, "ns/a")  # a unique constraint
    assert store.reachability.reachable is True


# ---- naming a database -----------------------------------------------------------------------

URLS: list[tuple[str, str, str]] = [
    ("postgresql", "postgresql://u:pw@db:5432/dklb", "postgresql+psycopg://u:pw@db:5432/dklb"),
    (
        "postgres",
        "postgres://u:pw@db/dklb?sslmode=verify-full",
        "postgresql+psycopg://u:pw@db/dklb?sslmode=verify-full",
    ),
    ("psycopg-kept", "postgresql+psycopg://u@db/dklb", "postgresql+psycopg://u@db/dklb"),
    ("sqlite-kept", "sqlite:///x.db", "sqlite:///x.db"),
]


@pytest.mark.parametrize(("given", "expected"), [(g, e) for _, g, e in URLS], ids=[i for i, _, _ in URLS])
def test_postgresql_urls_mean_psycopg_3(given: str, expected: str) -> None:
    assert database_url(given) == expected


REDACTED: list[tuple[str, str, str]] = [
    (
        "password",
        "postgresql+psycopg://dklb:s3cret@db:5432/dklb",
        "postgresql+psycopg://dklb:***@db:5432/dklb",
    ),
    (
        "escaped-password",
        "postgresql://dklb:p%40ss%3Aw@db/dklb?sslmode=verify-full",
        "postgresql://dklb:***@db/dklb?sslmode=verify-full",
    ),
    ("no-password", "postgresql://dklb@db/dklb", "postgresql://dklb@db/dklb"),
    ("sqlite-url", "sqlite:////var/lib/dklb/dklb.db", "sqlite:////var/lib/dklb/dklb.db"),
    ("path", "/var/lib/dklb/dklb.db", "/var/lib/dklb/dklb.db"),
    ("unparsable", "post gres://u:s3cret@", "<database URL that cannot be parsed>"),
]


@pytest.mark.parametrize(("url", "shown"), [(u, s) for _, u, s in REDACTED], ids=[i for i, _, _ in REDACTED])
def test_redacted_never_shows_the_password(url: str, shown: str) -> None:
    assert redacted(url) == shown
