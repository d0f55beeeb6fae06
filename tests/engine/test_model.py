"""Model-based test: random sequences of user actions, restarts and EdgeLB failures.

hypothesis drives a ``RuleBasedStateMachine`` over create / update / share / delete / restart /
fail-the-next-EdgeLB-write / delete-a-pool-out-of-band, letting the world settle after each
step, and checks after every step that the database, EdgeLB and the cluster agree: reference
counts equal live bindings, every pool holds exactly its bindings' objects, no pool is left
without a binding, every LoadBalancer Service has a binding, and every Ready one an address.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from engine.edgelb.errors import Unavailable
from tests.engine.harness import World
from tests.fakes.kube import make_service

NAMES = [("default", "a"), ("default", "b"), ("other", "a"), ("other", "c")]
POOLS = ["p1", "p2", None]  # None: no name, a generated one


def config(pool: str | None, port: int, cpus: float) -> str:
    lines = [f"name: {pool}"] if pool else []
    lines += [f"cpus: {cpus}", "frontends:", f"- port: {port}", "  servicePort: 80"]
    return "\n".join(lines) + "\n"


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="dklb-model-"))
        self.world = World(self.directory)
        self.pool_of: dict[str, str | None] = {}

    def teardown(self) -> None:
        self.world.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule(
        who=st.sampled_from(NAMES),
        pool=st.sampled_from(POOLS),
        port=st.sampled_from([8080, 8081, 8082]),
        cpus=st.sampled_from([0.1, 0.2]),
    )
    def apply(self, who: tuple[str, str], pool: str | None, port: int, cpus: float) -> None:
        namespace, name = who
        key = f"{namespace}/{name}"
        current = self.world.kube.get(key)
        if current is not None and pool is None:
            # Keep a defaulted Service's (recorded) name, as a user re-applying it would.
            pool = self.pool_of.get(key)
        self.pool_of[key] = pool
        self.world.kube.apply(
            make_service(
                name, namespace=namespace, ports=[(80, 30000 + port)], config=config(pool, port, cpus)
            )
            if pool
            else make_service(name, namespace=namespace, ports=[(80, 30000 + port)])
        )
        self.world.settle()

    @rule(who=st.sampled_from(NAMES))
    def delete(self, who: tuple[str, str]) -> None:
        self.world.kube.delete(f"{who[0]}/{who[1]}")
        self.pool_of.pop(f"{who[0]}/{who[1]}", None)
        self.world.settle()

    @rule()
    def restart(self) -> None:
        self.world.restart()
        self.world.settle()

    @rule(method=st.sampled_from(["create_pool", "update_pool", "delete_pool", "get_pool"]))
    def edgelb_fails_once(self, method: str) -> None:
        self.world.edgelb.fail_next(method, Unavailable("injected", status=503))

    @rule(data=st.data())
    def pool_deleted_out_of_band(self, data: st.DataObject) -> None:
        names = self.world.edgelb.names()
        if not names:
            return
        self.world.edgelb.drop(data.draw(st.sampled_from(names)))
        self.world.advance(3600)  # the next resync notices
        self.world.settle()

    @invariant()
    def everything_agrees(self) -> None:
        self.world.settle()
        self.world.assert_invariants()
        for binding in self.world.store.bindings():
            assert binding.state in ("Ready", "Rejected"), (binding.key, binding.state, binding.last_error)


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(
    max_examples=60,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
