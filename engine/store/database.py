"""Opening the database: a target (a path or a SQLAlchemy URL) and an engine tuned for dklb.

SQLite (WAL) is the default; PostgreSQL (psycopg 3) is the highly available one: ``postgresql://``
and ``postgres://`` URLs are normalized to ``postgresql+psycopg://`` (``database_url``). ``make_engine``
is used by the store (on SQLite a writer engine whose transactions take SQLite's write lock at BEGIN,
and a reader engine whose transactions take none; on PostgreSQL one pooled engine that pings a
connection before reusing it, so a restarted server costs one failed statement, not a pool of
dead connections), by the CLI (read-only: SQLite ``mode=ro``, PostgreSQL sessions with
``default_transaction_read_only``) and by the Alembic environment (``migrations/env.py``), so a
migration runs with the same settings as the controller. ``redacted`` is how a database is named
anywhere a person reads it: never with its password.

The file (S10 of the security review): a writer opens only a regular file that is not a symbolic
link (nor its ``-wal``/``-shm``), creates it with ``O_NOFOLLOW``/``O_EXCL`` and mode 0600, and
tightens one readable by group or other to 0600 with a WARNING (or refuses it when it cannot).
Pool names and recorded configurations are nobody else's business, and a planted link must not
make the controller write elsewhere.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, overload

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from engine.store.records import StoreError

log = logging.getLogger("dklb.store")

#: How long a connection waits for another's lock, in seconds (tests shorten it).
BUSY_TIMEOUT = 30.0

#: Each SQLite connection's page cache, in KiB (SQLite's default is 2 MiB). The store holds
#: several connections (a writer and a reader pool), each filling its own cache with the same
#: pages: 2 MiB apiece was ~15 MB of RSS at 5,000 bindings. A small one costs little, because in
#: WAL mode every commit of another connection invalidates a cache anyway, and a page read again
#: comes from the operating system's file cache.
CACHE_KIB = 256


#: The URL schemes that mean PostgreSQL through psycopg 3 (the only PostgreSQL driver dklb ships).
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@overload
def database_url(target: str) -> str: ...
@overload
def database_url(target: URL) -> URL: ...


def database_url(target: str | URL) -> str | URL:
    """A SQLAlchemy URL as given (``postgresql://``/``postgres://`` made ``postgresql+psycopg://``),
    or a filesystem path turned into a SQLite URL.

    A ``URL`` object stays one: it is how a password read from a file reaches the engine without
    ever being written into URL text (``--database-password-file``). A path is made absolute, but
    its last component is not resolved: a symbolic link there must stay visible to
    ``secure_database_file``, which refuses it."""
    if isinstance(target, URL):
        if target.drivername in ("postgresql", "postgres"):
            return target.set(drivername="postgresql+psycopg")
        return target
    for scheme in _POSTGRES_SCHEMES:
        if target.startswith(scheme):
            return "postgresql+psycopg://" + target.removeprefix(scheme)
    if "://" in target:
        return target
    return f"sqlite:///{os.path.abspath(Path(target).expanduser())}"


def redacted(url: str | URL) -> str:
    """``url`` fit for a log line, an Event, an error message or ``dklb inspect``: the password
    replaced by ``***``. A path (no scheme) is returned as given; text SQLAlchemy cannot parse
    as a URL is not echoed at all, since it could be a DSN with a password in an odd place."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    if "://" not in url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<database URL that cannot be parsed>"


def is_postgresql(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def _refuse_odd(path: Path) -> os.stat_result | None:
    """lstat ``path``; StoreError for a symbolic link or anything but a regular file."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(found.st_mode):
        raise StoreError(
            f"database {path} is a symbolic link (to {os.readlink(path)}): refused, a link could send "
            "the controller's writes elsewhere; give the real file's path"
        )
    if not stat.S_ISREG(found.st_mode):
        raise StoreError(f"database {path} is not a regular file: refused")
    return found


def _tighten(path: Path) -> None:
    """Mode 0600 for a file group or other can read or write: a WARNING, or a refusal."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if not mode & 0o077:
            return
        try:
            os.fchmod(fd, 0o600)
        except OSError as exc:
            raise StoreError(
                f"database {path} has mode {mode:04o} (readable beyond its owner) and cannot be "
                f"made 0600 ({exc.strerror}): refused; chmod 0600 it"
            ) from None
        log.warning("database %s had mode %04o (readable beyond its owner): now 0600", path, mode)
    finally:
        os.close(fd)


def secure_database_file(path: Path) -> None:
    """Create ``path`` owner-only, or check the one there (and its -wal/-shm): see the docstring."""
    companions = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    if _refuse_odd(path) is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: a link planted since the lstat is not followed either.
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            _refuse_odd(path)  # created meanwhile: check what is there now
        else:
            os.close(fd)
    for each in (path, *companions):
        if _refuse_odd(each) is not None:
            _tighten(each)


def sqlite_path(url: str | URL) -> Path | None:
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    if not url.startswith("sqlite:///"):
        return None
    rest = url.removeprefix("sqlite:///").split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


# Execution option of a connection that runs one read-only statement (``Store._read``).
SINGLE_STATEMENT = "dklb_single_statement"


def make_engine(url: str | URL, *, read_only: bool = False, deferred: bool = False) -> Engine:
    """An engine configured for this workload: WAL, immediate write locks, a busy timeout.

    ``read_only`` opens SQLite with ``mode=ro`` so the CLI can never write beside a live
    controller, and never creates a missing file; on PostgreSQL every transaction of the engine
    is read-only. ``deferred``: transactions start with a plain BEGIN (the store's reads: a WAL
    reader needs no lock and never waits for a writer).
    """
    if is_postgresql(url):
        return _postgresql_engine(url, read_only=read_only)
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    path = sqlite_path(url)
    if path is None:
        return create_engine(url, future=True)
    if read_only:
        if not path.exists():
            raise StoreError(f"database {path} does not exist")
        engine = create_engine(
            f"sqlite:///file:{path}?mode=ro&uri=true", future=True, connect_args={"timeout": BUSY_TIMEOUT}
        )
    else:
        secure_database_file(path)
        engine = create_engine(
            url, future=True, connect_args={"timeout": BUSY_TIMEOUT, "check_same_thread": False}
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's implicit BEGIN is deferred: two writers would deadlock upgrading their read
        # locks. Take control of BEGIN so that every transaction starts IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(SINGLE_STATEMENT):
            # One SELECT is a consistent snapshot on its own: no BEGIN and COMMIT around it.
            return
        conn.exec_driver_sql("BEGIN" if read_only or deferred else "BEGIN IMMEDIATE")

    return engine


#: Seconds a PostgreSQL connection attempt may take: an unreachable server must fail a statement
#: (and so close the fence) in seconds, not after the kernel's TCP timeout.
CONNECT_TIMEOUT = 5
#: Milliseconds a statement waits for a row lock before failing: a replica must never wait
#: forever behind a transaction of a peer that hung (a transaction holds its locks a few ms).
LOCK_TIMEOUT_MS = int(BUSY_TIMEOUT * 1000)


#: Milliseconds a session may sit idle inside a transaction before the server ends it. dklb's
#: transactions never wait on anything but the database (a transition's EdgeLB and Kubernetes
#: calls are made before its transaction begins), so only a replica cut off from the server
#: mid-transaction reaches it: its row locks (and its hold on the leadership row) are then
#: released in seconds, not after TCP's keepalive, and the next leader's claim goes through.
IDLE_IN_TRANSACTION_MS = 15_000


def _postgresql_engine(url: str | URL, *, read_only: bool) -> Engine:
    """READ COMMITTED (PostgreSQL's default) plus the store's row locks; ``pool_pre_ping`` so a
    connection left over from before a server restart is replaced, not handed out broken."""
    options = (
        f"-c lock_timeout={LOCK_TIMEOUT_MS} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
    )
    if read_only:
        options += " -c default_transaction_read_only=on"
    return create_engine(
        database_url(url),  # psycopg 3 whatever the scheme said
        future=True,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT, "options": options},
    )
