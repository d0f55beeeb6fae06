"""The in-memory EdgeLB used by handler tests behaves like the contract says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from engine.edgelb.errors import Conflict, EdgeLBError, Invalid, NotFound, Unavailable, Unexpected
from engine.edgelb.port import EdgeLB
from engine.edgelb.schema import fill_defaults
from engine.model.translation import (
    ingress_from_metadata,
    same_pool,
)
from tests.checks import present
from tests.fakes.edgelb import FakeEdgeLB
from tests.fakes.pools import REDIS, translated_pool

ROOT = Path(__file__).resolve().parents[2]


def redis_pool(bind_port: int = 16379, *, name: str = "dklb-redis", cloud: dict | None = None) -> dict:
    return translated_pool(name, bind_port=bind_port, cloud=cloud)


def test_implements_the_port() -> None:
    edgelb: EdgeLB = FakeEdgeLB()
    assert edgelb.list_pools() == []


def test_crud_and_server_defaults() -> None:
    fake = FakeEdgeLB()
    created = fake.create_pool(redis_pool())
    # Returned the way the server returns it: defaults filled, so only a normalizing caller sees no change.
    assert created == fill_defaults(redis_pool())
    assert created != redis_pool()
    assert same_pool(created, redis_pool())
    assert fake.get_pool("dklb-redis") == created
    assert fake.list_pools() == [created]

    updated = fake.update_pool(redis_pool(16380))
    assert updated["haproxy"]["frontends"][0]["bindPort"] == 16380
    assert fake.get_pool("dklb-redis")["haproxy"]["frontends"][0]["bindPort"] == 16380

    fake.delete_pool("dklb-redis")
    assert fake.list_pools() == []
    assert fake.names() == []


def test_returned_pools_are_copies() -> None:
    fake = FakeEdgeLB()
    fake.create_pool(redis_pool())
    fake.get_pool("dklb-redis")["haproxy"]["frontends"].clear()
    assert len(fake.get_pool("dklb-redis")["haproxy"]["frontends"]) == 1


@pytest.mark.parametrize(
    ("call", "error", "status"),
    [
        (lambda f: f.create_pool(redis_pool()), Conflict, 409),
        (lambda f: f.get_pool("nope"), NotFound, 404),
        (lambda f: f.update_pool(redis_pool(name="nope")), NotFound, 404),
        (lambda f: f.delete_pool("nope"), NotFound, 404),
        (lambda f: f.get_metadata("nope"), NotFound, 404),
        (lambda f: f.get_metadata("dklb-redis"), Unavailable, 504),
        (lambda f: f.create_pool(redis_pool(name="foo:bar")), Invalid, 400),
        (lambda f: f.update_pool({**redis_pool(), "cpus": "lots"}), Invalid, 400),
    ],
)
def test_errors(call, error: type[EdgeLBError], status: int) -> None:
    fake = FakeEdgeLB()
    fake.create_pool(redis_pool())
    with pytest.raises(error) as raised:
        call(fake)
    assert raised.value.status == status


def test_invalid_message_is_edgelbs() -> None:
    with pytest.raises(Invalid, match=r"pool\.name: foo:bar invalid: did not match \^\[a-z0-9\]"):
        FakeEdgeLB().create_pool(redis_pool(name="foo:bar"))


def test_metadata_until_ready() -> None:
    fake = FakeEdgeLB(agent_ip="10.0.6.38", public_ip="35.164.164.23")
    fake.create_pool(redis_pool())
    with pytest.raises(Unavailable):
        fake.get_metadata("dklb-redis")
    fake.ready("dklb-redis")
    md = fake.get_metadata("dklb-redis")
    assert md["name"] == "dklb-redis"
    assert md["frontends"] == [
        {"name": REDIS, "endpoints": [{"port": 16379, "private": ["10.0.6.38"], "public": ["35.164.164.23"]}]}
    ]
    # Stats bind port 0 is dynamic: resolved to a real port.
    assert md["stats"][0]["port"] == 1025
    assert ingress_from_metadata(md, frontend_names=[REDIS]) == [{"ip": "10.0.6.38"}, {"ip": "35.164.164.23"}]

    # Deleting forgets readiness: a re-created pool is launched again.
    fake.delete_pool("dklb-redis")
    fake.create_pool(redis_pool())
    with pytest.raises(Unavailable):
        fake.get_metadata("dklb-redis")


def test_auto_metadata_default_agent_ip() -> None:
    fake = FakeEdgeLB(auto_metadata=True)
    fake.create_pool(redis_pool())
    md = fake.get_metadata("dklb-redis")
    assert ingress_from_metadata(md, frontend_names=[REDIS]) == [{"ip": "127.0.0.1"}]


def test_metadata_of_a_cloud_provider_pool() -> None:
    fake = FakeEdgeLB(auto_metadata=True)
    fake.create_pool(redis_pool(name="cloud--redis", cloud={"aws": {"elbs": [{"name": "redis-lb"}]}}))
    md = fake.get_metadata("cloud--redis")
    assert md["frontends"][0]["endpoints"][0]["port"] == 1026  # after stats' 1025
    assert md["aws"]["elbs"] == [
        {
            "name": "redis-lb",
            "dns": "redis-lb-0123456789.elb.us-west-2.amazonaws.com",
            "listeners": [{"port": 6379, "linkFrontend": REDIS}],
        }
    ]
    assert ingress_from_metadata(md, frontend_names=[REDIS]) == [
        {"hostname": "redis-lb-0123456789.elb.us-west-2.amazonaws.com"},
        {"ip": "127.0.0.1"},
    ]


def test_call_counts_and_writes() -> None:
    fake = FakeEdgeLB(auto_metadata=True)
    fake.create_pool(redis_pool())
    fake.get_pool("dklb-redis")
    fake.get_pool("dklb-redis")
    fake.list_pools()
    fake.update_pool(redis_pool(16380))
    fake.get_metadata("dklb-redis")
    with pytest.raises(Conflict):
        fake.create_pool(redis_pool())  # a refused write is still a write attempt
    fake.delete_pool("dklb-redis")
    assert fake.calls == {
        "POST": 2,
        "GET /v2/pools/{name}": 2,
        "GET /v2/pools": 1,
        "PUT": 1,
        "GET metadata": 1,
        "DELETE": 1,
    }
    assert fake.writes() == 4
    # Test helpers do not count.
    fake.seed(redis_pool())
    fake.stored("dklb-redis")
    fake.ready("dklb-redis")
    assert fake.writes() == 4 and sum(fake.calls.values()) == 8


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("PUT", lambda f: f.update_pool(redis_pool(16380))),
        ("update_pool", lambda f: f.update_pool(redis_pool(16380))),
        ("GET /v2/pools/{name}", lambda f: f.get_pool("dklb-redis")),
        ("get_metadata", lambda f: f.get_metadata("dklb-redis")),
        ("DELETE", lambda f: f.delete_pool("dklb-redis")),
        ("list_pools", lambda f: f.list_pools()),
    ],
)
def test_fail_next(method: str, call) -> None:
    fake = FakeEdgeLB(auto_metadata=True)
    fake.create_pool(redis_pool())
    fake.fail_next(method, Unavailable("EdgeLB is down", status=503))
    fake.fail_next(method, Unexpected)
    with pytest.raises(Unavailable, match="EdgeLB is down"):
        call(fake)
    with pytest.raises(Unexpected):
        call(fake)
    call(fake)  # the faults are used up
    assert sum(fake.calls.values()) == 1 + 3  # the create, then three calls, failed ones counted


def test_fail_next_leaves_state_alone() -> None:
    fake = FakeEdgeLB()
    fake.create_pool(redis_pool())
    fake.fail_next("PUT", Unavailable)
    with pytest.raises(Unavailable) as raised:
        fake.update_pool(redis_pool(16380))
    assert raised.value.status == 503
    assert present(fake.stored("dklb-redis"))["haproxy"]["frontends"][0]["bindPort"] == 16379


def test_fail_next_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        FakeEdgeLB().fail_next("PATCH", Unavailable)


def test_seed_a_pre_existing_pool() -> None:
    fake = FakeEdgeLB()
    fake.seed({"name": "existing", "haproxy": {"frontends": [], "backends": []}})
    assert fake.get_pool("existing")["constraints"] == "hostname:UNIQUE"
    assert fake.writes() == 0


def test_persistence(tmp_path: Path) -> None:
    path = tmp_path / "edgelb.json"
    fake = FakeEdgeLB(path=path)
    fake.create_pool(redis_pool())
    fake.ready("dklb-redis")
    fake.create_pool(redis_pool(name="other"))
    fake.delete_pool("other")

    reloaded = FakeEdgeLB(path=path)
    assert reloaded.names() == ["dklb-redis"]
    assert reloaded.get_pool("dklb-redis") == fake.get_pool("dklb-redis")
    assert reloaded.get_metadata("dklb-redis")["frontends"][0]["name"] == REDIS
    assert json.loads(path.read_text())["ready"] == ["dklb-redis"]
    assert [p.name for p in tmp_path.iterdir()] == ["edgelb.json"]  # no temporary files left behind


def test_state_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "edgelb.json"
    script = textwrap.dedent(
        f"""
        import os, signal
        from tests.fakes.edgelb import FakeEdgeLB
        from tests.unit.test_fake_edgelb import redis_pool
        fake = FakeEdgeLB(path={str(path)!r})
        fake.create_pool(redis_pool())
        fake.update_pool(redis_pool(16380))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    reloaded = FakeEdgeLB(path=path)
    assert reloaded.get_pool("dklb-redis")["haproxy"]["frontends"][0]["bindPort"] == 16380


def test_thread_safety() -> None:
    fake = FakeEdgeLB()
    fake.create_pool(redis_pool())
    errors: list[BaseException] = []
    conflicts: list[int] = []

    def worker(i: int) -> None:
        try:
            for j in range(20):
                fake.get_pool("dklb-redis")
                fake.update_pool(redis_pool(10000 + i * 100 + j))
                try:
                    fake.create_pool(redis_pool(name="race"))
                except Conflict:
                    conflicts.append(i)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert fake.calls["PUT"] == 160 and fake.calls["GET /v2/pools/{name}"] == 160
    assert len(conflicts) == 159  # exactly one create won
    assert fake.names() == ["dklb-redis", "race"]


def test_no_state_file_without_path(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        FakeEdgeLB().create_pool(redis_pool())
    finally:
        os.chdir(cwd)
    assert list(tmp_path.iterdir()) == []
