"""`dklb edgelb-local` as the demo and the end-to-end tests run it: a process, real HAProxy, redis.

A dklb-shaped pool (built by dklb's own translation, the backend selecting kube-node-* tasks)
is created through dklb's EdgeLB client; `SET foo bar` / `GET foo` go through the pool's
frontend to a real redis-server. The API process is then SIGKILLed: HAProxy keeps serving; a
new API process on the same state directory adopts the same HAProxy master and the pool. A
SIGTERM stops the API and every HAProxy it started.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.edgelb.client import EdgeLBClient
from engine.edgelb.errors import Invalid, Unavailable
from engine.model.config import PoolConfig
from engine.model.translation import ServicePort, new_pool, service_objects
from tests.integration.conftest import RedisServer, free_port
from tests.processes import EdgeLBProcess, alive, start_edgelb, wait_for

ROOT = Path(__file__).resolve().parents[2]


def redis_command(port: int, *args: str) -> bytes:
    payload = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(1024)


def metadata_port(client: EdgeLBClient, pool: str) -> int | None:
    try:
        metadata = client.get_metadata(pool)
    except Unavailable:
        return None
    return int(metadata["frontends"][0]["endpoints"][0]["port"])


@pytest.fixture
def edgelb(tmp_path: Path) -> Iterator[tuple[Path, list[EdgeLBProcess]]]:
    processes: list[EdgeLBProcess] = []
    yield tmp_path / "edgelb", processes
    for p in processes:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
            p.proc.wait(timeout=30)
    # A SIGKILLed API leaves its HAProxy masters behind on purpose; stop them by PID.
    for pid_file in (tmp_path / "edgelb").glob("haproxy/*/haproxy.pid"):
        pid = int(pid_file.read_text().split()[0])
        if alive(pid):
            os.kill(pid, signal.SIGTERM)


def test_redis_through_a_dklb_pool_survives_an_api_crash_and_stops_cleanly(
    edgelb: tuple[Path, list[EdgeLBProcess]], redis_server: RedisServer
) -> None:
    state_dir, processes = edgelb
    first = start_edgelb(state_dir)
    processes.append(first)
    client = EdgeLBClient(first.url)

    frontend_port = free_port()
    config = PoolConfig(
        name="dklb-redis", role="slave_public", network="", cpus=0.1, memory=128, size=1, frontends=()
    )
    frontends, backends = service_objects(
        cluster="kubernetes-cluster",
        namespace="default",
        service="redis",
        ports=[ServicePort(port=6379, node_port=redis_server.port)],
        bind_ports={6379: frontend_port},
    )
    client.create_pool(
        new_pool(
            settings=config,
            pool_group="dcos-edgelb/pools",
            frontends=frontends,
            backends=backends,
        )
    )
    assert wait_for(lambda: metadata_port(client, "dklb-redis")) == frontend_port
    assert redis_command(frontend_port, "SET", "foo", "bar") == b"+OK\r\n"
    assert redis_command(frontend_port, "GET", "foo") == b"$3\r\nbar\r\n"
    assert "kubernetes-cluster:default:redis:6379" in client.get_lbconfig("dklb-redis")

    master = int((state_dir / "haproxy" / "dklb-redis" / "haproxy.pid").read_text().split()[0])
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    assert redis_command(frontend_port, "GET", "foo") == b"$3\r\nbar\r\n", "HAProxy serves without the API"

    second = start_edgelb(state_dir)
    processes.append(second)
    client = EdgeLBClient(second.url)
    assert [p["name"] for p in client.list_pools()] == ["dklb-redis"]
    assert wait_for(lambda: metadata_port(client, "dklb-redis")) == frontend_port
    assert int((state_dir / "haproxy" / "dklb-redis" / "haproxy.pid").read_text().split()[0]) == master
    assert redis_command(frontend_port, "GET", "foo") == b"$3\r\nbar\r\n"

    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(timeout=30) == 0
    wait_for(lambda: not alive(master))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", frontend_port), timeout=2).close()


def test_twenty_puts_drop_no_connection_and_a_refused_put_keeps_the_pool_serving(
    edgelb: tuple[Path, list[EdgeLBProcess]], redis_server: RedisServer
) -> None:
    state_dir, processes = edgelb
    api = start_edgelb(state_dir)
    processes.append(api)
    client = EdgeLBClient(api.url)
    frontend_port = free_port()
    frontends, backends = service_objects(
        cluster="kubernetes-cluster",
        namespace="default",
        service="redis",
        ports=[ServicePort(port=6379, node_port=redis_server.port)],
        bind_ports={6379: frontend_port},
    )
    config = PoolConfig(
        name="reload", role="slave_public", network="", cpus=0.1, memory=128, size=1, frontends=()
    )
    pool = new_pool(settings=config, pool_group="dcos-edgelb/pools", frontends=frontends, backends=backends)
    client.create_pool(pool)
    wait_for(lambda: metadata_port(client, "reload"))

    stop = threading.Event()
    outcomes = {"ok": 0, "failed": 0}

    def ping_forever() -> None:
        while not stop.is_set():
            try:
                ok = redis_command(frontend_port, "PING") == b"+PONG\r\n"
            except OSError:
                ok = False
            outcomes["ok" if ok else "failed"] += 1

    pinger = threading.Thread(target=ping_forever)
    pinger.start()
    try:
        wait_for(lambda: outcomes["ok"] > 0)
        for i in range(20):
            pool["haproxy"]["backends"][0]["balance"] = "roundrobin" if i % 2 else "leastconn"
            pool["cpus"] = 0.1 + i / 100
            client.update_pool(pool)
        before = outcomes["ok"]
        wait_for(lambda: outcomes["ok"] > before)
    finally:
        stop.set()
        pinger.join(timeout=30)
    assert outcomes["failed"] == 0, outcomes
    assert outcomes["ok"] > 20, outcomes

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        refused = {**pool, "haproxy": {**pool["haproxy"], "frontends": [{**frontends[0], "bindPort": taken}]}}
        with pytest.raises(Invalid) as invalid:
            client.update_pool(refused)
        assert str(taken) in str(invalid.value)
    assert client.get_pool("reload")["haproxy"]["frontends"][0]["bindPort"] == frontend_port
    assert redis_command(frontend_port, "PING") == b"+PONG\r\n", "the refused change left the pool serving"
