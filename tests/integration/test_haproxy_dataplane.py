"""HAProxyDataplane with real HAProxy masters and a real redis-server behind them.

What is proven: traffic flows through a pool (redis SET/GET via the frontend), hot reloads drop no
connection (a client opening a new connection per request during 20 re-applies), a refused change
leaves the old configuration serving, dynamic ports are stable across re-applies and restarts, a
server that was SIGKILLed has its masters adopted (same PID, no reload), and stopping leaves no
HAProxy process behind. Every wait polls a condition with a deadline; every process a test starts
is stopped by PID in a finalizer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import pytest

from edgelb_local.dataplane import DataplaneError, Running
from edgelb_local.haproxy import HAProxyDataplane
from tests.integration.conftest import RedisServer, free_port, wait_accepting
from tests.processes import wait_for

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "kubernetes-cluster"
REDIS = f"{CLUSTER}:default:redis:6379"  # dklb's object names: ':' in section names
SECOND = f"{CLUSTER}:default:redis:6380"
AGENTS = {"kube-node-0": "127.0.0.1", "kube-node-1": "127.0.0.1", "etcd-0": "127.0.0.9"}

T = TypeVar("T")


# -- processes ---------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"  # a zombie has exited


def haproxy_pids(state_dir: Path) -> set[int]:
    """Live HAProxy processes (masters and workers) running a configuration under state_dir."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "-W" in args and any(a.startswith(str(state_dir)) for a in args) and alive(int(entry)):
            found.add(int(entry))
    return found


def master_pid(state_dir: Path, pool: str) -> int:
    return int((state_dir / "haproxy" / pool / "haproxy.pid").read_text().split()[0])


def workers_of(state_dir: Path, master: int) -> set[int]:
    workers = set()
    for pid in haproxy_pids(state_dir):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == master:
            workers.add(pid)
    return workers


def kill_all(state_dir: Path) -> None:
    """Last resort of the finalizers: SIGKILL, by PID, whatever still runs on our files."""
    for pid in haproxy_pids(state_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not haproxy_pids(state_dir), what="leftover HAProxy processes to die")


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    kill_all(path)


@pytest.fixture
def dataplane(state_dir: Path) -> Iterator[HAProxyDataplane]:
    dp = HAProxyDataplane(state_dir=state_dir, agents=AGENTS)
    yield dp
    dp.stop_all()


# -- traffic -----------------------------------------------------------------------------------


def redis_command(port: int, *args: str, timeout: float = 5.0) -> str | None:
    """One command on a NEW connection, RESP spoken directly; raises on any failure."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload.encode())
        reply = sock.makefile("rb")
        line = reply.readline()
        if line.startswith(b"$"):
            size = int(line[1:])
            return None if size < 0 else reply.read(size + 2)[:-2].decode()
        if line[:1] in (b"+", b":"):
            return line[1:].strip().decode()
        raise ConnectionError(f"unexpected reply {line!r}")


def redis_cli(port: int, *args: str) -> str:
    if shutil.which("redis-cli") is None:
        return str(redis_command(port, *args))
    result = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout.strip()


class Ports(TypedDict):
    """The ports ``pool`` needs: where redis listens, where the frontend binds."""

    redis_port: int
    bind_port: int


class PoolOptions(TypedDict, total=False):
    """The rest of ``pool``'s arguments."""

    balance: str
    pattern: str
    check: bool
    second_frontend_port: int | None
    default_backend: str


def pool(
    name: str,
    *,
    redis_port: int,
    bind_port: int,
    balance: str = "leastconn",
    pattern: str = "^kube-node-0$",
    check: bool = True,
    second_frontend_port: int | None = None,
    default_backend: str = REDIS,
) -> dict[str, Any]:
    """A pool shaped as dklb makes it (mesos selector, CONTAINER_IP endpoint on the node port)."""
    frontends = [
        {
            "name": REDIS,
            "bindAddress": "0.0.0.0",
            "bindPort": bind_port,
            "protocol": "TCP",
            "linkBackend": {"defaultBackend": default_backend},
        }
    ]
    if second_frontend_port is not None:
        frontends.append(
            {
                "name": SECOND,
                "bindAddress": "0.0.0.0",
                "bindPort": second_frontend_port,
                "protocol": "TCP",
                "linkBackend": {"defaultBackend": REDIS},
            }
        )
    return {
        "name": name,
        "haproxy": {
            "stats": {"bindPort": 0},
            "frontends": frontends,
            "backends": [
                {
                    "name": REDIS,
                    "protocol": "TCP",
                    "balance": balance,
                    "services": [
                        {
                            "mesos": {"frameworkName": CLUSTER, "taskNamePattern": pattern},
                            "endpoint": {
                                "type": "CONTAINER_IP",
                                "port": redis_port,
                                "check": {"enabled": check},
                            },
                        }
                    ],
                }
            ],
        },
    }


# -- 1. traffic --------------------------------------------------------------------------------


def test_redis_traffic_flows_through_the_pool(
    dataplane: HAProxyDataplane, redis_server: RedisServer, state_dir: Path
) -> None:
    port = free_port()
    running = dataplane.apply(pool("dklb-redis", redis_port=redis_server.port, bind_port=port))

    assert running.frontends == {REDIS: port}
    assert running.stats_port > 0 and running.stats_port != port
    assert redis_cli(port, "SET", "foo", "bar") == "OK"
    assert redis_cli(port, "GET", "foo") == "bar"
    # The stats listener answers EdgeLB's health check URI.
    with urllib.request.urlopen(
        f"http://127.0.0.1:{running.stats_port}/_haproxy_health_check", timeout=5
    ) as r:
        assert r.status == 200
    assert dataplane.status("dklb-redis") == running
    cfg = dataplane.lbconfig("dklb-redis")
    assert f"frontend {REDIS}" in cfg and f"127.0.0.1:{port}" in cfg
    assert f"server kube-node-0:{redis_server.port} 127.0.0.1:{redis_server.port} check" in cfg
    assert (state_dir / "haproxy" / "dklb-redis" / "haproxy.cfg").read_text() == cfg


# -- 2. seamless reloads -----------------------------------------------------------------------


class Client(threading.Thread):
    """PING through the frontend, a new TCP connection per request, until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                reply = redis_command(self.port, "PING")
                if reply != "PONG":
                    raise ConnectionError(f"reply {reply!r}")
                self.ok += 1
            except OSError as exc:
                self.failures.append(repr(exc))

    @property
    def requests(self) -> int:
        return self.ok + len(self.failures)


def test_reloads_drop_no_connection(
    dataplane: HAProxyDataplane, redis_server: RedisServer, state_dir: Path
) -> None:
    port = free_port()
    base: Ports = {"redis_port": redis_server.port, "bind_port": port}
    first = dataplane.apply(pool("reloads", **base))
    master = master_pid(state_dir, "reloads")
    variants: list[PoolOptions] = [
        {"balance": "roundrobin"},  # balance toggled
        {"pattern": "^kube-node-.*$"},  # a second server (kube-node-1)
        {"second_frontend_port": 0},  # a second frontend, dynamic port
        {"check": False},  # health checks off
    ]
    client = Client(port)
    client.start()
    try:
        wait_for(lambda: client.ok > 0, what="the client's first request")
        before = client.requests
        previous = first
        during: list[int] = []
        for i in range(20):
            started = client.requests
            running = dataplane.apply(pool("reloads", **base, **variants[i % len(variants)]))
            during.append(client.requests - started)
            assert running.since > previous.since  # a new configuration started serving
            assert running.frontends[REDIS] == port
            previous = running
        made = client.requests - before
    finally:
        client.stopping.set()
        client.join(timeout=10)

    print(f"\nreload test: 20 reloads, {made} requests (new connection each), {len(client.failures)} failed")
    assert client.failures == []
    assert made > 20 and sum(1 for n in during if n > 0) >= 15  # requests really overlapped the reloads
    assert master_pid(state_dir, "reloads") == master  # reloaded in place, never restarted
    # Old workers finish their (short) connections and leave: one master, one worker.
    wait_for(lambda: len(workers_of(state_dir, master)) == 1, what="old workers to exit")


# -- 3. refused changes ------------------------------------------------------------------------


def test_refused_change_keeps_the_old_configuration_serving(
    dataplane: HAProxyDataplane, redis_server: RedisServer, state_dir: Path
) -> None:
    port = free_port()
    good = pool("refused", redis_port=redis_server.port, bind_port=port)
    running = dataplane.apply(good)
    cfg = dataplane.lbconfig("refused")
    master = master_pid(state_dir, "refused")
    workers = workers_of(state_dir, master)

    def still_serving() -> None:
        assert redis_command(port, "PING") == "PONG"
        assert dataplane.status("refused") == running
        assert dataplane.lbconfig("refused") == cfg
        assert master_pid(state_dir, "refused") == master
        assert workers_of(state_dir, master) == workers  # not even reloaded

    # A port another process listens on: refused before HAProxy is touched.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        held = holder.getsockname()[1]
        with pytest.raises(DataplaneError, match=f"{SECOND} cannot bind 127.0.0.1:{held}.*already in use"):
            dataplane.apply(pool("refused", **_ports(redis_server, port), second_frontend_port=held))
        still_serving()

    # What `haproxy -c` refuses comes back with HAProxy's own words.
    with pytest.raises(DataplaneError, match=r"HAProxy refused the configuration: .*balance only supports"):
        dataplane.apply(pool("refused", **_ports(redis_server, port), balance="bogus"))
    still_serving()
    with pytest.raises(DataplaneError, match="unable to find required default_backend: 'missing'"):
        dataplane.apply(pool("refused", **_ports(redis_server, port), default_backend="missing"))
    still_serving()
    # Not a safe config token at all: refused by the renderer.
    with pytest.raises(DataplaneError, match="balance"):
        dataplane.apply(pool("refused", **_ports(redis_server, port), balance="roundrobin\n  bind :1"))
    still_serving()

    # The same static port as another pool of ours.
    with pytest.raises(DataplaneError, match=f"cannot bind port {port}: .*already in use by pool refused"):
        dataplane.apply(pool("other", redis_port=redis_server.port, bind_port=port))
    assert dataplane.status("other") is None
    still_serving()


def _ports(redis: RedisServer, port: int) -> Ports:
    return {"redis_port": redis.port, "bind_port": port}


# -- 4. dynamic ports --------------------------------------------------------------------------


def test_dynamic_port_is_stable_across_reapply_and_restart(
    dataplane: HAProxyDataplane, redis_server: RedisServer, state_dir: Path
) -> None:
    dynamic = pool("dynamic", redis_port=redis_server.port, bind_port=0)
    first = dataplane.apply(dynamic)
    port = first.frontends[REDIS]
    assert port > 0
    assert redis_command(port, "PING") == "PONG"
    ports_file = json.loads((state_dir / "haproxy" / "dynamic" / "ports.json").read_text())
    assert ports_file == {"frontends": {REDIS: port}, "stats": first.stats_port}

    changed = dataplane.apply(
        pool("dynamic", redis_port=redis_server.port, bind_port=0, balance="roundrobin")
    )
    assert changed.frontends == first.frontends and changed.stats_port == first.stats_port

    # A new dataplane on the same state directory (the server restarted; the master still runs).
    again = HAProxyDataplane(state_dir=state_dir, agents=AGENTS)
    again.recover([dynamic])
    recovered = again.status("dynamic")
    assert recovered is not None and recovered.frontends == first.frontends
    assert recovered.stats_port == first.stats_port

    # Everything stopped, then a restart: a new master, the same ports.
    again.stop_all()
    assert again.status("dynamic") is None
    restarted = HAProxyDataplane(state_dir=state_dir, agents=AGENTS)
    restarted.recover([dynamic])
    try:
        running = restarted.status("dynamic")
        assert running is not None and running.frontends == first.frontends
        assert running.stats_port == first.stats_port
        assert redis_command(port, "PING") == "PONG"
    finally:
        restarted.stop_all()


# -- 5. recover after a SIGKILLed server -------------------------------------------------------

_SERVER = """
import json, sys
from pathlib import Path
from edgelb_local.haproxy import HAProxyDataplane

dp = HAProxyDataplane(state_dir=Path(sys.argv[1]), agents=json.loads(sys.argv[2]))
running = dp.apply(json.loads(sys.argv[3]))
print(json.dumps(running.__dict__), flush=True)
sys.stdin.read()  # until killed
"""


def test_recover_adopts_masters_of_a_killed_server(redis_server: RedisServer, state_dir: Path) -> None:
    port = free_port()
    wanted = pool("adopted", redis_port=redis_server.port, bind_port=port)
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(state_dir), json.dumps(AGENTS), json.dumps(wanted)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline() if server.stdout else ""
        assert line, "the server process did not report its pool"
        before = Running(**json.loads(line))
    finally:
        os.kill(server.pid, signal.SIGKILL)  # no stop_all: the masters are orphaned
        server.wait(timeout=10)
        if server.stdin:
            server.stdin.close()
        if server.stdout:
            server.stdout.close()
    master = master_pid(state_dir, "adopted")
    workers = workers_of(state_dir, master)
    assert alive(master) and workers
    assert redis_command(port, "PING") == "PONG"

    dp = HAProxyDataplane(state_dir=state_dir, agents=AGENTS)
    try:
        dp.recover([wanted])
        assert dp.status("adopted") == before  # same ports, same `since`: adopted as it runs
        assert master_pid(state_dir, "adopted") == master
        assert workers_of(state_dir, master) == workers  # not even reloaded
        assert redis_cli(port, "SET", "k", "v") == "OK" and redis_cli(port, "GET", "k") == "v"

        # An adopted master is reloaded in place when the stored pool differs from what it serves.
        changed = pool("adopted", redis_port=redis_server.port, bind_port=port, balance="roundrobin")
        dp.recover([changed])
        running = dp.status("adopted")
        assert running is not None and running.since > before.since
        assert master_pid(state_dir, "adopted") == master
        assert redis_command(port, "PING") == "PONG"

        # A pool that is no longer known is stopped and forgotten.
        dp.recover([])
        wait_for(lambda: not alive(master), what="the master to stop")
        assert not haproxy_pids(state_dir)
        assert not (state_dir / "haproxy" / "adopted").exists()
        assert dp.status("adopted") is None
    finally:
        dp.stop_all()


# -- 6. stopping -------------------------------------------------------------------------------


def test_stop_all_and_remove_leave_no_process(
    dataplane: HAProxyDataplane, redis_server: RedisServer, state_dir: Path
) -> None:
    a, b = free_port(), free_port()
    dataplane.apply(pool("pool-a", redis_port=redis_server.port, bind_port=a))
    dataplane.apply(pool("pool-b", redis_port=redis_server.port, bind_port=b))
    pids = haproxy_pids(state_dir)
    masters = {master_pid(state_dir, "pool-a"), master_pid(state_dir, "pool-b")}
    assert masters < pids and len(pids) == 4  # two masters, one worker each

    dataplane.stop_all()
    assert not any(alive(pid) for pid in pids)
    assert dataplane.status("pool-a") is None and dataplane.status("pool-b") is None

    # Up again (recover starts what is not running), then removed one by one.
    pools = [pool(n, redis_port=redis_server.port, bind_port=p) for n, p in (("pool-a", a), ("pool-b", b))]
    dataplane.recover(pools)
    wait_accepting(a)
    master_a = master_pid(state_dir, "pool-a")
    pids_a = {master_a, *workers_of(state_dir, master_a)}
    dataplane.remove("pool-a")
    assert not any(alive(pid) for pid in pids_a)
    assert not (state_dir / "haproxy" / "pool-a").exists()
    assert dataplane.status("pool-a") is None
    assert redis_command(b, "PING") == "PONG"  # the other pool is untouched
    dataplane.remove("pool-b")
    assert not haproxy_pids(state_dir)
    dataplane.remove("pool-b")  # unknown by now: nothing to do


def test_backend_without_servers_still_runs(dataplane: HAProxyDataplane, redis_server: RedisServer) -> None:
    """No agent matches: the pool still runs (connections to it are closed); then it matches."""
    port = free_port()
    empty = dataplane.apply(pool("empty", redis_port=redis_server.port, bind_port=port, pattern="^nothing$"))
    assert empty.frontends == {REDIS: port}
    assert "\n    server " not in dataplane.lbconfig("empty")
    with pytest.raises(OSError):
        redis_command(port, "PING", timeout=5)
    dataplane.apply(pool("empty", redis_port=redis_server.port, bind_port=port))
    assert redis_command(port, "PING") == "PONG"


def test_concurrent_pools_cannot_share_a_static_port(
    dataplane: HAProxyDataplane, redis_server: RedisServer
) -> None:
    """Port checks and claims are atomic across pools: of two pools racing for one port, one wins."""
    port = free_port()
    outcomes: dict[str, Running | DataplaneError] = {}

    def apply(name: str) -> None:
        try:
            outcomes[name] = dataplane.apply(pool(name, redis_port=redis_server.port, bind_port=port))
        except DataplaneError as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=apply, args=(name,)) for name in ("race-a", "race-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    errors = [o for o in outcomes.values() if isinstance(o, DataplaneError)]
    assert len(outcomes) == 2 and len(errors) == 1, outcomes
    assert "already in use" in str(errors[0])
    assert redis_command(port, "PING") == "PONG"


def test_unknown_and_invalid_pool_names(dataplane: HAProxyDataplane) -> None:
    assert dataplane.status("nothing-here") is None
    assert dataplane.lbconfig("nothing-here").startswith("#")
    dataplane.remove("nothing-here")
    assert dataplane.status("../etc") is None
    dataplane.remove("../etc")
    with pytest.raises(DataplaneError, match="invalid pool name"):
        dataplane.apply({"name": "../etc", "haproxy": {}})
