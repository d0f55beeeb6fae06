"""Converters and defaults shared by the command-line flags of ``dklb run`` and the operator CLI.

argparse calls these on every flag value (and on ``DKLB_*`` environment values); a bad value
becomes a usage error that names it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.model.durations import parse_duration

IN_CLUSTER = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
CONTAINER_DATABASE = "/var/lib/dklb/dklb.db"


def env_name(flag: str) -> str:
    """The environment variable that can set ``--flag``: ``DKLB_`` + the flag in upper snake case."""
    return "DKLB_" + flag.lstrip("-").replace("-", "_").upper()


def default_database() -> str:
    """Where ``dklb run`` keeps its database: the volume in a container, the working directory otherwise."""
    return CONTAINER_DATABASE if IN_CLUSTER or Path(CONTAINER_DATABASE).parent.is_dir() else "dklb.db"


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
