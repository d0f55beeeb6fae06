"""The operator's limits through the real Reconciler: out of bounds is Rejected, and EdgeLB is not touched.

Where it sits: ``tests.engine.harness.World`` (the Reconciler, SQLite, the fake cluster and
EdgeLB). ``tests/unit/test_pool_policy.py`` holds the table of values; here the review's
annotations go through the Pending handler as a tenant would send them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.model.policy import Limits
from engine.model.services import ANNOTATION, FINALIZER
from engine.model.settings import Settings
from tests.checks import present
from tests.engine.harness import CLUSTER, World
from tests.fakes.kube import make_service
from tests.hostile import S8_ANNOTATION

KEY = "tenant-b/lb"


def assert_rejected_untouched(world: World, needles: list[str]) -> None:
    binding = world.binding(KEY)
    assert binding.state == "Rejected", binding.last_error
    assert binding.pool is None
    assert world.edgelb.writes() == 0 and world.edgelb.names() == []
    warnings = world.kube.events_for(KEY, type="Warning")
    assert {w["reason"] for w in warnings} == {"InvalidConfiguration"}
    for needle in needles:
        assert needle in warnings[-1]["message"]
    service = present(world.kube.get(KEY))
    assert FINALIZER not in service["metadata"]["finalizers"]
    world.assert_invariants()


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        pytest.param(
            S8_ANNOTATION,
            ["role: ", "constraints: "],  # the parser may refuse the control characters first
            id="the review's annotation",
        ),
        pytest.param(
            "size: 1000000000000\ncpus: 100000.0\nmemory: 999999999999\n",
            [
                "size: 1000000000000 is over this cluster's limit of 32 (--max-pool-size)",
                "cpus: 100000.0 is over this cluster's limit of 16 (--max-pool-cpus)",
                "memory: 999999999999 (MiB) is over this cluster's limit of 32768 MiB (--max-pool-memory)",
            ],
            id="the review's numbers",
        ),
        # The review: "size: 9223372036854775808 goes Ready in the harness with pool count 2^63".
        pytest.param("size: 9223372036854775808\n", ["size: "], id="size 2^63"),
    ],
)
def test_the_reviews_annotation_ends_rejected_with_zero_edgelb_writes(
    world: World, text: str, needles: list[str]
) -> None:
    """S8 (security review): a tenant asked for 10^12 (or 2^63) HAProxy instances, 100000 CPUs,
    a role with terminal escapes and any overlay: now Rejected with a Warning naming each field
    and its flag, and EdgeLB never called to write."""
    world.kube.apply(make_service("lb", namespace="tenant-b", config=text))
    world.settle()
    assert_rejected_untouched(world, needles)
    assert world.kube.get(KEY) is not None
    assert present(world.kube.get(KEY))["metadata"]["annotations"][ANNOTATION] == text, "nothing written back"


def test_the_operators_lists_bound_roles_and_networks(tmp_path: Path) -> None:
    """S8 (security review): with ``--allowed-pool-roles`` and ``--allowed-pool-networks``, a
    tenant cannot run its pool under another team's reserved role or join the operator's overlay."""
    limits = Limits(allowed_roles=("slave_public", "*"), allowed_networks=("dcos",))
    world = World(tmp_path, settings=Settings(cluster_name=CLUSTER, limits=limits))
    try:
        world.kube.apply(
            make_service("lb", namespace="tenant-b", config='role: "*"\nnetwork: ops-admin-overlay\n')
        )
        world.settle()
        assert_rejected_untouched(
            world,
            [
                'network: "ops-admin-overlay" is not a virtual network this cluster allows '
                '(--allowed-pool-networks: "dcos")'
            ],
        )
        world.kube.apply(
            make_service("lb", namespace="tenant-b", config="role: tenant-a-reserved\nnetwork: dcos\n")
        )
        world.settle()
        assert_rejected_untouched(world, ['role: "tenant-a-reserved" is not a role this cluster allows'])
        # What the operator allows is served, with one EdgeLB write.
        world.kube.apply(make_service("lb", namespace="tenant-b", config='role: "*"\nnetwork: dcos\n'))
        world.settle()
        assert world.binding(KEY).state == "Ready"
        assert world.edgelb.writes() == 1
        world.assert_invariants()
    finally:
        world.store.close()


def test_a_ready_service_edited_out_of_bounds_keeps_its_pool(world: World) -> None:
    """S8 (security review): raising a served pool's size past the limit is refused; the pool
    keeps serving as it was, without a write."""
    world.kube.apply(make_service("lb", namespace="tenant-b", config="name: pool-b\nsize: 2\n"))
    world.settle()
    assert world.binding(KEY).state == "Ready"
    writes, pool = world.edgelb.writes(), world.edgelb.stored("pool-b")
    world.kube.apply(make_service("lb", namespace="tenant-b", config="name: pool-b\nsize: 100000\n"))
    world.settle()
    binding = world.binding(KEY)
    assert binding.state == "Rejected" and binding.pool == "pool-b"
    assert "size: 100000 is over this cluster's limit of 32 (--max-pool-size)" in (binding.last_error or "")
    assert world.edgelb.writes() == writes and world.edgelb.stored("pool-b") == pool
    world.assert_invariants()


def test_a_lowered_limit_rejects_at_the_next_start_and_leaves_the_pool_serving(world: World) -> None:
    """An operator who lowers ``--max-pool-size`` under a serving pool's size sees the Service
    Rejected at the next start (the operator's rules are part of its fingerprint), with a
    Warning naming the flag, while EdgeLB is untouched and the pool keeps serving; raising the
    limit again brings it back to Ready, still without a write."""
    world.kube.apply(make_service("lb", namespace="tenant-b", config="name: pool-b\nsize: 3\n"))
    world.settle()
    writes, pool = world.edgelb.writes(), world.edgelb.stored("pool-b")
    world.settings = Settings(cluster_name=CLUSTER, limits=Limits(max_pool_size=2))
    world.restart()
    world.settle()
    binding = world.binding(KEY)
    assert binding.state == "Rejected"
    assert "size: 3 is over this cluster's limit of 2 (--max-pool-size)" in (binding.last_error or "")
    assert world.edgelb.writes() == writes and world.edgelb.stored("pool-b") == pool
    world.settings = Settings(cluster_name=CLUSTER)
    world.restart()
    world.settle()
    assert world.binding(KEY).state == "Ready"
    assert world.edgelb.writes() == writes and world.edgelb.stored("pool-b") == pool
    world.assert_invariants()
