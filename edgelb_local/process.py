"""Starting ``dklb edgelb-local`` as a process of its own: for the demo, the tests and the benchmark.

Where it sits: whoever needs a local EdgeLB (``localcluster.demo``, ``tests.processes``,
``bench.servers``) calls ``start``; it runs ``python -m engine.cli edgelb-local`` on a free
loopback port, reads the "listening on URL" line the command prints first, and hands back the
process and that URL. Stopping it (by PID) stays with the caller, who knows how it should end.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]


def start(
    state_dir: Path,
    *,
    extra: Iterable[str] = (),
    listen: str = "127.0.0.1:0",
    stderr: IO[bytes] | int = subprocess.DEVNULL,
    new_session: bool = False,
) -> tuple[subprocess.Popen[str], str]:
    """The running process and its base URL; RuntimeError (the process ended) if it did not start."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "edgelb-local",
            "--listen",
            listen,
            "--state-dir",
            str(state_dir),
            "--agent",
            "kube-node-0=127.0.0.1",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=new_session,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError(f"the local EdgeLB did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[-1]
