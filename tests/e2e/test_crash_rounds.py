"""Crash injection on real processes: `dklb run` SIGKILLed at random moments under a mixed workload.

Where it sits: the end-to-end twin of the engine's simulated crash tests. A real kube-apiserver
(session fixture), the local EdgeLB (``--no-dataplane``: the API, its pools.json and metadata, no
HAProxy) and `dklb run` as a separate process with its SQLite database in ``tmp_path`` (or, in
the ``postgresql`` variants, a fresh database of the session's PostgreSQL server). A seeded
workload of creates, updates (frontend port, cpus, size) and deletes on dedicated pools and on
shared pools (several Services naming one pool) is applied in rounds; in each round the
controller is started, more operations land, and the controller is SIGKILLed once the database
history has grown by a random number of transitions, or after the random-th EdgeLB write it
logged (both polled with a deadline, never slept on). After the last round the controller is
started once more, and everything must converge to what the user asked for:
``tests.e2e.invariants.violations`` is empty, deleted Services are gone (finalizers released),
every remaining Service is Ready with an address and its pool carries its current port (and, on
a dedicated pool, its cpus and size), no pool is duplicated or orphaned, and the reference counts
equal the live bindings.

That last check ("the update landed") found a lost update that needs no crash: the regression
test at the end races a second user update against the controller writing the defaulted
annotation back (fixed in ``engine.kube.adapter.KubeAdapter.add_finalizer``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
import re
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from sqlalchemy import Engine, create_engine, inspect, text

import localcluster
from engine.edgelb.client import EdgeLBClient
from engine.kube.api import response_json
from engine.model.services import ANNOTATION
from engine.model.translation import owner_of
from engine.store import Store, database_url, migrate
from tests.e2e.invariants import CLUSTER, settled, violations
from tests.processes import ControllerProcess, controller_args, start_edgelb, wait_for

SERVICE_PORT = 6379
FIRST_FRONTEND_PORT = 40000
# Shared pools: every member asks for the same cpus and size (the sharing rule), so none is rejected.
SHARED_POOLS = {"crash-shared-a": (0.2, 2), "crash-shared-b": (0.1, 1), "crash-shared-c": (0.3, 1)}
CPUS = (0.1, 0.2, 0.3, 0.5)
SIZES = (1, 2, 3)
# `dklb run --log-level debug` logs every EdgeLB request once answered: "PUT /v2/pools/x -> 200 in 1.2 ms".
EDGELB_WRITE = re.compile(rb"\b(?:POST|PUT|DELETE) /v2/pools\S* -> \d")
ROUND_DEADLINE = 90.0
CONVERGENCE_DEADLINE = 180.0


# ---- the workload --------------------------------------------------------------------------------


@dataclass
class Wanted:
    """What the user last asked of one Service."""

    name: str
    pool: str
    shared: bool
    port: int
    cpus: float
    size: int

    def annotation(self) -> str:
        # Written the way a user would (not the controller's canonical form), so the controller
        # also writes the defaulted object back while the workload keeps patching.
        return (
            f"name: {self.pool}\ncpus: {self.cpus}\nsize: {self.size}\n"
            f"frontends:\n- port: {self.port}\n  servicePort: {SERVICE_PORT}\n"
        )


@dataclass
class Workload:
    """A seeded stream of operations against one namespace; ``live`` is the desired end state."""

    core: kubernetes.client.CoreV1Api
    namespace: str
    rng: random.Random
    live: dict[str, Wanted] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    _serial: int = 0
    _port: int = FIRST_FRONTEND_PORT

    def _new_port(self) -> int:
        # Never reused: a port freed by one Service and taken by another in the same breath would
        # be a legitimate (transient) clash, and this test wants no Rejected Service.
        self._port += 1
        return self._port

    def apply_one(self) -> str:
        if len(self.live) < 3:
            kind = "create"
        else:
            kind = self.rng.choices(["create", "update", "delete"], weights=[4, 4, 3])[0]
        if kind == "create":
            return self.create()
        name = self.rng.choice(sorted(self.live))
        return self.update(name) if kind == "update" else self._delete(name)

    def create(self) -> str:
        self._serial += 1
        if self.rng.random() < 0.5:
            pool = self.rng.choice(sorted(SHARED_POOLS))
            cpus, size = SHARED_POOLS[pool]
            wanted = Wanted(f"s{self._serial}", pool, True, self._new_port(), cpus, size)
        else:
            name = f"d{self._serial}"
            wanted = Wanted(
                name,
                f"crash-{name}",
                False,
                self._new_port(),
                self.rng.choice(CPUS),
                self.rng.choice(SIZES),
            )
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": wanted.name, "annotations": {ANNOTATION: wanted.annotation()}},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": wanted.name},
                "ports": [{"name": "redis", "port": SERVICE_PORT, "targetPort": SERVICE_PORT}],
            },
        }
        # The generated client is typed for its model classes; it takes the plain dict as well.
        self.core.create_namespaced_service(self.namespace, body, _preload_content=False)  # type: ignore[arg-type]
        self.live[wanted.name] = wanted
        kind = "create-shared" if wanted.shared else "create-dedicated"
        self.counts[kind] += 1
        return f"{kind} {wanted.name} -> {wanted.pool}:{wanted.port}"

    def update(self, name: str) -> str:
        wanted = self.live[name]
        # A shared pool's cpus and size are the pool's: only the port is the Service's own.
        what = "port" if wanted.shared else self.rng.choice(["port", "cpus", "size"])
        if what == "port":
            wanted.port = self._new_port()
        elif what == "cpus":
            wanted.cpus = self.rng.choice([c for c in CPUS if c != wanted.cpus])
        else:
            wanted.size = self.rng.choice([s for s in SIZES if s != wanted.size])
        patch = {"metadata": {"annotations": {ANNOTATION: wanted.annotation()}}}
        # The API server answers 409 to a patch that keeps losing its internal retries against
        # the controller's own writes; kubectl would simply retry, and so does the user here.
        wait_for(lambda: _patched(self.core, name, self.namespace, patch), timeout=30, what=f"patch {name}")
        self.counts[f"update-{what}"] += 1
        return f"update {name} {what}"

    def _delete(self, name: str) -> str:
        self.core.delete_namespaced_service(name, self.namespace, _preload_content=False)
        del self.live[name]
        self.deleted.add(name)
        self.counts["delete"] += 1
        return f"delete {name}"


def _patched(core: kubernetes.client.CoreV1Api, name: str, namespace: str, patch: dict[str, Any]) -> bool:
    try:
        core.patch_namespaced_service(name, namespace, patch, _preload_content=False)
    except kubernetes.client.ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


# ---- observing the controller --------------------------------------------------------------------


Database = Path | str  # a SQLite file, or a PostgreSQL URL


@functools.cache
def _server(url: str) -> Engine:
    # One kept connection: the kill condition polls every 20 ms, and a new PostgreSQL connection
    # (SCRAM authentication) costs more than that. Disposed by ``running`` before the test's
    # database is dropped.
    return create_engine(url, pool_size=1, max_overflow=0)


def history_rows(database: Database) -> int:
    """Rows in the history table (0 before the controller has created and migrated the database)."""
    if isinstance(database, str):
        if not migrated(database):
            return 0
        with _server(database).connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM history")).scalar_one())
    if not database.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
            return int(db.execute("SELECT count(*) FROM history").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not migrated yet


def migrated(database: Database) -> bool:
    """The controller has migrated the database to this dklb's head (a kill may land mid-migration,
    and on SQLite each revision commits on its own: tables exist before the last column does)."""
    query = "SELECT version_num FROM alembic_version"
    if isinstance(database, str):
        with _server(database).connect() as conn:
            if "alembic_version" not in inspect(conn).get_table_names():
                return False
            found = [row[0] for row in conn.exec_driver_sql(query)]
    else:
        if not database.exists():
            return False
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
            try:
                found = [row[0] for row in db.execute(query)]
            except sqlite3.OperationalError:  # no alembic_version table yet
                return False
    return found == [migrate.head()]


def database_of(request: pytest.FixtureRequest, tmp_path: Path, dialect: str) -> Database:
    if dialect == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        # SQLAlchemy's plain postgresql:// means psycopg2; dklb speaks psycopg 3.
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    return tmp_path / "dklb.db"


def edgelb_writes(log_path: Path, offset: int) -> int:
    """EdgeLB writes (POST/PUT/DELETE) the controller logged after byte ``offset`` of its log."""
    if not log_path.exists():
        return 0
    with log_path.open("rb") as f:
        f.seek(offset)
        return len(EDGELB_WRITE.findall(f.read()))


def service_json(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        response = core.read_namespaced_service(name, namespace, _preload_content=False)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return response_json(response)


def release_namespace(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    """Delete the namespace's Services and strip their finalizers (as conftest.release_services)."""
    response = core.list_namespaced_service(namespace, _preload_content=False)
    for service in response_json(response)["items"]:
        name = service["metadata"]["name"]
        with contextlib.suppress(kubernetes.client.ApiException):
            if service["metadata"].get("finalizers"):
                core.patch_namespaced_service(
                    name, namespace, {"metadata": {"finalizers": None}}, _preload_content=False
                )
            core.delete_namespaced_service(name, namespace, _preload_content=False)


# ---- what the user asked for, checked where the user looks ---------------------------------------


def mismatches(
    *,
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    edgelb: EdgeLBClient,
    database: Database,
    load: Workload,
) -> list[str]:
    """Every way the three parties differ from the workload's desired end state ([] = converged)."""
    found: list[str] = []
    store = Store(database_url(str(database)), read_only=True)
    try:
        bindings = {b.name: b for b in store.bindings() if b.namespace == namespace}
        ref_counts = {p.name: p.ref_count for p in store.pools() if p.ref_count}
    finally:
        store.close()
    pools = {p["name"]: p for p in edgelb.list_pools()}

    for name in sorted(load.deleted):
        if service_json(core, namespace, name) is not None:
            found.append(f"deleted Service {name} is still in the API (finalizer not released)")
        if name in bindings:
            found.append(f"deleted Service {name} still has a {bindings[name].state} binding")
    for name, wanted in sorted(load.live.items()):
        service = service_json(core, namespace, name)
        if service is None:
            found.append(f"Service {name} is missing from the API")
            continue
        text = (service["metadata"].get("annotations") or {}).get(ANNOTATION) or ""
        config = yaml.safe_load(text) or {}
        ports = [f.get("port") for f in config.get("frontends") or []]
        if ports != [wanted.port] or config.get("cpus") != wanted.cpus or config.get("size") != wanted.size:
            found.append(
                f"Service {name}'s annotation asks for ports {ports}, cpus {config.get('cpus')}, size "
                f"{config.get('size')}; the user last wrote port {wanted.port}, cpus {wanted.cpus}, "
                f"size {wanted.size} (an update was overwritten)"
            )
        binding = bindings.get(name)
        if binding is None or binding.state != "Ready":
            found.append(f"Service {name} is {binding.state if binding else 'without a binding'}, not Ready")
            continue
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if not ingress:
            found.append(f"Service {name} is Ready without a status address")
        pool = pools.get(wanted.pool)
        if pool is None:
            found.append(f"Service {name} is Ready but its pool {wanted.pool} is not in EdgeLB")
            continue
        bound = [
            int(fe["bindPort"])
            for fe in (pool.get("haproxy") or {}).get("frontends") or []
            if (owner_of(fe["name"], cluster=CLUSTER) or (None,))[0] == (namespace, name)
        ]
        if bound != [wanted.port]:
            found.append(f"pool {wanted.pool} binds {bound} for Service {name}, which asks for {wanted.port}")
        if not wanted.shared and (pool.get("cpus"), pool.get("count")) != (wanted.cpus, wanted.size):
            found.append(
                f"dedicated pool {wanted.pool} has cpus {pool.get('cpus')}, count {pool.get('count')}; "
                f"Service {name} asks for cpus {wanted.cpus}, size {wanted.size}"
            )
    expected_pools = Counter(w.pool for w in load.live.values())
    if sorted(pools) != sorted(expected_pools):
        found.append(f"EdgeLB holds pools {sorted(pools)}, the live Services use {sorted(expected_pools)}")
    if ref_counts != dict(expected_pools):
        found.append(f"reference counts {ref_counts} differ from the live Services {dict(expected_pools)}")
    return found


# ---- the rounds -----------------------------------------------------------------------------------


@dataclass
class Figures:
    rounds: int = 0
    kills: int = 0
    busy_kills: int = 0  # killed on reaching the random target (mid-work)
    idle_kills: int = 0  # everything had settled before the target was reached
    history_rows: int = 0
    edgelb_writes: int = 0


def slice_sizes(rng: random.Random, operations: int, rounds: int) -> list[int]:
    """``operations`` split over ``rounds`` at random cut points (a round may get none)."""
    cuts = sorted(rng.randint(0, operations) for _ in range(rounds - 1))
    edges = [0, *cuts, operations]
    return [b - a for a, b in itertools.pairwise(edges)]


def kill_condition(
    rng: random.Random,
    *,
    database: Database,
    log_path: Path,
    log_offset: int,
    operations: int,
    is_settled: Callable[[], bool],
    alive: Callable[[], bool],
) -> tuple[str, Callable[[], str | None]]:
    """A random kill moment: (description, condition returning "busy"/"idle" when it is time, or
    "exited" when the controller died by itself)."""
    start_rows = history_rows(database)
    last_settled_check = [0.0]

    def settled_now() -> bool:
        # settled() opens the database and lists Services: not on every 20 ms poll.
        now = time.monotonic()
        if now - last_settled_check[0] < 0.3:
            return False
        last_settled_check[0] = now
        return is_settled()

    if rng.random() < 0.5:
        target = rng.randint(1, 2 * operations + 2)
        description = f"after {target} history rows"

        def reached() -> bool:
            return history_rows(database) - start_rows >= target
    else:
        target = rng.randint(1, operations // 2 + 1)
        description = f"after {target} EdgeLB writes"

        def reached() -> bool:
            return edgelb_writes(log_path, log_offset) >= target

    def condition() -> str | None:
        if not alive():
            return "exited"
        if reached():
            return "busy"
        # Nothing left to do before the target: kill at rest, once the round's work was seen.
        if (operations == 0 or history_rows(database) > start_rows) and settled_now():
            return "idle"
        return None

    return description, condition


@dataclass
class Environment:
    """One test's processes: its namespace, the local EdgeLB, and the (not yet started) controller."""

    core: kubernetes.client.CoreV1Api
    namespace: str
    database: Database
    edgelb: EdgeLBClient
    controller: ControllerProcess

    def is_settled(self) -> bool:
        return migrated(self.database) and settled(
            core=self.core, namespace=self.namespace, database=self.database
        )

    def mismatches(self, load: Workload) -> list[str]:
        return mismatches(
            core=self.core, namespace=self.namespace, edgelb=self.edgelb, database=self.database, load=load
        )

    def converge(self, load: Workload, *, timeout: float) -> list[str]:
        """Wait (with a deadline) for the desired end state; then every violation and mismatch."""
        with contextlib.suppress(AssertionError):
            wait_for(
                lambda: self.is_settled() and not self.mismatches(load),
                timeout=timeout,
                interval=0.25,
                what="convergence",
            )
        found = violations(
            core=self.core, namespace=self.namespace, edgelb=self.edgelb, database=self.database
        )
        return found + self.mismatches(load)


@contextlib.contextmanager
def running(
    kube_cluster: localcluster.LocalCluster,
    core: kubernetes.client.CoreV1Api,
    tmp_path: Path,
    database: Database | None = None,
) -> Iterator[Environment]:
    """A fresh namespace, ``dklb edgelb-local --no-dataplane`` and a `dklb run` (resync 2s) to start.

    Everything is released even on failure: the controller killed and EdgeLB stopped by PID, the
    namespace's Services deleted with their finalizers stripped.
    """
    namespace = f"e2e-crash-{uuid.uuid4().hex[:8]}"
    database = tmp_path / "dklb.db" if database is None else database
    # The generated client is typed for its model classes; it takes the plain dict as well.
    core.create_namespace({"metadata": {"name": namespace}}, _preload_content=False)  # type: ignore[arg-type]
    with contextlib.ExitStack() as cleanup:
        edgelb = start_edgelb(tmp_path / "edgelb", extra=["--no-dataplane"])
        cleanup.callback(edgelb.stop)
        cleanup.callback(release_namespace, core, namespace)
        controller = ControllerProcess(
            args=controller_args(
                kubeconfig=kube_cluster.kubeconfig,
                edgelb_url=edgelb.url,
                database=database,
                resync_period="2s",
                http_listen="127.0.0.1:0",  # not the default :9420, which a parallel run may hold
            ),
            log_path=tmp_path / "controller.log",
        )
        cleanup.callback(controller.kill)
        if isinstance(database, str):
            cleanup.callback(lambda: _server(database).dispose())
        yield Environment(core, namespace, database, EdgeLBClient(edgelb.url), controller)


def crash_rounds(
    *,
    kube_cluster: localcluster.LocalCluster,
    core: kubernetes.client.CoreV1Api,
    tmp_path: Path,
    rounds: int,
    operations: int,
    seed: int,
    database: Database | None = None,
) -> None:
    started = time.monotonic()
    rng = random.Random(seed)
    figures = Figures()
    with running(kube_cluster, core, tmp_path, database) as env:
        controller = env.controller
        load = Workload(core=core, namespace=env.namespace, rng=rng)
        for index, size in enumerate(slice_sizes(rng, operations, rounds)):
            # Some of the round's operations land while the controller is down (a delete then
            # rests on the finalizer), the others while it runs.
            while_down = rng.randint(0, size)
            for _ in range(while_down):
                load.apply_one()
            log_offset = controller.log_path.stat().st_size if controller.log_path.exists() else 0
            controller.start()
            for _ in range(size - while_down):
                load.apply_one()
            description, condition = kill_condition(
                rng,
                database=env.database,
                log_path=controller.log_path,
                log_offset=log_offset,
                operations=size,
                is_settled=env.is_settled,
                alive=lambda: controller.proc is not None and controller.proc.poll() is None,
            )
            moment = wait_for(
                condition,
                timeout=ROUND_DEADLINE,
                interval=0.02,
                what=f"round {index}: {description} or settled",
            )
            assert moment != "exited", (
                f"round {index}: the controller exited by itself:\n{controller.log()[-3000:]}"
            )
            controller.kill()
            figures.rounds += 1
            figures.kills += 1
            figures.busy_kills += moment == "busy"
            figures.idle_kills += moment == "idle"

        controller.start()
        found = env.converge(load, timeout=CONVERGENCE_DEADLINE)
        figures.history_rows = history_rows(env.database)
        figures.edgelb_writes = edgelb_writes(controller.log_path, 0)
        log_tail = controller.log()[-4000:]
        controller.stop()

    seconds = time.monotonic() - started
    print(
        f"\ncrash rounds ({'postgresql' if isinstance(env.database, str) else 'sqlite'}): "
        f"seed {seed}, {figures.rounds} rounds, {figures.kills} SIGKILLs "
        f"({figures.busy_kills} mid-work, {figures.idle_kills} at rest), {sum(load.counts.values())} "
        f"operations {dict(sorted(load.counts.items()))}, {len(load.live)} Services left on "
        f"{len({w.pool for w in load.live.values()})} pools, {figures.history_rows} history rows, "
        f"{figures.edgelb_writes} EdgeLB writes, {len(found)} violations, {seconds:.1f} s"
    )
    assert figures.kills == rounds
    assert sum(load.counts.values()) == operations
    assert found == [], "\n".join(found) + f"\n--- controller log tail ---\n{log_tail}"


DIALECTS = pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])


@DIALECTS
@pytest.mark.parametrize(
    ("rounds", "operations", "seed"),
    [
        pytest.param(4, 20, 1, id="4-rounds"),
        # ``./dev slow``: the figure RELIABILITY.md quotes.
        pytest.param(30, 100, 7, id="30-rounds", marks=pytest.mark.slow),
    ],
)
def test_crash_rounds_converge(
    kube_cluster: localcluster.LocalCluster,
    core: kubernetes.client.CoreV1Api,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    dialect: str,
    rounds: int,
    operations: int,
    seed: int,
) -> None:
    crash_rounds(
        kube_cluster=kube_cluster,
        core=core,
        tmp_path=tmp_path,
        rounds=rounds,
        operations=operations,
        seed=seed,
        database=database_of(request, tmp_path, dialect),
    )


def test_an_update_landing_while_the_controller_writes_the_annotation_back_is_not_undone(
    kube_cluster: localcluster.LocalCluster, core: kubernetes.client.CoreV1Api, tmp_path: Path
) -> None:
    """Regression, found by the crash rounds' "the update landed" check: Pending writes the defaulted
    configuration back into the annotation; it did so with a blind merge patch, so a user update
    landing between the controller's read and that write was silently replaced by the defaulted
    form of the previous version, and the pool settled on the old port/cpus/size. Each Service here
    gets a second update the moment the controller has started on the first one."""
    with running(kube_cluster, core, tmp_path) as env:
        load = Workload(core=core, namespace=env.namespace, rng=random.Random(3))
        env.controller.start()
        for _ in range(6):
            load.create()
        assert env.converge(load, timeout=60) == []
        for burst in range(4):
            for name in sorted(load.live):
                rows = history_rows(env.database)
                load.update(name)
                # The controller is on it (Ready -> Pending): the next update races its write-back.

                def written(rows: int = rows) -> bool:
                    return history_rows(env.database) > rows

                wait_for(written, timeout=30, what="spec_changed")
                load.update(name)
            found = env.converge(load, timeout=60)
            assert found == [], f"burst {burst}:\n" + "\n".join(found)
        print(f"\nupdate races: {dict(sorted(load.counts.items()))}, 0 updates lost")
