"""S4/S10 (security review): a SQLite file made before ``auto_vacuum=INCREMENTAL`` is converted once.

Where it sits: ``engine.store.migrate.upgrade`` (``dklb migrate``, and ``open_store`` for
``dklb run``) ends with ``incremental_vacuum``, so that history pruning (``engine.store.pruning``)
can give pages back to the file system on files created before new ones got the setting
(``migrations/env.py``). Read-only opens (``dklb inspect``/``history``) never convert; a file that
cannot be converted (locked, too little space, a write error) is left as it is, with a WARNING,
and dklb carries on.

SQLite only: PostgreSQL reclaims space by its own vacuum.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from engine.store import database, migrate

REPO = Path(__file__).resolve().parents[2]
ROWS = 3000


def old_database(path: Path) -> int:
    """A dklb database at head as made before new files got INCREMENTAL, holding ``ROWS`` rows
    beside the schema; returns its size in bytes."""
    migrate.upgrade(str(path))
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA auto_vacuum=NONE")
        conn.execute("VACUUM")
        conn.execute("CREATE TABLE filler (n INTEGER, text TEXT)")
        conn.executemany("INSERT INTO filler VALUES (?, ?)", [(n, f"row {n} " * 40) for n in range(ROWS)])
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.stat().st_size


class Seen(NamedTuple):
    auto_vacuum: int
    rows: int
    checksum: int


def seen(path: Path) -> Seen:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        auto_vacuum = conn.execute("PRAGMA auto_vacuum").fetchone()[0]
        rows, checksum = conn.execute("SELECT count(*), sum(n * length(text)) FROM filler").fetchone()
        return Seen(auto_vacuum, rows, checksum)
    finally:
        conn.close()


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dklb.store.migrate" and r.levelno == level]


def _open_store(target: str) -> Any:
    migrate.open_store(target).close()


@pytest.mark.parametrize("open_for_writing", [migrate.upgrade, _open_store], ids=["dklb migrate", "dklb run"])
def test_an_old_file_is_converted_once_with_its_rows_intact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, open_for_writing: Callable[[str], Any]
) -> None:
    db = tmp_path / "dklb.db"
    size = old_database(db)
    before = seen(db)
    caplog.set_level(logging.INFO, logger="dklb.store.migrate")

    open_for_writing(str(db))
    assert seen(db) == before._replace(auto_vacuum=migrate.INCREMENTAL)
    (info,) = messages(caplog, logging.INFO)
    assert f"database {db} ({size} bytes, now " in info and "converted to auto_vacuum=INCREMENTAL in " in info
    assert messages(caplog, logging.WARNING) == []
    # VACUUM's scratch copy went beside the database, and is gone; so is the WAL it passed through.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("dklb.db")) == []
    assert not (tmp_path / "dklb.db-wal").exists() or (tmp_path / "dklb.db-wal").stat().st_size == 0
    with sqlite3.connect(":memory:") as conn:
        # The process-wide setting is back to SQLite's default.
        assert conn.execute("PRAGMA temp_store_directory").fetchall() == []
    conn.close()

    caplog.clear()
    open_for_writing(str(db))
    assert messages(caplog, logging.INFO) == messages(caplog, logging.WARNING) == [], "once"
    assert seen(db) == before._replace(auto_vacuum=migrate.INCREMENTAL)


def test_a_new_file_is_not_vacuumed_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dklb.store.migrate")
    db = tmp_path / "new.db"
    migrate.upgrade(str(db))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == migrate.INCREMENTAL
    conn.close()
    assert messages(caplog, logging.INFO) == []


def test_read_only_opens_never_convert(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``dklb inspect`` and ``dklb history`` (``open_read_only``, ``check``) leave the file alone."""
    db = tmp_path / "dklb.db"
    old_database(db)
    before, stat_before = seen(db), db.stat()
    caplog.set_level(logging.INFO, logger="dklb.store.migrate")
    migrate.check(str(db))
    migrate.open_read_only(str(db)).close()
    assert seen(db) == before
    assert (db.stat().st_size, db.stat().st_mtime_ns) == (stat_before.st_size, stat_before.st_mtime_ns)
    assert messages(caplog, logging.INFO) == []


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_nothing_to_convert_in_memory(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dklb.store.migrate")
    migrate.incremental_vacuum(url)
    assert caplog.records == []


def test_a_locked_file_stays_unconverted_with_a_warning_and_dklb_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection takes the write lock between the revision check and VACUUM (here at the
    free-space look, just before) and keeps it past the busy timeout. The next start converts."""
    db = tmp_path / "dklb.db"
    size = old_database(db)
    before = seen(db)
    monkeypatch.setattr(database, "BUSY_TIMEOUT", 0.2)
    caplog.set_level(logging.INFO, logger="dklb.store.migrate")
    holder = sqlite3.connect(db, isolation_level=None)
    disk_usage = migrate.shutil.disk_usage

    def usage_then_lock(path: Any) -> Any:
        holder.execute("BEGIN IMMEDIATE")
        return disk_usage(path)

    monkeypatch.setattr(migrate.shutil, "disk_usage", usage_then_lock)
    try:
        assert migrate.upgrade(str(db)) == migrate.head()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    (warning,) = messages(caplog, logging.WARNING)
    assert warning.startswith(f"database {db} ({size} bytes) keeps auto_vacuum=NONE: VACUUM failed (")
    assert "locked" in warning and "dklb carries on" in warning
    assert seen(db) == before

    monkeypatch.setattr(migrate.shutil, "disk_usage", disk_usage)
    caplog.clear()
    migrate.upgrade(str(db))
    assert seen(db).auto_vacuum == migrate.INCREMENTAL
    assert len(messages(caplog, logging.INFO)) == 1


def test_too_little_free_space_is_not_even_tried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filling the disk would stop a running controller's writes too: twice the file, or nothing."""
    db = tmp_path / "dklb.db"
    size = old_database(db)
    before = seen(db)

    class Usage(NamedTuple):
        total: int
        used: int
        free: int

    monkeypatch.setattr(migrate.shutil, "disk_usage", lambda _path: Usage(10 * size, 8 * size, 2 * size - 1))
    caplog.set_level(logging.INFO, logger="dklb.store.migrate")
    assert migrate.upgrade(str(db)) == migrate.head()
    assert messages(caplog, logging.WARNING) == [
        f"database {db} ({size} bytes) keeps auto_vacuum=NONE: converting it needs {2 * size} bytes free "
        f"beside it, {2 * size - 1} are; pruned history is reused but the file will not shrink"
    ]
    assert seen(db) == before


def test_a_write_error_during_vacuum_leaves_the_file_intact(tmp_path: Path) -> None:
    """The disk filling up under VACUUM (here: a file size limit below the file's size, so its
    scratch copy cannot be written): a WARNING, the revision returned, the rows as they were."""
    db = tmp_path / "dklb.db"
    size = old_database(db)
    before = seen(db)
    script = f"""
import logging, resource, signal, sys
from engine.store import migrate
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
resource.setrlimit(resource.RLIMIT_FSIZE, ({size // 2}, {size // 2}))
print("revision", migrate.upgrade({str(db)!r}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "auto_vacuum" in line or "revision" in line]
    assert len(lines) == 2, done.stdout
    assert lines[0].startswith(f"WARNING database {db} ({size} bytes) keeps auto_vacuum=NONE: VACUUM failed")
    assert lines[1] == f"revision {migrate.head()}"
    assert seen(db) == before
