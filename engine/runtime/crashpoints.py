"""Crash injection points, for the tests that SIGKILL the controller between any two steps.

The reconciler and the test fakes call ``checkpoint(name)`` after every side effect and every
commit. With ``DKLB_CRASH_AT=N`` in the environment the N-th checkpoint kills the process on the
spot (SIGKILL: no cleanup, no flush), which is what a node failure looks like to the database.
Without it, a checkpoint costs one integer comparison. ``arm`` does the same from code, for a
process forked after the imports.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_crash_at = int(os.environ.get("DKLB_CRASH_AT", "0") or 0)
_count = 0
_lock = threading.Lock()


def arm(at: int) -> None:
    """Kill this process at the ``at``-th checkpoint from now (0: never); for a process forked from
    one that imported dklb before the test chose its checkpoint."""
    global _crash_at, _count
    with _lock:
        _crash_at, _count = at, 0


def checkpoint(name: str) -> None:
    global _count
    if not _crash_at:
        return
    with _lock:
        _count += 1
        if _count == _crash_at:
            sys.stderr.write(f"dklb: crash injected at checkpoint {_count} ({name})\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
