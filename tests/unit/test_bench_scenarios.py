"""``bench.scenarios``: each mode's controller process is described from the servers of its run,
and servers started for a run are stopped whatever fails after them (they run detached); a run on
the PostgreSQL store gets a PostgreSQL server of its own (real, localpg), removed with the run."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

import localcluster
from bench import scenarios
from bench import servers as bench_servers
from bench.servers import Servers, start_servers
from bench.workload import specs
from engine.store import migrate


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


def test_dklb_is_given_the_runs_database_on_each_store(tmp_path: Path) -> None:
    on_sqlite = servers(tmp_path)
    on_postgresql = servers(tmp_path)
    on_postgresql.postgres_url = "postgresql://postgres:pw@127.0.0.1:5999/dklb"
    controller = scenarios.controller_for("dklb", on_sqlite, scenarios.Options(), specs(10))
    assert controller.args[controller.args.index("--database") + 1] == str(tmp_path / "dklb.db")
    assert controller.env == {}
    assert on_sqlite.database == str(tmp_path / "dklb.db") and on_sqlite.store == "sqlite"
    # The URL holds the password: in dklb's environment, never on its command line.
    controller = scenarios.controller_for("dklb", on_postgresql, scenarios.Options(), specs(10))
    assert controller.env == {"DKLB_DATABASE": on_postgresql.postgres_url}
    assert "--database" not in controller.args
    assert not any("pw" in arg for arg in controller.args)


def test_an_unknown_store_is_refused_before_any_server_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localcluster, "start", lambda **_k: pytest.fail("no server for an unknown store"))
    with pytest.raises(ValueError, match="store: 'mysql' is not one of sqlite, postgresql"):
        start_servers(tmp_path, metadata_delay="1s", store="mysql")


def test_the_postgresql_server_of_a_run_is_started_with_it_and_removed_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kube-apiserver and the local EdgeLB stood in for: the PostgreSQL server is the real one.
    cluster = servers(tmp_path).cluster
    monkeypatch.setattr(localcluster, "start", lambda **_k: cluster)
    monkeypatch.setattr(localcluster, "stop", lambda _c: None)
    edgelb: subprocess.Popen[str] = subprocess.Popen(["true"], text=True)
    edgelb.wait(timeout=30)
    monkeypatch.setattr(
        bench_servers.edgelb_process, "start", lambda *_a, **_k: (edgelb, "http://127.0.0.1:1")
    )
    run = start_servers(tmp_path, metadata_delay="1s", store="postgresql")
    try:
        assert run.store == "postgresql" and run.postgres is not None and run.postgres.running()
        assert run.database.startswith("postgresql://") and run.database.endswith("/dklb")
        store = migrate.open_store(run.database)  # an empty database dklb can migrate and use
        store.close()
    finally:
        run.stop()
    assert run.postgres is not None and not run.postgres.running()
    assert not run.postgres.directory.exists()
