"""Benchmark: state transitions persisted per second through dklb's store, beside raw sqlite3.

Where it sits: every transition the reconciler commits is ONE transaction of ``engine.store``
(``Store.commit(Change)``: the binding's row, the reference counts of the pools it leaves or
joins, a history row), its statements prepared once and run on a kept DBAPI connection
(``engine.store.prepared``). This measures what that costs against the least a
durable transition could cost: a raw ``sqlite3`` loop doing one transaction per iteration (INSERT
a history-like row, UPDATE a binding-like row) with the SAME pragmas the store runs with (read
back from a connection of the store's own engine, so they follow ``engine.store.make_engine``),
on the same directory, in the same process.

The store side creates ``bindings`` bindings (``Store.create``), then commits ``transitions``
changes round-robin over them, each binding going around the cycle Pending -> Provisioning (joins a
pool: ref count +1) -> AwaitingMetadata (pool row marked created) -> Ready (pool row marked
served) -> Pending (leaves the pool: ref count -1), with the fields the reconciler sets on a
transition (attempts, next_wakeup, last_error). The two sides run ``repeats`` times each,
alternating which goes first, so drift in the machine's load hits both alike; the medians are
reported, ``ratio`` = store_tps / raw_tps.

PostgreSQL (``--postgresql``, or ``run_postgresql``): the same store side on a PostgreSQL
database (a throwaway ``localpg`` server, or ``--postgresql-url``), beside a raw psycopg 3 loop
doing the same two statements per transaction on tables of their own in that database, one
connection, one transaction per iteration. Both go over loopback TCP.

    .venv/bin/python -m bench.store_bench [--dir D] [--transitions N] [--bindings K] [--repeats R]
        [--postgresql | --postgresql-url URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import EllipsisType
from typing import Any, TypedDict

from engine.cli.output import table
from engine.store import Change, Store, database_url, migrate, redacted


class _Extra(TypedDict, total=False):
    """The fields a step of ``CYCLE`` sets beyond the common ones; pool ``...`` is the binding's pool."""

    pool: str | EllipsisType | None
    pool_created_by_dklb: bool
    pool_served: bool


# (from, to, trigger, reason, extra Change fields); "pool" is filled in per binding.
CYCLE: tuple[tuple[str, str, str, str, _Extra], ...] = (
    ("Pending", "Provisioning", "accept", "Accepted", {"pool": ...}),
    ("Provisioning", "AwaitingMetadata", "provisioned", "PoolCreated", {"pool_created_by_dklb": True}),
    ("AwaitingMetadata", "Ready", "addresses_found", "AddressesFound", {"pool_served": True}),
    ("Ready", "Pending", "spec_changed", "SpecChanged", {"pool": None}),
)
# Pragmas compared between the two sides; read from the store's engine, applied to the raw one.
PRAGMAS = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
RAW_SCHEMA = (
    "CREATE TABLE bindings (id INTEGER PRIMARY KEY, state TEXT NOT NULL, updated_at TEXT NOT NULL)",
    "CREATE TABLE history (id INTEGER PRIMARY KEY, binding_id INTEGER, from_state TEXT,"
    " to_state TEXT NOT NULL, at TEXT NOT NULL)",
)


@dataclass
class _Binding:
    id: int
    pool: str
    step: int = 0  # index into CYCLE of its next transition


def store_pragmas(store: Store) -> dict[str, Any]:
    """The pragmas a connection of the store's engine runs with (``make_engine`` sets them)."""
    with store.engine.connect() as conn:
        return {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in PRAGMAS}


def _store_side(store: Store, bindings: int) -> Callable[[int], float]:
    rows = [
        _Binding(
            store.create(
                namespace="bench", name=f"svc-{i}", uid=f"uid-{i}", state="Pending", trigger="observed"
            ).id,
            pool=f"bench-pool-{i % max(1, bindings // 4)}",
        )
        for i in range(bindings)
    ]

    def run(transitions: int) -> float:
        started = time.perf_counter()
        for m in range(transitions):
            binding = rows[m % len(rows)]
            source, dest, trigger, reason, extra = CYCLE[binding.step]
            fields = extra.copy()
            if fields.get("pool") is ...:
                fields["pool"] = binding.pool
            store.commit(
                Change(
                    binding_id=binding.id,
                    expected_state=source,
                    to_state=dest,
                    trigger=trigger,
                    reason=reason,
                    attempts=0,
                    next_wakeup=datetime.now(UTC) + timedelta(seconds=30),
                    last_error=None,
                    **fields,
                )
            )
            binding.step = (binding.step + 1) % len(CYCLE)
        return time.perf_counter() - started

    return run


def _raw_side(
    path: Path, pragmas: dict[str, Any], bindings: int
) -> tuple[sqlite3.Connection, Callable[[int], float]]:
    # isolation_level None: no implicit BEGIN, the loop says BEGIN IMMEDIATE like the store does.
    conn = sqlite3.connect(path, isolation_level=None)
    for name in PRAGMAS:
        conn.execute(f"PRAGMA {name}={pragmas[name]}")
    for statement in RAW_SCHEMA:
        conn.execute(statement)
    now = datetime.now(UTC).isoformat(" ")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO bindings (id, state, updated_at) VALUES (?, 'Pending', ?)",
        [(i, now) for i in range(bindings)],
    )
    conn.execute("COMMIT")
    return conn, _raw_loop(conn, SQLITE_LOOP, at=lambda: datetime.now(UTC).isoformat(" "), bindings=bindings)


@dataclass(frozen=True)
class RawLoop:
    """The raw side's two statements per transaction, in one driver's words."""

    begin: str
    history: str
    update: str


SQLITE_LOOP = RawLoop(
    # IMMEDIATE: the write lock at BEGIN, as the store takes it.
    begin="BEGIN IMMEDIATE",
    history="INSERT INTO history (binding_id, from_state, to_state, at) VALUES (?, ?, ?, ?)",
    update="UPDATE bindings SET state = ?, updated_at = ? WHERE id = ?",
)
POSTGRESQL_LOOP = RawLoop(
    begin="BEGIN",
    history="INSERT INTO raw_history (binding_id, from_state, to_state, at) VALUES (%s, %s, %s, %s)",
    update="UPDATE raw_bindings SET state = %s, updated_at = %s WHERE id = %s",
)


def _raw_loop(conn: Any, sql: RawLoop, *, at: Callable[[], Any], bindings: int) -> Callable[[int], float]:
    """One transaction per transition on ``conn`` (in autocommit: the loop says BEGIN and COMMIT),
    each binding going around ``CYCLE``; a run returns its seconds."""
    steps = [0] * bindings

    def run(transitions: int) -> float:
        started = time.perf_counter()
        for m in range(transitions):
            i = m % bindings
            source, dest = CYCLE[steps[i]][:2]
            now = at()
            conn.execute(sql.begin)
            conn.execute(sql.history, (i, source, dest, now))
            conn.execute(sql.update, (dest, now, i))
            conn.execute("COMMIT")
            steps[i] = (steps[i] + 1) % len(CYCLE)
        return time.perf_counter() - started

    return run


def run(directory: Path, *, transitions: int = 2000, bindings: int = 100, repeats: int = 5) -> dict[str, Any]:
    """Measure both sides in a fresh subdirectory of ``directory`` (created if missing; the
    subdirectory is removed afterwards)."""
    _check(transitions, bindings, repeats)
    directory.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="store-bench-", dir=directory))
    store = migrate.open_store(str(work / "store.db"))
    conn: sqlite3.Connection | None = None
    try:
        pragmas = store_pragmas(store)
        store_run = _store_side(store, bindings)
        conn, raw_run = _raw_side(work / "raw.db", pragmas, bindings)
        raw_pragmas = {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in PRAGMAS}
        if raw_pragmas != pragmas:
            raise RuntimeError(f"raw sqlite3 runs with {raw_pragmas}, the store with {pragmas}")
        result = _measure(store, store_run, raw_run, transitions=transitions, repeats=repeats)
        return {**result, "bindings": bindings, "pragmas": pragmas, "directory": str(directory)}
    finally:
        if conn is not None:
            conn.close()
        store.close()
        shutil.rmtree(work, ignore_errors=True)


def _check(transitions: int, bindings: int, repeats: int) -> None:
    if transitions < 1 or bindings < 1 or repeats < 1:
        raise ValueError("transitions, bindings and repeats must be at least 1")


def _measure(
    store: Store,
    store_run: Callable[[int], float],
    raw_run: Callable[[int], float],
    *,
    transitions: int,
    repeats: int,
) -> dict[str, Any]:
    # Warm-up, not counted: first statements compile, first pages come into the cache.
    warmup = min(transitions, 200)
    store_run(warmup)
    raw_run(warmup)
    writes_before = store.write_transactions
    store_seconds: list[float] = []
    raw_seconds: list[float] = []
    for repeat in range(repeats):
        sides = [(store_run, store_seconds), (raw_run, raw_seconds)]
        for side, seconds in sides if repeat % 2 == 0 else reversed(sides):
            seconds.append(side(transitions))
    store_tps = transitions / statistics.median(store_seconds)
    raw_tps = transitions / statistics.median(raw_seconds)
    consistent = store.live_reference_counts() == {p.name: p.ref_count for p in store.pools()}
    return {
        "store_tps": store_tps,
        "raw_tps": raw_tps,
        "ratio": store_tps / raw_tps,
        "store_runs_tps": [transitions / s for s in store_seconds],
        "raw_runs_tps": [transitions / s for s in raw_seconds],
        "transitions": transitions,
        "repeats": repeats,
        "store_write_transactions": store.write_transactions - writes_before,
        "ref_counts_consistent": consistent,
    }


RAW_POSTGRESQL_SCHEMA = (
    "CREATE TABLE raw_bindings (id INTEGER PRIMARY KEY, state TEXT NOT NULL, updated_at TIMESTAMP NOT NULL)",
    "CREATE TABLE raw_history (id SERIAL PRIMARY KEY, binding_id INTEGER, from_state TEXT,"
    " to_state TEXT NOT NULL, at TIMESTAMP NOT NULL)",
)


def _raw_postgresql_side(url: str, bindings: int) -> tuple[Any, Callable[[int], float]]:
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    with conn.transaction():
        for statement in RAW_POSTGRESQL_SCHEMA:
            conn.execute(statement)
        now = datetime.now(UTC).replace(tzinfo=None)
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO raw_bindings (id, state, updated_at) VALUES (%s, 'Pending', %s)",
                [(i, now) for i in range(bindings)],
            )
    at = lambda: datetime.now(UTC).replace(tzinfo=None)  # noqa: E731 - the column is naive UTC
    return conn, _raw_loop(conn, POSTGRESQL_LOOP, at=at, bindings=bindings)


def run_postgresql(
    url: str | None = None, *, transitions: int = 2000, bindings: int = 100, repeats: int = 5
) -> dict[str, Any]:
    """Both sides on PostgreSQL: ``url`` (an empty database), or a throwaway ``localpg`` server."""
    _check(transitions, bindings, repeats)
    server = None
    if url is None:
        import localpg

        server = localpg.start()
        url = server.create_database("store_bench")
    raw: Any = None
    store = migrate.open_store(url)
    try:
        store_run = _store_side(store, bindings)
        raw, raw_run = _raw_postgresql_side(
            database_url(url).replace("postgresql+psycopg", "postgresql"), bindings
        )
        result = _measure(store, store_run, raw_run, transitions=transitions, repeats=repeats)
        return {**result, "bindings": bindings, "pragmas": {}, "directory": redacted(database_url(url))}
    finally:
        if raw is not None:
            raw.close()
        store.close()
        if server is not None:
            import localpg

            localpg.remove(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the databases go"
    )
    parser.add_argument("--transitions", type=int, default=2000, help="transitions per run")
    parser.add_argument("--bindings", type=int, default=100)
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs per side, alternating; the median is used"
    )
    parser.add_argument(
        "--postgresql", action="store_true", help="on a throwaway PostgreSQL server (localpg), not SQLite"
    )
    parser.add_argument("--postgresql-url", help="on this (empty) PostgreSQL database instead")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    sizes = {"transitions": args.transitions, "bindings": args.bindings, "repeats": args.repeats}
    if args.postgresql or args.postgresql_url:
        result = run_postgresql(args.postgresql_url, **sizes)
    else:
        result = run(args.dir, **sizes)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


def report(result: dict[str, Any]) -> str:
    """The result of ``run`` (or ``run_postgresql``) as a few lines of text."""
    raw = "psycopg 3" if not result["pragmas"] else "sqlite3"
    rows = [
        (
            side,
            f"{result[key + '_tps']:,.0f}",
            f"{1000 / result[key + '_tps']:.3f}",
            _runs(result[key + "_runs_tps"]),
        )
        for side, key in (("dklb store (Store.commit)", "store"), (f"raw {raw}", "raw"))
    ]
    return "\n".join(
        [
            f"{result['transitions']} transitions per run, {result['repeats']} runs per side (alternating), "
            f"{result['bindings']} bindings, in {result['directory']}",
            f"pragmas of both sides: {result['pragmas'] or 'PostgreSQL defaults (READ COMMITTED)'}",
            "",
            table(["side", "per second (median)", "ms each", "runs (per second)"], rows, right=(1, 2)),
            "",
            f"ratio store/raw: {result['ratio']:.3f} ({result['ratio']:.0%} of raw {raw}'s rate)",
            f"reference counts consistent after the run: {result['ref_counts_consistent']}",
        ]
    )


def _runs(values: list[float]) -> str:
    return " ".join(f"{v:,.0f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
