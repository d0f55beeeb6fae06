"""The client against the local EdgeLB: every route and every error code of the contract.

Both sides are ours, so this is where they must agree with shared/edgelb-api.md at once: the
client's typed errors for each status, the server's defaults, the metadata shape. Then the
engine itself runs against the local EdgeLB (no fakes between them): a Service reaches Ready
and resyncs cause zero writes even though the server fills defaults into what it returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from edgelb_local.dataplane import NullDataplane
from edgelb_local.faults import FaultInjector
from edgelb_local.server import LocalEdgeLB
from engine.edgelb.client import EdgeLBClient
from engine.edgelb.errors import Conflict, Invalid, NotFound, Unavailable
from tests.checks import present
from tests.engine.harness import World
from tests.fakes.kube import make_service
from tests.processes import wait_for

T = TypeVar("T")


def pool_body(name: str = "p1", port: int = 16379) -> dict:
    return {
        "name": name,
        "haproxy": {
            "frontends": [
                {"name": "fe", "bindPort": port, "protocol": "TCP", "linkBackend": {"defaultBackend": "be"}}
            ],
            "backends": [
                {
                    "name": "be",
                    "protocol": "TCP",
                    "services": [{"endpoint": {"type": "ADDRESS", "address": "127.0.0.1", "port": 32213}}],
                }
            ],
        },
    }


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[LocalEdgeLB, EdgeLBClient]]:
    server = LocalEdgeLB(state_dir=tmp_path / "edgelb", dataplane=NullDataplane(), metadata_delay=0.3)
    host, port = server.serve("127.0.0.1", 0)
    yield server, EdgeLBClient(f"http://{host}:{port}")
    server.shutdown()


def test_every_route_and_error_code(local: tuple[LocalEdgeLB, EdgeLBClient]) -> None:
    _, client = local
    assert client.ping() == "pong"
    assert client.version()
    assert client.list_pools() == []

    created = client.create_pool(pool_body())
    assert created["namespace"] == "dcos-edgelb/pools" and created["cpus"] == 0.9, "defaults filled"
    assert created["haproxy"]["frontends"][0]["bindAddress"] == "0.0.0.0"
    with pytest.raises(Conflict):
        client.create_pool(pool_body())
    with pytest.raises(Invalid) as invalid:
        client.create_pool(pool_body("foo:bar"))
    assert "pool.name: foo:bar invalid: did not match ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$" in str(invalid.value)
    assert invalid.value.status == 400
    with pytest.raises(Unavailable) as not_installed:
        client.create_pool(pool_body("p" * 48))  # a DC/OS service name over 63 characters
    assert not_installed.value.status == 500

    assert client.get_pool("p1")["name"] == "p1"
    with pytest.raises(NotFound):
        client.get_pool("nope")

    updated = client.update_pool(pool_body(port=16380))
    assert updated["haproxy"]["frontends"][0]["bindPort"] == 16380
    with pytest.raises(NotFound):
        client.update_pool(pool_body("nope"))
    broken = pool_body()
    broken["haproxy"]["frontends"][0]["protocol"] = "SCTP"
    with pytest.raises(Invalid) as refused:
        client.update_pool(broken)
    assert refused.value.status == 422  # an enum: the schema, not EdgeLB's checks
    assert client.get_pool("p1")["haproxy"]["frontends"][0]["bindPort"] == 16380, (
        "a refused PUT changes nothing"
    )

    assert [p["name"] for p in client.get_config()["pools"]] == ["p1"]
    assert isinstance(client.get_lbconfig("p1"), str)

    with pytest.raises(NotFound):
        client.get_metadata("nope")
    metadata = wait_for(lambda: _metadata_or_none(client, "p1"))
    assert metadata["frontends"][0]["name"] == "fe"
    assert metadata["frontends"][0]["endpoints"][0]["port"] == 16380
    assert metadata["frontends"][0]["endpoints"][0]["private"] == ["127.0.0.1"]

    client.delete_pool("p1")
    with pytest.raises(NotFound):
        client.delete_pool("p1")
    assert client.list_pools() == []


def _metadata_or_none(client: EdgeLBClient, name: str) -> dict | None:
    try:
        return client.get_metadata(name)
    except Unavailable as exc:
        assert exc.status == 504, "metadata that is not ready yet is a 504"
        return None


def test_metadata_is_504_until_the_delay_has_passed(local: tuple[LocalEdgeLB, EdgeLBClient]) -> None:
    _, client = local
    client.create_pool(pool_body())
    with pytest.raises(Unavailable) as not_yet:
        client.get_metadata("p1")
    assert not_yet.value.status == 504
    wait_for(lambda: _metadata_or_none(client, "p1"))


@pytest.mark.parametrize(
    ("spec", "status"),
    [("POST /v2/pools:5xx=1", 503), ("POST /v2/pools:reset=1", None)],
    ids=["an injected 5xx is Unavailable(503)", "a reset connection is Unavailable(None)"],
)
def test_injected_faults_are_typed_and_change_nothing(tmp_path: Path, spec: str, status: int | None) -> None:
    server = LocalEdgeLB(
        state_dir=tmp_path / "edgelb", dataplane=NullDataplane(), faults=FaultInjector.parse([spec], seed=1)
    )
    host, port = server.serve("127.0.0.1", 0)
    try:
        client = EdgeLBClient(f"http://{host}:{port}")
        with pytest.raises(Unavailable) as failed:
            client.create_pool(pool_body())
        assert failed.value.status == status
        assert client.list_pools() == []
    finally:
        server.shutdown()


def test_a_timeout_is_unavailable(tmp_path: Path) -> None:
    server = LocalEdgeLB(
        state_dir=tmp_path / "edgelb",
        dataplane=NullDataplane(),
        faults=FaultInjector.parse(["GET /v2/pools:timeout=1"], seed=1, hold=1.0),
    )
    host, port = server.serve("127.0.0.1", 0)
    try:
        client = EdgeLBClient(f"http://{host}:{port}", read_timeout=0.2)
        with pytest.raises(Unavailable):
            client.list_pools()
    finally:
        server.shutdown()


def test_the_engine_reaches_ready_against_the_local_edgelb_and_resyncs_without_writes(tmp_path: Path) -> None:
    server = LocalEdgeLB(state_dir=tmp_path / "edgelb", dataplane=NullDataplane())
    host, port = server.serve("127.0.0.1", 0)
    writes: list[tuple[str, str, int]] = []

    def count(method: str, route: str, status: int, seconds: float) -> None:
        if method in ("POST", "PUT", "DELETE"):
            writes.append((method, route, status))

    try:
        client = EdgeLBClient(f"http://{host}:{port}", on_response=count)
        world = World(tmp_path, edgelb=client)  # type: ignore[arg-type]  # the real client for the fake: no fake-only call
        world.kube.apply(
            make_service("redis", config="name: dklb-redis\nfrontends:\n- port: 16379\n  servicePort: 6379\n")
        )
        world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: shared\n"))
        world.kube.apply(make_service("b", ports=[(81, 30002)], config="name: shared\n"))
        world.settle()
        assert set(world.states().values()) == {"Ready"}
        redis = present(world.kube.get("default/redis"))
        assert redis["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.1"}]
        settled = len(writes)
        for _ in range(3):
            world.advance(600)
        assert all(b.state == "Ready" for b in world.store.bindings())
        assert len(writes) == settled, f"resync wrote to EdgeLB: {writes[settled:]}"
        world.kube.delete("default/redis")
        world.kube.delete("default/a")
        world.kube.delete("default/b")
        world.settle()
        assert client.list_pools() == []
        world.store.close()
    finally:
        server.shutdown()


def test_plain_http_errors_carry_code_and_message(local: tuple[LocalEdgeLB, EdgeLBClient]) -> None:
    _server, client = local
    base = client.base_url.rstrip("/")
    answer = requests.get(f"{base}/v2/pools/nope", timeout=5)
    assert answer.status_code == 404
    assert set(answer.json()) >= {"code", "message"} and answer.json()["code"] == 404


def test_tls_is_verified_by_default_against_a_self_signed_local_edgelb(tmp_path: Path) -> None:
    import ssl

    from engine.admission.certs import generate_self_signed
    from engine.edgelb.client import client_from_options

    ca, cert, key = generate_self_signed(tmp_path / "certs", hosts=["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = LocalEdgeLB(state_dir=tmp_path / "edgelb", dataplane=NullDataplane(), tls=context)
    server.serve("127.0.0.1", 0)
    try:
        assert server.url.startswith("https://")
        with pytest.raises(Unavailable) as refused:
            client_from_options(url=server.url).ping()
        assert "certificate" in str(refused.value).lower(), refused.value
        assert client_from_options(url=server.url, ca_bundle=str(ca)).ping() == "pong"
        assert client_from_options(url=server.url, insecure_skip_tls_verify=True).ping() == "pong"
    finally:
        server.shutdown()
