"""``dklb demo`` and ``dklb edgelb-local``: the two commands that run the local stand-ins.

Where it sits: the only product module that imports ``localcluster`` (the kube-apiserver + etcd
of the demo and the tests, and the demo itself) and ``edgelb_local`` (the local EdgeLB), and
only when one of these commands runs. They are development tools, not part of the controller:
the wheel and the image do not carry them, and there the commands say so instead of failing
with an import error.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from engine.cli.options import UsageError


def configure_demo(parser: argparse.ArgumentParser) -> None:
    _configure(parser, "localcluster.demo", "demo")


def configure_edgelb_local(parser: argparse.ArgumentParser) -> None:
    _configure(parser, "edgelb_local.command", "edgelb-local")


def _configure(parser: argparse.ArgumentParser, module_name: str, command: str) -> None:
    try:
        module: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = module_name.partition(".")[0]
        if exc.name != missing:
            raise  # the stand-in is there, one of its own imports is not: a real error
        # Configured only when this command runs (``engine.cli.main``): say so now, whatever flags
        # follow, rather than fail on them.
        raise UsageError(
            f"dklb {command} runs the local stand-ins ({missing}), which this installation does not "
            "include (they are development tools): run it from a dklb checkout, e.g. ./dev demo"
        ) from None
    module.configure(parser)
