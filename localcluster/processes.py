"""Waiting on conditions and ending processes by PID: shared by ``dklb demo`` and the tests.

Whoever starts a server here stops it by its PID, and whoever needs something to be true waits
for it with a deadline, never for a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class Timeout(Exception):
    """A condition did not become true before its deadline."""


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
    error: type[Exception] = Timeout,
) -> T:
    """The first truthy value of ``condition()``, polled every ``interval`` until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"{what or 'condition'} not met within {timeout:.0f}s (last value {value!r})")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, or a child we reaped, counts as gone)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def terminate(pid: int, *, timeout: float = 30.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
