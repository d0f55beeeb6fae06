"""S10 (security review): the database file: no symlink, no foreign mode, a lock is not corruption.

Where it sits: ``engine.store.database.secure_database_file`` runs whenever a writer opens the
database (``dklb run``, ``dklb migrate``, every ``Store``); ``engine.store.migrate.current``
tells a lock held by another process apart from a corrupt file. The review's reproductions, in
a scratch directory with ``umask 022``: a 0644 database used as is, a symlink followed to a
planted file, and a lock answered with "restore it or remove it".

SQLite only: a PostgreSQL database is no file of dklb's (the store's other tests run on both
dialects, ``tests.storedb``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.store import StoreError, database, migrate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_symlink_at_the_database_path_is_refused_and_its_target_never_created(tmp_path: Path) -> None:
    """S10 (security review): `ln -s elsewhere/planted.db b.db; dklb migrate --database b.db`."""
    (tmp_path / "elsewhere").mkdir()
    planted = tmp_path / "elsewhere" / "planted.db"
    link = tmp_path / "b.db"
    link.symlink_to(planted)
    with pytest.raises(StoreError, match=r"b.db is a symbolic link .*planted.db.*refused"):
        migrate.upgrade(str(link))
    assert not planted.exists(), "the link was not followed"
    planted.write_bytes(b"")  # a link to an existing file: refused all the same
    with pytest.raises(StoreError, match="symbolic link"):
        migrate.open_store(str(link))


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_a_symlink_planted_as_wal_or_shm_is_refused(tmp_path: Path, suffix: str) -> None:
    """S10 (security review): SQLite would follow a planted -wal/-shm link and write there."""
    db = tmp_path / "a.db"
    migrate.upgrade(str(db))
    for companion in tmp_path.glob("a.db-*"):
        companion.unlink()
    target = tmp_path / "elsewhere"
    (tmp_path / f"a.db{suffix}").symlink_to(target)
    with pytest.raises(StoreError, match=f"a.db{suffix} is a symbolic link"):
        migrate.upgrade(str(db))
    assert not target.exists()


def test_a_directory_or_fifo_at_the_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    os.mkfifo(tmp_path / "fifo.db")
    for name in ("dir.db", "fifo.db"):
        with pytest.raises(StoreError, match=f"{name} is not a regular file"):
            migrate.upgrade(str(tmp_path / name))


def test_a_new_database_is_created_owner_only_under_umask_022(tmp_path: Path) -> None:
    db = tmp_path / "new" / "a.db"
    migrate.open_store(str(db)).close()
    assert [mode(p) for p in sorted(db.parent.glob("a.db*"))] == [0o600] * len(list(db.parent.glob("a.db*")))
    assert mode(db) == 0o600


def test_a_group_or_world_readable_database_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """S10 (security review): `dklb migrate`, `chmod 0644 a.db`, `dklb migrate`: it stayed 0644."""
    db = tmp_path / "a.db"
    migrate.upgrade(str(db))
    db.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="dklb.store")
    migrate.upgrade(str(db))
    assert mode(db) == 0o600
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(db) in warning and "0644" in warning and "0600" in warning
    caplog.clear()
    migrate.upgrade(str(db))
    assert not caplog.records, "nothing more to say once it is 0600"


def test_a_readable_database_that_cannot_be_tightened_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S10 (security review): a 0644 file dklb may not chmod (another user's) is not used."""
    db = tmp_path / "a.db"
    migrate.upgrade(str(db))
    db.chmod(0o644)

    def not_the_owner(fd: int, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", not_the_owner)
    with pytest.raises(
        StoreError, match=r"mode 0644 .*cannot be made 0600 .*Operation not permitted.*refused"
    ):
        migrate.upgrade(str(db))


def hold_exclusive(db: Path) -> subprocess.Popen[str]:
    """Another process holding BEGIN EXCLUSIVE on ``db`` until its stdin closes."""
    script = (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_database_locked_by_another_process_is_not_called_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S10 (security review): with BEGIN EXCLUSIVE held elsewhere, `dklb migrate` said "restore it
    or remove it", which beside a running controller triggers the lost-database path."""
    db = tmp_path / "a.db"
    migrate.upgrade(str(db))
    monkeypatch.setattr(database, "BUSY_TIMEOUT", 0.2)
    holder = hold_exclusive(db)
    try:
        started = time.monotonic()
        with pytest.raises(migrate.DatabaseLocked) as locked:
            migrate.upgrade(str(db))
        waited = time.monotonic() - started
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    message = str(locked.value)
    assert "locked by another process" in message and "do not remove it" in message
    assert "restore it or remove it" not in message
    assert waited < 10, "the busy timeout, not 30 s"
    assert migrate.upgrade(str(db)) == migrate.head(), "the file was fine all along"


def test_check_passes_a_lock_through_without_advising_migrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S10 (security review): the read-only check too (a rollback-journal file is locked for readers)."""
    db = tmp_path / "a.db"
    migrate.upgrade(str(db))
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    monkeypatch.setattr(database, "BUSY_TIMEOUT", 0.2)
    holder = hold_exclusive(db)
    try:
        with pytest.raises(migrate.DatabaseLocked) as locked:
            migrate.check(str(db))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    assert "dklb migrate" not in str(locked.value) and "remove" not in str(locked.value).replace(
        "do not remove it", ""
    )


def test_a_corrupt_file_is_still_called_corrupt(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    db.write_bytes(b"not a database at all, " * 100)
    db.chmod(0o600)
    with pytest.raises(StoreError, match=r"not a usable dklb database .*restore it or remove it") as refused:
        migrate.upgrade(str(db))
    assert not isinstance(refused.value, migrate.DatabaseLocked)


@pytest.mark.parametrize(
    ("error", "locked"),
    [
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("database table is locked"), True),
        (sqlite3.DatabaseError("file is not a database"), False),
        (sqlite3.OperationalError("disk I/O error"), False),
        (ValueError("database is locked"), False),
    ],
)
def test_which_errors_are_a_lock(error: BaseException, locked: bool) -> None:
    assert migrate.is_locked(error) is locked


def test_dklb_run_sets_umask_077_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """S10 (security review): what `dklb run` creates is its own alone."""
    from engine.cli import run as run_command

    seen: list[int] = []

    def fake_run(args: object) -> int:
        current = os.umask(0)
        os.umask(current)
        seen.append(current)
        return 0

    monkeypatch.setattr(run_command, "_run", fake_run)
    monkeypatch.setattr(run_command, "configure_logging", lambda level, fmt: None)

    class Args:
        log_level = "info"
        log_format = "text"

    assert run_command.run(Args()) == 0  # type: ignore[arg-type]
    assert seen == [0o077]
    current = os.umask(0)
    os.umask(current)
    assert current == 0o022
