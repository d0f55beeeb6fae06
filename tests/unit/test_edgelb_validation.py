"""edgelb_local.validation: the real EdgeLB's refusals, rule by rule, and the fake EdgeLB applying them.

The table (``tests.edgelb_rules``) is the one the HTTP tests of the local EdgeLB use too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgelb_local.validation import (
    Refusal,
    bind,
    check,
    install,
    namespace_change,
    refusals,
    service_name,
    validate_pool,
)
from engine.edgelb.errors import Conflict, Invalid, NotFound, Unavailable
from engine.edgelb.schema import decode_pool, fill_defaults
from tests.edgelb_rules import REFUSED, Pool, Rule, accepted_cases, refused_cases, valid_pool
from tests.fakes.edgelb import FakeEdgeLB


def first_refusal(body: bytes) -> Refusal | None:
    """What the server answers a POST of ``body`` for a new pool: binding, checks, install."""
    pool, refusal = bind(body)
    if refusal is not None:
        return refusal
    return next(iter([*check(pool), install(pool)]), None)


@pytest.mark.parametrize("rule", refused_cases())
def test_each_rule_refuses_with_the_servers_status_code_and_message(rule: Rule) -> None:
    assert first_refusal(rule.body()) == Refusal(rule.status, rule.code, rule.message)


@pytest.mark.parametrize("change", accepted_cases())
def test_what_edgelb_accepts(change: Any) -> None:
    pool = valid_pool()
    change(pool)
    assert refusals(pool) == []
    assert first_refusal(json.dumps(pool).encode()) is None


def test_validate_pool_lists_every_check_in_the_servers_order() -> None:
    pool = valid_pool()
    pool["name"] = "Bad"
    pool["haproxy"]["backends"][0]["services"] = []
    pool["haproxy"]["frontends"][0]["bindAddress"] = "*"
    assert validate_pool(pool) == [
        "pool.name: Bad invalid: did not match ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        "frontend.bindAddress invalid character: '*'",
        "backend.services: must have at least 1",
    ]
    # The binding stops at its first refusal: EdgeLB's checks never see a body it could not bind.
    pool["cpus"] = "lots"
    assert len(validate_pool(pool)) == 1


@pytest.mark.parametrize(
    ("namespace", "name", "expected"),
    [
        (None, "p", "dcos-edgelbpools" + "p"),  # the default pool group
        ("", "p", "p"),
        ("team/edgelb/pools", "dklb-redis", "teamedgelbpoolsdklb-redis"),
    ],
)
def test_service_name_is_the_app_id_without_slashes(namespace: str | None, name: str, expected: str) -> None:
    body: Pool = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    assert service_name(decode_pool(body)[0]) == expected


@pytest.mark.parametrize(
    ("stored", "sent", "refused"),
    [
        ("dcos-edgelb/pools", None, False),
        ("dcos-edgelb/pools", "dcos-edgelb/pools", False),
        ("dcos-edgelb/pools", "team/pools", True),
    ],
)
def test_a_put_may_not_change_the_namespace(stored: str, sent: str | None, refused: bool) -> None:
    body = valid_pool() if sent is None else {**valid_pool(), "namespace": sent}
    refusal = namespace_change({"name": "dklb-redis", "namespace": stored}, decode_pool(body)[0])
    if not refused:
        assert refusal is None
        return
    assert refusal == Refusal(
        400,
        400,
        "changing namespace currently not supported: please uninstall pool dklb-redis with namespace "
        "dcos-edgelb/pools, wait for the pool to completely uninstall, and then re-install pool "
        "dklb-redis with the new namespace team/pools",
    )


def test_install_knows_only_the_servers_package_version() -> None:
    pool = decode_pool({**valid_pool(), "packageVersion": "v1.5.1"})[0]
    assert install(pool, package_version="v1.5.1") is None
    refusal = install(pool, package_version="v1.6.0")
    assert refusal is not None and (refusal.status, refusal.code) == (500, 500)
    # A client leaving the version out gets the server's own.
    assert install(decode_pool(valid_pool(), package_version="v1.6.0")[0], package_version="v1.6.0") is None


# -- the fake EdgeLB refuses the same way ----------------------------------------------------------


def _json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _json_rules() -> list[Any]:
    # The fake takes parsed JSON: bodies that are not JSON never reach it.
    return [case for case, rule in zip(refused_cases(), REFUSED, strict=True) if _json(rule.body())]


@pytest.mark.parametrize("rule", _json_rules())
@pytest.mark.parametrize("method", ["create_pool", "update_pool"])
def test_the_fake_refuses_like_the_server(rule: Rule, method: str) -> None:
    fake = FakeEdgeLB()
    body = json.loads(rule.body())
    if method == "update_pool" and isinstance(body, dict):
        fake.seed(body)  # the pool exists (the PUT is not a 404), as the body has it
    before = {name: fake.stored(name) for name in fake.names()}
    with pytest.raises((Invalid, Unavailable)) as info:
        getattr(fake, method)(body)
    assert type(info.value) is (Unavailable if rule.status >= 500 else Invalid)
    assert (info.value.status, info.value.message) == (rule.status, rule.message)
    assert {name: fake.stored(name) for name in fake.names()} == before  # nothing stored


@pytest.mark.parametrize("change", accepted_cases())
def test_the_fake_accepts_what_the_server_accepts(change: Any) -> None:
    pool = valid_pool()
    change(pool)
    fake = FakeEdgeLB()
    fake.create_pool(pool)
    fake.update_pool(pool)
    assert fake.get_pool(pool["name"]) == fill_defaults(pool)


def test_the_fake_answers_409_404_between_binding_and_checks() -> None:
    fake = FakeEdgeLB()
    fake.create_pool(valid_pool())
    no_services = valid_pool()
    no_services["haproxy"]["backends"][0]["services"] = []
    with pytest.raises(Conflict):
        fake.create_pool(no_services)  # the pool exists: EdgeLB's checks are not reached
    bad_enum = {**valid_pool(), "apiVersion": "V3"}
    with pytest.raises(Invalid) as info:
        fake.create_pool(bad_enum)  # the binding comes first
    assert info.value.status == 422
    with pytest.raises(NotFound):
        fake.update_pool({**no_services, "name": "nope"})


def test_the_fake_stores_what_a_get_returns() -> None:
    fake = FakeEdgeLB()
    pool = valid_pool()
    pool["haproxy"]["backends"][0]["services"][0]["endpoint"]["port"] = 0
    pool["replicas"] = 3
    answer = fake.create_pool(pool)
    assert "port" not in answer["haproxy"]["backends"][0]["services"][0]["endpoint"]
    stored = fake.get_pool("dklb-redis")
    assert stored["haproxy"]["backends"][0]["services"][0]["endpoint"]["port"] == -1
    assert "replicas" not in stored and "replicas" not in answer


def test_an_upgraded_fake_refuses_the_old_package_version() -> None:
    fake = FakeEdgeLB(package_version="v1.5.0")
    fake.create_pool(valid_pool())
    read = fake.get_pool("dklb-redis")
    assert read["packageVersion"] == "v1.5.0"
    fake.package_version = "v1.5.1"  # EdgeLB upgraded
    with pytest.raises(Unavailable, match=r"Version \[v1\.5\.0\] of package \[edgelb-pool\] not found"):
        fake.update_pool(read)
    read.pop("packageVersion")
    assert fake.update_pool(read)["packageVersion"] == "v1.5.1"
