"""SIGKILL between any two steps: a restarted controller resumes and converges, losing nothing.

Three phases of a mixed workload (create dedicated, shared and defaulted Services; change and
delete some; delete the rest). For each phase we first count the checkpoints of an uninterrupted
run (every EdgeLB write, Kubernetes write and database commit is one), then for EVERY checkpoint
N: restore the world as it was before the phase, kill a controller process at N, start a new
one, and check the invariants: every LoadBalancer Service Ready with its address; every pool
exactly the union of its bindings' objects; no pool without a binding; no duplicate pool;
reference counts equal to live bindings; deleted Services gone with their finalizer released.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.checks import present
from tests.engine.crash_worker import open_world, run_process
from tests.engine.harness import World
from tests.fakes.kube import FakeKube, make_service

ROOT = Path(__file__).resolve().parents[2]
REDIS = "name: dklb-redis\nfrontends:\n- port: 16379\n  servicePort: 6379\n"


def create(kube: FakeKube) -> None:
    kube.apply(make_service("redis", config=REDIS))
    # Two namespaces share the pool: both carry the same sharing key.
    kube.apply(
        make_service(
            "a",
            namespace="one",
            ports=[(80, 30001)],
            config="name: shared\n",
            shared_pool_key="k",
        )
    )
    kube.apply(
        make_service(
            "b",
            namespace="two",
            ports=[(81, 30002)],
            config="name: shared\n",
            shared_pool_key="k",
        )
    )
    kube.apply(make_service("c", ports=[(8080, 30003)]))


def change(kube: FakeKube) -> None:
    kube.apply(make_service("redis", config=REDIS.replace("16379", "16380") + "cpus: 0.3\n"))
    a = kube.get("one/a")
    assert a is not None
    kube.apply(
        make_service(
            "a",
            namespace="one",
            ports=[(80, 30001), (443, 30004)],
            config="name: shared\n",
            shared_pool_key="k",
        )
    )
    kube.delete("two/b")


def delete_all(kube: FakeKube) -> None:
    for service in kube.list():
        kube.delete(f"{service['metadata']['namespace']}/{service['metadata']['name']}")


def after_create(world: World) -> None:
    assert world.states() == {
        "default/c": "Ready",
        "default/redis": "Ready",
        "one/a": "Ready",
        "two/b": "Ready",
    }
    c_pool = world.binding("default/c").pool
    assert sorted(world.edgelb.names()) == sorted(["dklb-redis", "shared", c_pool]), "no duplicate pool"
    assert (
        f"name: {c_pool}\n"
        in present(world.kube.get("default/c"))["metadata"]["annotations"]["kubernetes.dcos.io/dklb-config"]
    )


def after_change(world: World) -> None:
    assert world.states() == {"default/c": "Ready", "default/redis": "Ready", "one/a": "Ready"}
    redis = present(world.edgelb.stored("dklb-redis"))
    assert redis["cpus"] == 0.3 and [f["bindPort"] for f in redis["haproxy"]["frontends"]] == [16380]
    shared = present(world.edgelb.stored("shared"))
    assert sorted(f["bindPort"] for f in shared["haproxy"]["frontends"]) == [80, 443]
    assert world.kube.get("two/b") is None
    assert len(world.edgelb.names()) == 3


def after_delete(world: World) -> None:
    assert world.store.bindings() == [] and world.store.pools() == []
    assert world.edgelb.names() == [] and world.kube.list() == []


PHASES: list[tuple[str, Callable[[FakeKube], None], Callable[[World], None]]] = [
    ("create", create, after_create),
    ("change", change, after_change),
    ("delete", delete_all, after_delete),
]


def check(directory: Path, expectation: Callable[[World], None]) -> None:
    world = open_world(directory)
    try:
        world.assert_invariants()
        expectation(world)
    finally:
        world.store.close()


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    """For each phase: the world just before it (phase actions applied) and its checkpoint count."""
    base = tmp_path_factory.mktemp("crash-base")
    result: dict[str, tuple[Path, int]] = {}
    for name, act, expectation in PHASES:
        act(FakeKube(base / "kube.json"))
        before = tmp_path_factory.mktemp(f"before-{name}")
        shutil.copytree(base, before, dirs_exist_ok=True)
        code, error = run_process(base)
        assert code == 0, error
        count = json.loads((base / "checkpoints").read_text())
        check(base, expectation)
        result[name] = (before, count)
    return result


@pytest.mark.parametrize("phase", [p[0] for p in PHASES])
def test_sigkill_at_every_checkpoint_then_restart_converges(
    phase: str, snapshots: dict[str, tuple[Path, int]], tmp_path: Path
) -> None:
    before, count = snapshots[phase]
    expectation = next(p[2] for p in PHASES if p[0] == phase)
    assert count >= 10, (
        f"phase {phase} passed only {count} checkpoints: the crash points are not where we think"
    )

    def crash_and_resume(n: int) -> str | None:
        directory = tmp_path / f"n{n}"
        shutil.copytree(before, directory)
        code, error = run_process(directory, n)
        if code != -signal.SIGKILL:
            return f"checkpoint {n} did not kill (exit code {code}): {error[-500:]}"
        code, error = run_process(directory)
        if code != 0:
            return f"restart after checkpoint {n} failed (exit code {code}): {error[-2000:]}"
        try:
            check(directory, expectation)
        except AssertionError as exc:
            return f"crash at checkpoint {n}: {exc}"
        finally:
            shutil.rmtree(directory)
        return None

    # Processes, not threads, do the work (forked, so without a second and a half of imports
    # each): two at a time keeps both cores busy.
    with ThreadPoolExecutor(max_workers=2) as pool:
        violations = [v for v in pool.map(crash_and_resume, range(1, count + 1)) if v is not None]
    assert violations == [], "\n".join(violations)
