"""``dklb migrate``: create or upgrade the database schema (``engine.store.migrate``), or copy a
whole database into a new one (``engine.store.copy``: SQLite to PostgreSQL, or back).

``dklb run`` migrates on every start; this is for a database prepared ahead, or checked after
an upgrade. A database newer than this dklb is refused, never downgraded. With ``--from``, the
source must be at this dklb's schema and is only read; the target (``--to``, the same flag as
``--database``, with its password and CA flags) is migrated, then filled in one transaction, and
must be empty.
"""

from __future__ import annotations

import argparse

from engine.cli import database, options
from engine.cli.options import UsageError
from engine.store import database_url, dsn, migrate, redacted
from engine.store.copy import copy_database

FROM_FLAG = "--from"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples:\n"
        "  dklb migrate --database /var/lib/dklb/dklb.db\n"
        "  dklb migrate --from /var/lib/dklb/dklb.db --to postgresql://dklb@db.example.com/dklb \\\n"
        "      --database-password-file /etc/dklb/pgpass --database-ca-file /etc/dklb/db-ca.crt"
    )
    database.flags(parser, required=True, aliases=("--to",))
    options.add(
        parser,
        FROM_FLAG,
        env=False,
        dest="source",
        metavar="PATH|URL",
        help="copy every binding, pool and history entry of this dklb database (SQLite path or URL, "
        "at this dklb's schema; only read) into --database/--to, which must be empty; "
        "stop the controller using it first",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = database.resolve(args)
    if args.source is None:
        revision = migrate.upgrade(target.url)
        print(f"database {target.shown} is at revision {revision}")
        return 0
    try:
        source = dsn.build(args.source, flag=FROM_FLAG)
    except dsn.DsnError as exc:
        raise UsageError(str(exc)) from None
    database.remember(source)
    if redacted(database_url(source.url)) == redacted(database_url(target.url)):
        raise UsageError(f"{FROM_FLAG} and --to are the same database ({target.shown})")
    migrate.check(source.url)
    revision = migrate.upgrade(target.url)
    copied = copy_database(database_url(source.url), database_url(target.url), target_shown=target.shown)
    rows = ", ".join(f"{count} {table}" for table, count in copied.items())
    print(f"copied {source.shown} into {target.shown} (revision {revision}): {rows}")
    return 0
