"""The V2 pool schema: Go decoding (type errors, defaults, unknown keys), omitempty, normalization."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.edgelb.schema import POOL_NAME_RE, decode_pool, encode_pool, fill_defaults, normalize_pool

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


def _set(path: str, value: object):
    """A mutation setting ``value`` at a dotted path (integers index lists); ``...`` deletes (if there)."""

    def mutate(pool: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = pool
        for part in parents:
            target = target[part]
        if value is ...:
            target.pop(last, None)
        else:
            target[last] = value

    return mutate


def _get(pool: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(pool, list):
            pool = pool[int(part)]
        elif part not in pool:
            return ...
        else:
            pool = pool[part]
    return pool


ENDPOINT = "haproxy.backends.0.services.0.endpoint"
FRONTEND = "haproxy.frontends.0"
CANNOT = "json: cannot unmarshal"


# --------------------------------------------------------------------------------------------------
# decode_pool: Go's JSON decoding into EdgeLB's model
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (
            f"{ENDPOINT}.port",
            128.0,
            f"{CANNOT} number 128.0 into Go struct field V2EndpointAlias.port of type int32",
        ),
        (
            f"{ENDPOINT}.port",
            2**31,
            f"{CANNOT} number 2147483648 into Go struct field V2EndpointAlias.port of type int32",
        ),
        (
            f"{ENDPOINT}.port",
            "80",
            f"{CANNOT} string into Go struct field V2EndpointAlias.port of type int32",
        ),
        (
            f"{ENDPOINT}.allPorts",
            "yes",
            f"{CANNOT} string into Go struct field V2EndpointAlias.allPorts of type bool",
        ),
        (
            f"{ENDPOINT}.check.enabled",
            1,
            f"{CANNOT} number into Go struct field V2EndpointCheckAlias.enabled of type bool",
        ),
        ("cpus", "lots", f"{CANNOT} string into Go struct field V2PoolAlias.cpus of type float64"),
        ("cpus", True, f"{CANNOT} bool into Go struct field V2PoolAlias.cpus of type float64"),
        ("name", 7, f"{CANNOT} number into Go struct field V2PoolAlias.name of type string"),
        ("count", 1.5, f"{CANNOT} number 1.5 into Go struct field V2PoolAlias.count of type int32"),
        ("ports", "80", f"{CANNOT} string into Go struct field V2PoolAlias.ports of type []int32"),
        ("ports", [80, "81"], f"{CANNOT} string into Go struct field V2PoolAlias.ports of type int32"),
        (
            "environmentVariables",
            {"A": 1},
            f"{CANNOT} number into Go struct field V2PoolAlias.environmentVariables.A of type string",
        ),
        ("haproxy", [], f"{CANNOT} array into Go value of type models.V2HaproxyAlias"),
        (
            f"{FRONTEND}.redirectToHttps",
            True,
            f"{CANNOT} bool into Go value of type models.V2FrontendRedirectToHTTPSAlias",
        ),
        (
            "haproxy.backends.0.services.0.mesos",
            "k8s",
            f"{CANNOT} string into Go struct field V2ServiceAlias.mesos of type models.V2ServiceMesos",
        ),
        (
            "haproxy.backends",
            {},
            f"{CANNOT} object into Go struct field V2HaproxyAlias.backends of type []*models.V2Backend",
        ),
    ],
)
def test_json_type_errors_are_gos(path: str, value: object, error: str) -> None:
    pool = redis_pool()
    _set(path, value)(pool)
    assert decode_pool(pool)[1] == error


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ([], f"{CANNOT} array into Go value of type models.V2PoolAlias"),
        ("pool", f"{CANNOT} string into Go value of type models.V2PoolAlias"),
        (42, f"{CANNOT} number into Go value of type models.V2PoolAlias"),
        (None, None),  # Go reads null into an empty pool (whose empty name EdgeLB's checks refuse)
        ({}, None),
    ],
)
def test_a_body_that_is_not_an_object(body: object, error: str | None) -> None:
    pool, found = decode_pool(body)
    assert found == error
    assert pool["name"] == ""


def test_decoding_applies_defaults_drops_unknown_keys_and_folds_case() -> None:
    body = redis_pool()
    body["Cpus"] = 2  # Go's encoding/json matches keys case-insensitively
    body["replicas"] = 3  # unknown: dropped
    body["haproxy"]["frontends"][0]["BINDPORT"] = 80
    pool, error = decode_pool(body)
    assert error is None
    assert pool["cpus"] == 2.0
    assert "replicas" not in pool
    assert pool["haproxy"]["frontends"][0]["bindPort"] == 80
    assert pool["haproxy"]["frontends"][0]["redirectToHttps"] is None
    assert pool["haproxy"]["backends"][0]["services"][0]["endpoint"]["allPorts"] is False
    assert pool["packageVersion"] == "v1.5.1"
    assert decode_pool(body, package_version="v2.0.0")[0]["packageVersion"] == "v2.0.0"


# --------------------------------------------------------------------------------------------------
# What a POST answers (one encode) and what a GET then returns (fill_defaults)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "sent", "answered", "read_back"),
    [
        # omitempty int32: a 0 is left out, so a GET reads the default back.
        (f"{ENDPOINT}.port", 0, ..., -1),
        (f"{ENDPOINT}.port", ..., -1, -1),
        (f"{ENDPOINT}.port", 32213, 32213, 32213),
        ("cpus", 0, ..., 0.9),
        ("mem", 0, ..., 992),
        # Pointers keep a zero: 0 is a dynamic port, count 0 stops the pool.
        ("haproxy.stats.bindPort", 0, 0, 0),
        (
            "haproxy.stats",
            {},
            {"bindAddress": "0.0.0.0", "bindPort": 9090},
            {"bindAddress": "0.0.0.0", "bindPort": 9090},
        ),
        (f"{FRONTEND}.bindPort", 0, 0, 0),
        (f"{FRONTEND}.bindPort", ..., -1, -1),
        ("count", 0, 0, 0),
        # false, "" and {} are left out.
        ("autoCertificate", False, ..., ...),
        ("autoCertificate", True, True, True),
        ("environmentVariables", {}, ..., ...),
        (f"{ENDPOINT}.check.enabled", False, False, False),
        (f"{ENDPOINT}.allPorts", False, ..., ...),
        # Unknown keys are dropped; EdgeLB never names a frontend itself.
        ("replicas", 3, ..., ...),
        (f"{FRONTEND}.name", ..., ..., ...),
        (f"{FRONTEND}.redirectToHttps", {}, {"except": []}, {"except": []}),
        (
            f"{FRONTEND}.redirectToHttps",
            {"except": [{"host": "a", "path": "/"}]},  # pathBeg, not path: dropped
            {"except": [{"host": "a"}]},
            {"except": [{"host": "a"}]},
        ),
    ],
)
def test_omitempty_round_trip(path: str, sent: object, answered: object, read_back: object) -> None:
    pool = redis_pool()
    _set(path, sent)(pool)
    answer = encode_pool(decode_pool(pool)[0])
    assert _get(answer, path) == answered
    assert _get(fill_defaults(pool), path) == read_back
    assert fill_defaults(answer) == fill_defaults(pool)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("apiVersion", "V2"),
        ("namespace", "dcos-edgelb/pools"),
        ("packageName", "edgelb-pool"),
        ("packageVersion", "v1.5.1"),
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
        ("environmentVariables", ...),
        ("autoCertificate", ...),
        ("poolHealthcheckGracePeriod", 180),
        ("poolHealthcheckInterval", 12),
        ("poolHealthcheckMaxFail", 5),
        ("poolHealthcheckTimeout", 60),
        ("haproxy.stats", {"bindAddress": "0.0.0.0", "bindPort": 9090}),
        ("haproxy.frontends", []),
        ("haproxy.backends", []),
    ],
)
def test_fill_defaults_of_an_empty_pool(path: str, expected: object) -> None:
    assert _get(fill_defaults({"name": "p"}), path) == expected


def test_fill_defaults_of_objects() -> None:
    pool = {
        "name": "p",
        "virtualNetworks": [{"name": "dcos"}],
        "haproxy": {
            "frontends": [{"bindPort": 80, "protocol": "HTTP", "linkBackend": {"defaultBackend": "b"}}],
            "backends": [{"name": "b", "protocol": "HTTP", "services": [{"endpoint": {"portName": "web"}}]}],
        },
        "cloudProvider": {"aws": {"elbs": [{"name": "lb", "internal": False}]}},
    }
    filled = fill_defaults(pool)
    assert filled["virtualNetworks"] == [{"name": "dcos"}]
    assert filled["haproxy"]["frontends"] == [
        {
            "bindAddress": "0.0.0.0",
            "bindPort": 80,
            "protocol": "HTTP",
            "certificates": [],
            "miscStrs": [],
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
                        "check": {"enabled": True},
                    },
                }
            ],
        }
    ]
    assert filled["cloudProvider"]["aws"]["elbs"] == [
        {"name": "lb", "type": "NLB", "subnets": [], "elasticIPs": [], "tags": [], "listeners": []}
    ]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        # Explicit values are the client's choice where EdgeLB keeps them.
        ("count", 0),
        ("role", "*"),
        ("constraints", '[["hostname","MAX_PER","1"]]'),
        ("haproxy.backends.0.balance", "leastconn"),
        ("haproxy.frontends.0.bindAddress", "127.0.0.1"),
        ("cpus", 1),  # Go writes 1, not 1.0
    ],
)
def test_fill_defaults_keeps_explicit_values(path: str, value: object) -> None:
    pool = redis_pool()
    _set(path, value)(pool)
    assert _get(fill_defaults(pool), path) == value


def test_fill_defaults_does_not_mutate_and_is_idempotent() -> None:
    pool = redis_pool()
    pool["haproxy"]["backends"][0]["services"][0]["endpoint"]["port"] = 0
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
    """What a server could return for ``pool``: as a GET reads it back, lists reordered, server-only noise."""
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
    ("path", "sent", "returned"),
    [
        # What dklb sends and what the server reads back: equal after normalizing, so no PUT on resync.
        (f"{ENDPOINT}.port", 0, -1),
        ("haproxy.stats.bindPort", 0, 0),
        ("haproxy.stats", {}, {"bindAddress": "0.0.0.0", "bindPort": 9090}),
        ("packageVersion", ..., "v1.4.0"),  # the version the pool was installed with
        (f"{FRONTEND}.redirectToHttps", {}, {"except": []}),
        (f"{FRONTEND}.redirectToHttps", ..., None),
        ("environmentVariables", {}, ...),
        ("autoCertificate", False, ...),
        ("replicas", 3, ...),
    ],
)
def test_normalize_sees_through_what_the_server_changes(path: str, sent: object, returned: object) -> None:
    mine, theirs = redis_pool(), fill_defaults(redis_pool())
    _set(path, sent)(mine)
    _set(path, returned)(theirs)
    assert normalize_pool(mine) == normalize_pool(theirs)


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
        _set(f"{FRONTEND}.redirectToHttps", {}),
        _set(f"{ENDPOINT}.port", 0),
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


def test_decoded_pools_share_nothing_with_each_other() -> None:
    """The model's defaults are decoded once and shared: no decoded pool may hold them itself."""
    first, _ = decode_pool({"haproxy": {"frontends": [{"bindPort": 80}], "backends": [{"services": [{}]}]}})
    first["ports"].append(1)
    first["environmentVariables"] = {"A": "b"}
    first["haproxy"]["stats"]["bindAddress"] = "10.0.0.1"
    first["haproxy"]["frontends"][0]["linkBackend"]["map"].append({"backend": "x"})
    first["haproxy"]["backends"][0]["services"][0]["endpoint"]["check"]["enabled"] = False
    second, _ = decode_pool({"haproxy": {"frontends": [{"bindPort": 80}], "backends": [{"services": [{}]}]}})
    assert second["ports"] == [] and second["haproxy"]["stats"]["bindAddress"] == "0.0.0.0"
    assert second["haproxy"]["frontends"][0]["linkBackend"]["map"] == []
    assert second["haproxy"]["backends"][0]["services"][0]["endpoint"]["check"]["enabled"] is True
    assert decode_pool({})[0]["haproxy"]["stats"] == {"bindAddress": "0.0.0.0", "bindPort": 9090}
