"""Benchmark: ``dklb history NAMESPACE/NAME --limit 50`` on a million history rows.

Where it sits: the controller appends one history row per transition; retention
(``--history-max-age``, ``--history-max-rows-per-service``) bounds them, but a busy cluster
still holds hundreds of thousands to millions; ``dklb history`` (``engine.cli``) must still answer
at once. This script builds such a database (schema by ``engine.store.migrate``, rows bulk-inserted
with ``executemany`` in a few transactions: ~2,000 Services on ~50 pools), then times the
queries the CLI runs (``Store.history``) — the query alone, and the whole command
(schema check, read-only open, query, table) — median of N runs each, with the schema's indexes
and again with them dropped, and prints one small table with each query's plan. A benchmark,
not a test: it exits 0 and says whether the per-Service query met its 100 ms budget.

Then retention (``engine.store.pruning``) on a copy of the same million rows: the row cap alone
(``--history-max-rows-per-service 200``), then the age rule (``--history-max-age 30d``): the
time each pass takes, its batches, the longest single batch (how long it held SQLite's write
lock: what a worker's commit may wait behind) and the file size after (incremental vacuum).

    .venv/bin/python bench/history_bench.py [--rows 1000000] [--runs 20] [--keep PATH] [--prune-only]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from engine import cli
from engine.cli.output import table
from engine.store import Store, database_url, migrate
from engine.store.pruning import HistoryPruner, Retention

BUDGET_MS = 100.0
STATES = ("Pending", "Provisioning", "AwaitingMetadata", "Ready")
# (from, to, trigger, reason): the transitions a Service goes through most, in order.
CYCLE = (
    (None, "Pending", "observed", "ServiceObserved"),
    ("Pending", "Provisioning", "accept", "Accepted"),
    ("Provisioning", "Provisioning", "failed", "EdgeLBUnavailable"),
    ("Provisioning", "AwaitingMetadata", "provisioned", "PoolUpdated"),
    ("AwaitingMetadata", "AwaitingMetadata", "poll", "MetadataNotReady"),
    ("AwaitingMetadata", "Ready", "addresses_found", "AddressesFound"),
    ("Ready", "Provisioning", "drift", "PoolChanged"),
)
INDEXES = ("ix_history_service_at", "ix_history_pool_at", "ix_history_state_at", "ix_history_at")
# How SQLAlchemy's DateTime stores a (naive UTC) time in SQLite: rows written here must compare
# exactly like rows the controller writes.
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
START = datetime(2026, 1, 1, tzinfo=UTC)
SECONDS_PER_ROW = 30


def populate(path: Path, *, rows: int, services: int, pools: int, batches: int = 10) -> float:
    """Create the schema and ``rows`` history rows; returns the seconds the inserts took."""
    migrate.upgrade(str(path))
    rng = random.Random(20261128)
    start = START.replace(tzinfo=None)
    keys = [(f"ns-{i % 40:02d}", f"svc-{i:04d}", f"pool-{i % pools:02d}") for i in range(services)]
    step = rng.choice  # bound once: the generator below runs a million times
    conn = sqlite3.connect(path)
    began = time.perf_counter()
    try:
        per_batch = -(-rows // batches)
        written = 0
        counters = [0] * services
        while written < rows:
            n = min(per_batch, rows - written)

            def batch(first: int, count: int) -> Iterator[tuple[Any, ...]]:
                for i in range(first, first + count):
                    s = rng.randrange(services)
                    namespace, name, pool = keys[s]
                    from_state, to_state, trigger, reason = CYCLE[counters[s] % len(CYCLE)]
                    counters[s] += 1
                    # Append-only: time only moves forward (about 30 s between rows on average).
                    at = start + timedelta(seconds=i * SECONDS_PER_ROW + rng.random())
                    yield (
                        s + 1,
                        namespace,
                        name,
                        None if to_state == "Pending" else pool,
                        from_state,
                        to_state,
                        trigger,
                        reason,
                        step(("", "EdgeLB pool updated", "creating EdgeLB pool failed: 503 boom")),
                        counters[s] % 7,
                        at.strftime(SQLITE_TIME),
                        rng.random() * 60,
                    )

            with conn:  # one transaction per batch
                conn.executemany(
                    "INSERT INTO history (binding_id, namespace, name, pool, from_state, to_state, "
                    '"trigger", reason, message, attempt, at, duration) '
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    batch(written, n),
                )
            written += n
    finally:
        conn.close()
    return time.perf_counter() - began


def timed(func: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    times: list[float] = []
    result: Any = None
    for _ in range(runs):
        began = time.perf_counter()
        result = func()
        times.append((time.perf_counter() - began) * 1000)
    return times, result


def plan_of(store: Store, call: Callable[[], Any]) -> str:
    """The plan SQLite chose for the history query ``call`` makes through ``store``."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    statement, parameters = next((s, p) for s, p in seen if "FROM history" in s)
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
    return "; ".join(str(r[-1]) for r in rows)


def measure(
    path: Path, *, runs: int, indexed: str, rng: random.Random, services: int, rows: int
) -> list[list[Any]]:
    # The newest tenth of the history: what `--since` asks for after an incident.
    since = START + timedelta(seconds=rows * SECONDS_PER_ROW * 0.9)
    store = Store(database_url(str(path)), read_only=True)
    keys = [f"ns-{s % 40:02d}/svc-{s:04d}" for s in (rng.randrange(services) for _ in range(runs))]
    results: list[list[Any]] = []
    try:
        picks = itertools.cycle(keys)

        def per_service() -> Any:
            return store.history(key=next(picks), limit=50)

        def per_pool() -> Any:
            return store.history(pool=f"pool-{rng.randrange(50):02d}", limit=50)

        def per_state() -> Any:
            return store.history(state="Provisioning", limit=50)

        def per_service_since() -> Any:
            return store.history(key=next(picks), since=since, limit=50)

        def per_service_state() -> Any:
            return store.history(key=next(picks), state="Provisioning", limit=50)

        cases: list[tuple[str, Callable[[], Any]]] = [
            ("history ns/name --limit 50 (query)", per_service),
            ("history ns/name --since T --limit 50", per_service_since),
            ("history ns/name --state Provisioning --limit 50", per_service_state),
            ("history --pool P --limit 50", per_pool),
            ("history --state Provisioning --limit 50", per_state),
        ]
        for label, call in cases:
            plan = plan_of(store, call)
            times, result = timed(call, runs)
            results.append([label, indexed, *stats(times), len(result), plan])
    finally:
        store.close()

    # The whole command as an operator runs it: schema check, read-only open, query, table.
    whole = itertools.cycle(keys)

    def command() -> int:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return cli.main(["history", next(whole), "--limit", "50", "--database", str(path)])

    times, code = timed(command, runs)
    assert code == 0, "dklb history failed"
    results.insert(1, ["dklb history ns/name --limit 50 (whole command)", indexed, *stats(times), "-", "-"])
    return results


def prune(path: Path, *, rows: int) -> list[list[Any]]:
    """Retention passes over the million rows at ``path``, one table row each."""
    newest = START + timedelta(seconds=rows * SECONDS_PER_ROW)
    passes = (
        ("--history-max-rows-per-service 200 (no age limit)", Retention(max_age=0, max_rows_per_service=200)),
        ("--history-max-age 30d (after the cap)", Retention(max_age=30 * 86400.0, max_rows_per_service=0)),
    )
    store = Store(database_url(str(path)))
    results: list[list[Any]] = []
    try:
        for label, retention in passes:
            before = count_rows(path)
            began = time.perf_counter()
            report = HistoryPruner(store, retention).prune(now=newest)
            seconds = time.perf_counter() - began
            checkpoint = sqlite3.connect(path)
            checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            checkpoint.close()
            results.append(
                [
                    label,
                    f"{before:,}",
                    f"{count_rows(path):,}",
                    f"{seconds:.1f}",
                    report.batches,
                    *percentiles(report.batch_seconds),
                    f"{report.longest_batch * 1000:.1f}",
                    f"{report.longest_reclaim * 1000:.1f}",
                    f"{path.stat().st_size / 1e6:.0f}",
                ]
            )
    finally:
        store.close()
    return results


def percentiles(seconds: list[float]) -> list[str]:
    """Median and 99th percentile of the batches, in ms."""
    if not seconds:
        return ["-", "-"]
    ordered = sorted(seconds)
    return [f"{statistics.median(ordered) * 1000:.1f}", f"{ordered[int(len(ordered) * 0.99)] * 1000:.1f}"]


def count_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM history").fetchone()[0])
    finally:
        conn.close()


def stats(times: list[float]) -> list[str]:
    return [f"{statistics.median(times):.2f}", f"{min(times):.2f}", f"{max(times):.2f}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--services", type=int, default=2_000)
    parser.add_argument("--pools", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20, help="runs per query; the median is reported")
    parser.add_argument("--keep", type=Path, default=None, help="build the database here and keep it")
    parser.add_argument(
        "--prune-only", action="store_true", help="skip the queries: build the rows, measure retention"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dklb-bench-") as tmp:
        path = args.keep or Path(tmp) / "history.db"
        if path.exists():
            path.unlink()
        print(f"building {path}: {args.rows:,} history rows, {args.services:,} services, {args.pools} pools")
        seconds = populate(path, rows=args.rows, services=args.services, pools=args.pools)
        size = path.stat().st_size / 1e6
        print(f"inserted in {seconds:.1f}s ({args.rows / seconds:,.0f} rows/s), {size:.0f} MB")

        rows: list[list[Any]] = []
        if args.prune_only:
            pruning = prune(path, rows=args.rows)
        else:
            shape = {"runs": args.runs, "services": args.services, "rows": args.rows}
            rows = measure(path, indexed="yes", rng=random.Random(1), **shape)
            pruned_copy = path.with_name("pruned.db")
            shutil.copyfile(path, pruned_copy)
            conn = sqlite3.connect(path)
            with conn:
                for name in INDEXES:
                    conn.execute(f"DROP INDEX {name}")
            conn.close()
            rows += measure(path, indexed="no", rng=random.Random(1), **shape)
            print(f"pruning a copy ({pruned_copy.stat().st_size / 1e6:.0f} MB)")
            pruning = prune(pruned_copy, rows=args.rows)
            pruned_copy.unlink()

    if rows:
        headers = ("QUERY", "INDEXES", "MEDIAN MS", "MIN MS", "MAX MS", "ROWS", "PLAN")
        print()
        print(table(headers, rows, right=(2, 3, 4, 5)))
    print()
    pruning_headers = (
        "RETENTION PASS",
        "ROWS BEFORE",
        "ROWS AFTER",
        "SECONDS",
        "BATCHES",
        "MEDIAN BATCH MS",
        "P99 BATCH MS",
        "LONGEST BATCH MS",
        "LONGEST VACUUM STEP MS",
        "MB AFTER",
    )
    print(table(pruning_headers, pruning, right=(1, 2, 3, 4, 5, 6, 7, 8, 9)))
    if not rows:
        return 0
    per_service_ms = float(rows[0][2])
    verdict = "within" if per_service_ms < BUDGET_MS else "OVER"
    print(f"\nper-Service query: median {per_service_ms:.2f} ms, {verdict} the {BUDGET_MS:.0f} ms budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
