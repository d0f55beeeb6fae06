"""The database flags every command that opens the store takes, and keeping their password out of
every text a user sees.

Where it sits: ``run``, ``migrate``, ``inspect``, ``history``, ``pools`` and ``retry`` declare
their database with ``flags`` and open ``resolve(args).url``; what they print names
``resolve(args).shown``. The rules (which file wins, TLS) are ``engine.store.dsn``'s. A resolved
password is remembered in ``SECRETS``: ``scrub`` replaces it (as typed and URL-escaped) by ``***``
in any text, the command line applies it to every ``error: ...`` and ``SecretFilter`` to every log
record, so a message built by a lower layer from the full URL still shows no password.
"""

from __future__ import annotations

import argparse
import logging
from urllib.parse import quote, quote_plus

from engine.cli.options import Container, UsageError, add, boolean, default_database
from engine.store import dsn, redacted

log = logging.getLogger("dklb.cli")

#: Every password a command resolved (normally one).
SECRETS: set[str] = set()


def flags(parser: Container, *, required: bool = False, aliases: tuple[str, ...] = ()) -> None:
    """``--database`` (``aliases`` too, e.g. ``--to``) and the flags that complete it."""
    fallback = "" if required else f" (default {default_database()})"
    add(
        parser,
        dsn.DATABASE_FLAG,
        *aliases,
        dest="database",
        metavar="PATH|URL",
        default=None,
        help="SQLite path or postgresql:// URL of the controller's database" + fallback,
    )
    add(
        parser,
        dsn.URL_FILE_FLAG,
        metavar="FILE",
        help="file holding the database URL (e.g. a mounted Secret), instead of --database",
    )
    add(
        parser,
        dsn.PASSWORD_FILE_FLAG,
        metavar="FILE",
        help="file holding the PostgreSQL password (a trailing newline is dropped)",
    )
    add(
        parser,
        dsn.CA_FILE_FLAG,
        metavar="FILE",
        help="CA certificate(s) to verify the PostgreSQL server with (sets sslmode=verify-full)",
    )
    add(
        parser,
        dsn.ALLOW_INSECURE_TLS_FLAG,
        metavar="BOOL",
        nargs="?",
        const=True,
        type=boolean,
        default=False,
        help="send a password to a PostgreSQL server on another host without sslmode=verify-full "
        "or verify-ca anyway, with a WARNING (default false: refused); bare, or =true/=false",
    )
    parser.set_defaults(database_required=required)


def resolve(args: argparse.Namespace) -> dsn.Resolved:
    """The database the flags name (``UsageError`` naming the flag when they cannot be used)."""
    cached: dsn.Resolved | None = getattr(args, "database_resolved", None)
    if cached is not None:
        return cached
    if args.database_required and args.database is None and args.database_url_file is None:
        raise UsageError(f"give {dsn.DATABASE_FLAG} or {dsn.URL_FILE_FLAG}")
    try:
        resolved = dsn.resolve(
            database=args.database,
            default=default_database(),
            url_file=args.database_url_file,
            password_file=args.database_password_file,
            ca_file=args.database_ca_file,
            allow_insecure_tls=bool(args.database_allow_insecure_tls),
        )
    except dsn.DsnError as exc:
        raise UsageError(str(exc)) from None
    remember(resolved)
    if resolved.warning:
        log.warning("%s", resolved.warning)
    args.database_resolved = resolved
    return resolved


def shown(args: argparse.Namespace | None) -> str:
    """The database of ``args`` fit for a message (the password hidden), resolved or not."""
    resolved: dsn.Resolved | None = getattr(args, "database_resolved", None)
    if resolved is not None:
        return resolved.shown
    return redacted(getattr(args, "database", None) or getattr(args, "database_url_file", None) or "")


#: What a failed TLS verification says (libpq, through psycopg).
_TLS_FAILURES = ("certificate verify failed", "root certificate file", "sslrootcert", "SSL error")


def hint(exc: BaseException, args: argparse.Namespace | None) -> str:
    """For a database error caused by the server's certificate: which flag gave the CA."""
    ca_file = getattr(args, "database_ca_file", None)
    if ca_file is None:
        return ""
    text = ""
    cause: BaseException | None = exc
    while cause is not None and len(text) < 10_000:
        text += f" {cause}"
        cause = cause.__cause__ or cause.__context__
    if not any(marker in text for marker in _TLS_FAILURES):
        return ""
    return (
        f" (the server's certificate was checked against {dsn.CA_FILE_FLAG} {ca_file}: is it the CA "
        "that signed the server's certificate, and does the URL's host match the certificate?)"
    )


def remember(resolved: dsn.Resolved) -> None:
    if resolved.password:
        SECRETS.add(resolved.password)


def scrub(text: str) -> str:
    """``text`` without any remembered password, nor a URL's user information."""
    for secret in SECRETS:
        for form in {secret, quote(secret, safe=""), quote_plus(secret, safe="")}:
            text = text.replace(form, "***")
    return dsn.masked(text) if "://" in text else text


class SecretFilter(logging.Filter):
    """Scrubs every record that passes a handler: its message, arguments and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if SECRETS and record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            cleaned = scrub(record.exc_text)
            if cleaned != record.exc_text:
                # A formatter that formats exc_info itself (the JSON one) would show the secret:
                # only the scrubbed text is left (the text formatter prints exc_text).
                record.exc_text, record.exc_info = cleaned, None
        return True


def guard_logging() -> None:
    """``SecretFilter`` on every handler of the root logger (after ``configure_logging``)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(each, SecretFilter) for each in handler.filters):
            handler.addFilter(SecretFilter())
