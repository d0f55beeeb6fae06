"""Generic fixtures of the integration tests: free loopback ports and a throwaway redis-server.

Nothing here knows about EdgeLB: a test that needs "a real TCP service on 127.0.0.1" gets one.
Processes are started by these fixtures and stopped by their PID, waiting on conditions with
deadlines (never a fixed sleep).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_accepting(port: int, *, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@dataclass(frozen=True)
class RedisServer:
    port: int
    pid: int


@contextlib.contextmanager
def start_redis(directory: Path, *, port: int | None = None) -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1:<port, or a free one>, persistence off, stopped by PID on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `./dev test` installs it (apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    port = port if port is not None else free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_accepting(port)
        yield RedisServer(port=port, pid=proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with start_redis(tmp_path / "redis") as server:
        yield server


def redis_ping(port: int) -> bool:
    """True when a redis server answers PING on 127.0.0.1:``port`` (directly or through HAProxy)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64) == b"+PONG\r\n"
    except OSError:
        return False
