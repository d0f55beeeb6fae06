"""The V2 pool schema facts: validation messages, server defaults, normalization."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.edgelb.schema import POOL_NAME_RE, fill_defaults, normalize_pool, validate_pool

NAME = "kubernetes-cluster:default:redis:6379"


def redis_pool() -> dict:
    """The pool dklb sends for the seed's Redis example."""
    return {
        "name": "dklb-redis",
        "namespace": "dcos-edgelb/pools",
        "role": "slave_public",
        "cpus": 0.1,
        "mem": 128,
        "count": 1,
        "haproxy": {
            "stats": {"bindPort": 0},
            "frontends": [
                {
                    "name": NAME,
                    "bindAddress": "0.0.0.0",
                    "bindPort": 16379,
                    "protocol": "TCP",
                    "linkBackend": {"defaultBackend": NAME},
                }
            ],
            "backends": [
                {
                    "name": NAME,
                    "protocol": "TCP",
                    "balance": "leastconn",
                    "services": [
                        {
                            "mesos": {
                                "frameworkName": "kubernetes-cluster",
                                "taskNamePattern": "^kube-node-.*$",
                            },
                            "endpoint": {"type": "CONTAINER_IP", "port": 32213, "check": {"enabled": True}},
                        }
                    ],
                }
            ],
        },
    }


def two_service_pool() -> dict:
    pool = redis_pool()
    for i, name in enumerate(["b-backend", "a-backend", "c-backend"]):
        pool["haproxy"]["backends"].append({"name": name, "protocol": "HTTP"})
        pool["haproxy"]["frontends"].append(
            {
                "name": name.replace("backend", "frontend"),
                "bindPort": 8080 + i,
                "protocol": "HTTP",
                "linkBackend": {"defaultBackend": name},
            }
        )
    pool["virtualNetworks"] = [{"name": "zeta"}, {"name": "dcos", "labels": {"k": "v"}}]
    return pool


# --------------------------------------------------------------------------------------------------
# Pool names
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("dklb-redis", True),
        ("a", True),
        ("0", True),
        ("kubernetes-cluster--ab1cd", True),
        ("foo:bar", False),
        ("-redis", False),
        ("redis-", False),
        ("Redis", False),
        ("dklb_redis", False),
        ("", False),
        ("dklb.redis", False),
    ],
)
def test_pool_name_re(name: str, valid: bool) -> None:
    assert bool(POOL_NAME_RE.match(name)) is valid


# --------------------------------------------------------------------------------------------------
# validate_pool
# --------------------------------------------------------------------------------------------------


def test_valid_pools_have_no_errors() -> None:
    assert validate_pool(redis_pool()) == []
    assert validate_pool(two_service_pool()) == []
    # What the server returns is valid input again (a GET-merge-PUT sends it back).
    assert validate_pool(fill_defaults(two_service_pool())) == []
    assert validate_pool({"name": "empty"}) == []


def _set(path: str, value: object):
    """A mutation setting ``value`` at a dotted path (integers index lists); ``...`` deletes."""

    def mutate(pool: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = pool
        for part in parents:
            target = target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (
            _set("name", "foo:bar"),
            "pool.name: foo:bar invalid: did not match ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        ),
        (_set("name", ...), "pool.name: required"),
        (_set("name", 7), "pool.name: 7 invalid: must be string"),
        (_set("apiVersion", "V1"), "pool.apiVersion: V1 invalid: must be one of V2"),
        (_set("cpus", "lots"), "pool.cpus: lots invalid: must be number"),
        (_set("cpus", -0.5), "pool.cpus: -0.5 invalid: must be >= 0.0"),
        (_set("cpus", True), "pool.cpus: true invalid: must be number"),
        (_set("mem", 1.5), "pool.mem: 1.5 invalid: must be integer"),
        (_set("count", -1), "pool.count: -1 invalid: must be >= 0"),
        (_set("role", ["*"]), 'pool.role: ["*"] invalid: must be string'),
        (_set("virtualNetworks", [{"labels": {}}]), "pool.virtualNetworks[0].name: required"),
        (_set("virtualNetworks", "dcos"), "pool.virtualNetworks: dcos invalid: must be array"),
        (_set("ports", [80, 70000]), "pool.ports[1]: 70000 invalid: must be between 0 and 65535"),
        (_set("environmentVariables", {"A": 1}), "pool.environmentVariables.A: 1 invalid: must be string"),
        (
            _set("haproxy.frontends.0.protocol", "UDP"),
            "pool.haproxy.frontends[0].protocol: UDP invalid: must be one of HTTP, HTTPS, TCP, TLS",
        ),
        (_set("haproxy.frontends.0.protocol", ...), "pool.haproxy.frontends[0].protocol: required"),
        (_set("haproxy.frontends.0.bindPort", ...), "pool.haproxy.frontends[0].bindPort: required"),
        (
            _set("haproxy.frontends.0.bindPort", 65536),
            "pool.haproxy.frontends[0].bindPort: 65536 invalid: must be between 0 and 65535",
        ),
        (
            _set("haproxy.stats.bindPort", 16379),
            "pool.haproxy.frontends[0].bindPort: 16379 invalid: already bound by haproxy.stats",
        ),
        (
            # An absent stats port is 9090 on the server.
            _set("haproxy.stats", {}),
            None,
        ),
        (
            lambda p: (_set("haproxy.stats", {})(p), _set("haproxy.frontends.0.bindPort", 9090)(p)),
            "pool.haproxy.frontends[0].bindPort: 9090 invalid: already bound by haproxy.stats",
        ),
        (
            _set("haproxy.frontends.0.linkBackend.defaultBackend", "nope"),
            "pool.haproxy.frontends[0].linkBackend.defaultBackend: nope invalid: no such backend",
        ),
        (
            _set("haproxy.frontends.0.linkBackend.map", [{"backend": "nope", "hostEq": "x"}]),
            "pool.haproxy.frontends[0].linkBackend.map[0].backend: nope invalid: no such backend",
        ),
        (
            _set("haproxy.backends.0.protocol", "tcp"),
            "pool.haproxy.backends[0].protocol: tcp invalid: must be one of HTTP, HTTPS, TCP, TLS",
        ),
        (
            _set("haproxy.backends.0.balance", "fastest"),
            "pool.haproxy.backends[0].balance: fastest invalid: must be one of roundrobin, static-rr, "
            "leastconn, first, source, uri, url_param, hdr, random, rdp-cookie",
        ),
        (
            _set("haproxy.backends.0.services.0.endpoint.type", "POD_IP"),
            "pool.haproxy.backends[0].services[0].endpoint.type: POD_IP invalid: must be one of "
            "AUTO_IP, AGENT_IP, CONTAINER_IP, ADDRESS",
        ),
        (
            _set("haproxy.backends.0.services.0.endpoint.type", "ADDRESS"),
            "pool.haproxy.backends[0].services[0].endpoint.address: required",
        ),
        (
            _set("haproxy.backends.0.services.0.endpoint.port", -2),
            "pool.haproxy.backends[0].services[0].endpoint.port: -2 invalid: must be between -1 and 65535",
        ),
        (
            _set("haproxy.backends.0.services.0.endpoint.check.enabled", "yes"),
            "pool.haproxy.backends[0].services[0].endpoint.check.enabled: yes invalid: must be boolean",
        ),
        (
            _set("cloudProvider", {"aws": {"elbs": [{"name": "lb", "listeners": [{"port": 80}]}]}}),
            "pool.cloudProvider.aws.elbs[0].listeners[0].linkFrontend: required",
        ),
        (
            _set(
                "cloudProvider",
                {"aws": {"elbs": [{"name": "lb", "listeners": [{"port": 80, "linkFrontend": "x"}]}]}},
            ),
            "pool.cloudProvider.aws.elbs[0].listeners[0].linkFrontend: x invalid: no such frontend",
        ),
        (
            _set("cloudProvider", {"aws": {"elbs": [{"name": "lb", "type": "ALB"}]}}),
            "pool.cloudProvider.aws.elbs[0].type: ALB invalid: must be one of NLB",
        ),
    ],
)
def test_validate_pool_reports(mutation, expected: str) -> None:
    pool = redis_pool()
    mutation(pool)
    if expected is None:
        assert validate_pool(pool) == []
    else:
        assert expected in validate_pool(pool)


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (
            lambda p: p["haproxy"]["backends"].append(copy.deepcopy(p["haproxy"]["backends"][0])),
            f"pool.haproxy.backends[1].name: {NAME} invalid: duplicate backend name",
        ),
        (
            lambda p: p["haproxy"]["frontends"].append({**p["haproxy"]["frontends"][0], "bindPort": 1}),
            f"pool.haproxy.frontends[1].name: {NAME} invalid: duplicate frontend name",
        ),
        (
            lambda p: p["haproxy"]["frontends"].append({**p["haproxy"]["frontends"][0], "name": "other"}),
            "pool.haproxy.frontends[1].bindPort: 16379 invalid: "
            f"already bound by haproxy.frontends[0] ({NAME})",
        ),
    ],
)
def test_validate_pool_duplicates(mutation, expected: str) -> None:
    pool = redis_pool()
    mutation(pool)
    assert validate_pool(pool) == [expected]


@pytest.mark.parametrize(
    "frontends",
    [
        # Dynamic ports never clash, and different addresses may share a port.
        [{"bindPort": 0}, {"bindPort": 0}],
        [{"bindAddress": "10.0.0.1", "bindPort": 80}, {"bindAddress": "10.0.0.2", "bindPort": 80}],
    ],
)
def test_validate_pool_allows_dynamic_and_distinct_addresses(frontends: list[dict]) -> None:
    pool = {
        "name": "p",
        "haproxy": {
            "backends": [{"name": "b", "protocol": "TCP"}],
            "frontends": [
                {"name": f"f{i}", "protocol": "TCP", "linkBackend": {"defaultBackend": "b"}, **fe}
                for i, fe in enumerate(frontends)
            ],
        },
    }
    assert validate_pool(pool) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, "pool: null invalid: must be object"),
        ([], "pool: [] invalid: must be object"),
        ("pool", "pool: pool invalid: must be object"),
    ],
)
def test_validate_pool_non_object(body: object, expected: str) -> None:
    assert validate_pool(body) == [expected]


# --------------------------------------------------------------------------------------------------
# fill_defaults
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("apiVersion", "V2"),
        ("namespace", "dcos-edgelb/pools"),
        ("role", "slave_public"),
        ("cpus", 0.9),
        ("cpusAdminOverhead", 0.1),
        ("mem", 992),
        ("memAdminOverhead", 32),
        ("disk", 256),
        ("count", 1),
        ("constraints", "hostname:UNIQUE"),
        ("ports", []),
        ("secrets", []),
        ("virtualNetworks", []),
        ("environmentVariables", {}),
        ("poolHealthcheckGracePeriod", 180),
        ("poolHealthcheckInterval", 12),
        ("poolHealthcheckMaxFail", 5),
        ("haproxy.stats", {"bindAddress": "0.0.0.0", "bindPort": 9090}),
        ("haproxy.frontends", []),
        ("haproxy.backends", []),
    ],
)
def test_fill_defaults_of_an_empty_pool(path: str, expected: object) -> None:
    value = fill_defaults({"name": "p"})
    for part in path.split("."):
        value = value[part]
    assert value == expected


def test_fill_defaults_of_objects() -> None:
    pool = {
        "name": "p",
        "virtualNetworks": [{"name": "dcos"}],
        "haproxy": {
            "frontends": [{"bindPort": 80, "protocol": "HTTP", "linkBackend": {"defaultBackend": "b"}}],
            "backends": [{"name": "b", "protocol": "HTTP", "services": [{"endpoint": {"portName": "web"}}]}],
        },
        "cloudProvider": {"aws": {"elbs": [{"name": "lb"}]}},
    }
    filled = fill_defaults(pool)
    assert filled["virtualNetworks"] == [{"name": "dcos", "labels": {}}]
    assert filled["haproxy"]["frontends"] == [
        {
            "name": "frontend_0.0.0.0_80",
            "bindAddress": "0.0.0.0",
            "bindPort": 80,
            "protocol": "HTTP",
            "certificates": [],
            "miscStrs": [],
            "redirectToHttps": False,
            "linkBackend": {"defaultBackend": "b", "map": []},
        }
    ]
    assert filled["haproxy"]["backends"] == [
        {
            "name": "b",
            "protocol": "HTTP",
            "balance": "roundrobin",
            "miscStrs": [],
            "rewriteHttp": {
                "request": {
                    "forwardfor": True,
                    "xForwardedPort": True,
                    "xForwardedProtoHttpsIfTls": True,
                    "setHostHeader": True,
                    "rewritePath": True,
                },
                "response": {"rewriteLocation": True},
            },
            "services": [
                {
                    "marathon": {},
                    "mesos": {},
                    "endpoint": {
                        "type": "AUTO_IP",
                        "port": -1,
                        "portName": "web",
                        "allPorts": False,
                        "check": {"enabled": True},
                    },
                }
            ],
        }
    ]
    assert filled["cloudProvider"]["aws"]["elbs"] == [
        {
            "name": "lb",
            "type": "NLB",
            "internal": False,
            "subnets": [],
            "elasticIPs": [],
            "tags": [],
            "listeners": [],
        }
    ]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        # Explicit values are the client's choice, zeros and empties included: 0 means dynamic.
        ("haproxy.stats.bindPort", 0),
        ("haproxy.frontends.0.bindPort", 0),
        ("count", 0),
        ("role", "*"),
        ("constraints", '[["hostname","MAX_PER","1"]]'),
        ("haproxy.backends.0.balance", "leastconn"),
        ("haproxy.backends.0.services.0.endpoint.check.enabled", False),
        ("haproxy.frontends.0.bindAddress", "127.0.0.1"),
    ],
)
def test_fill_defaults_keeps_explicit_values(path: str, value: object) -> None:
    pool = redis_pool()
    _set(path, value)(pool)
    filled: Any = fill_defaults(pool)
    for part in path.split("."):
        filled = filled[int(part)] if part.isdigit() else filled[part]
    assert filled == value


def test_fill_defaults_does_not_mutate_and_is_idempotent() -> None:
    pool = redis_pool()
    before = copy.deepcopy(pool)
    once = fill_defaults(pool)
    assert pool == before
    assert fill_defaults(once) == once
    once["haproxy"]["frontends"][0]["miscStrs"].append("x")
    assert fill_defaults(pool)["haproxy"]["frontends"][0]["miscStrs"] == []  # no shared default objects


# --------------------------------------------------------------------------------------------------
# normalize_pool
# --------------------------------------------------------------------------------------------------


def _server_copy(pool: dict, seed: int) -> dict:
    """What a server could return for ``pool``: defaults filled, lists reordered, server-only noise."""
    returned = fill_defaults(pool)
    rng = random.Random(seed)
    for key in ("frontends", "backends"):
        rng.shuffle(returned["haproxy"][key])
    rng.shuffle(returned["virtualNetworks"])
    returned["packageName"] = "edgelb-pool"
    returned["packageVersion"] = "v1.5.1"
    returned["principal"] = None
    returned["cpus"] = 0.10000000149011612  # cpus stored as float32
    return returned


@pytest.mark.parametrize("seed", range(5))
def test_normalize_equal_for_sent_and_returned(seed: int) -> None:
    pool = two_service_pool()
    assert normalize_pool(pool) == normalize_pool(_server_copy(pool, seed))


def test_normalize_canonical_order_and_floats() -> None:
    normal = normalize_pool(two_service_pool())
    assert [f["name"] for f in normal["haproxy"]["frontends"]] == [
        "a-frontend",
        "b-frontend",
        "c-frontend",
        NAME,
    ]
    assert [b["name"] for b in normal["haproxy"]["backends"]] == ["a-backend", "b-backend", "c-backend", NAME]
    assert [vn["name"] for vn in normal["virtualNetworks"]] == ["dcos", "zeta"]
    assert normal["cpus"] == 0.1
    assert normal["cpusAdminOverhead"] == 0.1
    assert "packageName" not in normalize_pool({**two_service_pool(), "packageName": "edgelb-pool"})


@pytest.mark.parametrize(
    "change",
    [
        _set("haproxy.frontends.0.bindPort", 16380),
        _set("haproxy.backends.0.services.0.endpoint.port", 32214),
        _set("haproxy.backends.0.balance", "roundrobin"),
        _set("cpus", 0.2),
        _set("count", 2),
        _set("constraints", "hostname:UNIQUE,zone:GROUP_BY"),
        _set("virtualNetworks", [{"name": "dcos"}]),
        _set("haproxy.stats.bindPort", 9090),
    ],
)
def test_normalize_sees_real_changes(change) -> None:
    pool = redis_pool()
    changed = copy.deepcopy(pool)
    change(changed)
    assert normalize_pool(pool) != normalize_pool(changed)


name = st.text(alphabet="abcdefgh:-", min_size=1, max_size=8)


@st.composite
def pools(draw) -> dict:
    backends = [
        {
            "name": n,
            "protocol": draw(st.sampled_from(["TCP", "HTTP"])),
            "miscStrs": draw(st.lists(st.text(max_size=3))),
        }
        for n in draw(st.lists(name, unique=True, max_size=4))
    ]
    frontends = [
        {
            "name": n,
            "bindPort": draw(st.integers(0, 65535)),
            "protocol": "TCP",
            **(
                {"linkBackend": {"defaultBackend": draw(st.sampled_from([b["name"] for b in backends]))}}
                if backends
                else {}
            ),
        }
        for n in draw(st.lists(name, unique=True, max_size=4))
    ]
    pool = {"name": "p", "haproxy": {"frontends": frontends, "backends": backends}}
    if draw(st.booleans()):
        pool["cpus"] = draw(st.floats(0, 8, allow_nan=False).map(lambda f: round(f, 3)))
    if draw(st.booleans()):
        pool["environmentVariables"] = draw(st.dictionaries(st.text(max_size=3), st.text(max_size=3)))
    return pool


@given(pools(), st.integers(0, 1000))
def test_normalize_property(pool: dict, seed: int) -> None:
    returned = fill_defaults(pool)
    rng = random.Random(seed)
    rng.shuffle(returned["haproxy"]["frontends"])
    rng.shuffle(returned["haproxy"]["backends"])
    assert normalize_pool(returned) == normalize_pool(pool)
    assert normalize_pool(normalize_pool(pool)) == normalize_pool(pool)
