"""A deterministic world for engine tests: SQLite file, fake Kubernetes, fake EdgeLB, fake clock.

``World.settle()`` plays the controller without threads: it feeds the fake cluster's Services
to the cache (as watch events would), reconciles every key, and advances the fake clock to the
next wake-up, until every binding waits in a settled state and nothing is due. ``advance``
lets time pass as a resync period would: the pool sweep runs, then every key. Tests then check
the database, the fake EdgeLB and the fake cluster against each other.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.model.services import FINALIZER, foreign, wants_load_balancer
from engine.model.settings import Settings
from engine.model.translation import owner_of
from engine.runtime import lifecycle
from engine.runtime.poolsweep import MetadataSchedule, PoolSweep
from engine.runtime.reconciler import Reconciler
from engine.store import Store, migrate
from states import observe
from tests.fakes.edgelb import FakeEdgeLB
from tests.fakes.kube import FakeKube

SETTLED = {"Ready", "Rejected", "Paused"}
CLUSTER = "kubernetes-cluster"
# --metadata-resync-period in the engine tests: time advanced by more reads every pool's metadata.
METADATA_PERIOD = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class World:
    store: Store  # set by restart()

    def __init__(
        self,
        directory: Path,
        *,
        edgelb: FakeEdgeLB | None = None,
        kube: FakeKube | None = None,
        settings: Settings | None = None,
        seed: int = 7,
    ) -> None:
        self.directory = directory
        self.db = str(directory / "dklb.db")
        self.edgelb = edgelb if edgelb is not None else FakeEdgeLB(auto_metadata=True)
        self.kube = kube if kube is not None else FakeKube()
        self.settings = settings or Settings(cluster_name=CLUSTER)
        self.clock = Clock()
        self.seed = seed
        self.foreign: set[str] = set()
        self.lifecycle = lifecycle.load()
        self.restart()

    def restart(self) -> None:
        """A new controller process on the same database and the same cluster and EdgeLB."""
        if getattr(self, "store", None) is not None:
            self.store.close()
        self.store = migrate.open_store(self.db)
        self.reconciler = Reconciler(
            store=self.store,
            lifecycle=self.lifecycle,
            edgelb=self.edgelb,
            kube=self.kube,
            settings=self.settings,
            clock=self.clock,
            rng=random.Random(self.seed),
        )
        self.sweep = PoolSweep(
            edgelb=self.edgelb,
            store=self.store,
            cache=self.reconciler.cache,
            states=[n for n, s in self.lifecycle.states.items() if s.settled and s.handler is not None],
            cluster=self.settings.cluster_name,
            metadata=MetadataSchedule(
                METADATA_PERIOD, rng=random.Random(self.seed), clock=lambda: self.clock.now.timestamp()
            ),
        )

    def sync_cache(self) -> None:
        cache = self.reconciler.cache
        live = {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s for s in self.kube.list()}
        for key in cache.keys():
            if key not in live:
                cache.remove(key)
        for service in live.values():
            cache.put(service)

    def pending_work(self) -> bool:
        self.sync_cache()
        cache = self.reconciler.cache
        bindings = {b.key: b for b in self.store.bindings()}
        for key in set(cache.keys()) | set(bindings):
            binding = bindings.get(key)
            if observe.external_trigger(
                binding,
                self.visible(cache.get(key)),
                nodes=self.reconciler.node_addresses(),
                policy=self.reconciler.settings.policy_digest,
            ):
                return True
            if binding is not None and binding.state not in SETTLED:
                return True
        return False

    def visible(self, service: dict[str, Any] | None) -> dict[str, Any] | None:
        """The Service as the reconciler shows it to the lifecycle: another controller's is None."""
        if service is not None and foreign(service, self.settings.load_balancer_class):
            return None
        return service

    def step(self) -> None:
        self.sync_cache()
        keys = set(self.reconciler.cache.keys()) | {b.key for b in self.store.bindings()}
        for key in sorted(keys):
            self.reconciler.reconcile(key)
            self.sync_cache()

    def settle(self, *, max_rounds: int = 60) -> None:
        for _ in range(max_rounds):
            self.step()
            if not self.pending_work():
                return
            waiting = [
                b.next_wakeup
                for b in self.store.bindings()
                if b.state not in SETTLED and b.next_wakeup is not None and b.next_wakeup > self.clock.now
            ]
            if waiting:
                self.clock.now = min(waiting)
        states = {b.key: (b.state, b.last_error) for b in self.store.bindings()}
        raise AssertionError(f"the world did not settle in {max_rounds} rounds: {states}")

    def advance(self, seconds: float) -> None:
        """Let time pass and run what became due: the pool sweep (as ``Controller`` runs it every
        resync period, the due pools' metadata included) wakes the bindings it finds wrong,
        then every key is reconciled."""
        self.clock.advance(seconds)
        self.sync_cache()
        self.reconciler.verify(set(self.swept()))
        self.step()

    def swept(self, *, startup: bool = False) -> list[str]:
        """The keys one pool sweep and one metadata refresh would wake now."""
        return [*self.sweep.sweep(startup=startup), *self.sweep.refresh_metadata()]

    # ---- checks ------------------------------------------------------------------------------

    def binding(self, key: str) -> Any:
        return self.store.get(key)

    def states(self) -> dict[str, str]:
        return {b.key: b.state for b in self.store.bindings()}

    def seed_foreign_pool(self, pool: dict[str, Any]) -> None:
        """A pool that exists in EdgeLB before dklb (pre-existing, not dklb's to delete)."""
        self.foreign.add(pool["name"])
        self.edgelb.seed(pool)

    def assert_invariants(self) -> None:
        """What must hold whenever the world is settled, whatever happened before."""
        pools = {p.name: p.ref_count for p in self.store.pools()}
        assert pools == self.store.live_reference_counts(), "reference counts equal live bindings"
        bindings = self.store.bindings()
        for name in self.edgelb.names():
            pool = self.edgelb.stored(name)
            assert pool is not None
            members = [b for b in bindings if b.pool == name]
            if name not in self.foreign:
                assert members, f"EdgeLB pool {name} exists without any binding (orphan)"
            owned = sorted(
                fe["name"]
                for fe in (pool.get("haproxy") or {}).get("frontends") or []
                if owner_of(fe["name"], cluster=self.settings.cluster_name) is not None
            )
            expected = sorted(fe["name"] for b in members if b.objects for fe in b.objects["frontends"])
            assert owned == expected, f"EdgeLB pool {name} holds {owned}, bindings want {expected}"
        for b in bindings:
            service = self.kube.get(b.key)
            if b.state == "Ready":
                assert service is not None
                assert service["status"]["loadBalancer"]["ingress"], f"{b.key} is Ready without an address"
            if b.pool is not None and service is not None:
                assert FINALIZER in service["metadata"]["finalizers"], f"{b.key} has no finalizer"
        for service in self.kube.list():
            key = f"{service['metadata']['namespace']}/{service['metadata']['name']}"
            if self.visible(service) is not None and wants_load_balancer(service):
                assert self.store.get(key) is not None, f"{key} has no binding"
            else:
                assert FINALIZER not in service["metadata"]["finalizers"], f"{key} is still held"
