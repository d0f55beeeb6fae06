"""The local EdgeLB's HTTP API against the contract of shared/edgelb-api.md, over real HTTP.

Servers run in-process (``LocalEdgeLB`` on 127.0.0.1 port 0, ``NullDataplane`` or a stub) and are
talked to with plain ``requests``; the CLI runs as a subprocess. Nothing waits with a fixed sleep:
every wait polls a condition with a deadline.
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from edgelb_local.command import configure, run
from edgelb_local.dataplane import DataplaneError, NullDataplane, Running
from edgelb_local.faults import FaultInjector
from edgelb_local.server import LocalEdgeLB
from engine.edgelb.schema import fill_defaults, normalize_pool
from tests.checks import present
from tests.fakes.pools import REDIS, translated_pool
from tests.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 5.0  # every HTTP call: a hung server fails the test instead of hanging it
NOT_READY = {"code": 504, "message": "pool metadata not available yet"}

T = TypeVar("T")


def redis_pool(name: str = "dklb-redis", *, port: int = 16379, **fields: Any) -> dict[str, Any]:
    """A minimal pool: name + haproxy, everything else left to the server's defaults."""
    return {
        "name": name,
        "haproxy": {
            "frontends": [{"bindPort": port, "protocol": "TCP", "linkBackend": {"defaultBackend": "redis"}}],
            "backends": [
                {
                    "name": "redis",
                    "protocol": "TCP",
                    "services": [{"endpoint": {"type": "ADDRESS", "address": "127.0.0.1", "port": 32213}}],
                }
            ],
        },
        **fields,
    }


def cloud_pool(name: str = "dklb-cloud") -> dict[str, Any]:
    """The pool dklb itself builds for a Service with a cloud-provider annotation (dynamic ports)."""
    cloud: dict[str, Any] = {
        "aws": {
            "elbs": [
                {
                    "name": "dklb-cloud-elb",
                    "type": "NLB",
                    "internal": False,
                    "subnets": ["subnet-0123"],
                    "listeners": [{"port": 6379, "linkFrontend": "FRONTEND"}],
                }
            ]
        }
    }
    cloud["aws"]["elbs"][0]["listeners"][0]["linkFrontend"] = REDIS
    return translated_pool(name, bind_port=0, cloud=cloud)


class RefusingDataplane(NullDataplane):
    """Refuses pools whose first frontend carries the misc string "refuse-me", like a failed
    ``haproxy -c``; records recover/stop calls."""

    def __init__(self) -> None:
        super().__init__()
        self.recovered: list[list[str]] = []
        self.stopped = 0

    def apply(self, pool: dict[str, Any]) -> Running:
        for fe in pool["haproxy"]["frontends"]:
            if "refuse-me" in fe.get("miscStrs", []):
                raise DataplaneError(
                    "haproxy -c: [ALERT] parsing [haproxy.cfg:42]: unknown keyword 'refuse-me'"
                )
        return super().apply(pool)

    def recover(self, pools: Any) -> None:
        pools = list(pools)
        self.recovered.append([pool["name"] for pool in pools])
        super().recover(pools)

    def stop_all(self) -> None:
        self.stopped += 1
        super().stop_all()


class DownDataplane(NullDataplane):
    """Applies pools but never reports them running (HAProxy not up yet)."""

    def status(self, name: str) -> Running | None:
        return None


class SlowDataplane(NullDataplane):
    """Counts how many applies run at once (the API must serialize writes)."""

    def __init__(self) -> None:
        super().__init__()
        self._count_lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def apply(self, pool: dict[str, Any]) -> Running:
        with self._count_lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(0.01)  # widens the window in which an unserialized second writer would overlap
            return super().apply(pool)
        finally:
            with self._count_lock:
                self.active -= 1


class Server:
    def __init__(self, edgelb: LocalEdgeLB, dataplane: NullDataplane, state_dir: Path) -> None:
        self.edgelb = edgelb
        self.dataplane = dataplane
        self.state_dir = state_dir
        host, port = edgelb.address
        self.url = f"http://{host}:{port}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=TIMEOUT, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=TIMEOUT, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return requests.put(self.url + path, timeout=TIMEOUT, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return requests.delete(self.url + path, timeout=TIMEOUT, **kw)


StartServer = Callable[..., Server]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartServer]:
    started: list[LocalEdgeLB] = []

    def _start(*, dataplane: NullDataplane | None = None, state_dir: Path | None = None, **kw: Any) -> Server:
        dataplane = dataplane if dataplane is not None else NullDataplane()
        state_dir = state_dir or tmp_path / "state"
        edgelb = LocalEdgeLB(state_dir=state_dir, dataplane=dataplane, **kw)
        edgelb.serve("127.0.0.1", 0)
        started.append(edgelb)
        return Server(edgelb, dataplane, state_dir)

    yield _start
    for edgelb in started:
        edgelb.shutdown()


@pytest.fixture
def server(start: StartServer) -> Server:
    return start()


def assert_error(
    response: requests.Response, status: int, message: str | None = None, *, code: int | None = None
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message"}
    assert body["code"] == (status if code is None else code)
    assert isinstance(body["message"], str) and body["message"]
    if message is not None:
        assert body["message"] == message


# -- plain routes -----------------------------------------------------------------------------------


def test_ping_and_version(server: Server) -> None:
    ping = server.get("/ping")
    assert (ping.status_code, ping.text) == (200, "pong")
    assert ping.headers["Content-Type"].startswith("text/plain")
    version = server.get("/version")
    assert (version.status_code, version.text) == (200, "v1.5.1-local")


def test_version_is_configurable(start: StartServer) -> None:
    assert start(version="v1.9.0-test").get("/version").text == "v1.9.0-test"


# -- pools CRUD -------------------------------------------------------------------------------------


def test_create_get_list_config_delete(server: Server) -> None:
    assert server.get("/v2/pools").json() == []
    assert server.get("/v2/config").json() == {"pools": []}

    created = server.post("/v2/pools", json=redis_pool())
    assert created.status_code == 200
    assert created.json() == fill_defaults(redis_pool())
    other = server.post("/v2/pools", json=redis_pool("another", port=16380))
    assert other.status_code == 200

    assert server.get("/v2/pools/dklb-redis").json() == created.json()
    assert [p["name"] for p in server.get("/v2/pools").json()] == ["another", "dklb-redis"]
    assert server.get("/v2/config").json() == {"pools": server.get("/v2/pools").json()}

    deleted = server.delete("/v2/pools/dklb-redis")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert_error(server.get("/v2/pools/dklb-redis"), 404)
    assert [p["name"] for p in server.get("/v2/pools").json()] == ["another"]
    assert server.dataplane.status("dklb-redis") is None  # the dataplane forgot it too


def test_defaults_are_filled_on_return(server: Server) -> None:
    pool = server.post("/v2/pools", json=redis_pool()).json()
    assert pool["apiVersion"] == "V2"
    assert pool["namespace"] == "dcos-edgelb/pools"
    assert (pool["packageName"], pool["packageVersion"]) == ("edgelb-pool", "v1.5.1")
    assert pool["role"] == "slave_public"
    assert pool["cpus"] == 0.9
    assert (pool["mem"], pool["disk"], pool["count"]) == (992, 256, 1)
    assert pool["constraints"] == "hostname:UNIQUE"
    assert (pool["secrets"], pool["virtualNetworks"]) == ([], [])
    assert "environmentVariables" not in pool and "autoCertificate" not in pool  # omitempty
    assert pool["haproxy"]["stats"] == {"bindAddress": "0.0.0.0", "bindPort": 9090}
    frontend = pool["haproxy"]["frontends"][0]
    assert frontend["bindAddress"] == "0.0.0.0"
    assert "name" not in frontend  # EdgeLB computes frontend_<address>_<port> where it needs one
    assert frontend["linkBackend"] == {"defaultBackend": "redis", "map": []}
    backend = pool["haproxy"]["backends"][0]
    assert backend["balance"] == "roundrobin"
    assert backend["services"][0]["endpoint"]["check"] == {"enabled": True}
    # Explicit values are the client's: a set cpus stays.
    assert server.post("/v2/pools", json=redis_pool("small", port=1, cpus=0.1)).json()["cpus"] == 0.1


def test_what_dklb_sends_reads_back_equal_after_normalizing(server: Server) -> None:
    sent = cloud_pool()
    returned = server.post("/v2/pools", json=sent).json()
    assert returned != sent  # the server filled defaults ...
    assert normalize_pool(returned) == normalize_pool(sent)  # ... which normalizing sees through


def test_create_existing_pool_is_409(server: Server) -> None:
    assert server.post("/v2/pools", json=redis_pool()).status_code == 200
    assert_error(server.post("/v2/pools", json=redis_pool(cpus=2.0)), 409, "pool dklb-redis already exists")
    assert server.get("/v2/pools/dklb-redis").json()["cpus"] == 0.9  # the first one stands


def test_put_replaces_the_whole_pool(server: Server) -> None:
    first = redis_pool(cpus=0.5, environmentVariables={"A": "1"}, secrets=[{"secret": "s", "file": "f"}])
    assert server.post("/v2/pools", json=first).status_code == 200
    replacement = redis_pool(port=16400)
    updated = server.put("/v2/pools/dklb-redis", json=replacement)
    assert updated.status_code == 200
    # Not a merge: what the first body set and the second omits is back to the defaults.
    assert updated.json() == fill_defaults(replacement)
    assert server.get("/v2/pools/dklb-redis").json() == fill_defaults(replacement)
    assert present(server.dataplane.status("dklb-redis")).frontends == {"frontend_0.0.0.0_16400": 16400}


def test_put_name_mismatch_is_400(server: Server) -> None:
    server.post("/v2/pools", json=redis_pool())
    response = server.put("/v2/pools/dklb-redis", json=redis_pool("other", cpus=2.0))
    assert_error(response, 400, "pool name in path (dklb-redis) does not match name in body (other)")
    assert server.get("/v2/pools/dklb-redis").json() == fill_defaults(redis_pool())
    assert_error(server.get("/v2/pools/other"), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/pools/nope"),
        ("PUT", "/v2/pools/nope"),
        ("DELETE", "/v2/pools/nope"),
        ("GET", "/v2/pools/nope/metadata"),
        ("GET", "/v2/pools/nope/lbconfig"),
    ],
)
def test_unknown_pool_is_404(server: Server, method: str, path: str) -> None:
    body = redis_pool("nope") if method == "PUT" else None
    response = requests.request(method, server.url + path, json=body, timeout=TIMEOUT)
    assert_error(response, 404, "pool nope not found")


@pytest.mark.parametrize(
    "path", ["/", "/v1/pools", "/v2", "/v2/pools/a/b", "/v2/pools/a/metadata/x", "/pong"]
)
def test_unknown_route_is_404_json(server: Server, path: str) -> None:
    assert_error(server.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/ping", "GET"),
        ("DELETE", "/v2/pools", "GET, POST"),
        ("PUT", "/v2/pools", "GET, POST"),
        ("PATCH", "/v2/pools/dklb-redis", "DELETE, GET, PUT"),
        ("POST", "/v2/pools/dklb-redis", "DELETE, GET, PUT"),
        ("DELETE", "/v2/pools/dklb-redis/metadata", "GET"),
        ("PUT", "/v2/config", "GET"),
    ],
)
def test_wrong_method_is_405_json(server: Server, method: str, path: str, allow: str) -> None:
    server.post("/v2/pools", json=redis_pool())
    response = requests.request(method, server.url + path, json={}, timeout=TIMEOUT)
    assert_error(response, 405)
    assert response.headers["Allow"] == allow
    assert server.get("/v2/pools/dklb-redis").status_code == 200  # nothing deleted or replaced


def test_trailing_slash_and_encoded_names(server: Server) -> None:
    server.post("/v2/pools/", json=redis_pool())
    assert server.get("/v2/pools/dklb-redis/").status_code == 200
    assert server.get("/v2/pools/dklb%2Dredis").status_code == 200


def test_keep_alive_connections_are_reused(server: Server) -> None:
    with requests.Session() as session:
        for i in range(20):
            assert session.post(f"{server.url}/v2/pools", json=redis_pool(f"p{i}", port=i + 1)).ok
            assert session.delete(f"{server.url}/v2/pools/p{i}").status_code == 204
            assert session.get(f"{server.url}/v2/pools", timeout=TIMEOUT).json() == []


# -- dataplane --------------------------------------------------------------------------------------


def test_dataplane_refusal_is_400_and_the_previous_pool_stays(start: StartServer) -> None:
    server = start(dataplane=RefusingDataplane())
    good = server.post("/v2/pools", json=redis_pool()).json()
    running_before = server.dataplane.status("dklb-redis")
    state_before = (server.state_dir / "pools.json").read_bytes()

    bad = redis_pool(cpus=2.0)
    bad["haproxy"]["frontends"][0]["miscStrs"] = ["refuse-me"]
    response = server.put("/v2/pools/dklb-redis", json=bad)
    assert_error(response, 400)
    assert "unknown keyword 'refuse-me'" in response.json()["message"]
    # Nothing stored, and the running pool keeps serving its previous configuration.
    assert server.get("/v2/pools/dklb-redis").json() == good
    assert server.dataplane.status("dklb-redis") == running_before
    assert (server.state_dir / "pools.json").read_bytes() == state_before

    bad["name"] = "new-pool"
    assert_error(server.post("/v2/pools", json=bad), 400)
    assert_error(server.get("/v2/pools/new-pool"), 404)


def test_dataplane_gets_the_pool_with_defaults(start: StartServer) -> None:
    seen: list[dict[str, Any]] = []

    class Recording(NullDataplane):
        def apply(self, pool: dict[str, Any]) -> Running:
            seen.append(pool)
            return super().apply(pool)

    server = start(dataplane=Recording())
    server.post("/v2/pools", json=redis_pool())
    assert seen == [fill_defaults(redis_pool())]


def test_writes_are_serialized(start: StartServer) -> None:
    dataplane = SlowDataplane()
    server = start(dataplane=dataplane)
    results: list[int] = []

    def create(name: str, port: int) -> None:
        results.append(server.post("/v2/pools", json=redis_pool(name, port=port)).status_code)

    threads = [threading.Thread(target=create, args=(f"p{i}", 1000 + i)) for i in range(8)]
    threads += [threading.Thread(target=create, args=("same", 2000)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert dataplane.max_active == 1
    assert sorted(results) == [200] * 9 + [409] * 5
    assert len(server.get("/v2/pools").json()) == 9


def test_lbconfig_is_the_dataplanes_text(server: Server) -> None:
    server.post("/v2/pools", json=redis_pool())
    response = server.get("/v2/pools/dklb-redis/lbconfig")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == server.dataplane.lbconfig("dklb-redis")


# -- metadata ---------------------------------------------------------------------------------------


def test_metadata_is_504_until_the_delay_has_passed_then_reports_real_ports(start: StartServer) -> None:
    delay = 0.3
    server = start(metadata_delay=delay)
    started = time.time()
    assert server.post("/v2/pools", json=redis_pool()).status_code == 200
    early = server.get("/v2/pools/dklb-redis/metadata")
    if time.time() - started < delay:  # on a machine stalled past the delay, 200 would be right
        assert early.status_code == 504
        assert early.json() == NOT_READY

    ready = wait_for(
        lambda: r if (r := server.get("/v2/pools/dklb-redis/metadata")).status_code == 200 else None,
        what="metadata",
    )
    assert time.time() - started >= delay
    running = present(server.dataplane.status("dklb-redis"))
    assert ready.json() == {
        "name": "dklb-redis",
        "frontends": [
            {
                "name": "frontend_0.0.0.0_16379",
                "endpoints": [{"port": 16379, "private": ["127.0.0.1"], "public": ["127.0.0.1"]}],
            }
        ],
        "stats": [{"port": running.stats_port, "private": ["127.0.0.1"], "public": ["127.0.0.1"]}],
    }


def test_a_change_restarts_the_metadata_delay(start: StartServer) -> None:
    server = start(metadata_delay=0.3)
    server.post("/v2/pools", json=redis_pool())
    wait_for(lambda: server.get("/v2/pools/dklb-redis/metadata").status_code == 200, what="metadata")
    changed = time.time()
    server.put("/v2/pools/dklb-redis", json=redis_pool(port=16400))
    early = server.get("/v2/pools/dklb-redis/metadata")
    if time.time() - changed < 0.3:
        assert early.status_code == 504
    ready = wait_for(
        lambda: r if (r := server.get("/v2/pools/dklb-redis/metadata")).status_code == 200 else None,
        what="metadata after the change",
    )
    assert ready.json()["frontends"][0]["endpoints"][0]["port"] == 16400


def test_metadata_is_504_while_the_dataplane_reports_nothing_running(start: StartServer) -> None:
    server = start(dataplane=DownDataplane())
    server.post("/v2/pools", json=redis_pool())
    response = server.get("/v2/pools/dklb-redis/metadata")
    assert response.status_code == 504
    assert response.json() == NOT_READY


def test_metadata_is_504_while_the_dataplane_runs_other_frontends(start: StartServer) -> None:
    class Stale(NullDataplane):
        def status(self, name: str) -> Running | None:
            return Running(frontends={"an-older-frontend": 1234}, stats_port=9090, since=0.0)

    server = start(dataplane=Stale())
    server.post("/v2/pools", json=redis_pool())
    response = server.get("/v2/pools/dklb-redis/metadata")
    assert (response.status_code, response.json()) == (504, NOT_READY)


def test_metadata_reports_the_ports_dynamic_bind_ports_got(server: Server) -> None:
    pool = redis_pool(port=0)
    pool["haproxy"]["stats"] = {"bindPort": 0}
    pool["haproxy"]["frontends"].append(
        {"name": "second", "bindPort": 0, "protocol": "TCP", "linkBackend": {"defaultBackend": "redis"}}
    )
    stored = server.post("/v2/pools", json=pool).json()
    assert stored["haproxy"]["frontends"][0]["bindPort"] == 0  # the pool keeps asking for "dynamic"

    metadata = server.get("/v2/pools/dklb-redis/metadata").json()
    running = present(server.dataplane.status("dklb-redis"))
    ports = {fe["name"]: fe["endpoints"][0]["port"] for fe in metadata["frontends"]}
    assert ports == running.frontends
    assert set(ports) == {"frontend_0.0.0.0_0", "second"}
    assert 0 not in ports.values() and len(set(ports.values())) == 2
    assert metadata["stats"][0]["port"] == running.stats_port != 0

    # A change that keeps the frontends keeps their dynamic ports.
    server.put("/v2/pools/dklb-redis", json={**pool, "cpus": 0.2})
    assert server.get("/v2/pools/dklb-redis/metadata").json() == metadata


def test_cloud_provider_metadata_has_aws_elbs(start: StartServer) -> None:
    server = start(pool_address="10.0.6.38")
    pool = cloud_pool()
    server.post("/v2/pools", json=pool)
    metadata = server.get("/v2/pools/dklb-cloud/metadata").json()
    frontend = pool["haproxy"]["frontends"][0]["name"]
    assert metadata["aws"] == {
        "elbs": [
            {
                "name": "dklb-cloud-elb",
                "dns": "dklb-cloud-elb.elb.edgelb.local",
                "listeners": [{"port": 6379, "linkFrontend": frontend}],
            }
        ]
    }
    endpoint = metadata["frontends"][0]["endpoints"][0]
    assert endpoint["port"] == present(server.dataplane.status("dklb-cloud")).frontends[frontend] != 0
    assert endpoint["private"] == endpoint["public"] == ["10.0.6.38"]
    # A pool without cloudProvider has no aws section.
    server.post("/v2/pools", json=redis_pool())
    assert "aws" not in server.get("/v2/pools/dklb-redis/metadata").json()


# -- restart ----------------------------------------------------------------------------------------


def test_pools_survive_a_restart_of_the_server(start: StartServer) -> None:
    first = start(metadata_delay=0.3)
    first.post("/v2/pools", json=redis_pool())
    first.post("/v2/pools", json=cloud_pool())
    first.put("/v2/pools/dklb-redis", json=redis_pool(cpus=0.2))
    first.post("/v2/pools", json=redis_pool("gone", port=1))
    first.delete("/v2/pools/gone")
    wait_for(lambda: first.get("/v2/pools/dklb-redis/metadata").status_code == 200, what="metadata")
    pools_before = first.get("/v2/pools").json()
    first.edgelb.shutdown(stop_dataplane=False)
    assert [p.name for p in first.state_dir.iterdir()] == ["pools.json"]  # no temporary files left

    dataplane = RefusingDataplane()
    second = start(dataplane=dataplane, state_dir=first.state_dir, metadata_delay=0.3)
    assert second.get("/v2/pools").json() == pools_before
    assert second.get("/v2/pools/dklb-redis").json()["cpus"] == 0.2
    assert dataplane.recovered == [["dklb-cloud", "dklb-redis"]]
    # The configuration did not change across the restart, so its metadata delay has long passed.
    assert second.get("/v2/pools/dklb-redis/metadata").status_code == 200


def test_shutdown_stops_the_dataplane_unless_asked_not_to(start: StartServer) -> None:
    kept, stopped = RefusingDataplane(), RefusingDataplane()
    server_a = start(dataplane=kept)
    server_a.edgelb.shutdown(stop_dataplane=False)
    server_b = start(dataplane=stopped)
    server_b.edgelb.shutdown()
    server_b.edgelb.shutdown()  # idempotent
    assert (kept.stopped, stopped.stopped) == (0, 1)
    with pytest.raises(requests.ConnectionError):
        requests.get(server_b.url + "/ping", timeout=TIMEOUT)


# -- faults through the server ----------------------------------------------------------------------


def test_injected_5xx_on_post_stores_nothing(start: StartServer) -> None:
    server = start(faults=FaultInjector.parse(["POST /v2/pools:5xx=1"], seed=1))
    response = server.post("/v2/pools", json=redis_pool())
    assert_error(response, 503, "injected fault")
    assert server.get("/v2/pools").json() == []  # GETs are not selected
    assert server.dataplane.status("dklb-redis") is None
    assert present(server.edgelb.faults).counts()["5xx"] == 1


def test_injected_reset_is_a_connection_error(start: StartServer) -> None:
    server = start(faults=FaultInjector.parse(["POST /v2/pools:reset=1"], seed=1))
    with pytest.raises(requests.ConnectionError):
        server.post("/v2/pools", json=redis_pool())
    assert server.get("/v2/pools").json() == []
    assert present(server.edgelb.faults).counts()["reset"] == 1


def test_injected_timeout_holds_the_request(start: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgelb_local")
    server = start(faults=FaultInjector.parse(["POST /v2/pools:timeout=1,hold=500ms"], seed=1))
    with pytest.raises(requests.ReadTimeout):
        requests.post(server.url + "/v2/pools", json=redis_pool(), timeout=(TIMEOUT, 0.2))
    # The hold is bounded: the server lets go after 0.5 s, and the held write changed nothing.
    wait_for(lambda: any("POST /v2/pools timeout" in r.getMessage() for r in caplog.records), what="release")
    assert server.get("/v2/pools").json() == []
    assert present(server.edgelb.faults).counts()["timeout"] == 1


def test_injected_latency_is_added(start: StartServer) -> None:
    server = start(faults=FaultInjector.parse(["GET /ping:latency=300ms"], seed=1))
    began = time.monotonic()
    assert server.get("/ping").text == "pong"
    assert time.monotonic() - began >= 0.3
    assert server.get("/version").status_code == 200
    assert present(server.edgelb.faults).counts()["latency"] == 1


def test_partial_5xx_is_seeded_and_only_faulted_writes_are_lost(start: StartServer) -> None:
    server = start(faults=FaultInjector.parse(["POST /v2/pools:5xx=0.5"], seed=42))
    statuses = {}
    for i in range(40):
        statuses[f"p{i}"] = server.post("/v2/pools", json=redis_pool(f"p{i}", port=i + 1)).status_code
    assert set(statuses.values()) == {200, 503}
    stored = {p["name"] for p in server.get("/v2/pools").json()}
    assert stored == {name for name, status in statuses.items() if status == 200}
    assert present(server.edgelb.faults).counts()["5xx"] == list(statuses.values()).count(503)


def test_one_log_line_per_request(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgelb_local")
    server.get("/ping")
    server.post("/v2/pools", json=redis_pool("foo:bar"))
    server.get("/v2/pools/nope")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "edgelb_local" and "ms" in r.getMessage()]

    # The line is written once the answer is sent: the client can see the answer a moment before.
    wait_for(lambda: len(lines()) >= 3, what="three log lines")
    found = lines()
    assert len(found) == 3
    for line, (method, path, status) in zip(
        found,
        [("GET", "/ping", 200), ("POST", "/v2/pools", 400), ("GET", "/v2/pools/nope", 404)],
        strict=True,
    ):
        assert line.startswith(f"{method} {path} {status} ") and line.endswith("ms")


# -- request counts (/_local/requests, a local-only endpoint) --------------------------------------


def request_counts(server: Server) -> dict[tuple[str, str, str], int]:
    response = server.get("/_local/requests")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    rows = response.json()["requests"]
    assert all(set(row) == {"method", "route", "code", "count"} for row in rows)
    return {(row["method"], row["route"], row["code"]): row["count"] for row in rows}


def test_requests_are_counted_by_method_route_template_and_code(start: StartServer) -> None:
    server = start(metadata_delay=3600.0)
    assert request_counts(server) == {}
    with requests.Session() as session:  # keep-alive: one handler answers many requests
        for method, path, body, status in [
            ("GET", "/ping", None, 200),
            ("POST", "/v2/pools", redis_pool("a", port=1), 200),
            ("POST", "/v2/pools/", redis_pool("b", port=2), 200),
            ("POST", "/v2/pools", redis_pool("a", port=1), 409),
            ("GET", "/v2/pools/a", None, 200),
            ("GET", "/v2/pools/b?x=1", None, 200),
            ("GET", "/v2/pools/nope", None, 404),
            ("GET", "/v2/pools/a/metadata", None, 504),
            ("PUT", "/v2/pools/a", redis_pool("a", port=3), 200),
            ("DELETE", "/v2/pools/b", None, 204),
            ("PATCH", "/v2/pools", {}, 405),
            ("GET", "/v2/nothing/here", None, 404),
        ]:
            response = session.request(method, server.url + path, json=body, timeout=TIMEOUT)
            assert response.status_code == status, (method, path, response.text)
    # Counted before the answer is sent: no wait needed. Reading the counts is not counted itself.
    expected = {
        ("GET", "/ping", "200"): 1,
        ("POST", "/v2/pools", "200"): 2,
        ("POST", "/v2/pools", "409"): 1,
        ("GET", "/v2/pools/{name}", "200"): 2,
        ("GET", "/v2/pools/{name}", "404"): 1,
        ("GET", "/v2/pools/{name}/metadata", "504"): 1,
        ("PUT", "/v2/pools/{name}", "200"): 1,
        ("DELETE", "/v2/pools/{name}", "204"): 1,
        ("PATCH", "/v2/pools", "405"): 1,
        ("GET", "other", "404"): 1,
    }
    assert request_counts(server) == expected
    assert request_counts(server) == expected


def test_injected_faults_are_counted_and_local_paths_never_are(start: StartServer) -> None:
    server = start(faults=FaultInjector.parse(["POST /v2/pools:5xx=1", "PUT /v2/pools/*:reset=1"], seed=1))
    assert_error(server.post("/v2/pools", json=redis_pool()), 503, "injected fault")
    with pytest.raises(requests.ConnectionError):
        server.put("/v2/pools/dklb-redis", json=redis_pool())
    # A body that cannot be read is answered 400 before any route runs; still counted on its route.
    host, port = server.edgelb.address
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /v2/pools HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
        assert sock.makefile("rb").readline().startswith(b"HTTP/1.1 400 ")
    assert_error(server.post("/_local/requests"), 405)
    assert_error(server.get("/_local/nothing"), 404)
    assert request_counts(server) == {
        ("POST", "/v2/pools", "503"): 1,
        ("POST", "/v2/pools", "400"): 1,
        ("PUT", "/v2/pools/{name}", "reset"): 1,
    }


# -- the CLI ----------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(argv)


def test_cli_arguments() -> None:
    args = parse(["--listen", "127.0.0.1:0", "--state-dir", "/tmp/x"])
    assert args.listen == ("127.0.0.1", 0)
    assert (args.agent, args.metadata_delay, args.no_dataplane) == (None, 0.0, False)
    assert (args.faults, args.faults_seed, args.pool_address) == ([], None, "127.0.0.1")
    assert args.func is run
    args = parse(
        [
            "--listen=0.0.0.0:8080",
            "--state-dir=/tmp/x",
            "--agent",
            "kube-node-0=10.0.0.1",
            "--agent",
            "kube-node-1=10.0.0.2",
            "--metadata-delay",
            "2.5",
            "--no-dataplane",
            "--faults",
            "latency=1ms",
            "--faults",
            "POST /v2/pools:5xx=1",
            "--faults-seed",
            "3",
        ]
    )
    assert args.listen == ("0.0.0.0", 8080)
    assert args.agent == [("kube-node-0", "10.0.0.1"), ("kube-node-1", "10.0.0.2")]
    assert (args.metadata_delay, args.no_dataplane, args.faults_seed) == (2.5, True, 3)
    assert args.faults == ["latency=1ms", "POST /v2/pools:5xx=1"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--state-dir", "/tmp/x"],
        ["--listen", "127.0.0.1:0"],
        ["--listen", "127.0.0.1", "--state-dir", "/tmp/x"],
        ["--listen", "127.0.0.1:70000", "--state-dir", "/tmp/x"],
        ["--listen", "127.0.0.1:0", "--state-dir", "/tmp/x", "--agent", "kube-node-0"],
        ["--listen", "127.0.0.1:0", "--state-dir", "/tmp/x", "--metadata-delay", "soon"],
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2


def test_cli_bad_fault_spec_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--listen", "127.0.0.1:0", "--state-dir", str(tmp_path), "--faults", "5xx=2"])
    assert run(args) == 2
    assert "5xx=2" in capsys.readouterr().err


def test_cli_help_documents_the_faults_grammar() -> None:
    parser = argparse.ArgumentParser(formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    text = parser.format_help()
    for word in ("latency=DURATION", "5xx=P", "timeout=P", "reset=P", "hold=DURATION", "PATH-GLOB"):
        assert word in text


class CLIProcess:
    def __init__(self, state_dir: Path, *extra: str) -> None:
        self.state_dir = state_dir
        self.stderr_path = state_dir.parent / f"{state_dir.name}.stderr"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        argv = ["--listen", "127.0.0.1:0", "--state-dir", str(state_dir), "--no-dataplane", *extra]
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgelb_local.command", *argv],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=ROOT,
                env=env,
            )
        self.url = self._listening_url()

    def _listening_url(self, timeout: float = 15.0) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if selector.select(timeout=0.1):
                    line = self.proc.stdout.readline()
                    if not line:
                        break
                    prefix = "edgelb-local listening on "
                    assert line.startswith(prefix), line
                    return line[len(prefix) :].strip()
        raise AssertionError(f"no 'listening on' line; stderr:\n{self.stderr_path.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Callable[..., CLIProcess]]:
    processes: list[CLIProcess] = []

    def _cli(*extra: str) -> CLIProcess:
        process = CLIProcess(tmp_path / "cli-state", *extra)
        processes.append(process)
        return process

    yield _cli
    for process in processes:  # after a failed assertion: never leave a server behind
        process.kill()


def test_cli_serves_until_sigterm_and_keeps_pools(cli: Callable[..., CLIProcess]) -> None:
    first = cli()
    assert first.url.startswith("http://127.0.0.1:") and not first.url.endswith(":0")
    ping = requests.get(first.url + "/ping", timeout=TIMEOUT)
    assert (ping.status_code, ping.text) == (200, "pong")
    pid_file = first.state_dir / "edgelb.pid"
    assert int(pid_file.read_text()) == first.proc.pid
    assert requests.post(first.url + "/v2/pools", json=redis_pool(), timeout=TIMEOUT).status_code == 200

    assert first.stop() == 0
    assert not pid_file.exists()  # a stale pid file could name someone else's process later
    assert "GET /ping 200" in first.stderr_path.read_text()

    second = cli("--faults", "GET /v2/pools/*:5xx=1", "--faults-seed", "1")
    listed = requests.get(second.url + "/v2/pools", timeout=TIMEOUT).json()
    assert [p["name"] for p in listed] == ["dklb-redis"]
    assert requests.get(second.url + "/v2/pools/dklb-redis", timeout=TIMEOUT).status_code == 503
    assert second.stop() == 0
