"""A throwaway PostgreSQL server for the tests and the benchmark: Debian's ``postgresql`` package,
one cluster per caller, on a free loopback port, stopped by its PID.

Where it sits: the store's tests (both dialects), the PostgreSQL variants of the end-to-end and
crash tests, the failover tests and ``./dev bench`` call ``start``; ``./dev`` installs the
package (``ensure_installed`` says what is missing). Nothing of the controller imports this.

What a server is: ``initdb`` into a fresh directory (password authentication for TCP, no trust
anywhere, so a test that forgets the password fails as it would in production), ``postgres``
started directly (its PID is the postmaster's, so ``stop`` and ``kill`` act on the server itself),
listening on 127.0.0.1 only, with its Unix socket inside its own directory. Optionally TLS with a
certificate for 127.0.0.1 and ``localhost`` signed by a CA of its own (``ca_file``), so a client
can be tested with ``sslmode=verify-full``. ``fsync`` is off: a test kills processes, never the
machine, and the operating system's cache survives a killed server.

PostgreSQL refuses to run as root; as root, the server runs as the package's ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from localcluster.processes import Timeout, alive, wait_for

#: The administrator role of every throwaway cluster (its password is random per cluster).
SUPERUSER = "dklb_admin"
#: Where Debian puts each major version's server programs.
BINARIES = "/usr/lib/postgresql/*/bin"


class NotInstalled(RuntimeError):
    """No PostgreSQL server programs: ``./dev`` installs Debian's ``postgresql``."""


def bin_dir() -> Path:
    """The newest installed major version's ``bin`` directory."""
    found = sorted(glob.glob(f"{BINARIES}/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise NotInstalled(f"no PostgreSQL server ({BINARIES}/initdb): apt-get install postgresql")
    return Path(found[-1]).parent


def ensure_installed() -> Path:
    return bin_dir()


@dataclass
class LocalPostgres:
    """One running (or stopped) cluster; ``url(database)`` is how a client reaches it."""

    directory: Path
    port: int
    password: str
    ca_file: Path | None = None
    pid: int | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.directory / "postgres.log"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres", *, user: str = SUPERUSER, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{user}:{quote(secret, safe='')}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        """An autocommit psycopg connection as the administrator (CREATE DATABASE needs one)."""
        import psycopg

        return psycopg.connect(self.url(database), autocommit=True, connect_timeout=5)

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        with contextlib.closing(self.connect(database)) as conn:
            cursor = conn.execute(statement)
            return list(cursor.fetchall()) if cursor.description else []

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """A new database (``template``: a copy of that one, which must have no connection);
        returns its URL."""
        clause = f' TEMPLATE "{template}"' if template else ""
        self.sql(f'CREATE DATABASE "{name}"{clause}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_role(self, name: str, password: str, *, database: str) -> str:
        """A login role owning ``database``'s public schema, as an operator would give dklb; its URL."""
        self.sql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
        self.sql(f'GRANT ALL ON DATABASE "{database}" TO "{name}"')
        self.sql(f'ALTER SCHEMA public OWNER TO "{name}"', database)
        return self.url(database, user=name, password=password)

    def running(self) -> bool:
        return self.pid is not None and alive(self.pid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user() -> dict[str, Any]:
    """Popen arguments that run a program as ``postgres`` when we are root (initdb and postgres
    refuse root), nothing otherwise."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _chown_to_server_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("postgres")
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost it signed: (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dklb test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.crt", directory / "server.crt", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths[2].chmod(0o600)
    return paths


def create(*, tls: bool = False) -> LocalPostgres:
    """initdb a new cluster in a fresh directory (not started)."""
    binaries = bin_dir()
    # Not under pytest's tmp_path: its parents are root's 0700 directories, which the server
    # user cannot enter.
    directory = Path(tempfile.mkdtemp(prefix="dklb-pg-"))
    password = secrets.token_urlsafe(18)
    pwfile = directory / "pwfile"
    pwfile.write_text(password + "\n")
    ca_file = None
    if tls:
        ca_file, cert, key = _certificates(directory)
        del cert  # named in postgresql.conf by its place in the directory
    _chown_to_server_user(directory)
    subprocess.run(
        [
            str(binaries / "initdb"),
            "-D",
            str(directory / "data"),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        **_as_server_user(),
    )
    pwfile.unlink()
    server = LocalPostgres(directory=directory, port=0, password=password, ca_file=ca_file)
    settings = [
        "listen_addresses = '127.0.0.1'",
        f"unix_socket_directories = '{directory}'",
        "fsync = off",
        "full_page_writes = off",
        "max_connections = 200",
        "shared_buffers = 32MB",
        "log_min_messages = warning",
    ]
    if tls:
        settings += ["ssl = on", f"ssl_cert_file = '{directory / 'server.crt'}'", f"ssl_key_file = '{key}'"]
    with (server.data / "postgresql.conf").open("a") as conf:
        conf.write("\n".join(settings) + "\n")
    return server


def start(server: LocalPostgres | None = None, *, tls: bool = False, timeout: float = 60.0) -> LocalPostgres:
    """Start ``server`` (a new cluster when None) on a free loopback port (the same port when it
    ran before, so clients reconnect to a restarted server), and wait until it accepts logins."""
    if server is None:
        server = create(tls=tls)
    for _ in range(5):
        port = server.port or _free_port()
        log = server.log_path.open("ab")
        proc = subprocess.Popen(
            [str(bin_dir() / "postgres"), "-D", str(server.data), "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_as_server_user(),
        )
        log.close()
        server.pid, server.port = proc.pid, port
        try:
            up = lambda p=proc: _accepts(server) or p.poll() is not None  # noqa: E731
            wait_for(up, timeout=timeout, what="postgres up")
        except Timeout:
            stop(server)
            raise
        if proc.poll() is None:
            return server
        if "could not bind" not in server.log_path.read_text(errors="replace"):
            break
        server.port = 0  # someone took the free port meanwhile: another one
    tail = server.log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"postgres did not start; its log {server.log_path} ends:\n{tail}")


def _accepts(server: LocalPostgres) -> bool:
    try:
        server.connect().close()
    except Exception:
        return False
    return True


def stop(server: LocalPostgres, *, timeout: float = 30.0) -> None:
    """A fast shutdown (SIGINT: sessions cut, everything committed kept), by PID."""
    _signal(server, signal.SIGINT, timeout)


def kill(server: LocalPostgres) -> None:
    """SIGKILL the postmaster and its backends, as a crashed machine's server would vanish; the
    next ``start`` recovers from the WAL."""
    if server.pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    wait_for(lambda: not alive(server.pid or 0), timeout=30, what="postgres killed")
    server.pid = None


def _signal(server: LocalPostgres, sig: int, timeout: float) -> None:
    if server.pid is None or not alive(server.pid):
        server.pid = None
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, sig)
    try:
        wait_for(lambda: not alive(server.pid or 0), timeout=timeout, what="postgres stopped")
    except Timeout:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        wait_for(lambda: not alive(server.pid or 0), timeout=10, what="postgres killed")
    server.pid = None


def remove(server: LocalPostgres) -> None:
    """Stop the server and delete its directory."""
    stop(server)
    shutil.rmtree(server.directory, ignore_errors=True)
