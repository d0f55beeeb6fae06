"""Schema upgrades, driven from code: ``dklb migrate`` and every controller start come here.

Alembic is configured programmatically (the revisions ship inside the installed ``migrations``
package), so an installed dklb migrates without a checkout or alembic.ini. Readers call
``check`` first: a database that is missing, unmigrated or newer than this dklb is refused with
a message that says what to do. A database locked by another process (a running controller, a
migration) is told apart from a corrupt one: the advice for a corrupt file (restore or remove it)
would, for a locked one, make an operator delete a live controller's database.

On PostgreSQL an upgrade holds a session advisory lock (``pg_advisory_lock``) from reading the
revision to the end: two replicas starting together migrate once, the second one waits, then
finds the database at head. Alembic's one history serves both dialects (PostgreSQL runs each
upgrade in one transaction, DDL included). Every message names the database with ``redacted``.

A SQLite file made before new files got ``auto_vacuum=INCREMENTAL`` (``migrations/env.py``) is
converted once by ``upgrade`` (``dklb migrate``, ``dklb run``; never a read-only open), so that
history pruning (``engine.store.pruning``) gives space back to the file system: see
``incremental_vacuum``.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, text
from sqlalchemy.exc import DatabaseError

import migrations
from engine.store import Store, StoreError, database_url, make_engine
from engine.store.database import is_postgresql, redacted, sqlite_path

log = logging.getLogger("dklb.store.migrate")

#: ``PRAGMA auto_vacuum``'s value for INCREMENTAL.
INCREMENTAL = 2

#: The key of the advisory lock every dklb migration of a PostgreSQL database holds (any constant
#: the database's other users do not take: "dklb" in ASCII).
MIGRATION_LOCK = 0x646B6C62


def _config(url: str | URL) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if isinstance(url, URL):
        # Handed over as the object (migrations/env.py): its password is never made text.
        cfg.attributes["dklb_url"] = url
        return cfg
    # configparser interpolates '%': URLs with escaped characters must survive.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _named(url: str | URL) -> str:
    """How messages name the database: a SQLite file by its path, anything else ``redacted``."""
    path = sqlite_path(url)
    return str(path) if path is not None else redacted(url)


def head() -> str:
    head_revision = ScriptDirectory.from_config(_config("sqlite://")).get_current_head()
    assert head_revision is not None
    return head_revision


class DatabaseLocked(StoreError):
    """Another connection holds the database's lock past the busy timeout: the file is fine."""


def is_locked(exc: BaseException) -> bool:
    """SQLite's "database is locked" / "database table is locked" (SQLITE_BUSY, SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def current(url: str | URL, *, read_only: bool = True) -> str | None:
    engine = make_engine(url, read_only=read_only)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except DatabaseError as exc:
        where = _named(url)
        if is_postgresql(url):
            # No file to restore: the server refused, or could not be reached.
            raise StoreError(f"database {where} cannot be used: {exc.orig}") from exc
        if exc.orig is not None and is_locked(exc.orig):
            raise DatabaseLocked(
                f"database {where} is locked by another process ({exc.orig}): a dklb controller or "
                "migration is using it; stop that one or wait, then try again (the file is not "
                "damaged: do not remove it)"
            ) from exc
        # A corrupted or foreign file: say so and stop, before anything writes to it.
        raise StoreError(
            f"{where} is not a usable dklb database ({exc.orig}); restore it or remove it"
        ) from exc
    finally:
        engine.dispose()


def upgrade(target: str | URL, revision: str = "head") -> str:
    """Upgrade the database at ``target`` (path or URL); returns the revision it is at now."""
    url = database_url(target)
    known = {s.revision for s in ScriptDirectory.from_config(_config(url)).walk_revisions()}
    with _migration_lock(url):
        found = current(url, read_only=False)
        if found is not None and found not in known:
            raise StoreError(
                f"database {redacted(target)} is at revision {found}, newer than this dklb (head {head()})"
            )
        if revision != "head" or found != head():
            command.upgrade(_config(url), revision)
            found = current(url, read_only=False)
    incremental_vacuum(url)
    return found or "base"


def incremental_vacuum(url: str | URL) -> None:
    """Give an existing SQLite file ``auto_vacuum=INCREMENTAL``, once: ``PRAGMA auto_vacuum``
    then ``VACUUM``, which rewrites the whole file (outside any transaction; seconds per
    hundred MB). Nothing for PostgreSQL, ``:memory:`` or a file already converted.

    Never a reason not to start: a file that cannot be converted now (locked past the busy
    timeout, disk full, too little free space) stays as it is, with a WARNING, and the next
    start tries again. VACUUM's scratch copy goes beside the database, not to the temporary
    directory: in the shipped Deployment /tmp is a 64 MiB emptyDir, and writing past its limit
    gets the Pod evicted (at every start, since the file would stay unconverted). So it needs
    free space on the database's file system of twice the file (the copy, then the WAL);
    without that it is not even tried, since filling the disk would stop a running controller's
    writes too."""
    path = sqlite_path(url)
    if path is None:
        return
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            if raw.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL:
                return
            size = path.stat().st_size
            free = shutil.disk_usage(path.parent).free
            if free < 2 * size:
                log.warning(
                    "database %s (%d bytes) keeps auto_vacuum=NONE: converting it needs %d bytes free "
                    "beside it, %d are; pruned history is reused but the file will not shrink",
                    path,
                    size,
                    2 * size,
                    free,
                )
                return
            started = time.monotonic()
            try:
                # Autocommit (make_engine's connections): VACUUM refuses to run in a transaction.
                raw.execute("PRAGMA auto_vacuum=INCREMENTAL")
                # A process-wide setting: set only at start-up, before the store's threads exist.
                raw.execute(f"PRAGMA temp_store_directory='{_quoted(path.parent)}'")
                try:
                    raw.execute("VACUUM")
                finally:
                    raw.execute("PRAGMA temp_store_directory=''")
                # The rewrite passed through the WAL: give that back too.
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning(
                    "database %s (%d bytes) keeps auto_vacuum=NONE: VACUUM failed (%s); dklb carries "
                    "on, pruned history is reused but the file will not shrink; the next start "
                    "tries again",
                    path,
                    size,
                    exc,
                )
                return
            log.info(
                "database %s (%d bytes, now %d) converted to auto_vacuum=INCREMENTAL in %.1f s, once: "
                "pruned history now gives space back",
                path,
                size,
                path.stat().st_size,
                time.monotonic() - started,
            )
    finally:
        engine.dispose()


def _quoted(path: Path) -> str:
    """``path`` inside a single-quoted SQL string literal."""
    return str(path).replace("'", "''")


@contextmanager
def _migration_lock(url: str | URL) -> Iterator[None]:
    """PostgreSQL: hold ``MIGRATION_LOCK`` (a session lock, on a connection of its own) while the
    body runs; released when that connection closes, even if this process dies. SQLite: nothing,
    Alembic's transaction takes the file's write lock."""
    if not is_postgresql(url):
        yield
        return
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            try:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            except DatabaseError as exc:
                raise StoreError(f"database {redacted(url)} cannot be used: {exc.orig}") from exc
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()


def open_store(target: str | URL) -> Store:
    """The controller's way in: upgrade the schema, then open the store for writing."""
    upgrade(target)
    return Store(database_url(target))


def open_read_only(target: str | URL) -> Store:
    """The operator commands' way in: refuse a missing or foreign schema, then open read-only
    (SQLite ``mode=ro``: nothing can be written beside a live controller, not even by accident)."""
    check(target)
    return Store(database_url(target), read_only=True)


def downgrade(target: str | URL, revision: str = "base") -> None:
    command.downgrade(_config(database_url(target)), revision)


def check(target: str | URL) -> None:
    """Refuse a database this dklb cannot read: missing, never migrated, or too new."""
    url = database_url(target)
    named = redacted(target)
    try:
        found = current(url)
    except DatabaseLocked:
        raise
    except StoreError as exc:
        if is_postgresql(url):
            raise
        raise StoreError(f"{exc}: run `dklb migrate --database {named}` to create it") from exc
    if found is None:
        raise StoreError(f"database {named} has no dklb schema: run `dklb migrate --database {named}`")
    if found != head():
        known = {s.revision for s in ScriptDirectory.from_config(_config(url)).walk_revisions()}
        if found not in known:
            raise StoreError(f"database {named} is at revision {found}, newer than this dklb (head {head()})")
        raise StoreError(f"database {named} is at revision {found}: run `dklb migrate --database {named}`")
