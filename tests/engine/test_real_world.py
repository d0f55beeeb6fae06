"""What a real EdgeLB and a real cluster do to a binding, with the fakes (issue 14, part 2).

Each test drives the real reconciler and lifecycle against the fake EdgeLB and Kubernetes: a
Service that never put anything in a pool is released at once even with EdgeLB down; EdgeLB's
refusals (400/422) reject instead of retrying for ever; a metadata 404 is "not yet"; a Service
EdgeLB could not reach waits; a stats port is a bound port; the Go dklb's pools are adopted and a
pool someone else made keeps its settings, with a Warning.
"""

from __future__ import annotations

from pathlib import Path

from engine.edgelb.errors import Invalid, NotFound, Unavailable
from engine.model.settings import Settings
from states import provisioning
from states.awaiting_metadata import WARN_EVERY
from tests.checks import present
from tests.engine.harness import CLUSTER, World
from tests.fakes.edgelb import FakeEdgeLB
from tests.fakes.kube import make_service


def warnings(world: World, reason: str) -> list[str]:
    return [e["message"] for e in world.kube.events if e["type"] == "Warning" and e["reason"] == reason]


def until_awaiting_metadata(world: World, key: str) -> None:
    for _ in range(5):
        world.step()
        binding = world.binding(key)
        if binding is not None and binding.state == "AwaitingMetadata":
            return
    raise AssertionError(f"{key} never reached AwaitingMetadata")


def go_object(namespace: str, service: str, port: int) -> str:
    return f"{CLUSTER.replace('/', '.')}:{namespace}:{service}:{port}"


# ---- released at once ----------------------------------------------------------------------------


def test_a_service_rejected_by_a_sharing_conflict_is_released_at_once_while_edgelb_is_down(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: shared\ncpus: 0.2\n"))
    world.settle()
    world.kube.apply(make_service("web", ports=[(81, 30002)], config="name: shared\ncpus: 0.5\n"))
    world.settle()
    assert world.binding("default/web").state == "Rejected"
    assert present(world.kube.get("default/web"))["metadata"]["finalizers"]

    calls = sum(world.edgelb.calls.values())
    for method in ("get_pool", "update_pool", "delete_pool"):
        for _ in range(5):
            world.edgelb.fail_next(method, Unavailable)
    world.kube.delete("default/web")
    world.settle()

    assert world.kube.get("default/web") is None, "the finalizer was dropped: the Service is gone"
    assert world.binding("default/web") is None
    assert sum(world.edgelb.calls.values()) == calls, "EdgeLB was not asked anything"


def test_a_service_that_owns_objects_waits_for_edgelb_and_says_why(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.kube.apply(make_service("a", ports=[(80, 30001)]))
    world.settle()
    world.edgelb.fail_next("get_pool", Unavailable)
    world.kube.delete("default/a")
    world.step()

    assert world.binding("default/a").state == "Deleting"
    assert world.kube.get("default/a") is not None, "kept by the finalizer"
    (message,) = warnings(world, "EdgeLBUnavailable")
    assert "the Service is kept (finalizer) until its load balancer objects are removed" in message
    world.settle()
    assert world.kube.get("default/a") is None and world.edgelb.names() == []


# ---- EdgeLB's refusals ---------------------------------------------------------------------------


def test_an_edgelb_refusal_of_the_body_rejects_the_binding_with_edgelbs_message(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.edgelb.fail_next("create_pool", Invalid("pool.cpus in body should be >= 0", status=422))
    world.kube.apply(make_service("a", ports=[(80, 30001)]))
    world.settle()

    binding = world.binding("default/a")
    assert (binding.state, binding.last_error) == (
        "Rejected",
        f'EdgeLB refused to create pool "{binding.pool}": pool.cpus in body should be >= 0',
    )
    assert warnings(world, "EdgeLBRejectedPool") == [binding.last_error]


def test_a_frontend_port_equal_to_a_shared_pools_stats_port_is_frontend_port_in_use(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.seed_foreign_pool({"name": "shared", "haproxy": {"stats": {"bindPort": 9090}}})
    world.kube.apply(
        make_service(
            "a", ports=[(80, 30001)], config="name: shared\nfrontends:\n- port: 9090\n  servicePort: 80\n"
        )
    )
    world.settle()

    binding = world.binding("default/a")
    assert binding.state == "Rejected"
    assert warnings(world, "FrontendPortInUse") == [
        'frontend port 9090 is already bound by the HAProxy stats of EdgeLB pool "shared"'
    ]
    assert present(world.edgelb.stored("shared"))["haproxy"]["frontends"] == []


# ---- metadata 404 --------------------------------------------------------------------------------


def test_metadata_404_of_an_existing_pool_is_not_yet_and_warned_about_after_a_while(tmp_path: Path) -> None:
    world = World(tmp_path, edgelb=FakeEdgeLB())
    for _ in range(WARN_EVERY):
        world.edgelb.fail_next("get_metadata", NotFound("no route", status=404))
    world.kube.apply(make_service("a", ports=[(80, 30001)]))
    until_awaiting_metadata(world, "default/a")
    pool = world.binding("default/a").pool
    for _ in range(WARN_EVERY + 2):
        binding = world.binding("default/a")
        assert binding.state == "AwaitingMetadata", "a 404 never sends it back to Provisioning"
        world.clock.now = binding.next_wakeup
        world.step()
    assert [h.trigger for h in world.store.history(key="default/a")].count("drift") == 0
    (warned,) = warnings(world, "MetadataNotFound")
    assert warned.startswith(f'EdgeLB pool "{pool}" exists but its metadata is not found (404) yet: still no')

    world.edgelb.ready(pool)
    world.settle()
    assert world.binding("default/a").state == "Ready"


def test_metadata_404_of_a_pool_that_is_gone_sends_the_binding_back_to_provisioning(tmp_path: Path) -> None:
    world = World(tmp_path, edgelb=FakeEdgeLB())
    world.kube.apply(make_service("a", ports=[(80, 30001)]))
    until_awaiting_metadata(world, "default/a")
    pool = world.binding("default/a").pool
    world.edgelb.drop(pool)
    world.clock.now = world.binding("default/a").next_wakeup
    world.step()
    assert "drift" in [h.trigger for h in world.store.history(key="default/a")]
    until_awaiting_metadata(world, "default/a")
    assert pool in world.edgelb.names(), "re-created"


# ---- backends that cannot point anywhere yet ------------------------------------------------------


def test_a_port_without_node_port_waits_with_a_warning_and_goes_on_when_it_gets_one(tmp_path: Path) -> None:
    world = World(tmp_path)
    service = make_service("a", ports=[(80, 0)])
    service["spec"]["allocateLoadBalancerNodePorts"] = False
    del service["spec"]["ports"][0]["nodePort"]
    world.kube.apply(service)
    world.settle()

    assert world.binding("default/a").state == "Rejected"
    assert world.edgelb.names() == [] and world.edgelb.writes() == 0
    (message,) = warnings(world, "BackendsNotReady")
    assert message.startswith("port 80 has no nodePort (spec.allocateLoadBalancerNodePorts is false")

    world.kube.apply(make_service("a", ports=[(80, 30001)]))
    world.settle()
    assert world.binding("default/a").state == "Ready"


def test_address_mode_with_no_ready_node_waits_and_goes_on_when_a_node_is_ready(tmp_path: Path) -> None:
    nodes: list[str] = []
    world = World(tmp_path, settings=Settings(cluster_name=CLUSTER, backend_mode="address"))
    world.reconciler.node_addresses = lambda: tuple(nodes)
    world.kube.apply(make_service("a", ports=[(80, 30001)]))
    world.settle()
    assert world.binding("default/a").state == "Rejected" and world.edgelb.names() == []
    assert warnings(world, "BackendsNotReady") == [
        "no Node is Ready: the backends (--backend-mode address) have no address to point at; waiting"
    ]

    nodes.append("10.0.0.5")
    world.settle()
    assert world.binding("default/a").state == "Ready"
    (backend,) = present(world.edgelb.stored(world.binding("default/a").pool))["haproxy"]["backends"]
    assert [s["endpoint"]["address"] for s in backend["services"]] == ["10.0.0.5"]


# ---- whose pool ----------------------------------------------------------------------------------


def go_pool(name: str, service: str, port: int, node_port: int, *, cpus: float = 0.1) -> dict[str, object]:
    """A pool as the Go dklb made it: no mark, objects named by the dklb naming of this cluster."""
    obj = go_object("default", service, port)
    return {
        "name": name,
        "namespace": "dcos-edgelb/pools",
        "cpus": cpus,
        "mem": 128,
        "count": 1,
        "haproxy": {
            "stats": {"bindPort": 0},
            "frontends": [
                {"name": obj, "bindPort": port, "protocol": "TCP", "linkBackend": {"defaultBackend": obj}}
            ],
            "backends": [
                {
                    "name": obj,
                    "protocol": "TCP",
                    "balance": "leastconn",
                    "services": [
                        {
                            "mesos": {"frameworkName": CLUSTER, "taskNamePattern": "^kube-node-.*$"},
                            "endpoint": {
                                "type": "CONTAINER_IP",
                                "port": node_port,
                                "check": {"enabled": True},
                            },
                        }
                    ],
                }
            ],
        },
    }


def test_a_pool_the_go_dklb_made_is_adopted_and_takes_a_cpus_edit(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.edgelb.seed(go_pool("go-made", "a", 80, 30001))
    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: go-made\ncpus: 0.1\nmemory: 128\n"))
    world.settle()
    assert world.binding("default/a").state == "Ready"
    assert world.edgelb.writes() == 0, "adopted as it is"
    assert present(world.store.pool("go-made")).created_by_dklb

    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: go-made\ncpus: 0.5\nmemory: 128\n"))
    world.settle()
    assert present(world.edgelb.stored("go-made"))["cpus"] == 0.5
    assert warnings(world, "PoolSettingsIgnored") == []


def test_a_pool_someone_else_made_keeps_its_settings_and_a_warning_says_so(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.seed_foreign_pool({"name": "theirs", "cpus": 2.0, "mem": 1024, "count": 1})
    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: theirs\ncpus: 2.0\nmemory: 1024\n"))
    world.settle()
    assert warnings(world, "PoolSettingsIgnored") == []
    record = present(world.store.pool("theirs"))
    assert (record.created_by_dklb, record.pre_existing) == (False, True)

    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: theirs\ncpus: 0.5\nmemory: 1024\n"))
    world.settle()
    stored = present(world.edgelb.stored("theirs"))
    assert stored["cpus"] == 2.0, "now the pool holds only dklb's objects, yet it is not adopted"
    assert warnings(world, "PoolSettingsIgnored") == [
        'EdgeLB pool "theirs" was not made by dklb: its settings are not changed, '
        "so this Service's cpus 0.5 (the pool has 2) is not applied"
    ]


# ---- the cloud switch of the Go dklb's e2e test --------------------------------------------------

CLOUD = (
    '{"aws": {"elbs": [{"name": "web-nlb", "type": "NLB", "internal": false, "listeners": [{"port": 80}]}]}}'
)


def test_adding_a_cloud_load_balancer_moves_the_service_to_its_cloud_pool(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.kube.apply(make_service("web", ports=[(80, 30001)], config="name: ns\n"))
    world.kube.apply(make_service("other", ports=[(81, 30002)], config="name: keep\n"))
    world.settle()
    assert world.binding("default/web").pool == "ns"

    switched = f"name: cloud--ns\nrole: '*'\nsize: 2\ncloudProviderConfiguration: '{CLOUD}'\n"
    world.kube.apply(make_service("web", ports=[(80, 30001)], config=switched))
    world.settle()

    binding = world.binding("default/web")
    assert (binding.state, binding.pool) == ("Ready", "cloud--ns")
    assert "ns" not in world.edgelb.names(), "the old pool, dklb's and empty, is deleted"
    pool = present(world.edgelb.stored("cloud--ns"))
    assert (pool["role"], pool["count"]) == ("*", 2)
    (elb,) = pool["cloudProvider"]["aws"]["elbs"]
    assert [listener["linkFrontend"] for listener in elb["listeners"]] == [
        f"{CLUSTER.replace('/', '.')}:default:web:80"
    ]
    visited = [h.to_state for h in world.store.history(key="default/web")]
    moving = visited.index("Moving")
    assert visited[moving - 1 : moving + 2] == ["Pending", "Moving", "Pending"]
    assert {p.name: p.ref_count for p in world.store.pools()} == {"cloud--ns": 1, "keep": 1}
    world.assert_invariants()


def test_a_claim_left_over_by_a_gone_service_never_claims_a_pool_made_since(tmp_path: Path) -> None:
    # A Service claimed "theirs" and was deleted before its next run; someone made the pool since.
    provisioning._claimed.add("theirs")
    try:
        world = World(tmp_path)
        world.seed_foreign_pool({"name": "theirs", "cpus": 2.0, "mem": 1024, "count": 1})
        world.kube.apply(
            make_service("a", ports=[(80, 30001)], config="name: theirs\ncpus: 2.0\nmemory: 1024\n")
        )
        world.settle()
        record = present(world.store.pool("theirs"))
        assert (record.created_by_dklb, record.pre_existing) == (False, True)
        assert world.edgelb.calls["POST"] == 0
    finally:
        provisioning._claimed.discard("theirs")
