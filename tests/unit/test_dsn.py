"""``engine.store.dsn``: the database flags made into one URL, as tables of cases (pure), and the
files ``resolve`` reads; ``engine.cli.database.scrub`` and its log filter."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import make_url

from engine.cli import database
from engine.store import dsn
from engine.telemetry.logs import JSONFormatter

SECRET = "s3cr/et@:%x"
REMOTE = "postgresql://dklb@db.example.com:5432/dklb"


@pytest.mark.parametrize(
    ("target", "kwargs", "url", "shown"),
    [
        ("dklb.db", {}, "dklb.db", "dklb.db"),
        (
            "sqlite:////var/lib/dklb/dklb.db",
            {},
            "sqlite:////var/lib/dklb/dklb.db",
            "sqlite:////var/lib/dklb/dklb.db",
        ),
        (
            "postgresql://u@127.0.0.1/d",
            {},
            "postgresql+psycopg://u@127.0.0.1/d",
            "postgresql+psycopg://u@127.0.0.1/d",
        ),
        (
            "postgres://u:pw@localhost/d",
            {},
            "postgresql+psycopg://u:pw@localhost/d",
            "postgresql+psycopg://u:***@localhost/d",
        ),
        (
            "postgresql+psycopg://u:pw@[::1]/d",
            {},
            "postgresql+psycopg://u:pw@[::1]/d",
            "postgresql+psycopg://u:***@[::1]/d",
        ),
        # A Unix socket, and libpq's default (no host): this machine.
        (
            "postgresql://u:pw@/d?host=/run/postgresql",
            {},
            None,
            "postgresql+psycopg://u:***@/d?host=%2Frun%2Fpostgresql",
        ),
        ("postgresql://u@/d", {"password": "pw"}, None, "postgresql+psycopg://u:***@/d"),
        # No password: nothing to protect, whatever the host.
        (REMOTE, {}, "postgresql+psycopg://dklb@db.example.com:5432/dklb", None),
        (
            REMOTE,
            {"password": SECRET, "ca_file": "/etc/dklb/ca.crt"},
            None,
            "postgresql+psycopg://dklb:***@db.example.com:5432/dklb?sslmode=verify-full&sslrootcert=%2Fetc%2Fdklb%2Fca.crt",
        ),
        (REMOTE + "?sslmode=verify-ca&sslrootcert=/ca.crt", {"password": "pw"}, None, None),
        (REMOTE + "?sslmode=verify-ca", {"password": "pw", "ca_file": "/ca.crt"}, None, None),
    ],
)
def test_build_accepts(target: str, kwargs: dict[str, Any], url: str | None, shown: str | None) -> None:
    resolved = dsn.build(target, **kwargs)
    if url is not None:
        assert resolved.url == url
    if shown is not None:
        assert resolved.shown == shown
    assert resolved.warning is None
    password = kwargs.get("password")
    if password is not None:
        assert make_url(resolved.url).password == password and password not in resolved.shown
        assert resolved.password == password


@pytest.mark.parametrize(
    ("target", "kwargs", "says"),
    [
        ("", {}, "--database is empty"),
        ("dklb.db", {"password": "pw"}, "--database-password-file is for a PostgreSQL database"),
        ("sqlite:///x.db", {"ca_file": "/ca.crt"}, "--database-ca-file is for a PostgreSQL database"),
        ("mysql://u:pw@db/d", {}, "mysql is not supported"),
        ("postgresql://u:pw@127.0.0.1/d", {"password": "xyzzy"}, "give the password once"),
        (REMOTE + "?sslmode=require", {"ca_file": "/ca.crt"}, "sslmode=require"),
        (REMOTE + "?sslrootcert=/a.crt", {"ca_file": "/b.crt"}, "sslrootcert=/a.crt"),
        (REMOTE, {"password": "pw"}, "without a verified TLS connection (sslmode=prefer): refused"),
        (REMOTE + "?sslmode=require", {"password": "pw"}, "(sslmode=require): refused"),
        ("postgresql://u:pw@10.0.0.7/d", {}, "--database-allow-insecure-tls"),
        ("postgresql://u:pw@/d?host=127.0.0.1,db.example.com", {}, "refused"),
    ],
)
def test_build_refuses_naming_the_flag_never_the_password(
    target: str, kwargs: dict[str, Any], says: str
) -> None:
    with pytest.raises(dsn.DsnError) as caught:
        dsn.build(target, **kwargs)
    assert says in str(caught.value)
    assert ":pw@" not in str(caught.value) and "xyzzy" not in str(caught.value)


def test_insecure_tls_allowed_says_so() -> None:
    resolved = dsn.build(REMOTE, password=SECRET, allow_insecure_tls=True)
    assert SECRET not in repr(resolved) and "s3cr" not in repr(resolved)
    assert resolved.warning is not None and "sent anyway (--database-allow-insecure-tls)" in resolved.warning
    assert SECRET not in resolved.warning


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_resolve_reads_the_files(tmp_path: Path) -> None:
    url_file = write(tmp_path / "url", "  postgresql://dklb@db.example.com/dklb?sslmode=verify-full\n")
    password_file = write(tmp_path / "password", SECRET + "\n")
    ca = write(tmp_path / "ca.crt", "-----BEGIN CERTIFICATE-----\n")
    resolved = dsn.resolve(
        database=None, default="dklb.db", url_file=url_file, password_file=password_file, ca_file=ca
    )
    url = make_url(resolved.url)
    assert url.password == SECRET and url.host == "db.example.com"
    assert url.query["sslrootcert"] == ca and url.query["sslmode"] == "verify-full"
    assert dsn.resolve(database=None, default="dklb.db").url == "dklb.db"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        (
            {"database": "x.db", "url_file": "URL"},
            "--database 'x.db' and --database-url-file {dir}/URL: give one",
        ),
        ({"url_file": "MISSING"}, "--database-url-file {dir}/MISSING: cannot read it"),
        ({"url_file": "NOT_URL"}, "--database-url-file {dir}/NOT_URL: holds no database URL"),
        ({"database": REMOTE, "password_file": "EMPTY"}, "--database-password-file {dir}/EMPTY is empty"),
        ({"database": REMOTE, "ca_file": "MISSING"}, "--database-ca-file {dir}/MISSING: cannot read it"),
    ],
)
def test_resolve_refuses(tmp_path: Path, kwargs: dict[str, Any], says: str) -> None:
    files = {"URL": "postgresql://u@h/d", "NOT_URL": "host=db password=pw", "EMPTY": "\n"}
    for name, content in files.items():
        write(tmp_path / name, content)
    given: dict[str, Any] = {k: str(tmp_path / v) if k.endswith("_file") else v for k, v in kwargs.items()}
    with pytest.raises(dsn.DsnError) as caught:
        dsn.resolve(default="dklb.db", **{"database": None, **given})
    assert says.format(dir=tmp_path) in str(caught.value)
    assert "pw" not in str(caught.value)


def test_scrub_and_the_log_filter(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "SECRETS", set())
    database.remember(dsn.build("postgresql://u@127.0.0.1/d", password=SECRET))
    url = dsn.build("postgresql://u@127.0.0.1/d", password=SECRET).url
    assert SECRET not in database.scrub(f"x {url} y {SECRET}")
    assert "postgresql+psycopg://u:***@127.0.0.1/d" in database.scrub(url)
    record = logging.LogRecord("dklb", logging.INFO, __file__, 1, "database %s", (url,), None)
    try:
        raise RuntimeError(f"cannot connect to {url}")
    except RuntimeError as exc:
        record.exc_info = (RuntimeError, exc, exc.__traceback__)
    assert database.SecretFilter().filter(record)
    assert SECRET not in record.getMessage() and "***" in record.getMessage()
    assert (
        record.exc_text is not None and SECRET not in record.exc_text and "cannot connect" in record.exc_text
    )
    for formatter in (logging.Formatter(), JSONFormatter()):
        shown = formatter.format(record)
        assert SECRET not in shown and quote(SECRET, safe="") not in shown and "***" in shown
