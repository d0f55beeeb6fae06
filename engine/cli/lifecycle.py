"""``dklb lifecycle``: the binding lifecycle as declared in ``states/lifecycle.yaml``.

Where it sits: it loads the declaration the controller runs (``engine.runtime.lifecycle``, which
checks it) and prints it: a Mermaid state diagram (default), one row per transition, or the
whole declaration as YAML or JSON, roles and timings included.
"""

from __future__ import annotations

import argparse

from engine.cli import options
from engine.cli.output import emit, table
from engine.runtime import lifecycle


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples:\n  dklb lifecycle              # a Mermaid state diagram\n"
        "  dklb lifecycle -o table     # one row per transition"
    )
    options.output(parser, ("mermaid", "table", "yaml", "json"), "mermaid")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    machine = lifecycle.load()
    if args.output == "mermaid":
        print(machine.mermaid())
        return 0
    if args.output == "table":
        rows = [
            (
                t.trigger,
                ", ".join(t.sources),
                t.dest,
                ", ".join(p.rpartition(".")[2] for p in t.guard_paths) or "-",
            )
            for t in machine.transitions
        ]
        print(table(["TRIGGER", "FROM", "TO", "GUARDS"], rows))
        return 0
    data = {
        "initial": machine.initial,
        "final": machine.final,
        "states": {
            name: {
                "doc": s.doc,
                "handler": s.handler_path,
                "serialize": s.serialize,
                "retry": vars(s.retry) if s.retry else None,
                "poll": vars(s.poll) if s.poll else None,
                "resync": s.resync,
                "settled": s.settled,
                "wants_objects": s.wants_objects,
                "user_action": s.user_action,
            }
            for name, s in machine.states.items()
        },
        "transitions": [
            {
                "trigger": t.trigger,
                "source": list(t.sources),
                "dest": t.dest,
                "guards": list(t.guard_paths),
                "else": dict(zip(("trigger", "reason"), t.otherwise, strict=True)) if t.otherwise else None,
            }
            for t in machine.transitions
        ],
    }
    emit(data, args.output)
    return 0
