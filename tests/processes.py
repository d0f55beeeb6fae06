"""Processes the integration and end-to-end tests run for real, and how to wait on them.

``dklb edgelb-local`` and ``dklb run`` are started as the operator would start them, on free
loopback ports, and stopped by PID. ``wait_for`` polls a condition until a deadline: tests wait
on what they need to be true, never for a fixed time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
from prometheus_client.parser import text_string_to_metric_families

from edgelb_local import process as edgelb_process
from localcluster import processes
from localcluster.processes import alive

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    return processes.wait_for(condition, timeout=timeout, interval=interval, what=what, error=AssertionError)


Samples = dict[str, list[Any]]


def scrape(url: str, **headers: str) -> Samples:
    """A Prometheus endpoint (dklb's or the kube-apiserver's /metrics) as {sample name: [samples]}."""
    # verify=False: the local kube-apiserver's self-signed certificate; a read of counters on loopback.
    answer = requests.get(url, timeout=10, headers=headers, verify=False)
    answer.raise_for_status()
    found: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (0 when there is none)."""
    return float(sum(s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()))


@dataclass
class EdgeLBProcess:
    proc: subprocess.Popen[str]
    url: str
    state_dir: Path

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the local EdgeLB did not stop within 30 s of SIGTERM") from None

    def stop_haproxies(self) -> None:
        """HAProxy masters left behind by a SIGKILLed API, stopped by PID."""
        for pid_file in self.state_dir.glob("haproxy/*/haproxy.pid"):
            pid = int(pid_file.read_text().split()[0])
            if alive(pid):
                os.kill(pid, signal.SIGTERM)


def start_edgelb(
    state_dir: Path, *, extra: Iterable[str] = (), log_path: Path | None = None, listen: str = "127.0.0.1:0"
) -> EdgeLBProcess:
    """``dklb edgelb-local`` on a free loopback port; its request log goes to ``log_path`` if given."""
    if log_path is None:
        proc, url = edgelb_process.start(state_dir, extra=extra, listen=listen)
    else:
        with log_path.open("ab") as log:
            proc, url = edgelb_process.start(state_dir, extra=extra, listen=listen, stderr=log)
    return EdgeLBProcess(proc=proc, url=url, state_dir=state_dir)


@dataclass
class ControllerProcess:
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    # A working directory of its own (a replica on another "node"); the repository by default.
    cwd: Path | None = None

    def start(self) -> ControllerProcess:
        env = {**os.environ, **self.env}
        if self.cwd is not None:
            self.cwd.mkdir(parents=True, exist_ok=True)
            # The package is found from the repository, wherever the process runs.
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", *self.args],
            cwd=self.cwd or ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # Never leave it running: it would go on acting on the shared cluster in later tests.
            proc.kill()
            proc.wait()
            raise AssertionError("dklb run did not stop within 30 s of SIGTERM") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def controller_args(*, kubeconfig: Path, edgelb_url: str, database: Path | str, **flags: Any) -> list[str]:
    args = [
        "--kubeconfig",
        str(kubeconfig),
        "--edgelb-url",
        edgelb_url,
        "--database",
        str(database),
        "--leader-elect",
        "false",
        "--log-level",
        "debug",
    ]
    for name, value in flags.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args
