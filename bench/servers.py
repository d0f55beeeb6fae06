"""The processes a benchmark run measures: kube-apiserver + etcd, the local EdgeLB, one controller.

Where it sits: ``bench.scenarios`` asks for a fresh ``Servers`` (a new kube-apiserver and a new
local EdgeLB, so no run sees another's Services, pools or request counters), then starts either
controller on them — ``dklb run``, ``bench.baseline`` (the Go dklb's algorithm) or ``bench.floor``
(the requests alone) — as a separate process, exactly as an operator would. Everything is started
on free loopback ports and stopped by PID; ``ControllerProc.stats()`` reads what the controller
says about itself (dklb's /metrics, the baseline's and the floor's /stats). The servers are set
for the largest run (20,000 Services): ``NODE_PORTS``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
import urllib3

import localcluster
import localpg
from bench.measure import controller_metrics
from edgelb_local import process as edgelb_process
from localcluster.processes import terminate, wait_for

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"dklb": "engine.cli", "baseline": "bench.baseline", "floor": "bench.floor"}
LISTENING = re.compile(r"http listening on (http://\S+)")
STATS = re.compile(r"stats on (http://\S+)")
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


STORES = ("sqlite", "postgresql")


@dataclass
class Servers:
    """A kube-apiserver (with its etcd) and a local EdgeLB (no HAProxy: the API and its metadata);
    for a run on the PostgreSQL store, a throwaway PostgreSQL server (``localpg``) too."""

    cluster: localcluster.LocalCluster
    edgelb: subprocess.Popen[str]
    edgelb_url: str
    work: Path
    postgres: localpg.LocalPostgres | None = None
    postgres_url: str = ""

    @property
    def store(self) -> str:
        return "sqlite" if self.postgres is None else "postgresql"

    @property
    def database(self) -> str:
        """What dklb's ``--database`` is given: the SQLite file in the run's directory, or the URL
        of the run's PostgreSQL database."""
        return self.postgres_url or str(self.work / "dklb.db")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            terminate(self.edgelb.pid)
            self.edgelb.wait(timeout=10)
        localcluster.stop(self.cluster)
        if self.postgres is not None:
            localpg.remove(self.postgres)


# One node port per LoadBalancer Service: the default range (2,768 ports) cannot hold 5,000, and
# 20,000 Services need 20,000. Above the pools' frontend bind ports (10000 + i, up to 29999 for
# 20,000 Services; the churn moves some by 20000), below the ephemeral ports (32768+ would not
# matter here: no kube-proxy listens on node ports). The cluster IP range (10.96.0.0/16,
# localcluster/start.sh) holds 65,534 Services; etcd's quota (2 GiB) ~100x what 20,000 take.
NODE_PORTS = "30000-59999"


def start_servers(work: Path, *, metadata_delay: str, store: str = "sqlite") -> Servers:
    """Fresh servers in ``work``; ``store="postgresql"``: with a PostgreSQL server and an empty
    database for dklb (localpg's settings: loopback, fsync off, as the SQLite file of a run sits
    on /dev/shm: neither side pays for a disk flush)."""
    if store not in STORES:
        raise ValueError(f"store: {store!r} is not one of {', '.join(STORES)}")
    work.mkdir(parents=True, exist_ok=True)
    postgres = None
    edgelb: subprocess.Popen[str] | None = None
    cluster = localcluster.start(apiserver_args=[f"--service-node-port-range={NODE_PORTS}"])
    try:
        with (work / "edgelb.log").open("ab") as log:
            edgelb, url = edgelb_process.start(
                work / "edgelb", extra=["--no-dataplane", "--metadata-delay", metadata_delay], stderr=log
            )
        servers = Servers(cluster=cluster, edgelb=edgelb, edgelb_url=url, work=work)
        if store == "postgresql":
            servers.postgres = postgres = localpg.start()
            servers.postgres_url = postgres.create_database("dklb")
    except BaseException:
        if edgelb is not None:
            with contextlib.suppress(Exception):
                terminate(edgelb.pid)
        localcluster.stop(cluster)
        if postgres is not None:
            localpg.remove(postgres)
        raise
    return servers


@dataclass
class ControllerProc:
    """``dklb run`` or the baseline, as a process with its log and its self-reported figures."""

    mode: str  # "dklb" | "baseline" | "floor"
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    # Added to the environment it runs in: dklb's PostgreSQL URL goes there (DKLB_DATABASE), with
    # its password, not into the command line every user of the machine can read.
    env: dict[str, str] = field(default_factory=dict)
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ControllerProc:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        module = MODULES[self.mode]
        command = [sys.executable, "-m", module, *(["run"] if self.mode == "dklb" else []), *self.args]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        pattern = LISTENING if self.mode == "dklb" else STATS

        def listening() -> str | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.mode} exited with {self.proc.returncode}; see {self.log_path}")
            with self.log_path.open("rb") as log:
                log.seek(offset)
                found = pattern.search(log.read().decode(errors="replace"))
            return found.group(1) if found else None

        self.url = wait_for(listening, timeout=60, what=f"{self.mode} listening")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()

    def stats(self) -> Any:
        """dklb: its /metrics (a ``bench.measure.Scrape``); the baseline and the floor: their /stats JSON."""
        if self.mode != "dklb":
            return requests.get(self.url + "/stats", timeout=10).json()
        return controller_metrics(self.url)


def dklb_controller(
    servers: Servers, *, resync: str, workers: int = 4, metadata_resync: str | None = None
) -> ControllerProc:
    metadata = ["--metadata-resync-period", metadata_resync] if metadata_resync else []
    database = [] if servers.postgres_url else ["--database", servers.database]
    return ControllerProc(
        mode="dklb",
        args=[
            "--kubeconfig",
            str(servers.cluster.kubeconfig),
            "--edgelb-url",
            servers.edgelb_url,
            *database,
            "--leader-elect",
            "false",
            "--resync-period",
            resync,
            "--workers",
            str(workers),
            "--http-listen",
            "127.0.0.1:0",
            "--log-level",
            "info",
            *metadata,
        ],
        log_path=servers.work / "dklb.log",
        env={"DKLB_DATABASE": servers.postgres_url} if servers.postgres_url else {},
    )


def baseline_controller(servers: Servers, *, resync: str) -> ControllerProc:
    return ControllerProc(
        mode="baseline",
        args=[
            "--kubeconfig",
            str(servers.cluster.kubeconfig),
            "--edgelb-url",
            servers.edgelb_url,
            "--resync-period",
            resync,
            "--stats-listen",
            "127.0.0.1:0",
        ],
        log_path=servers.work / "baseline.log",
    )


def floor_controller(servers: Servers, *, plan: dict[str, int], workers: int = 4) -> ControllerProc:
    """``bench.floor``, told how many Services each pool will hold (``plan``)."""
    plan_path = servers.work / "floor-plan.json"
    plan_path.write_text(json.dumps(plan))
    return ControllerProc(
        mode="floor",
        args=[
            "--kubeconfig",
            str(servers.cluster.kubeconfig),
            "--edgelb-url",
            servers.edgelb_url,
            "--plan",
            str(plan_path),
            "--workers",
            str(workers),
            "--stats-listen",
            "127.0.0.1:0",
        ],
        log_path=servers.work / "floor.log",
    )
