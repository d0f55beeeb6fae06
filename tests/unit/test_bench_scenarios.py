"""``bench.scenarios``: each mode's controller process is described from the servers of its run,
and servers started for a run are stopped whatever fails after them (they run detached)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

import localcluster
from bench import scenarios
from bench.servers import Servers
from bench.workload import specs


def servers(tmp_path: Path, stopped: list[str] | None = None) -> Servers:
    cluster = localcluster.LocalCluster(
        state_dir=tmp_path, kubeconfig=tmp_path / "kubeconfig", server="https://127.0.0.1:6443"
    )
    edgelb: subprocess.Popen[str] = subprocess.Popen(["true"], text=True)
    edgelb.wait(timeout=30)

    class Recorded(Servers):
        def stop(self) -> None:
            if stopped is not None:
                stopped.append("servers")

    return Recorded(cluster=cluster, edgelb=edgelb, edgelb_url="http://127.0.0.1:1", work=tmp_path)


@pytest.mark.parametrize(
    ("mode", "flags"),
    [
        ("dklb", ["--database", "--resync-period", "--workers", "--metadata-resync-period"]),
        ("baseline", ["--resync-period", "--stats-listen"]),
        ("floor", ["--plan", "--workers", "--stats-listen"]),
    ],
)
def test_every_mode_describes_its_controller_from_the_runs_servers(
    tmp_path: Path, mode: str, flags: list[str]
) -> None:
    # Twice, on two different runs' servers: each gets its own (a cache keyed on the servers
    # once made every suite fail: they are not hashable).
    for run in ("a", "b"):
        work = tmp_path / run
        work.mkdir()
        controller = scenarios.controller_for(mode, servers(work), scenarios.Options(), specs(10))
        assert controller.mode == mode
        assert controller.log_path.parent == work
        assert str(work / "kubeconfig") in controller.args
        assert set(flags) <= set(controller.args)


def test_the_servers_are_stopped_when_the_controller_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped: list[str] = []
    monkeypatch.setattr(scenarios, "start_servers", lambda *_a, **_k: servers(tmp_path, stopped))

    def broken(*_args: Any) -> Any:
        raise RuntimeError("no controller")

    monkeypatch.setattr(scenarios, "controller_for", broken)
    with (
        pytest.raises(RuntimeError, match="no controller"),
        scenarios.running("dklb", tmp_path, scenarios.Options(), specs(10)),
    ):
        pytest.fail("the run must not start")
    assert stopped == ["servers"]
