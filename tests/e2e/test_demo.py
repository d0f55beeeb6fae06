"""`dklb demo` — the README's first command — replays the seed's Redis walk-through and passes."""

from __future__ import annotations

import subprocess
import sys

from tests.processes import ROOT


def test_the_demo_replays_the_seed_and_cleans_up() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--timeout", "90"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "service/redis created" in out and "pod/redis created" in out
    assert "<pending>" in out, "the first `kubectl get svc` shows no address yet"
    assert "127.0.0.1    6379:" in out, "then the Service carries the address"
    assert "dklb-redis  V2          1      slave_public" in out and ", 16379" in out
    assert "SET foo bar\nOK" in out and 'GET foo\n"bar"' in out
    assert "EnsuredLoadBalancer" in out
    assert "the dklb-redis EdgeLB pool was deleted automatically" in out
    assert out.rstrip().endswith("demo passed")
