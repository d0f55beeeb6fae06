"""Service + configuration -> pool objects, pool composition and status."""

from __future__ import annotations

import copy
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgelb_local.validation import validate_pool
from engine.edgelb.schema import fill_defaults, normalize_pool
from engine.model.config import PoolConfig
from engine.model.translation import (
    CREATED_BY_VARIABLE,
    ServicePort,
    compose_pool,
    created_by_dklb,
    exposed_ports,
    ingress_from_metadata,
    is_empty,
    link_listeners,
    new_pool,
    object_name,
    owned_part,
    owner_of,
    pool_ports,
    remove_owner,
    same_pool,
    service_objects,
)
from tests.checks import present

CLUSTER = "kubernetes-cluster"
GROUP = "dcos-edgelb/pools"
REDIS = "kubernetes-cluster:default:redis:6379"
REDIS_SETTINGS = PoolConfig(name="dklb-redis", role="slave_public", network="", cpus=0.1, memory=128, size=1)


def service(name: str, *ports: dict, namespace: str = "default") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "LoadBalancer", "ports": list(ports)},
    }


REDIS_SERVICE = service("redis", {"protocol": "TCP", "port": 6379, "targetPort": 6379, "nodePort": 32213})


def objects(svc: str, *ports: tuple[int, int, int], namespace: str = "default", cluster: str = CLUSTER, **kw):
    """(frontends, backends) for (servicePort, nodePort, bindPort) triples."""
    return service_objects(
        cluster=cluster,
        namespace=namespace,
        service=svc,
        ports=[ServicePort(port=p, node_port=n) for p, n, _ in ports],
        bind_ports={p: b for p, _, b in ports},
        **kw,
    )


def redis_pool() -> dict:
    frontends, backends = objects("redis", (6379, 32213, 16379))
    return new_pool(settings=REDIS_SETTINGS, pool_group=GROUP, frontends=frontends, backends=backends)


def foreign_frontend(name: str, port: int) -> dict:
    return {"name": name, "bindPort": port, "protocol": "HTTP", "linkBackend": {"defaultBackend": name}}


def foreign_backend(name: str) -> dict:
    # EdgeLB needs a port (or port name) for every service endpoint.
    return {
        "name": name,
        "protocol": "HTTP",
        "services": [{"marathon": {"serviceID": "/web"}, "endpoint": {"portName": "web"}}],
    }


def names(objs: list[dict]) -> list[str]:
    return [o["name"] for o in objs]


# --------------------------------------------------------------------------------------------------
# The seed's Redis example, end to end through the pure functions
# --------------------------------------------------------------------------------------------------


def test_redis_example_pool() -> None:
    ports, warnings = exposed_ports(REDIS_SERVICE)
    assert warnings == []
    frontends, backends = service_objects(
        cluster=CLUSTER, namespace="default", service="redis", ports=ports, bind_ports={6379: 16379}
    )
    pool = new_pool(settings=REDIS_SETTINGS, pool_group=GROUP, frontends=frontends, backends=backends)
    assert pool == {
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
                    "name": REDIS,
                    "bindAddress": "0.0.0.0",
                    "bindPort": 16379,
                    "protocol": "TCP",
                    "linkBackend": {"defaultBackend": REDIS},
                }
            ],
            "backends": [
                {
                    "name": REDIS,
                    "protocol": "TCP",
                    "balance": "leastconn",
                    "services": [
                        {
                            "mesos": {"frameworkName": CLUSTER, "taskNamePattern": "^kube-node-.*$"},
                            "endpoint": {"type": "CONTAINER_IP", "port": 32213, "check": {"enabled": True}},
                        }
                    ],
                }
            ],
        },
    }
    assert "virtualNetworks" not in pool and "constraints" not in pool and "cloudProvider" not in pool
    assert validate_pool(pool) == []
    assert pool_ports(pool) == [0, 16379]
    # As the server returns it, `dcos edgelb list` style.
    assert pool_ports(fill_defaults({**pool, "haproxy": {**pool["haproxy"], "stats": {}}})) == [9090, 16379]


# --------------------------------------------------------------------------------------------------
# exposed_ports
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ports", "expected", "warnings"),
    [
        (
            [{"protocol": "TCP", "port": 6379, "nodePort": 32213, "name": "redis"}],
            [ServicePort(6379, 32213, "TCP", "redis")],
            [],
        ),
        ([{"port": 80, "nodePort": 30080}], [ServicePort(80, 30080)], []),  # protocol missing = TCP
        ([{"port": 80}], [ServicePort(80, 0)], []),  # nodePort not allocated yet
        (
            [{"protocol": "UDP", "port": 53, "nodePort": 30053}],
            [],
            ["port 53/UDP is not exposed: dklb supports TCP only"],
        ),
        (
            [
                {"protocol": "TCP", "port": 53, "nodePort": 30054, "name": "dns-tcp"},
                {"protocol": "UDP", "port": 53, "nodePort": 30053, "name": "dns"},
                {"protocol": "SCTP", "port": 9899, "nodePort": 30099},
                {"protocol": "TCP", "port": 8080, "nodePort": 30080},
            ],
            [ServicePort(53, 30054, "TCP", "dns-tcp"), ServicePort(8080, 30080)],
            [
                "port 53/UDP is not exposed: dklb supports TCP only",
                "port 9899/SCTP is not exposed: dklb supports TCP only",
            ],
        ),
        (
            [{"port": 80, "nodePort": 30080}, {"port": 80, "nodePort": 30081, "name": "again"}],
            [ServicePort(80, 30080)],
            ["port 80/TCP is listed twice: only its first entry is exposed"],
        ),
        ([{"port": 0}], [], ["port 0/TCP is not exposed: it is not a valid port number"]),
        ([{"port": 70000}], [], ["port 70000/TCP is not exposed: it is not a valid port number"]),
        ([{"name": "no-port"}], [], ["port None/TCP is not exposed: it is not a valid port number"]),
        ([{"port": True}], [], ["port True/TCP is not exposed: it is not a valid port number"]),
        ([], [], []),
    ],
)
def test_exposed_ports(ports: list[dict], expected: list[ServicePort], warnings: list[str]) -> None:
    assert exposed_ports(service("svc", *ports)) == (expected, warnings)


def test_exposed_ports_without_spec_ports() -> None:
    assert exposed_ports({"metadata": {"name": "x"}, "spec": {}}) == ([], [])


# --------------------------------------------------------------------------------------------------
# Names and ownership
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        ("kubernetes-cluster", "kubernetes-cluster:default:redis:6379"),
        ("/kubernetes-cluster", ".kubernetes-cluster:default:redis:6379"),
        ("/dev/kubernetes01", ".dev.kubernetes01:default:redis:6379"),
        ("dev/prod/k8s", "dev.prod.k8s:default:redis:6379"),
    ],
)
def test_object_name(cluster: str, expected: str) -> None:
    name = object_name(cluster=cluster, namespace="default", service="redis", service_port=6379)
    assert name == expected
    assert owner_of(name, cluster=cluster) == (("default", "redis"), 6379)


@pytest.mark.parametrize(
    ("name", "cluster", "expected"),
    [
        ("kubernetes-cluster:kube-system:dns:53", CLUSTER, (("kube-system", "dns"), 53)),
        (".dev.kubernetes01:team-a:web:443", "/dev/kubernetes01", (("team-a", "web"), 443)),
        # Foreign objects, or objects of another cluster: never ours.
        ("frontend_0.0.0.0_80", CLUSTER, None),
        ("web-backend", CLUSTER, None),
        ("other-cluster:default:redis:6379", CLUSTER, None),
        (".dev.kubernetes01:default:redis:6379", "dev/kubernetes01", None),
        ("kubernetes-cluster__default__redis__6379", CLUSTER, None),  # the Go dklb's separator
        ("kubernetes-cluster:default:redis:http", CLUSTER, None),
        ("kubernetes-cluster:default:redis:0", CLUSTER, None),
        ("kubernetes-cluster:default:redis:65536", CLUSTER, None),
        ("kubernetes-cluster:default:redis:080", CLUSTER, None),
        ("kubernetes-cluster:default::6379", CLUSTER, None),
        ("kubernetes-cluster::redis:6379", CLUSTER, None),
        ("default:redis:6379", CLUSTER, None),
        ("x:kubernetes-cluster:default:redis:6379", CLUSTER, None),
        ("", CLUSTER, None),
    ],
)
def test_owner_of(name: str, cluster: str, expected: object) -> None:
    assert owner_of(name, cluster=cluster) == expected


dns_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(
    cluster=st.lists(st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True), min_size=1, max_size=3).map("/".join),
    leading_slash=st.booleans(),
    namespace=dns_label,
    svc=dns_label,
    port=st.integers(1, 65535),
)
def test_owner_of_round_trip(cluster: str, leading_slash: bool, namespace: str, svc: str, port: int) -> None:
    cluster = "/" + cluster if leading_slash else cluster
    name = object_name(cluster=cluster, namespace=namespace, service=svc, service_port=port)
    assert owner_of(name, cluster=cluster) == ((namespace, svc), port)
    assert owner_of(name, cluster=cluster + "x") is None


# --------------------------------------------------------------------------------------------------
# service_objects
# --------------------------------------------------------------------------------------------------


def test_service_objects_cluster_with_slashes() -> None:
    frontends, backends = objects("web", (80, 30080, 80), (443, 30443, 8443), cluster="/dev/kubernetes01")
    assert (
        names(frontends)
        == names(backends)
        == [
            ".dev.kubernetes01:default:web:80",
            ".dev.kubernetes01:default:web:443",
        ]
    )
    assert [f["bindPort"] for f in frontends] == [80, 8443]
    assert [f["linkBackend"] for f in frontends] == [{"defaultBackend": n} for n in names(backends)]
    # The framework is the cluster's DC/OS service name as given, slashes and all.
    assert backends[1]["services"] == [
        {
            "mesos": {"frameworkName": "/dev/kubernetes01", "taskNamePattern": "^kube-node-.*$"},
            "endpoint": {"type": "CONTAINER_IP", "port": 30443, "check": {"enabled": True}},
        }
    ]


def test_service_objects_default_bind_port_is_service_port() -> None:
    frontends, _ = service_objects(
        cluster=CLUSTER,
        namespace="default",
        service="web",
        ports=[ServicePort(80, 30080), ServicePort(443, 30443)],
        bind_ports={443: 8443},
    )
    assert [f["bindPort"] for f in frontends] == [80, 8443]


def test_service_objects_dynamic_ports() -> None:
    frontends, backends = objects("web", (80, 30080, 80), (443, 30443, 8443), dynamic_ports=True)
    assert [f["bindPort"] for f in frontends] == [0, 0]
    assert [b["services"][0]["endpoint"]["port"] for b in backends] == [30080, 30443]


def test_service_objects_address_mode() -> None:
    _, backends = objects(
        "redis",
        (6379, 32213, 16379),
        backend_mode="address",
        node_addresses=["10.0.0.2", "10.0.0.1", "10.0.0.2"],
    )
    assert backends == [
        {
            "name": REDIS,
            "protocol": "TCP",
            "balance": "leastconn",
            "services": [
                {
                    "endpoint": {
                        "type": "ADDRESS",
                        "address": "10.0.0.1",
                        "port": 32213,
                        "check": {"enabled": True},
                    }
                },
                {
                    "endpoint": {
                        "type": "ADDRESS",
                        "address": "10.0.0.2",
                        "port": 32213,
                        "check": {"enabled": True},
                    }
                },
            ],
        }
    ]
    frontends, backends = objects("redis", (6379, 32213, 16379), backend_mode="address", node_addresses=["x"])
    pool = new_pool(settings=REDIS_SETTINGS, pool_group=GROUP, frontends=frontends, backends=backends)
    assert validate_pool(pool) == []


def test_service_objects_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="backend_mode"):
        objects("redis", (6379, 32213, 16379), backend_mode="marathon")


# --------------------------------------------------------------------------------------------------
# new_pool
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (REDIS_SETTINGS, {"role": "slave_public", "cpus": 0.1, "mem": 128, "count": 1}),
        (
            PoolConfig(name="dklb-pool-0", role="*", network="dcos", cpus=0.2, memory=512, size=3),
            {"role": "*", "cpus": 0.2, "mem": 512, "count": 3, "virtualNetworks": [{"name": "dcos"}]},
        ),
        (
            PoolConfig(
                name="p",
                role="slave_public",
                network="",
                cpus=0.1,
                memory=128,
                size=1,
                constraints='[["hostname","MAX_PER","1"],["@zone","GROUP_BY","3"]]',
            ),
            {
                "role": "slave_public",
                "cpus": 0.1,
                "mem": 128,
                "count": 1,
                "constraints": '[["hostname","MAX_PER","1"],["@zone","GROUP_BY","3"]]',
            },
        ),
    ],
)
def test_new_pool_settings(settings: PoolConfig, expected: dict) -> None:
    frontends, backends = objects("redis", (6379, 32213, 16379))
    pool = new_pool(settings=settings, pool_group="my/group", frontends=frontends, backends=backends)
    top = {k: v for k, v in pool.items() if k not in ("name", "namespace", "haproxy")}
    assert top == expected
    assert pool["name"] == settings.name and pool["namespace"] == "my/group"
    assert validate_pool(pool) == []


def test_new_pool_marks_the_pools_dklb_creates() -> None:
    frontends, backends = objects("redis", (6379, 32213, 16379))
    pool = new_pool(
        settings=REDIS_SETTINGS, pool_group=GROUP, frontends=frontends, backends=backends, created_by=CLUSTER
    )
    assert pool["environmentVariables"] == {CREATED_BY_VARIABLE: CLUSTER} == {"DKLB_CREATED_BY": CLUSTER}
    assert validate_pool(pool) == []
    assert created_by_dklb(pool, cluster=CLUSTER) and created_by_dklb(fill_defaults(pool), cluster=CLUSTER)
    assert "environmentVariables" not in redis_pool(), "no mark unless asked (dklb plan, dklb pools)"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({CREATED_BY_VARIABLE: CLUSTER}, True),
        ({"OTHER": "x", CREATED_BY_VARIABLE: CLUSTER}, True),
        ({CREATED_BY_VARIABLE: "other-cluster"}, False),
        ({CREATED_BY_VARIABLE: ""}, False),
        ({"OTHER": CLUSTER}, False),
        ({}, False),
        (None, False),
        ([CREATED_BY_VARIABLE, CLUSTER], False),
        ("DKLB_CREATED_BY=kubernetes-cluster", False),
    ],
)
def test_created_by_dklb_reads_the_mark_of_this_cluster_only(variables: object, expected: bool) -> None:
    pool = {"name": "p"} if variables is None else {"name": "p", "environmentVariables": variables}
    assert created_by_dklb(pool, cluster=CLUSTER) is expected


def test_compose_keeps_the_mark_whether_or_not_settings_are_applied() -> None:
    frontends, backends = objects("redis", (6379, 32213, 16379))
    created = new_pool(
        settings=REDIS_SETTINGS, pool_group=GROUP, frontends=frontends, backends=backends, created_by=CLUSTER
    )
    base = fill_defaults(created)
    for settings in (None, REDIS_SETTINGS):
        composed = compose_pool(
            base, cluster=CLUSTER, owners=[("default", "redis")], frontends=[], backends=[], settings=settings
        )
        assert created_by_dklb(composed, cluster=CLUSTER)


def test_new_pool_does_not_share_objects_with_caller() -> None:
    frontends, backends = objects("redis", (6379, 32213, 16379))
    pool = new_pool(settings=REDIS_SETTINGS, pool_group=GROUP, frontends=frontends, backends=backends)
    pool["haproxy"]["frontends"][0]["bindPort"] = 1
    assert frontends[0]["bindPort"] == 16379


# --------------------------------------------------------------------------------------------------
# compose_pool, remove_owner, is_empty
# --------------------------------------------------------------------------------------------------


def shared_pool() -> dict:
    """A pre-existing pool with a foreign object, then redis, then another Service of this cluster,
    then an object of another cluster."""
    web_f, web_b = objects("web", (80, 30080, 8080), namespace="shop")
    redis_f, redis_b = objects("redis", (6379, 32213, 16379))
    other_f, other_b = objects("redis", (6379, 31000, 26379), cluster="other")
    return fill_defaults(
        {
            "name": "shared",
            "role": "slave_public",
            "cpus": 1.0,
            "mem": 1024,
            "count": 2,
            "constraints": "hostname:UNIQUE",
            "haproxy": {
                "frontends": [foreign_frontend("www", 80), *redis_f, *web_f, *other_f],
                "backends": [foreign_backend("www"), *redis_b, *web_b, *other_b],
            },
        }
    )


def test_compose_unchanged_service_is_same_pool() -> None:
    base = shared_pool()
    frontends, backends = objects("redis", (6379, 32213, 16379))
    desired = compose_pool(
        base, cluster=CLUSTER, owners=[("default", "redis")], frontends=frontends, backends=backends
    )
    assert same_pool(desired, base)


def test_compose_replaces_changed_bind_port_and_keeps_everything_else() -> None:
    base = shared_pool()
    before = copy.deepcopy(base)
    frontends, backends = objects("redis", (6379, 32213, 16380))
    desired = compose_pool(
        base, cluster=CLUSTER, owners=[("default", "redis")], frontends=frontends, backends=backends
    )
    assert base == before  # not mutated
    assert not same_pool(desired, base)
    # Same order; only redis's frontend changed, and it changed in place.
    assert names(desired["haproxy"]["frontends"]) == names(base["haproxy"]["frontends"])
    assert names(desired["haproxy"]["backends"]) == names(base["haproxy"]["backends"])
    assert desired["haproxy"]["frontends"][1] == frontends[0]
    for i in (0, 2, 3):
        assert desired["haproxy"]["frontends"][i] == base["haproxy"]["frontends"][i]
        assert desired["haproxy"]["backends"][i] == base["haproxy"]["backends"][i]
    # Pool-level settings untouched without `settings`.
    assert {k: desired[k] for k in ("role", "cpus", "mem", "count")} == {
        "role": "slave_public",
        "cpus": 1.0,
        "mem": 1024,
        "count": 2,
    }


def test_compose_adds_a_new_service_at_the_end() -> None:
    base = shared_pool()
    frontends, backends = objects("db", (5432, 30432, 5432), namespace="shop")
    desired = compose_pool(
        base, cluster=CLUSTER, owners=[("shop", "db")], frontends=frontends, backends=backends
    )
    assert names(desired["haproxy"]["frontends"]) == [
        *names(base["haproxy"]["frontends"]),
        "kubernetes-cluster:shop:db:5432",
    ]
    assert validate_pool(desired) == []


def test_compose_drops_a_removed_port_and_adds_a_new_one() -> None:
    base = shared_pool()
    frontends, backends = objects("redis", (6380, 32214, 16380))
    desired = compose_pool(
        base, cluster=CLUSTER, owners=[("default", "redis")], frontends=frontends, backends=backends
    )
    assert names(desired["haproxy"]["frontends"]) == [
        "www",
        "kubernetes-cluster:default:redis:6380",
        "kubernetes-cluster:shop:web:80",
        "other:default:redis:6379",
    ]


def test_compose_several_owners_at_once() -> None:
    base = shared_pool()
    redis_f, redis_b = objects("redis", (6379, 32213, 16379))
    web_f, web_b = objects("web", (80, 30080, 8081), namespace="shop")
    desired = compose_pool(
        base,
        cluster=CLUSTER,
        owners=[("default", "redis"), ("shop", "web")],
        frontends=[*redis_f, *web_f],
        backends=[*redis_b, *web_b],
    )
    assert [f["bindPort"] for f in desired["haproxy"]["frontends"]] == [80, 16379, 8081, 26379]


def test_compose_refuses_objects_it_does_not_own() -> None:
    frontends, _ = objects("web", (80, 30080, 8080), namespace="shop")
    with pytest.raises(ValueError, match="not owned"):
        compose_pool(
            shared_pool(), cluster=CLUSTER, owners=[("default", "redis")], frontends=frontends, backends=[]
        )
    with pytest.raises(ValueError, match="not owned"):
        compose_pool(
            shared_pool(),
            cluster=CLUSTER,
            owners=[("default", "redis")],
            frontends=[foreign_frontend("www", 80)],
            backends=[],
        )


@pytest.mark.parametrize(
    ("settings", "expected", "vns"),
    [
        (REDIS_SETTINGS, {"role": "slave_public", "cpus": 0.1, "mem": 128, "count": 1}, None),
        (
            PoolConfig(
                name="shared", role="*", network="dcos", cpus=0.5, memory=256, size=3, constraints="c"
            ),
            {"role": "*", "cpus": 0.5, "mem": 256, "count": 3, "constraints": "c"},
            [{"name": "dcos", "labels": {"team": "a"}}],  # labels kept on the same network
        ),
        (
            PoolConfig(name="shared", role="*", network="overlay", cpus=0.5, memory=256, size=3),
            {"role": "*", "cpus": 0.5, "mem": 256, "count": 3, "constraints": "hostname:UNIQUE"},
            [{"name": "overlay"}],
        ),
    ],
)
def test_compose_with_settings(settings: PoolConfig, expected: dict, vns: list | None) -> None:
    base = shared_pool()
    base["virtualNetworks"] = [{"name": "dcos", "labels": {"team": "a"}}]
    frontends, backends = objects("redis", (6379, 32213, 16379))
    desired = compose_pool(
        base,
        cluster=CLUSTER,
        owners=[("default", "redis")],
        frontends=frontends,
        backends=backends,
        settings=settings,
    )
    for key, value in expected.items():
        assert desired[key] == value
    assert desired.get("virtualNetworks") == vns
    assert names(desired["haproxy"]["frontends"]) == names(base["haproxy"]["frontends"])


def test_compose_on_a_pool_without_haproxy() -> None:
    frontends, backends = objects("redis", (6379, 32213, 16379))
    desired = compose_pool(
        {"name": "bare"},
        cluster=CLUSTER,
        owners=[("default", "redis")],
        frontends=frontends,
        backends=backends,
    )
    assert desired["haproxy"] == {"frontends": frontends, "backends": backends}


@pytest.mark.parametrize(
    ("owner", "frontends_left"),
    [
        (("default", "redis"), ["www", "kubernetes-cluster:shop:web:80", "other:default:redis:6379"]),
        (("shop", "web"), ["www", REDIS, "other:default:redis:6379"]),
        (("default", "nobody"), ["www", REDIS, "kubernetes-cluster:shop:web:80", "other:default:redis:6379"]),
    ],
)
def test_remove_owner(owner: tuple[str, str], frontends_left: list[str]) -> None:
    base = shared_pool()
    left = remove_owner(base, cluster=CLUSTER, owner=owner)
    assert names(left["haproxy"]["frontends"]) == frontends_left
    assert names(left["haproxy"]["backends"]) == frontends_left
    assert not is_empty(left)
    assert validate_pool(left) == []


def test_remove_last_owner_leaves_an_empty_pool() -> None:
    pool = redis_pool()
    assert not is_empty(pool)
    left = remove_owner(pool, cluster=CLUSTER, owner=("default", "redis"))
    assert left["haproxy"]["frontends"] == [] and left["haproxy"]["backends"] == []
    assert is_empty(left)
    # A foreign object keeps a pool alive.
    pool["haproxy"]["backends"].append(foreign_backend("kept"))
    assert not is_empty(remove_owner(pool, cluster=CLUSTER, owner=("default", "redis")))


@pytest.mark.parametrize(
    ("pool", "empty"),
    [
        ({"name": "p"}, True),
        ({"name": "p", "haproxy": {}}, True),
        ({"name": "p", "haproxy": {"frontends": [], "backends": []}}, True),
        ({"name": "p", "haproxy": {"frontends": [{"name": "f"}], "backends": []}}, False),
        ({"name": "p", "haproxy": {"frontends": [], "backends": [{"name": "b"}]}}, False),
    ],
)
def test_is_empty(pool: dict, empty: bool) -> None:
    assert is_empty(pool) is empty


# --------------------------------------------------------------------------------------------------
# same_pool, owned_part
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_same_pool_after_server_defaults_and_shuffle(seed: int) -> None:
    sent = compose_pool(
        shared_pool(),
        cluster=CLUSTER,
        owners=[("default", "redis")],
        frontends=objects("redis", (6379, 32213, 16379))[0],
        backends=objects("redis", (6379, 32213, 16379))[1],
    )
    returned = fill_defaults(sent)
    rng = random.Random(seed)
    rng.shuffle(returned["haproxy"]["frontends"])
    rng.shuffle(returned["haproxy"]["backends"])
    returned["packageVersion"] = "v1.5.1"
    assert same_pool(sent, returned)
    assert same_pool(redis_pool(), fill_defaults(redis_pool()))


def _resized(pool: dict, size: int) -> dict:
    changed = copy.deepcopy(pool)
    changed["count"] = size
    return changed


def _shuffled(pool: dict) -> dict:
    changed = copy.deepcopy(pool)
    changed["haproxy"]["frontends"].reverse()
    return changed


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (redis_pool(), redis_pool(), True),  # the same JSON value: no normalization needed
        (redis_pool(), fill_defaults(redis_pool()), True),  # server defaults
        (redis_pool(), _resized(redis_pool(), 7), False),
        (_resized(redis_pool(), 7), _resized(redis_pool(), 7), True),
        (_resized(redis_pool(), 7), _resized(redis_pool(), 8), False),
        (shared_pool(), _shuffled(shared_pool()), True),  # order of named lists
        ({"name": "p", "bad": {1, 2}}, {"name": "p", "bad": {1, 2}}, True),  # no JSON text: no memo
        ({"name": "p", "bad": {1, 2}}, {"name": "q", "bad": {1, 2}}, False),
    ],
)
def test_same_pool_memo_answers_as_normalization(a: dict, b: dict, same: bool) -> None:
    before = (copy.deepcopy(a), copy.deepcopy(b))
    # Asked twice: the second answer comes from the memo and must not differ.
    assert [same_pool(a, b), same_pool(a, b), same_pool(b, a)] == [same] * 3
    assert (normalize_pool(a) == normalize_pool(b)) is same
    assert (a, b) == before  # the arguments are not mutated


def test_same_pool_memo_follows_a_changed_pool() -> None:
    pool = fill_defaults(redis_pool())
    assert same_pool(redis_pool(), pool)
    # The same dict, changed after it was compared: its new text is a new key.
    pool["count"] = 9
    assert not same_pool(redis_pool(), pool)


@pytest.mark.parametrize(
    "ports",
    [
        [(6379, 32213, 16380)],  # bind port changed
        [(6379, 32214, 16379)],  # node port changed
        [(6379, 32213, 16379), (6380, 32214, 16380)],  # port added
        [],  # port removed
    ],
)
def test_same_pool_false_after_a_change(ports: list[tuple[int, int, int]]) -> None:
    frontends, backends = objects("redis", *ports)
    changed = new_pool(settings=REDIS_SETTINGS, pool_group=GROUP, frontends=frontends, backends=backends)
    assert not same_pool(changed, fill_defaults(redis_pool()))


def test_owned_part() -> None:
    frontends, backends = owned_part(shared_pool(), cluster=CLUSTER, owner=("shop", "web"))
    assert names(frontends) == names(backends) == ["kubernetes-cluster:shop:web:80"]
    assert frontends[0]["bindPort"] == 8080
    assert frontends[0]["certificates"] == []  # normalized
    assert backends[0]["rewriteHttp"]["response"] == {"rewriteLocation": True}
    # The same part whether read from what was sent or from what the server returned.
    sent_f, sent_b = objects("web", (80, 30080, 8080), namespace="shop")
    pool = {"name": "p", "haproxy": {"frontends": sent_f, "backends": sent_b}}
    assert owned_part(pool, cluster=CLUSTER, owner=("shop", "web")) == (frontends, backends)
    assert owned_part(shared_pool(), cluster=CLUSTER, owner=("shop", "nobody")) == ([], [])
    assert owned_part(shared_pool(), cluster="other", owner=("default", "redis"))[0][0]["bindPort"] == 26379


# --------------------------------------------------------------------------------------------------
# Cloud provider
# --------------------------------------------------------------------------------------------------

WEB_80 = "kubernetes-cluster:default:web:80"
WEB_443 = "kubernetes-cluster:default:web:443"


def web_objects() -> tuple[list[dict], list[dict]]:
    return objects("web", (80, 30080, 80), (443, 30443, 443), dynamic_ports=True)


@pytest.mark.parametrize(
    ("listeners", "expected"),
    [
        # No listeners: one per frontend, on the Service port.
        (None, [{"port": 80, "linkFrontend": WEB_80}, {"port": 443, "linkFrontend": WEB_443}]),
        ([], [{"port": 80, "linkFrontend": WEB_80}, {"port": 443, "linkFrontend": WEB_443}]),
        # A listener without a frontend links the one of its port.
        ([{"port": 443}], [{"port": 443, "linkFrontend": WEB_443}]),
        # A listener that names its frontend is kept as written.
        ([{"port": 8443, "linkFrontend": WEB_443}], [{"port": 8443, "linkFrontend": WEB_443}]),
        # No frontend for that port among several: left unlinked (EdgeLB will say why).
        ([{"port": 8080}], [{"port": 8080}]),
    ],
)
def test_link_listeners(listeners: list | None, expected: list[dict]) -> None:
    elb: dict = {"name": "web-lb", "type": "NLB", "internal": False, "subnets": ["subnet-1"]}
    if listeners is not None:
        elb["listeners"] = listeners
    cloud = {"aws": {"elbs": [elb]}}
    linked = link_listeners(cloud, web_objects()[0])
    assert linked["aws"]["elbs"][0]["listeners"] == expected
    assert {k: v for k, v in linked["aws"]["elbs"][0].items() if k != "listeners"} == {
        k: v for k, v in elb.items() if k != "listeners"
    }
    assert cloud["aws"]["elbs"][0].get("listeners") == listeners  # not mutated


def test_link_listeners_single_frontend_takes_any_port() -> None:
    frontends, _ = objects("redis", (6379, 32213, 16379), dynamic_ports=True)
    linked = link_listeners({"aws": {"elbs": [{"name": "lb", "listeners": [{"port": 80}]}]}}, frontends)
    assert linked["aws"]["elbs"][0]["listeners"] == [{"port": 80, "linkFrontend": REDIS}]


def test_cloud_provider_pool() -> None:
    settings = PoolConfig(
        name="cloud--kubernetes-cluster--web",
        role="slave_public",
        network="",
        cpus=0.1,
        memory=128,
        size=1,
        cloud_provider_configuration=json.dumps(
            {"aws": {"elbs": [{"name": "web-lb", "type": "NLB", "internal": False}]}}
        ),
    )
    frontends, backends = web_objects()
    pool = new_pool(settings=settings, pool_group=GROUP, frontends=frontends, backends=backends)
    assert [f["bindPort"] for f in pool["haproxy"]["frontends"]] == [0, 0]
    assert pool["cloudProvider"] == {
        "aws": {
            "elbs": [
                {
                    "name": "web-lb",
                    "type": "NLB",
                    "internal": False,
                    "listeners": [
                        {"port": 80, "linkFrontend": WEB_80},
                        {"port": 443, "linkFrontend": WEB_443},
                    ],
                }
            ]
        }
    }
    assert validate_pool(pool) == []
    assert present(settings.cloud_provider)["aws"]["elbs"][0].get("listeners") is None  # settings not mutated

    # Composing the same Service on what the server returned changes nothing.
    desired = compose_pool(
        fill_defaults(pool),
        cluster=CLUSTER,
        owners=[("default", "web")],
        frontends=frontends,
        backends=backends,
        settings=settings,
    )
    assert same_pool(desired, pool)

    # Port 443 removed from the Service: its listener goes with its frontend.
    fewer_f, fewer_b = objects("web", (80, 30080, 80), dynamic_ports=True)
    desired = compose_pool(
        fill_defaults(pool),
        cluster=CLUSTER,
        owners=[("default", "web")],
        frontends=fewer_f,
        backends=fewer_b,
        settings=settings,
    )
    assert desired["cloudProvider"]["aws"]["elbs"][0]["listeners"] == [{"port": 80, "linkFrontend": WEB_80}]
    assert validate_pool(desired) == []


def test_remove_owner_drops_listeners_of_removed_frontends() -> None:
    pool = fill_defaults(
        {
            "name": "p",
            "haproxy": {
                "frontends": [foreign_frontend("www", 8080), *web_objects()[0]],
                "backends": [foreign_backend("www"), *web_objects()[1]],
            },
            "cloudProvider": {
                "aws": {
                    "elbs": [
                        {
                            "name": "lb",
                            "listeners": [
                                {"port": 80, "linkFrontend": "www"},
                                {"port": 81, "linkFrontend": WEB_80},
                                {"port": 443, "linkFrontend": WEB_443},
                            ],
                        }
                    ]
                }
            },
        }
    )
    assert validate_pool(pool) == []
    left = remove_owner(pool, cluster=CLUSTER, owner=("default", "web"))
    assert left["cloudProvider"]["aws"]["elbs"][0]["listeners"] == [{"port": 80, "linkFrontend": "www"}]
    assert validate_pool(left) == []


# --------------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------------


def metadata(*frontends: tuple[str, list[str], list[str]], elbs: list[dict] | None = None) -> dict:
    md: dict = {
        "name": "p",
        "frontends": [
            {"name": n, "endpoints": [{"port": 1, "private": private, "public": public}]}
            for n, private, public in frontends
        ],
        "stats": [{"port": 1025, "private": ["10.9.9.9"], "public": ["9.9.9.9"]}],
    }
    if elbs is not None:
        md["aws"] = {"elbs": elbs}
    return md


@pytest.mark.parametrize(
    ("md", "expected"),
    [
        (metadata((REDIS, ["10.0.6.38"], ["35.164.164.23"])), [{"ip": "10.0.6.38"}, {"ip": "35.164.164.23"}]),
        # Sorted within each kind; private before public; other Services' frontends ignored.
        (
            metadata(
                (WEB_80, ["10.0.0.2", "10.0.0.1"], ["9.0.0.2"]),
                (WEB_443, ["10.0.0.3"], ["9.0.0.1"]),
                ("kubernetes-cluster:default:other:80", ["10.1.1.1"], ["8.8.8.8"]),
            ),
            [
                {"ip": "10.0.0.1"},
                {"ip": "10.0.0.2"},
                {"ip": "10.0.0.3"},
                {"ip": "9.0.0.1"},
                {"ip": "9.0.0.2"},
            ],
        ),
        # An address that is both private and public (a host-network agent) appears once.
        (
            metadata(
                (WEB_80, ["127.0.0.1"], ["127.0.0.1"]), (WEB_443, ["127.0.0.1"], ["127.0.0.1", "1.2.3.4"])
            ),
            [{"ip": "127.0.0.1"}, {"ip": "1.2.3.4"}],
        ),
        # Hostnames first, only from ELBs linking one of the frontends, lower-cased, once.
        (
            metadata(
                (WEB_80, ["10.0.0.1"], []),
                elbs=[
                    {
                        "name": "b",
                        "dns": "B-LB.elb.amazonaws.com",
                        "listeners": [{"port": 80, "linkFrontend": WEB_80}],
                    },
                    {
                        "name": "a",
                        "dns": "a-lb.elb.amazonaws.com",
                        "listeners": [{"port": 1, "linkFrontend": WEB_443}],
                    },
                    {
                        "name": "c",
                        "dns": "c-lb.elb.amazonaws.com",
                        "listeners": [{"port": 2, "linkFrontend": "www"}],
                    },
                    {
                        "name": "d",
                        "dns": "b-lb.elb.amazonaws.com",
                        "listeners": [{"port": 3, "linkFrontend": WEB_80}],
                    },
                    {"name": "e", "dns": "", "listeners": [{"port": 4, "linkFrontend": WEB_80}]},
                ],
            ),
            [
                {"hostname": "a-lb.elb.amazonaws.com"},
                {"hostname": "b-lb.elb.amazonaws.com"},
                {"ip": "10.0.0.1"},
            ],
        ),
        (metadata(("www", ["10.0.0.1"], ["1.1.1.1"])), []),
        ({"name": "p"}, []),
    ],
)
def test_ingress_from_metadata(md: dict, expected: list[dict]) -> None:
    assert ingress_from_metadata(md, frontend_names=[REDIS, WEB_80, WEB_443]) == expected


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        (fill_defaults({"name": "p"}), [9090]),
        (redis_pool(), [0, 16379]),
        (shared_pool(), [9090, 80, 16379, 8080, 26379]),
    ],
)
def test_pool_ports(pool: dict, expected: list[int]) -> None:
    assert pool_ports(pool) == expected
