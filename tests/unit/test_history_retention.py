"""History retention (S4 of the security review): history cannot fill the disk.

S4 (security review): "History is never pruned: there is no retention code, and a removed binding
keeps its history. Each rejection writes a 5 MB error message into SQLite history." These tests
prove the guarantees that replace that: a history message is capped at 4 KiB with a marker when
recorded (``cap_message``, ``Store.create``/``commit``); ``HistoryPruner`` deletes what is older
than ``--history-max-age`` (removed bindings' rows too) and each Service's rows beyond its newest
``--history-max-rows-per-service``, always per Service, in batches of at most ``batch`` rows, each
its own transaction, stoppable between two; an SQLite file gives the freed pages back; the traces
it leaves make ``dklb history`` say older entries were pruned (table footer and ``pruned`` in
``-o json``); and ``dklb run`` takes both flags, from the command line or ``DKLB_*``, refusing bad
values with a message naming the flag or variable.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from sqlalchemy import event, insert

from engine import cli
from engine.app import AppConfig
from engine.cli import bindings
from engine.cli import run as run_command
from engine.store import Change, Store, database_url, migrate
from engine.store.pruning import HistoryPruner, Retention
from engine.store.records import MESSAGE_CAP, cap_message
from engine.store.schema import HISTORY

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DAY = 86400.0


@pytest.fixture
def db(store_url: str) -> str:
    """A fresh migrated database of each dialect (``tests.storedb``), as a URL."""
    return store_url


@pytest.fixture
def store(db: str) -> Iterator[Store]:
    opened = Store(db)
    yield opened
    opened.close()


def add_rows(store: Store, key: str, ages: list[float], *, message: str = "m") -> None:
    """History rows of ``key`` at ``NOW - age`` seconds, as the controller would have written them."""
    namespace, name = key.split("/")
    rows = [
        {
            "binding_id": None,
            "namespace": namespace,
            "name": name,
            "pool": "p",
            "from_state": "Pending",
            "to_state": "Rejected",
            "trigger": "invalid",
            "reason": "InvalidConfig",
            "message": message,
            "attempt": 0,
            "at": NOW - timedelta(seconds=age),
            "duration": 1.0,
        }
        for age in ages
    ]
    with store.engine.begin() as conn:
        conn.execute(insert(HISTORY), rows)


def ids_of(store: Store, key: str) -> list[int]:
    return [h.id for h in store.history(key=key, limit=None)]


# ---- the message cap -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "kept_whole"),
    [
        ("", True),
        ("creating EdgeLB pool failed: 503", True),
        ("x" * MESSAGE_CAP, True),
        ("x" * (MESSAGE_CAP + 1), False),
        ("é" * MESSAGE_CAP, False),  # 2 bytes each: 8 KiB
        ("€" * 1365 + "x", True),  # 4,096 bytes exactly
        ("frontends[3]: must be a mapping; " * 150_000, False),  # the review's 5 MB report
    ],
    ids=["empty", "short", "exactly-4KiB", "one-byte-over", "multibyte", "multibyte-exact", "5MB"],
)
def test_a_history_message_is_capped_at_4KiB_with_a_marker(message: str, kept_whole: bool) -> None:
    """S4 (security review): one rejection wrote a 4,994,066-byte message into history."""
    capped = cap_message(message)
    size = len(message.encode())
    assert len(capped.encode()) <= MESSAGE_CAP
    if kept_whole:
        assert capped == message
    else:
        head, marker = capped.split(" … [truncated: ")
        assert message.startswith(head) and len(head.encode()) > MESSAGE_CAP - 80
        assert marker == f"{size:,} bytes, the first {len(head.encode()):,} kept]"


def test_the_store_caps_messages_when_recording(store: Store) -> None:
    """S4 (security review): the cap is applied by the store, whatever the handler wrote."""
    huge = "frontends[1]: must be a mapping\n" * 200_000
    binding = store.create(
        namespace="t", name="x", uid="u", state="Pending", trigger="observed", message=huge
    )
    store.commit(Change(binding.id, "Pending", "Rejected", "invalid", "InvalidConfig", message=huge))
    messages = [h.message for h in store.history(key="t/x")]
    assert len(messages) == 2
    assert all(len(m.encode()) <= MESSAGE_CAP and "[truncated: 6,400,000 bytes" in m for m in messages)


# ---- pruning ---------------------------------------------------------------------------------------


def test_pruning_by_age_takes_every_services_old_rows_removed_bindings_too(store: Store) -> None:
    """S4 (security review): "a removed binding keeps its history" forever; no longer."""
    add_rows(store, "a/live", [40 * DAY, 31 * DAY, 29 * DAY, 1])
    add_rows(store, "b/removed", [365 * DAY, 60 * DAY, 30 * DAY + 1])  # no binding row: long gone
    add_rows(store, "c/young", [DAY])
    report = HistoryPruner(store, Retention(max_age=30 * DAY, max_rows_per_service=0)).prune(now=NOW)
    assert (report.by_age, report.by_rows, report.complete) == (5, 0, True)
    cutoff = NOW - timedelta(days=30)
    remaining = store.history(limit=None)
    assert {h.key for h in remaining} == {"a/live", "c/young"}
    assert len(remaining) == 3 and all(h.at >= cutoff for h in remaining)
    (trace,) = store.pruned()
    assert (trace.rule, trace.before, trace.rows, trace.at) == ("max-age", cutoff, 5, NOW)
    assert store.pruned("b/removed") == [trace], "the age rule's trace covers every Service"
    # Nothing left to prune: the trace keeps its cut and count.
    assert HistoryPruner(store, Retention(max_age=30 * DAY, max_rows_per_service=0)).prune(now=NOW).rows == 0
    assert store.pruned() == [trace]


def test_pruning_by_rows_keeps_each_services_newest_n(store: Store) -> None:
    ages = [float(i) for i in range(250)]
    add_rows(store, "a/busy", ages)
    add_rows(store, "b/quiet", ages[:10])
    # Same time, several rows: the order is (at, id), as dklb history shows it.
    add_rows(store, "c/tied", [5.0] * 4)
    busy_before, tied_before = ids_of(store, "a/busy"), ids_of(store, "c/tied")
    pruner = HistoryPruner(store, Retention(max_age=0, max_rows_per_service=3))
    report = pruner.prune(now=NOW)
    assert ids_of(store, "a/busy") == busy_before[:3]
    assert ids_of(store, "b/quiet") == ids_of(store, "b/quiet")[:3] and len(ids_of(store, "b/quiet")) == 3
    assert ids_of(store, "c/tied") == tied_before[:3]
    assert (report.by_rows, report.by_age) == (247 + 7 + 1, 0)
    (trace,) = store.pruned("a/busy")
    assert (trace.rule, trace.rows, trace.services) == ("max-rows-per-service", 247, 1)
    assert trace.before == NOW - timedelta(seconds=2), "the oldest row kept"
    (every,) = store.pruned()
    assert (every.rows, every.services) == (255, 3)

    # The next pass looks at the Services written since, and only at them.
    add_rows(store, "a/busy", [-1.0, -2.0])
    assert pruner.prune(now=NOW).by_rows == 2
    assert len(ids_of(store, "a/busy")) == 3 and ids_of(store, "a/busy")[0] > busy_before[0]


def test_the_age_rules_trace_drops_older_service_traces(store: Store) -> None:
    add_rows(store, "a/x", [40 * DAY, 39 * DAY, 38 * DAY])
    HistoryPruner(store, Retention(max_age=0, max_rows_per_service=1)).prune(now=NOW)
    assert [t.rule for t in store.pruned("a/x")] == ["max-rows-per-service"]
    add_rows(store, "b/y", [35 * DAY])
    HistoryPruner(store, Retention(max_age=30 * DAY, max_rows_per_service=0)).prune(now=NOW)
    assert [t.rule for t in store.pruned("a/x")] == ["max-age"], "the age rule says all there is"


def test_pruning_goes_in_bounded_batches_and_stops_between_two(store: Store) -> None:
    """S4 (security review): never one giant DELETE holding SQLite's write lock for seconds."""
    add_rows(store, "a/x", [40 * DAY + i for i in range(50)])
    deleted_per_statement: list[int] = []

    def seen(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        if statement.startswith("DELETE FROM history "):
            deleted_per_statement.append(_cursor.rowcount)

    event.listen(store.engine, "after_cursor_execute", seen)
    writes = store.write_transactions
    asked = iter([True, True, False])
    pruner = HistoryPruner(store, Retention(max_age=30 * DAY, max_rows_per_service=0, batch=7))
    report = pruner.prune(now=NOW, keep_going=lambda: next(asked))
    assert (report.by_age, report.batches, report.complete) == (14, 2, False)
    assert len(store.history(limit=None)) == 36, "the rest waits for the next pass"
    report = pruner.prune(now=NOW)
    assert report.complete and report.by_age == 36 and store.history(limit=None) == []
    assert deleted_per_statement == [7] * 7 + [1]
    assert store.write_transactions - writes >= 8, "one transaction per batch"


def test_freed_pages_go_back_to_the_file_system(tmp_path: Path) -> None:
    """A new SQLite file is made with auto_vacuum=INCREMENTAL; pruning gives its pages back."""
    db = tmp_path / "dklb.db"
    migrate.upgrade(str(db))
    with contextlib.closing(Store(database_url(str(db)))) as store:
        _freed_pages_go_back(db, store)


def _freed_pages_go_back(db: Path, store: Store) -> None:
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)
    add_rows(store, "a/x", [40 * DAY + i for i in range(300)], message="x" * 4000)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    full = db.stat().st_size
    report = HistoryPruner(store, Retention(max_age=30 * DAY, max_rows_per_service=0)).prune(now=NOW)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert report.by_age == 300 and report.reclaimed_pages > 250
    assert conn.execute("PRAGMA freelist_count").fetchone() == (0,)
    assert db.stat().st_size < full / 4
    conn.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_age": -1.0}, "history max age -1.0 must not be negative"),
        ({"max_rows_per_service": -5}, "history max rows per Service -5 must not be negative"),
        ({"batch": 0}, "history pruning batch 0 must be at least 1"),
    ],
)
def test_a_retention_out_of_range_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as refused:
        Retention(**fields)
    assert str(refused.value) == message


def test_a_zero_retention_keeps_everything(store: Store) -> None:
    add_rows(store, "a/x", [400 * DAY] * 300)
    retention = Retention(max_age=0, max_rows_per_service=0)
    assert not retention.enabled
    assert HistoryPruner(store, retention).prune(now=NOW).rows == 0
    assert len(store.history(limit=None)) == 300 and store.pruned() == []


# ---- dklb history says so ----------------------------------------------------------------------------


def history(capsys: pytest.CaptureFixture[str], db: str, *argv: str) -> tuple[str, str]:
    with mock.patch.object(bindings, "utcnow", return_value=NOW + timedelta(minutes=5)):
        code = cli.main(["history", *argv, "--database", str(db)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out, captured.err


def test_dklb_history_says_older_rows_were_pruned(
    capsys: pytest.CaptureFixture[str], db: str, store: Store
) -> None:
    add_rows(store, "a/busy", [40 * DAY, *[float(i) for i in range(5)]])
    add_rows(store, "b/quiet", [45 * DAY, 60.0])
    HistoryPruner(store, Retention(max_age=30 * DAY, max_rows_per_service=3)).prune(now=NOW)
    store.close()

    out, err = history(capsys, db, "a/busy")
    assert len(out.splitlines()) == 4
    assert err.splitlines() == [
        "older history pruned (--history-max-age): entries before 2026-11-03 12:00:00Z are gone "
        "(2 rows, last pruned 5m ago)",
        "older history pruned (--history-max-rows-per-service): a/busy's entries before "
        "2026-12-03 11:59:58Z are gone (2 rows, last pruned 5m ago)",
    ]
    _, err = history(capsys, db, "b/quiet")
    assert err.splitlines() == [
        "older history pruned (--history-max-age): entries before 2026-11-03 12:00:00Z are gone "
        "(2 rows, last pruned 5m ago)"
    ]
    _, err = history(capsys, db)
    assert err.splitlines()[1] == (
        "older history pruned (--history-max-rows-per-service): the oldest entries of 1 Service are "
        "gone, up to 2026-12-03 11:59:58Z for the latest cut (2 rows, last pruned 5m ago)"
    )
    # Asked only for what is newer than any cut: nothing pruned is missing from the answer.
    out, err = history(capsys, db, "a/busy", "--since", "2026-12-03T11:59:59Z")
    assert len(out.splitlines()) == 3 and err == ""

    doc = json.loads(history(capsys, db, "a/busy", "-o", "json")[0])
    assert len(doc["entries"]) == 3
    assert doc["pruned"] == [
        {
            "rule": "max-age",
            "before": "2026-11-03T12:00:00Z",
            "rows": 2,
            "at": "2026-12-03T12:00:00Z",
            "services": 0,
        },
        {
            "rule": "max-rows-per-service",
            "before": "2026-12-03T11:59:58Z",
            "rows": 2,
            "at": "2026-12-03T12:00:00Z",
            "services": 1,
        },
    ]
    assert json.loads(history(capsys, db, "--since", "1m", "-o", "json")[0])["pruned"] == []


# ---- dklb run's flags ----------------------------------------------------------------------------------


class Recorder:
    """Stands in for ``engine.app.App``: keeps the config ``dklb run`` built, runs nothing."""

    def __init__(self) -> None:
        self.configs: list[AppConfig] = []

    def __call__(self, config: AppConfig) -> Recorder:
        self.configs.append(config)
        return self

    def run(self) -> int:
        return 0


@contextlib.contextmanager
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    recorder = Recorder()
    monkeypatch.setattr("engine.app.App", recorder)
    monkeypatch.setattr(run_command, "configure_logging", lambda level, fmt: None)
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    yield recorder


BASE = ["run", "--edgelb-url", "http://127.0.0.1:1", "--database", "unused.db"]


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, Retention(max_age=30 * DAY, max_rows_per_service=200)),
        (["--history-max-age", "7d", "--history-max-rows-per-service", "50"], {}, Retention(7 * DAY, 50)),
        (
            [],
            {"DKLB_HISTORY_MAX_AGE": "12h", "DKLB_HISTORY_MAX_ROWS_PER_SERVICE": "0"},
            Retention(43200.0, 0),
        ),
        (["--history-max-age", "1d"], {"DKLB_HISTORY_MAX_AGE": "12h"}, Retention(DAY, 200)),
        (["--history-max-age", "0"], {}, Retention(0.0, 200)),
    ],
    ids=["defaults", "flags", "environment", "flag-wins", "age-off"],
)
def test_dklb_run_takes_the_retention_flags(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], expected: Retention
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with recording(monkeypatch) as recorder:
        assert cli.main([*BASE, *argv]) == 0
    (config,) = recorder.configs
    assert config.retention == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--history-max-age=-1h"], "argument --history-max-age: '-1h' is not a valid duration"),
        (["--history-max-age", "forever"], "argument --history-max-age: 'forever' is not a valid duration"),
        (["--history-max-rows-per-service=-3"], "argument --history-max-rows-per-service: '-3' must not"),
        (["--history-max-rows-per-service", "lots"], "--history-max-rows-per-service: 'lots' is not a whole"),
    ],
)
def test_dklb_run_refuses_bad_retention_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    with recording(monkeypatch) as recorder, pytest.raises(SystemExit) as exit_info:
        cli.main([*BASE, *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert recorder.configs == []


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DKLB_HISTORY_MAX_AGE", "30 days", "DKLB_HISTORY_MAX_AGE: '30 days' is not a valid duration"),
        (
            "DKLB_HISTORY_MAX_ROWS_PER_SERVICE",
            "-1",
            "DKLB_HISTORY_MAX_ROWS_PER_SERVICE: '-1' must not be negative",
        ),
    ],
)
def test_a_bad_retention_variable_names_the_variable(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with recording(monkeypatch) as recorder:
        assert cli.main(BASE) == 1
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert recorder.configs == []
