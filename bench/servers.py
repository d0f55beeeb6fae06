"""The processes a benchmark run measures: kube-apiserver + etcd, the local EdgeLB, one controller.

Where it sits: ``bench.scenarios`` asks for a fresh ``Servers`` (a new kube-apiserver and a new
local EdgeLB, so no run sees another's Services, pools or request counters), then starts either
controller on them — ``dklb run`` or ``bench.baseline`` (the Go dklb's algorithm) — as a separate
process, exactly as an operator would. Everything is started on free loopback ports and stopped
by PID; ``ControllerProc.stats()`` reads what the controller says about itself (dklb's /metrics,
the baseline's /stats).
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests
import urllib3

import localcluster
from bench.measure import controller_metrics
from edgelb_local import process as edgelb_process
from localcluster.processes import terminate, wait_for

ROOT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"http listening on (http://\S+)")
STATS = re.compile(r"stats on (http://\S+)")
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


@dataclass
class Servers:
    """A kube-apiserver (with its etcd) and a local EdgeLB (no HAProxy: the API and its metadata)."""

    cluster: localcluster.LocalCluster
    edgelb: subprocess.Popen[str]
    edgelb_url: str
    work: Path

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            terminate(self.edgelb.pid)
            self.edgelb.wait(timeout=10)
        localcluster.stop(self.cluster)


def start_servers(work: Path, *, metadata_delay: str) -> Servers:
    work.mkdir(parents=True, exist_ok=True)
    # One node port per LoadBalancer Service: the default range (2,768 ports) cannot hold 5,000.
    cluster = localcluster.start(apiserver_args=["--service-node-port-range=30000-39999"])
    try:
        with (work / "edgelb.log").open("ab") as log:
            edgelb, url = edgelb_process.start(
                work / "edgelb", extra=["--no-dataplane", "--metadata-delay", metadata_delay], stderr=log
            )
    except BaseException:
        localcluster.stop(cluster)
        raise
    return Servers(cluster=cluster, edgelb=edgelb, edgelb_url=url, work=work)


@dataclass
class ControllerProc:
    """``dklb run`` or the baseline, as a process with its log and its self-reported figures."""

    mode: str  # "dklb" | "baseline"
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ControllerProc:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        module = "engine.cli" if self.mode == "dklb" else "bench.baseline"
        command = [sys.executable, "-m", module, *(["run"] if self.mode == "dklb" else []), *self.args]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
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
        """dklb: its /metrics (a ``bench.measure.Scrape``); the baseline: its /stats JSON."""
        if self.mode == "baseline":
            return requests.get(self.url + "/stats", timeout=10).json()
        return controller_metrics(self.url)


def dklb_controller(servers: Servers, *, resync: str, workers: int = 4) -> ControllerProc:
    return ControllerProc(
        mode="dklb",
        args=[
            "--kubeconfig",
            str(servers.cluster.kubeconfig),
            "--edgelb-url",
            servers.edgelb_url,
            "--database",
            str(servers.work / "dklb.db"),
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
        ],
        log_path=servers.work / "dklb.log",
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
