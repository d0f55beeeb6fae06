"""A lost database: the controller rebuilds its bindings from what the cluster and EdgeLB hold.

The annotations carry every Service's recorded configuration (dklb wrote them back) and the pools
carry every Service's objects under names that say whose they are, so a controller that starts on
an empty database re-adopts everything — with zero writes to EdgeLB or Kubernetes, and no pool
deleted — and its reference counts equal the live bindings again.
"""

from __future__ import annotations

from pathlib import Path

from tests.engine.harness import World
from tests.fakes.kube import make_service


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

    world.store.close()
    for path in tmp_path.glob("dklb.db*"):
        path.unlink()
    world.store = None  # type: ignore[assignment]
    world.restart()
    world.settle()

    assert set(world.states().values()) == {"Ready"} and len(world.states()) == 100
    assert (world.edgelb.writes(), world.kube.writes) == writes, "adoption writes nothing"
    assert sorted(world.edgelb.names()) == pools, "no pool deleted, none created"
    assert world.store.live_reference_counts() == references
    assert {p.name: p.ref_count for p in world.store.pools()} == references
    world.assert_invariants()
