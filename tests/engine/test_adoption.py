"""A lost database: the controller rebuilds its bindings from what the cluster and EdgeLB hold.

The annotations carry every Service's recorded configuration (dklb wrote them back) and the pools
carry every Service's objects under names that say whose they are, so a controller that starts on
an empty database re-adopts everything — with zero writes to EdgeLB or Kubernetes, and no pool
deleted — and its reference counts equal the live bindings again. The pools dklb created carry
its mark (``environmentVariables.DKLB_CREATED_BY``), so they are dklb's again after adoption and a
later cpus/memory/size change reaches them. A pool without the mark that holds only objects named
by this cluster's dklb (the Go dklb marked nothing) is adopted too; a pool marked by another
cluster's dklb, or holding objects no dklb of this cluster named, keeps its settings.
"""

from __future__ import annotations

from pathlib import Path

from engine.model.translation import CREATED_BY_VARIABLE, NAMESPACE_VARIABLE
from tests.checks import present
from tests.engine.harness import CLUSTER, World
from tests.fakes.kube import make_service


def lose_database(world: World, directory: Path) -> None:
    """The controller stops, its database is deleted, a new controller starts on the same path."""
    world.store.close()
    for path in directory.glob("dklb.db*"):
        path.unlink()
    del world.store  # closed: restart() opens a new one
    world.restart()


def test_bindings_and_reference_counts_are_rebuilt_without_a_write(tmp_path: Path) -> None:
    world = World(tmp_path)
    for i in range(60):
        world.kube.apply(make_service(f"dedicated-{i}", ports=[(80, 30000 + i)]))
    for i in range(40):
        world.kube.apply(
            make_service(f"shared-{i}", ports=[(8000 + i, 31000 + i)], config=f"name: shared-{i % 4}\n")
        )
    world.settle()
    pools = sorted(world.edgelb.names())
    references = world.store.live_reference_counts()
    assert len(pools) == 64 and set(world.states().values()) == {"Ready"}
    writes = (world.edgelb.writes(), world.kube.writes)

    lose_database(world, tmp_path)
    world.settle()

    assert set(world.states().values()) == {"Ready"} and len(world.states()) == 100
    assert (world.edgelb.writes(), world.kube.writes) == writes, "adoption writes nothing"
    assert sorted(world.edgelb.names()) == pools, "no pool deleted, none created"
    assert world.store.live_reference_counts() == references
    assert {p.name: p.ref_count for p in world.store.pools()} == references
    world.assert_invariants()
    assert all(p.created_by_dklb for p in world.store.pools()), "the mark in each pool says whose it is"


def test_an_adopted_pool_dklb_created_takes_a_settings_change(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: mine\n"))
    world.settle()
    marks = {CREATED_BY_VARIABLE: CLUSTER, NAMESPACE_VARIABLE: "default"}
    assert present(world.edgelb.stored("mine"))["environmentVariables"] == marks

    lose_database(world, tmp_path)
    writes = world.edgelb.writes()
    world.settle()
    assert world.edgelb.writes() == writes, "adoption writes nothing"
    assert [(p.name, p.created_by_dklb) for p in world.store.pools()] == [("mine", True)]

    world.kube.apply(make_service("a", ports=[(80, 30001)], config="name: mine\ncpus: 0.5\nsize: 2\n"))
    world.settle()
    pool = present(world.edgelb.stored("mine"))
    assert (pool["cpus"], pool["count"]) == (0.5, 2)
    assert pool["environmentVariables"] == marks, "the mark stays"
    assert world.binding("default/a").state == "Ready"
    world.assert_invariants()


def test_after_a_lost_database_foreign_pools_keep_their_settings_and_unmarked_dklb_pools_are_adopted(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
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
    # Made by dklb for another cluster sharing this EdgeLB: that mark is not ours.
    world.seed_foreign_pool(
        {"name": "theirs", "cpus": 3.0, "environmentVariables": {CREATED_BY_VARIABLE: "other-cluster"}}
    )
    world.kube.apply(make_service("guest", ports=[(80, 30001)], config="name: preexisting\n"))
    world.kube.apply(make_service("visitor", ports=[(81, 30002)], config="name: theirs\n"))
    world.kube.apply(make_service("legacy", ports=[(82, 30003)], config="name: legacy\n"))
    world.settle()
    # A pool created before dklb marked its pools (or by the Go dklb): only this cluster's objects.
    unmarked = present(world.edgelb.stored("legacy"))
    del unmarked["environmentVariables"]
    world.edgelb.seed(unmarked)

    lose_database(world, tmp_path)
    world.settle()
    assert set(world.states().values()) == {"Ready"}
    assert {p.name: p.created_by_dklb for p in world.store.pools()} == {
        "preexisting": False,
        "theirs": False,
        # Holding only objects named by this cluster's dklb, with no mark: adopted.
        "legacy": True,
    }

    writes = world.edgelb.writes()
    world.kube.apply(make_service("guest", ports=[(80, 30001)], config="name: preexisting\ncpus: 0.7\n"))
    world.kube.apply(make_service("visitor", ports=[(81, 30002)], config="name: theirs\ncpus: 0.7\n"))
    world.kube.apply(make_service("legacy", ports=[(82, 30003)], config="name: legacy\ncpus: 0.7\n"))
    world.settle()
    assert set(world.states().values()) == {"Ready"}
    assert {
        name: present(world.edgelb.stored(name))["cpus"] for name in ("preexisting", "theirs", "legacy")
    } == {
        "preexisting": 2.0,
        "theirs": 3.0,
        "legacy": 0.7,
    }
    assert world.edgelb.writes() == writes + 1, "only the adopted pool's settings were touched"
    world.assert_invariants()
