"""Which database to open: ``--database`` and its credential flags made into one URL.

Where it sits: the CLI (``engine.cli.database``) hands the database flags to ``resolve``
(``--database``, ``--database-url-file``, ``--database-password-file``, ``--database-ca-file``,
``--database-allow-insecure-tls``; each also a ``DKLB_*`` variable); the URL text of the answer
is what ``engine.store.migrate`` and ``Store`` open, and its ``shown`` form, without the password,
is the only one a message may print. ``build`` is the pure part (text in, URL out, every rule),
``resolve`` reads the files first.

The rules (design decision 8 of issue 17):
- a SQLite path or ``sqlite://`` URL as given; ``postgresql://`` and ``postgres://`` mean
  psycopg 3 (``postgresql+psycopg://``); other databases are refused;
- the password comes from the URL, or from ``--database-password-file`` (put into the URL
  object, so that no character of it needs escaping by hand), not both;
- ``--database-ca-file`` sets ``sslrootcert`` and ``sslmode=verify-full``;
- a password sent to a PostgreSQL server that is not on this host (loopback or a Unix socket)
  without a verified TLS connection (``sslmode`` ``verify-full``/``verify-ca``) is refused unless
  ``--database-allow-insecure-tls``: the same rule as EdgeLB's credentials over plain http.

No message quotes a password: an unparseable URL is shown with its user information masked.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from engine.store.database import database_url, redacted

DATABASE_FLAG = "--database"
URL_FILE_FLAG = "--database-url-file"
PASSWORD_FILE_FLAG = "--database-password-file"
CA_FILE_FLAG = "--database-ca-file"
ALLOW_INSECURE_TLS_FLAG = "--database-allow-insecure-tls"

#: sslmode values that verify the server's certificate against a CA.
VERIFIED = ("verify-full", "verify-ca")
_PASSWORD = re.compile(r"(://[^:@/?#\s]*:)[^@/?#\s]*@")


class DsnError(ValueError):
    """The database flags do not name a database dklb can open safely; the message names the
    flag and its value (never a password)."""


@dataclass(frozen=True)
class Resolved:
    """What to open (``url``, with its password), what to print (``shown``), the password
    (for scrubbing it from any text that reaches a user) and a warning to log, if any."""

    # Not in the repr: a namespace or a Resolved printed (a debug line) must not show them.
    url: str = field(repr=False)
    shown: str
    password: str | None = field(default=None, repr=False)
    warning: str | None = None


def masked(text: str) -> str:
    """``text`` with the password of any ``user:password@`` of a URL in it replaced by ``***``."""
    return _PASSWORD.sub(r"\1***@", text)


def _parse(text: str, flag: str) -> URL:
    try:
        return make_url(text)
    except (ArgumentError, ValueError):
        raise DsnError(
            f"{flag} {masked(text)!r} is not a database URL "
            "(expected a SQLite path, sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE)"
        ) from None


def is_local(url: URL) -> bool:
    """Every host the URL names is this one: loopback, a Unix socket directory, or none (libpq's
    default is the local socket)."""
    hosts = [url.host] if url.host else []
    query_host = url.query.get("host")
    if isinstance(query_host, tuple):
        hosts += list(query_host)
    elif query_host:
        hosts += query_host.split(",")
    for host in hosts:
        host = host.strip()
        if not host or host.startswith("/") or host == "localhost":
            continue
        try:
            if ipaddress.ip_address(host.strip("[]")).is_loopback:
                continue
        except ValueError:
            pass
        return False
    return True


def _query(url: URL, key: str) -> str | None:
    value = url.query.get(key)
    if isinstance(value, tuple):
        return value[-1] if value else None
    return value


def _postgresql(url: URL, flag: str, shown: str) -> URL:
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return database_url(url)
    raise DsnError(
        f"{flag} {shown!r}: {backend} is not supported; give a SQLite path (or sqlite:///PATH) "
        "or a postgresql:// URL"
    )


def _with_ca(url: URL, ca_file: str, shown: str) -> URL:
    mode = _query(url, "sslmode")
    if mode is not None and mode not in VERIFIED:
        raise DsnError(
            f"{CA_FILE_FLAG} {ca_file} and sslmode={mode} in {shown!r}: a CA file is for "
            "sslmode=verify-full; remove sslmode from the URL or set it to verify-full"
        )
    if _query(url, "sslrootcert") not in (None, ca_file):
        raise DsnError(
            f"{CA_FILE_FLAG} {ca_file} and sslrootcert={_query(url, 'sslrootcert')} in {shown!r}: give one"
        )
    return url.update_query_dict({"sslrootcert": ca_file, "sslmode": mode or "verify-full"})


def build(
    target: str,
    *,
    flag: str = DATABASE_FLAG,
    password: str | None = None,
    ca_file: str | None = None,
    allow_insecure_tls: bool = False,
) -> Resolved:
    """The database ``target`` (a path or URL, given by ``flag``) with the password and CA of the
    other flags: see the module's rules. Pure; ``DsnError`` names the flag and the value."""
    if not target.strip():
        raise DsnError(f"{flag} is empty: give a SQLite path or a postgresql:// URL")
    if "://" not in target or target.startswith("sqlite:"):
        for given, name in ((password, PASSWORD_FILE_FLAG), (ca_file, CA_FILE_FLAG)):
            if given is not None:
                raise DsnError(f"{name} is for a PostgreSQL database; {flag} {target!r} is SQLite")
        return Resolved(url=target, shown=target)
    shown = redacted(target)
    url = _postgresql(_parse(target, flag), flag, shown)
    if password is not None:
        if url.password is not None:
            raise DsnError(f"{PASSWORD_FILE_FLAG} and a password in {flag} {shown!r}: give the password once")
        url = url.set(password=password)
    if ca_file is not None:
        url = _with_ca(url, ca_file, shown)
    shown = url.render_as_string(hide_password=True)
    secret = None if url.password is None else str(url.password)
    warning = None
    mode = _query(url, "sslmode") or "prefer"
    if secret is not None and mode not in VERIFIED and not is_local(url):
        problem = (
            f"the password for {shown} would be sent to a server on another host without a verified "
            f"TLS connection (sslmode={mode})"
        )
        if not allow_insecure_tls:
            raise DsnError(
                f"{problem}: refused; give {CA_FILE_FLAG} (sslmode=verify-full), or sslmode=verify-full "
                f"and sslrootcert in the URL, or {ALLOW_INSECURE_TLS_FLAG} to send it anyway"
            )
        warning = f"{problem}: sent anyway ({ALLOW_INSECURE_TLS_FLAG})"
    return Resolved(
        url=url.render_as_string(hide_password=False), shown=shown, password=secret, warning=warning
    )


def _read(path: str, flag: str, reader: Callable[[str], str]) -> str:
    try:
        return reader(path)
    except OSError as exc:
        raise DsnError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DsnError(f"{flag} {path}: not UTF-8 text") from None


def _read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def resolve(
    *,
    database: str | None,
    default: str,
    url_file: str | None = None,
    password_file: str | None = None,
    ca_file: str | None = None,
    allow_insecure_tls: bool = False,
    reader: Callable[[str], str] = _read_text,
) -> Resolved:
    """``build`` with the files read: the DSN of ``url_file`` (instead of ``database``), the
    password of ``password_file`` (a trailing newline dropped), the CA file checked readable.
    ``default`` is the database when neither ``database`` nor ``url_file`` names one."""
    flag = DATABASE_FLAG
    if url_file is not None:
        if database is not None:
            raise DsnError(f"{DATABASE_FLAG} {redacted(database)!r} and {URL_FILE_FLAG} {url_file}: give one")
        database = _read(url_file, URL_FILE_FLAG, reader).strip()
        flag = f"{URL_FILE_FLAG} {url_file}:"
        if "://" not in database:
            raise DsnError(f"{flag} holds no database URL (expected postgresql://... or sqlite:///...)")
    password = None
    if password_file is not None:
        password = _read(password_file, PASSWORD_FILE_FLAG, reader).rstrip("\r\n")
        if not password:
            raise DsnError(f"{PASSWORD_FILE_FLAG} {password_file} is empty")
    if ca_file is not None:
        ca_file = os.path.abspath(ca_file)
        _read(ca_file, CA_FILE_FLAG, reader)
    return build(
        default if database is None else database,
        flag=flag,
        password=password,
        ca_file=ca_file,
        allow_insecure_tls=allow_insecure_tls,
    )
