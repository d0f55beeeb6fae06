"""A controller process for the crash tests: settle the world kept in DIR, then exit.

The database, the fake cluster and the fake EdgeLB all live in files under DIR, so when the N-th
checkpoint kills the process (SIGKILL, no clean-up), the next process finds exactly what a
restarted controller would find. ``run_process`` starts one such process: forked from a server
that imported everything once (a fresh interpreter per process would spend a second and a half
importing), and sharing nothing with the others but the files. A clean exit writes how many
checkpoints it passed to DIR/checkpoints. ``python -m tests.engine.crash_worker DIR`` does the
same in a fresh interpreter (``DKLB_CRASH_AT=N`` arms the crash).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import traceback
from multiprocessing.connection import wait
from pathlib import Path

from engine.runtime import crashpoints
from tests.engine.harness import World
from tests.fakes.edgelb import FakeEdgeLB
from tests.fakes.kube import FakeKube


def open_world(directory: Path, *, seed: int = 7) -> World:
    return World(
        directory,
        edgelb=FakeEdgeLB(path=directory / "edgelb.json", auto_metadata=True),
        kube=FakeKube(directory / "kube.json"),
        seed=seed,
    )


def main(directory: str) -> int:
    # A different random stream in every process: a pool name generated before a crash and not
    # recorded must not be generated again by luck.
    world = open_world(Path(directory), seed=os.getpid())
    world.settle()
    world.store.close()
    (Path(directory) / "checkpoints").write_text(json.dumps(crashpoints._count))
    return 0


def _child(directory: str, crash_at: int | None) -> None:
    # Armed even when no crash is wanted: the checkpoints are only counted when armed.
    crashpoints.arm(crash_at if crash_at is not None else 10**9)
    try:
        code = main(directory)
    except BaseException:
        (Path(directory) / "error.txt").write_text(traceback.format_exc())
        code = 1
    sys.exit(code)


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])
# Process.start() polls every other live child (multiprocessing's _cleanup), reading its exit code
# from the forkserver's pipe: concurrent with that child's own join() in another thread, one of
# the two reads an EOF and multiprocessing reports 255. Starting and reaping under one lock, and
# waiting outside it, keeps the threads parallel and the exit codes right.
_REAP_LOCK = threading.Lock()


def run_process(directory: Path, crash_at: int | None = None) -> tuple[int | None, str]:
    """Settle ``directory`` in a process of its own, killed at checkpoint ``crash_at`` (None: never):
    its exit code (``-SIGKILL`` when killed) and what it reported as an error."""
    process = _CONTEXT.Process(target=_child, args=(str(directory), crash_at))
    with _REAP_LOCK:
        process.start()
    finished = wait([process.sentinel], timeout=120)
    with _REAP_LOCK:
        if not finished:
            process.kill()
        process.join()
    if not finished:
        return None, "still running after 120 s"
    error = directory / "error.txt"
    return process.exitcode, error.read_text() if error.exists() else ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
