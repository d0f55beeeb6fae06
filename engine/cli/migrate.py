"""``dklb migrate``: create or upgrade the database schema (``engine.store.migrate``).

``dklb run`` migrates on every start; this is for a database prepared ahead, or checked after
an upgrade. A database newer than this dklb is refused, never downgraded.
"""

from __future__ import annotations

import argparse

from engine.cli import options
from engine.store import migrate


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "example:\n  dklb migrate --database /var/lib/dklb/dklb.db"
    options.database(parser, required=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    revision = migrate.upgrade(args.database)
    print(f"database {args.database} is at revision {revision}")
    return 0
