"""The ``dklb`` command: one module per sub-command, shared flags and output beside them.

What the layer is: the outermost one. It turns argv (and ``DKLB_*`` variables) into calls of the
layers below and their answers into text and an exit status. ``options`` declares every flag two
commands share and the one ``UsageError``; ``output`` prints tables, JSON and YAML;
``bindings`` is how the operator commands name and show bindings and history. Each command
module has ``configure(parser)``, which adds its flags and sets ``func``:

    run                  the controller (built and run by ``engine.app``)
    plan                 a dry run of Pending and Provisioning for one Service file
    inspect, history,    the operator's view of the database (read-only) and of EdgeLB
    pools, retry         (``retry`` writes one wake-up time)
    lifecycle, migrate   the declared machine; the schema
    demo, edgelb-local   ``dev``: the local stand-ins, the only commands that import them

What it may import: anything in ``engine``. Only ``engine.cli.dev`` imports ``edgelb_local`` and
``localcluster``, and only when one of its commands runs: the product runs without them.

A command's module is imported only when that command runs (``dklb plan`` does not pay for the
Kubernetes client). Every failure a user can cause or meet is ``error: ...`` on stderr and exit
status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy.exc import SQLAlchemyError

from engine.cli import database
from engine.cli.database import scrub
from engine.cli.goflags import go_command_line
from engine.cli.options import UsageError, parser_options
from engine.edgelb.errors import EdgeLBError
from engine.store import StoreError

# name: (module[:function] that configures its parser, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("engine.cli.run", "run the controller"),
    "plan": (
        "engine.cli.plan",
        "print the configuration and EdgeLB pool a Service would get (no cluster needed)",
    ),
    "inspect": ("engine.cli.inspect", "list bindings (state, age, wake-up, last error), or show one in full"),
    "history": ("engine.cli.history", "query the transition history (newest first)"),
    "pools": ("engine.cli.pools", "list EdgeLB pools with the bindings that use them"),
    "retry": ("engine.cli.retry", "wake a binding now (a running controller acts on it within seconds)"),
    "lifecycle": ("engine.cli.lifecycle", "print the declared binding lifecycle"),
    "migrate": ("engine.cli.migrate", "create or upgrade the database schema"),
    "demo": (
        "engine.cli.dev:configure_demo",
        "replay the seed's Redis example on a local kube-apiserver, EdgeLB (real HAProxy) and redis",
    ),
    "edgelb-local": (
        "engine.cli.dev:configure_edgelb_local",
        "run a local EdgeLB (V2 API + one HAProxy per pool) for the demo, tests and benchmarks",
    ),
}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``dklb`` parser; only ``commands`` (default: all) get their flags, which imports them."""
    configured = set(COMMANDS if commands is None else commands)
    parser = argparse.ArgumentParser(
        prog="dklb",
        **parser_options(description="Expose Kubernetes Services of type LoadBalancer through EdgeLB pools."),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (target, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, **parser_options())
        if name in configured:
            module, _, function = target.partition(":")
            configure: Callable[[argparse.ArgumentParser], None] = getattr(
                importlib.import_module(module), function or "configure"
            )
            configure(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The Go dklb's Deployment arguments (``/dklb --pod-name ...``) are ``run``'s.
    argv = go_command_line(sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    try:
        # Only the command asked for is configured: its flags may read DKLB_* variables, and a
        # bad one must not stop another command.
        parser = build_parser([argv[0]] if argv and argv[0] in COMMANDS else [])
        args = parser.parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except (UsageError, StoreError, EdgeLBError) as exc:
        print(scrub(f"error: {exc}{database.hint(exc, args)}"), file=sys.stderr)
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        print(
            scrub(
                f"error: cannot read the database {database.shown(args)}: {reason}{database.hint(exc, args)}"
            ),
            file=sys.stderr,
        )
    except BrokenPipeError:
        # `dklb history | head`: the reader left; stop quietly, and keep Python's flush at exit
        # from raising again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    return 1
