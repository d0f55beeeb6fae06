"""The local EdgeLB refuses what the real one refuses, over real HTTP: status, body code, message.

Rule by rule from the table shared with the pure tests (``tests.edgelb_rules``), then the order of
the steps (binding, 409/404, checks, install), the round trip of what is stored, a pool package
version surviving an EdgeLB upgrade only through dklb's client, and the local dataplane selecting
only the tasks of the framework a backend names.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edgelb_local.dataplane import NullDataplane
from edgelb_local.haproxy import HAProxyDataplane
from edgelb_local.server import LocalEdgeLB
from engine.edgelb.client import EdgeLBClient
from engine.edgelb.errors import Invalid, Unavailable
from engine.edgelb.schema import fill_defaults
from tests.edgelb_rules import BACKEND, NAME, Rule, accepted_cases, refused_cases, valid_pool

TIMEOUT = 5.0
JSON = {"Content-Type": "application/json"}

Start = Callable[..., LocalEdgeLB]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Starts a local EdgeLB (no HAProxy) on a free port, its pools in one state directory."""
    started: list[LocalEdgeLB] = []

    def _start(**kw: Any) -> LocalEdgeLB:
        edgelb = LocalEdgeLB(state_dir=tmp_path / "state", dataplane=NullDataplane(), **kw)
        edgelb.serve("127.0.0.1", 0)
        started.append(edgelb)
        return edgelb

    yield _start
    for edgelb in started:
        edgelb.shutdown()


@pytest.fixture
def url(start: Start) -> str:
    return start().url


def send(method: str, url: str, body: bytes | dict[str, Any]) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.request(method, url, data=data, headers=JSON, timeout=TIMEOUT)


def assert_refused(response: requests.Response, rule: Rule) -> None:
    assert response.status_code == rule.status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"code": rule.code, "message": rule.message}


def pools(url: str) -> list[dict[str, Any]]:
    return requests.get(f"{url}/v2/pools", timeout=TIMEOUT).json()


@pytest.mark.parametrize("rule", refused_cases())
def test_post_is_refused_like_edgelb(url: str, rule: Rule) -> None:
    assert_refused(send("POST", f"{url}/v2/pools", rule.body()), rule)
    assert pools(url) == []  # nothing stored


@pytest.mark.parametrize("rule", refused_cases())
def test_put_is_refused_like_edgelb(url: str, rule: Rule) -> None:
    assert send("POST", f"{url}/v2/pools", valid_pool()).status_code == 200
    before = pools(url)
    try:
        named = json.loads(rule.body()).get("name", NAME)
    except (ValueError, AttributeError):
        named = NAME
    if named != NAME:
        # A PUT addresses a pool by name: these rules are about the name itself (POST covers them).
        assert send("PUT", f"{url}/v2/pools/{NAME}", rule.body()).status_code == 400
    else:
        assert_refused(send("PUT", f"{url}/v2/pools/{NAME}", rule.body()), rule)
    assert pools(url) == before  # the stored pool is unchanged


@pytest.mark.parametrize("change", accepted_cases())
def test_accepted_pools_read_back_as_edgelb_stores_them(url: str, change: Any) -> None:
    pool = valid_pool()
    change(pool)
    response = send("POST", f"{url}/v2/pools", pool)
    assert response.status_code == 200, response.text
    assert requests.get(f"{url}/v2/pools/{pool['name']}", timeout=TIMEOUT).json() == fill_defaults(pool)
    assert send("PUT", f"{url}/v2/pools/{pool['name']}", pool).status_code == 200


# -- the order of the steps -------------------------------------------------------------------------


def test_binding_comes_before_409_and_409_before_edgelbs_checks(url: str) -> None:
    send("POST", f"{url}/v2/pools", valid_pool())
    bad_enum = {**valid_pool(), "apiVersion": "V3"}
    assert send("POST", f"{url}/v2/pools", bad_enum).status_code == 422
    no_services = valid_pool()
    no_services["haproxy"]["backends"][0]["services"] = []
    assert send("POST", f"{url}/v2/pools", no_services).json() == {
        "code": 409,
        "message": f"pool {NAME} already exists",
    }
    assert send("PUT", f"{url}/v2/pools/nope", {**no_services, "name": "nope"}).status_code == 404


def test_a_put_may_not_move_the_pool_to_another_namespace(url: str) -> None:
    send("POST", f"{url}/v2/pools", valid_pool())
    response = send("PUT", f"{url}/v2/pools/{NAME}", {**valid_pool(), "namespace": "team/pools"})
    assert response.status_code == 400
    assert response.json()["message"].startswith("changing namespace currently not supported")


# -- what is answered and stored --------------------------------------------------------------------


def test_a_write_answers_the_body_as_go_encodes_it_and_a_get_reads_it_back(url: str) -> None:
    pool = valid_pool()
    endpoint = pool["haproxy"]["backends"][0]["services"][0]["endpoint"]
    endpoint["port"] = 0
    pool["replicas"] = 3
    pool["autoCertificate"] = False
    answer = send("POST", f"{url}/v2/pools", pool).json()
    read = requests.get(f"{url}/v2/pools/{NAME}", timeout=TIMEOUT).json()
    answered_endpoint = answer["haproxy"]["backends"][0]["services"][0]["endpoint"]
    assert "port" not in answered_endpoint  # omitempty: the 0 is left out ...
    assert read["haproxy"]["backends"][0]["services"][0]["endpoint"]["port"] == -1  # ... and reads back -1
    assert read["haproxy"]["stats"]["bindPort"] == 0  # a pointer: the dynamic stats port stays 0
    for returned in (answer, read):
        assert "replicas" not in returned and "autoCertificate" not in returned


def test_an_upgraded_edgelb_refuses_the_package_version_a_pool_was_read_with(start: Start) -> None:
    old = start(package_version="v1.5.0")
    assert send("POST", f"{old.url}/v2/pools", valid_pool()).status_code == 200
    old.shutdown()
    new = start(package_version="v1.5.1").url  # the same state directory: EdgeLB upgraded
    read = requests.get(f"{new}/v2/pools/{NAME}", timeout=TIMEOUT).json()
    assert read["packageVersion"] == "v1.5.0"

    echoed = send("PUT", f"{new}/v2/pools/{NAME}", read)
    assert echoed.status_code == 500
    assert echoed.json()["message"] == (
        "error executing cosmos request: VersionNotFound: Version [v1.5.0] of package [edgelb-pool] not found"
    )
    # dklb's client never sends the package fields: the upgraded EdgeLB installs its own version.
    with EdgeLBClient(new) as client:
        assert client.update_pool({**read, "cpus": 0.2})["packageVersion"] == "v1.5.1"
        assert client.get_pool(NAME)["packageVersion"] == "v1.5.1"


def test_the_client_turns_422_into_invalid_and_a_500_install_failure_into_unavailable(url: str) -> None:
    with EdgeLBClient(url) as client:
        with pytest.raises(Invalid) as refused:
            client.create_pool({**valid_pool(), "poolHealthcheckTimeout": 1})
        assert refused.value.status == 422
        assert refused.value.message.endswith(
            "poolHealthcheckTimeout in body should be greater than or equal to 2"
        )
        with pytest.raises(Unavailable) as failed:
            client.create_pool({**valid_pool(), "name": "p" * 48})
        assert failed.value.status == 500
    assert pools(url) == []


# -- the dataplane: a backend selects the tasks of the framework it names ---------------------------


def test_a_backend_naming_another_framework_selects_no_task(tmp_path: Path) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (./dev installs it)")
    dataplane = HAProxyDataplane(
        state_dir=tmp_path / "state", agents={"kube-node-0": "127.0.0.1"}, framework="kubernetes-cluster"
    )
    edgelb = LocalEdgeLB(state_dir=tmp_path / "state", dataplane=dataplane)
    edgelb.serve("127.0.0.1", 0)
    try:
        pool = valid_pool()
        haproxy = pool["haproxy"]
        haproxy["frontends"][0]["bindPort"] = 0
        other = json.loads(json.dumps(haproxy["backends"][0]))
        other["name"] = "other-cluster:default:redis:6379"
        other["services"][0]["mesos"]["frameworkName"] = "other-cluster"
        haproxy["backends"].append(other)
        haproxy["frontends"].append(
            {
                **haproxy["frontends"][0],
                "name": other["name"],
                "linkBackend": {"defaultBackend": other["name"]},
            }
        )
        assert send("POST", f"{edgelb.url}/v2/pools", pool).status_code == 200
        text = requests.get(f"{edgelb.url}/v2/pools/{NAME}/lbconfig", timeout=TIMEOUT).text
    finally:
        edgelb.shutdown()
    sections = {block.split("\n", 1)[0]: block for block in text.split("\n\n")}
    assert "server kube-node-0:32213 127.0.0.1:32213 check" in sections[f"backend {BACKEND}"]
    assert "server " not in sections[f"backend {other['name']}"]
