"""A binding walks its lifecycle against a real SQLite file and fake Kubernetes/EdgeLB.

Each test plays one user story of the seed or of DESIGN.md and checks the three places the
truth lives: the database (state, history, reference counts), EdgeLB (the pool) and the
Service (finalizer, annotation, status, Events).
"""

from __future__ import annotations

import re

from engine.edgelb.errors import Unavailable
from engine.model.services import ANNOTATION, FINALIZER, PAUSED_ANNOTATION
from tests.checks import present
from tests.engine.harness import World
from tests.fakes.kube import make_service

REDIS = "name: dklb-redis\nfrontends:\n- port: 16379\n  servicePort: 6379\n"


def redis(*, type: str = "LoadBalancer", annotations: dict[str, str] | None = None) -> dict:
    return make_service("redis", config=REDIS, type=type, annotations=annotations)


def history(world: World, key: str) -> list[tuple[str | None, str, str]]:
    return [(h.from_state, h.to_state, h.trigger) for h in reversed(world.store.history(key=key, limit=None))]


def test_the_seed_redis_example_walks_to_ready_and_back(world: World) -> None:
    world.kube.apply(redis())
    world.settle()

    binding = world.binding("default/redis")
    assert binding.state == "Ready"
    assert history(world, "default/redis") == [
        (None, "Pending", "observed"),
        ("Pending", "Provisioning", "accept"),
        ("Provisioning", "Provisioning", "claim_pool"),
        ("Provisioning", "AwaitingMetadata", "provisioned"),
        ("AwaitingMetadata", "Ready", "addresses_found"),
    ]
    pool = world.edgelb.stored("dklb-redis")
    assert pool is not None
    frontends = pool["haproxy"]["frontends"]
    assert [(f["name"], f["bindPort"]) for f in frontends] == [
        ("kubernetes-cluster:default:redis:6379", 16379)
    ]
    backend = pool["haproxy"]["backends"][0]
    assert backend["balance"] == "leastconn" and backend["services"][0]["endpoint"]["port"] == 32213
    assert (pool["role"], pool["cpus"], pool["mem"], pool["count"]) == ("slave_public", 0.1, 128, 1)
    service = present(world.kube.get("default/redis"))
    assert service["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.1"}]
    assert FINALIZER in service["metadata"]["finalizers"]
    assert "cpus: 0.1" in service["metadata"]["annotations"][ANNOTATION]
    assert [e["reason"] for e in world.kube.events_for("default/redis")] == [
        "EnsuringLoadBalancer",
        "EnsuredLoadBalancer",
    ]
    assert [(p.name, p.ref_count, p.created_by_dklb, p.served) for p in world.store.pools()] == [
        ("dklb-redis", 1, True, True)
    ]
    world.assert_invariants()

    world.kube.delete("default/redis")
    world.settle()
    assert world.kube.get("default/redis") is None, "finalizer released, Service gone"
    assert world.edgelb.names() == [], "pool deleted with its last Service"
    assert world.store.bindings() == [] and world.store.pools() == []
    assert history(world, "default/redis")[-2:] == [
        ("Ready", "Deleting", "delete"),
        ("Deleting", "Removed", "deleted"),
    ]
    assert [e["reason"] for e in world.kube.events_for("default/redis")][-2:] == [
        "DeletingLoadBalancer",
        "DeletedLoadBalancer",
    ]


def test_a_service_without_annotation_gets_a_stable_defaulted_configuration(world: World) -> None:
    world.kube.apply(make_service("web", ports=[(80, 30080)]))
    world.settle()
    text = present(world.kube.get("default/web"))["metadata"]["annotations"][ANNOTATION]
    name = world.binding("default/web").pool
    assert re.fullmatch(r"kubernetes-cluster--[a-z0-9]{5}", name)
    assert f"name: {name}\n" in text
    writes = world.kube.writes

    world.restart()
    world.advance(3600)
    world.settle()
    assert world.binding("default/web").pool == name
    assert present(world.kube.get("default/web"))["metadata"]["annotations"][ANNOTATION] == text
    assert world.kube.writes == writes, "the annotation is written once"
    assert world.edgelb.names() == [name]


def test_a_ready_binding_makes_no_write_on_resync(world: World) -> None:
    world.kube.apply(redis())
    world.settle()
    edgelb_writes, kube_writes = world.edgelb.writes(), world.kube.writes
    lists = world.edgelb.calls["GET /v2/pools"]
    for _ in range(5):
        world.advance(600)
    assert world.binding("default/redis").state == "Ready"
    assert world.edgelb.calls["GET /v2/pools"] == lists + 5, "each resync really looked: one listing"
    assert (world.edgelb.writes(), world.kube.writes) == (edgelb_writes, kube_writes)


def test_two_services_share_a_pool_and_the_last_one_deletes_it(world: World) -> None:
    # Two namespaces share the pool: both carry the same sharing key.
    world.kube.apply(
        make_service(
            "a",
            namespace="one",
            ports=[(80, 30001)],
            config="name: shared\n",
            shared_pool_key="k",
        )
    )
    world.kube.apply(
        make_service(
            "b",
            namespace="two",
            ports=[(81, 30002)],
            config="name: shared\n",
            shared_pool_key="k",
        )
    )
    world.settle()
    assert world.states() == {"one/a": "Ready", "two/b": "Ready"}
    assert world.edgelb.names() == ["shared"]
    assert len(present(world.edgelb.stored("shared"))["haproxy"]["frontends"]) == 2
    assert present(world.store.pool("shared")).ref_count == 2
    world.assert_invariants()

    world.kube.delete("one/a")
    world.settle()
    assert world.edgelb.names() == ["shared"]
    assert [f["bindPort"] for f in present(world.edgelb.stored("shared"))["haproxy"]["frontends"]] == [81]
    assert present(world.store.pool("shared")).ref_count == 1
    world.assert_invariants()

    world.kube.delete("two/b")
    world.settle()
    assert world.edgelb.names() == [] and world.store.pools() == []


def test_sharing_services_coalesce_into_one_pool_write(world: World) -> None:
    for i in range(10):
        world.kube.apply(make_service(f"s{i}", ports=[(1000 + i, 30000 + i)], config="name: many\n"))
    world.settle()
    assert set(world.states().values()) == {"Ready"}
    # One POST carries all ten: the other nine find the pool already as they want it.
    assert world.edgelb.calls["POST"] == 1 and world.edgelb.calls["PUT"] == 0
    world.assert_invariants()


def test_a_service_that_disagrees_with_a_shared_pool_is_rejected_and_the_pool_kept(world: World) -> None:
    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: shared\ncpus: 0.5\n"))
    world.settle()
    before = world.edgelb.stored("shared")
    world.kube.apply(make_service("b", ports=[(81, 30002)], config="name: shared\ncpus: 0.2\n"))
    world.settle()
    b = world.binding("default/b")
    assert b.state == "Rejected"
    assert "default/a" in b.last_error and "cpus 0.2 (pool has 0.5)" in b.last_error
    warnings = world.kube.events_for("default/b", type="Warning")
    assert warnings and "default/a" in warnings[-1]["message"]
    assert world.edgelb.stored("shared") == before, "the pool's settings never flip"
    world.assert_invariants()


def test_a_frontend_port_clash_in_a_shared_pool_rejects_the_later_service(world: World) -> None:
    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: shared\n"))
    world.settle()
    world.kube.apply(make_service("b", ports=[(80, 30002)], config="name: shared\n"))
    world.settle()
    assert world.states() == {"default/a": "Ready", "default/b": "Rejected"}
    assert "frontend port 80" in world.binding("default/b").last_error
    assert "default/a" in world.binding("default/b").last_error


def test_a_frontend_port_bound_by_a_foreign_object_rejects_the_service(world: World) -> None:
    world.seed_foreign_pool(
        {
            "name": "preexisting",
            "haproxy": {
                "frontends": [
                    {
                        "name": "theirs",
                        "bindPort": 80,
                        "protocol": "TCP",
                        "linkBackend": {"defaultBackend": "x"},
                    }
                ],
                "backends": [
                    {
                        "name": "x",
                        "protocol": "TCP",
                        # EdgeLB refuses a backend without a service.
                        "services": [{"endpoint": {"type": "ADDRESS", "address": "10.0.0.9", "port": 8443}}],
                    }
                ],
            },
        }
    )
    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: preexisting\n"))
    world.settle()
    assert world.binding("default/a").state == "Rejected"
    assert 'frontend "theirs"' in world.binding("default/a").last_error
    assert world.edgelb.writes() == 0


def test_a_preexisting_pool_keeps_its_objects_and_settings(world: World) -> None:
    world.seed_foreign_pool(
        {
            "name": "preexisting",
            "cpus": 2.0,
            "haproxy": {
                "frontends": [
                    {
                        "name": "theirs",
                        "bindPort": 8443,
                        "protocol": "TCP",
                        "linkBackend": {"defaultBackend": "x"},
                    }
                ],
                "backends": [
                    {
                        "name": "x",
                        "protocol": "TCP",
                        # EdgeLB refuses a backend without a service.
                        "services": [{"endpoint": {"type": "ADDRESS", "address": "10.0.0.9", "port": 8443}}],
                    }
                ],
            },
        }
    )
    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: preexisting\n"))
    world.settle()
    pool = present(world.edgelb.stored("preexisting"))
    assert world.binding("default/a").state == "Ready"
    assert pool["cpus"] == 2.0, "settings of a pool dklb did not create are not touched"
    assert sorted(f["name"] for f in pool["haproxy"]["frontends"]) == [
        "kubernetes-cluster:default:a:80",
        "theirs",
    ]
    world.kube.delete("default/a")
    world.settle()
    preexisting = present(world.edgelb.stored("preexisting"))
    assert [f["name"] for f in preexisting["haproxy"]["frontends"]] == ["theirs"]
    assert world.kube.get("default/a") is None


def test_an_invalid_configuration_is_rejected_with_a_warning_and_no_edgelb_write(world: World) -> None:
    world.kube.apply(make_service("bad", config='name: "__foo__"\ncpus: -0.1\n'))
    world.settle()
    binding = world.binding("default/bad")
    assert binding.state == "Rejected"
    assert '"__foo__" is not a valid edgelb pool name' in binding.last_error
    assert "-0.100000 is not a valid cpu request" in binding.last_error
    warning = world.kube.events_for("default/bad", type="Warning")[-1]
    assert warning["reason"] == "InvalidConfiguration" and "__foo__" in warning["message"]
    assert world.edgelb.calls == {} and world.store.pools() == []

    # The user fixes the Service: it proceeds.
    world.kube.apply(make_service("bad", config="name: fixed\n"))
    world.settle()
    assert world.binding("default/bad").state == "Ready"
    assert world.edgelb.names() == ["fixed"]


def test_immutable_fields_are_refused_and_mutable_ones_update_the_pool(world: World) -> None:
    world.kube.apply(redis())
    world.settle()
    before = world.edgelb.stored("dklb-redis")

    world.kube.apply(make_service("redis", config=REDIS.replace("dklb-redis", "other")))
    world.settle()
    binding = world.binding("default/redis")
    assert binding.state == "Rejected"
    assert "cannot be changed" in binding.last_error
    assert world.edgelb.stored("dklb-redis") == before and world.edgelb.names() == ["dklb-redis"]

    world.kube.apply(make_service("redis", config=REDIS.replace("16379", "16380") + "cpus: 0.3\n"))
    world.settle()
    assert world.binding("default/redis").state == "Ready"
    pool = present(world.edgelb.stored("dklb-redis"))
    assert pool["cpus"] == 0.3
    assert [f["bindPort"] for f in pool["haproxy"]["frontends"]] == [16380]
    world.assert_invariants()


def test_a_pool_deleted_out_of_band_is_recreated(world: World) -> None:
    world.kube.apply(redis())
    world.settle()
    world.edgelb.delete_pool("dklb-redis")
    world.advance(600)
    world.settle()
    assert world.edgelb.names() == ["dklb-redis"]
    assert ("Ready", "Provisioning", "drift") in history(world, "default/redis")


def test_strategy_once_does_not_recreate_a_pool_that_served(world: World) -> None:
    world.kube.apply(make_service("redis", config=REDIS + "strategies:\n  creation: Once\n"))
    world.settle()
    world.edgelb.delete_pool("dklb-redis")
    world.advance(600)
    world.step()
    world.advance(60)
    binding = world.binding("default/redis")
    assert binding.state == "Provisioning" and binding.attempts >= 1
    assert 'strategies.creation is "Once"' in binding.last_error
    assert world.edgelb.names() == []
    assert any(e["reason"] == "PoolDeleted" for e in world.kube.events_for("default/redis", type="Warning"))


def test_strategy_never_waits_for_the_pool_to_exist(world: World) -> None:
    world.kube.apply(make_service("redis", config=REDIS + "strategies:\n  creation: Never\n"))
    world.step()  # accepted
    world.step()  # provisioning finds no pool
    assert world.binding("default/redis").state == "Provisioning"
    assert 'strategies.creation is "Never"' in world.binding("default/redis").last_error
    assert world.edgelb.writes() == 0
    world.seed_foreign_pool({"name": "dklb-redis", "haproxy": {"frontends": [], "backends": []}})
    world.settle()
    assert world.binding("default/redis").state == "Ready"


def test_edgelb_failures_are_retried_with_growing_persisted_backoff(world: World) -> None:
    for _ in range(4):
        world.edgelb.fail_next("create_pool", Unavailable("boom", status=503))
    world.kube.apply(redis())
    world.step()  # accept
    world.step()  # claim the pool
    world.step()  # first failed POST
    delays = []
    for _ in range(3):
        binding = world.binding("default/redis")
        delays.append((binding.next_wakeup - world.clock.now).total_seconds())
        world.clock.now = binding.next_wakeup
        world.step()
    assert delays[0] < delays[1] < delays[2], delays
    failures = [h for h in world.store.history(key="default/redis", limit=None) if h.trigger == "failed"]
    assert [h.attempt for h in reversed(failures)] == [1, 2, 3, 4]
    assert failures[0].reason == "EdgeLBUnavailable" and "boom" in failures[0].message
    world.settle()
    assert world.binding("default/redis").state == "Ready" and world.binding("default/redis").attempts == 0


def test_metadata_not_ready_is_polled_with_backoff_and_not_recorded(tmp_path) -> None:
    from tests.fakes.edgelb import FakeEdgeLB

    world = World(tmp_path, edgelb=FakeEdgeLB(auto_metadata=False))
    world.kube.apply(redis())
    world.step()
    world.step()
    world.advance(1)
    world.advance(2)
    binding = world.binding("default/redis")
    assert binding.state == "AwaitingMetadata" and binding.attempts >= 2
    assert present(world.kube.get("default/redis"))["status"] == {}
    assert all(h.trigger != "poll" for h in world.store.history(key="default/redis"))
    world.edgelb.ready("dklb-redis")
    world.settle()
    assert world.binding("default/redis").state == "Ready"


def test_pause_leaves_edgelb_alone_until_resumed(world: World) -> None:
    world.kube.apply(redis(annotations={PAUSED_ANNOTATION: "true"}))
    world.settle()
    assert world.binding("default/redis").state == "Paused"
    assert world.edgelb.calls == {}
    assert (
        "only that exact value pauses"
        in world.kube.events_for("default/redis", type="Warning")[-1]["message"]
    )
    world.kube.apply(redis(annotations={PAUSED_ANNOTATION: "True"}))
    world.settle()
    assert world.binding("default/redis").state == "Ready", 'only the exact string "true" pauses'


def test_udp_ports_are_skipped_with_a_warning(world: World) -> None:
    world.kube.apply(
        make_service("dns", ports=[(53, 30053, "UDP"), (53, 30054, "TCP")], config="name: dns\n")
    )
    world.settle()
    assert world.binding("default/dns").state == "Ready"
    assert [f["bindPort"] for f in present(world.edgelb.stored("dns"))["haproxy"]["frontends"]] == [53]
    assert any("53/UDP" in e["message"] for e in world.kube.events_for("default/dns", type="Warning"))


def test_a_type_change_away_from_load_balancer_cleans_up_and_clears_status(world: World) -> None:
    world.kube.apply(redis())
    world.settle()
    world.kube.apply(redis(type="ClusterIP"))
    world.settle()
    service = world.kube.get("default/redis")
    assert service is not None
    assert service["status"].get("loadBalancer", {}).get("ingress") in (None, [])
    assert FINALIZER not in service["metadata"]["finalizers"]
    assert world.edgelb.names() == [] and world.store.bindings() == []


def test_a_service_deleted_while_the_controller_was_down_is_cleaned_up(world: World) -> None:
    world.kube.apply(redis())
    world.settle()
    world.kube.delete("default/redis")  # the finalizer holds it while nobody is watching
    assert present(world.kube.get("default/redis"))["metadata"]["deletionTimestamp"]
    world.restart()
    world.settle()
    assert world.kube.get("default/redis") is None
    assert world.edgelb.names() == [] and world.store.pools() == []
