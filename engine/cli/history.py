"""``dklb history``: the audit trail, every transition of every binding, newest first.

Where it sits in the data flow: every transition the controller commits writes one history row
(``Store.commit``), kept after the Service is gone; this command reads them from another
process, read-only, through ``Store.history`` (one query, shaped so that one index answers it
even in millions of rows), filtered by Service, pool, target state and time.

Retention (``dklb run --history-max-age / --history-max-rows-per-service``) deletes old rows;
what it deleted is said after the table (on stderr) and, with ``-o json|yaml``, in the
document's ``pruned`` list beside its ``entries``: an operator must not mistake a pruned past
for a quiet one.
"""

from __future__ import annotations

import argparse
import textwrap
from datetime import UTC, datetime, timedelta

from engine.cli import database, options
from engine.cli.bindings import history_doc, history_table, now, parse_key, state_named
from engine.cli.output import emit, note, relative, timestamp
from engine.model.durations import parse_duration
from engine.store import HistoryPruned
from engine.store.migrate import open_read_only


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Every transition of every binding, as recorded by the controller (kept after a Service "
        "is deleted, until dklb run's --history-max-age and --history-max-rows-per-service prune "
        "it; the output says when they did). Newest first; filters combine. Reads the database "
        "read-only.",
        90,
    )
    parser.epilog = (
        "examples:\n"
        "  dklb history default/redis                   # the last 50 transitions of one Service\n"
        "  dklb history --pool dklb-redis --since 1h\n"
        "  dklb history --state Rejected --since 2026-11-28T00:00:00Z -o json\n"
        "  dklb history default/redis --limit 0 --reverse   # all of it, oldest first"
    )
    parser.add_argument("key", nargs="?", metavar="NAMESPACE/NAME", help="only this Service")
    add = options.add
    options.filters(
        parser,
        state="only transitions INTO this state (Removed included)",
        pool="only transitions of bindings on this pool",
    )
    add(
        parser,
        "--since",
        env=False,
        type=since,
        metavar="DURATION|TIME",
        help="only newer entries (1h, or a UTC time)",
    )
    add(
        parser,
        "--limit",
        env=False,
        type=options.count,
        default=50,
        metavar="N",
        help="newest N entries (default 50; 0 = all)",
    )
    add(parser, "--reverse", env=False, action="store_true", help="print the selected entries oldest first")
    options.wide(parser, help="do not cut long messages")
    database.flags(parser)
    options.output(parser, ("table", "json", "yaml"), "table")
    parser.set_defaults(func=run)


def instant(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time; without a zone it is UTC (the database's zone)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time (e.g. 2026-11-28T12:00:00Z)") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def since(text: str) -> float | datetime:
    """``--since``: a duration back from now (``1h``) or an absolute time."""
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        return instant(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30s, 2m, 1h30m) nor a time (2026-11-28T12:00:00Z)"
        ) from None


def run(args: argparse.Namespace) -> int:
    at = now()
    key = parse_key(args.key) if args.key else None
    state = state_named(args.state, removed=True) if args.state else None
    start = None
    if args.since is not None:
        start = args.since if isinstance(args.since, datetime) else at - timedelta(seconds=args.since)
    store = open_read_only(database.resolve(args).url)
    try:
        entries = store.history(key=key, pool=args.pool, since=start, state=state, limit=args.limit or None)
        # A prune older than --since took nothing the question asked for.
        pruned = [p for p in store.pruned(key) if start is None or p.before > start]
    finally:
        store.close()
    if args.reverse:
        # The newest N, told in the order they happened (like `tail`).
        entries.reverse()
    if args.output != "table":
        emit(
            {"entries": [history_doc(h) for h in entries], "pruned": [pruned_doc(p) for p in pruned]},
            args.output,
        )
        return 0
    if not entries:
        note("no history matches")
    else:
        print(history_table(entries, at, wide=args.wide))
        if args.limit and len(entries) == args.limit:
            note(f"(the {args.limit} newest shown: --limit N for more, --limit 0 for all)")
    for p in pruned:
        note(pruned_note(p, key, at))
    return 0


def pruned_doc(p: HistoryPruned) -> dict[str, object]:
    return {"rule": p.rule, "before": p.before, "rows": p.rows, "at": p.at, "services": p.services}


def pruned_note(p: HistoryPruned, key: str | None, at: datetime) -> str:
    """One line saying what retention deleted, and by which flag of ``dklb run``."""
    when = f"last pruned {relative(p.at, at)}"
    flag = f"--history-{p.rule}"
    if p.rule == "max-age" or key is not None:
        whose = "entries" if p.rule == "max-age" else f"{key}'s entries"
        return (
            f"older history pruned ({flag}): {whose} before {timestamp(p.before)} are gone "
            f"({p.rows:,} rows, {when})"
        )
    services = f"{p.services} Service{'s' if p.services != 1 else ''}"
    return (
        f"older history pruned ({flag}): the oldest entries of {services} are gone, up to "
        f"{timestamp(p.before)} for the latest cut ({p.rows:,} rows, {when})"
    )
