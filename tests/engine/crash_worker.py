"""A controller process for the crash tests: settle the world kept in DIR, then exit.

Run as ``python -m tests.engine.crash_worker DIR``. The database, the fake cluster and the fake
EdgeLB all live in files under DIR, so when ``DKLB_CRASH_AT=N`` kills this process at its N-th
checkpoint (SIGKILL, no clean-up), the next process finds exactly what a restarted controller
would find. On a clean exit it prints how many checkpoints it passed.
"""

from __future__ import annotations

import json
import os
import sys
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
    print(json.dumps({"checkpoints": crashpoints._count}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
