"""``dklb retry``: wake a stuck binding now, instead of waiting out its backoff.

Where it sits in the data flow: the one operator command that writes. It sets the binding's
``next_wakeup`` to now (``Store.set_wakeup``); the running controller's periodic scan of due
wake-ups (``engine.runtime.controller``) runs the binding's handler within seconds. No signal,
no API: just the database both processes already share. A binding whose state has no handler
(Rejected, Paused) has nothing to retry: the lifecycle's ``user_action`` says what to do.
"""

from __future__ import annotations

import argparse
import textwrap

from engine.cli import database, options
from engine.cli.bindings import machine, now, parse_key, unknown_binding
from engine.cli.options import UsageError
from engine.cli.output import NONE, emit, one_line, relative, timestamp
from engine.store import Binding, Store, database_url
from engine.store.migrate import check


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Sets the binding's next wake-up to now in the database; the running controller's "
        "scan of due wake-ups runs its handler within seconds, instead of waiting out the backoff. A "
        "Rejected or Paused binding has nothing to retry: the Service itself must change.",
        90,
    )
    parser.epilog = (
        "examples:\n  dklb retry default/redis\n  dklb retry default/redis --database /var/lib/dklb/dklb.db"
    )
    parser.add_argument("key", metavar="NAMESPACE/NAME")
    database.flags(parser)
    options.output(parser, ("table", "json", "yaml"), "table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    at = now()
    key = parse_key(args.key)
    # check() first: it refuses a missing or too-new database instead of creating or migrating it.
    db = database.resolve(args)
    check(db.url)
    store = Store(database_url(db.url))
    try:
        binding = store.get(key)
        if binding is None:
            raise UsageError(unknown_binding(store, key, db.shown))
        spec = machine().states.get(binding.state)
        if spec is None or spec.handler is None:
            raise UsageError(_nothing_to_retry(binding, spec.user_action if spec else None))
        previous = binding.next_wakeup
        if not store.set_wakeup(key, at):
            raise UsageError(f"{key} was removed while waking it")
        after = store.get(key) or binding
    finally:
        store.close()

    if args.output != "table":
        emit(
            {
                "key": key,
                "woken": True,
                "state": after.state,
                "attempts": after.attempts,
                "previous_wakeup": previous,
                "next_wakeup": after.next_wakeup,
                "last_error": after.last_error,
            },
            args.output,
        )
        return 0
    was = f"was {relative(previous, at)}, {timestamp(previous)}" if previous else "had none"
    print(f"woke {key}: next wake-up set to now, {timestamp(after.next_wakeup)} ({was})")
    print("a running controller picks it up within seconds (it scans the database for due wake-ups)")
    print(
        f"state: {after.state} since {timestamp(after.state_since)} ({relative(after.state_since, at)}), "
        f"attempts {after.attempts}"
    )
    print(f"last error: {after.last_error or NONE}")
    print(f"follow it with: dklb inspect {key}")
    return 0


def _nothing_to_retry(binding: Binding, user_action: str | None) -> str:
    error = f" (last error: {one_line(binding.last_error)})" if binding.last_error else ""
    what = f". {user_action}" if user_action else ": the Service itself must change"
    return f"{binding.key} is {binding.state}: a retry cannot help{error}{what}"
