"""`dklb run` under faults, end to end: a flaky EdgeLB, a restarted kube-apiserver, a watch that expires.

Where it sits: these tests drive the real processes of the data flow — kube-apiserver + etcd
(``localcluster``), ``dklb edgelb-local`` with its fault injector (``edgelb_local.faults``) and
``dklb run`` — through a workload, then check the end state with ``tests.e2e.invariants``
(``settled`` then ``violations == []``) and the controller's own records (history in its
database, its log, its /metrics).

- EdgeLB faults (session API server): 20 % 503, 5 % held requests (2 s, beyond the controller's
  1 s request timeout), 2 % TCP resets, 100 ms latency on everything, seeded, under 30 Services
  (dedicated and shared pools, deletes and an update mid-workload). By default the outage ends
  once most Services are Ready (edgelb-local restarted on its port and state, pools kept), which
  bounds the wait for the longest backoff; the slow variant never ends it. One pool's metadata
  always fails, so its binding retries: the delays are measured against ``states/lifecycle.yaml``.
- Lost create answers: every pool POST is applied but answered after the controller gave up; no
  pool is created twice. A create landing after its Service was deleted leaves a pool nothing
  uses: the orphan sweeper (``engine.runtime.orphans``) deletes it within two resync periods.
- kube-apiserver restarted mid-workload (a dedicated cluster, so the session's API server is
  not disturbed): the controller re-lists, re-watches and converges; a Service deleted right
  after the restart loses its pool.
- A genuine 410 Gone: the API server without watch cache, the controller frozen (SIGSTOP) until
  the server has ended its watch, Services deleted, etcd compacted, the controller thawed: its
  next watch resumes from a compacted resourceVersion, gets 410 from the server, re-lists, and
  misses no delete.

Everything started here is stopped by PID; every wait is a condition with a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest
import requests
import urllib3
from sqlalchemy.exc import SQLAlchemyError

import localcluster
from engine.edgelb.client import EdgeLBClient
from engine.edgelb.errors import Unavailable
from engine.kube.api import response_json
from engine.runtime import lifecycle
from engine.store import Binding, HistoryEntry, Store, StoreError, database_url
from tests.e2e.conftest import World
from tests.e2e.invariants import settled, violations
from tests.processes import ControllerProcess, controller_args, scrape, start_edgelb, total, wait_for

T = TypeVar("T")

# The controller gives up on an EdgeLB request after this; a held ("timeout") request is held longer.
REQUEST_TIMEOUT = 1.0
HOLD = 2.0
# The injector draws its decisions in request order from one seeded generator, so the first N
# requests meet the same faults in every run, whatever the interleaving: with this seed a 503, a
# held request and a reset all strike within the first 25 requests (about 27 % of requests fail).
SEED = 94
PROBE = "probe"  # the pool whose metadata always fails: its binding's retries are measured
EDGELB_LINE = re.compile(r"(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS) (\S+) (\S+)(?: \(\w+\))? ([\d.]+)ms$")
LISTENING = re.compile(r"http listening on (http://[\d.]+:\d+)")

# The API server's certificate is self-signed: its /metrics is scraped without verification.
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


# ---- processes ---------------------------------------------------------------------------------


class SteadyClient(EdgeLBClient):
    """The test's own view of EdgeLB, through the same fault injector: retries what faults broke."""

    def __init__(self, url: str) -> None:
        super().__init__(url, read_timeout=REQUEST_TIMEOUT)

    def _steadily(self, call: Callable[[], T]) -> T:
        def attempt() -> tuple[T] | None:
            try:
                return (call(),)
            except Unavailable:
                return None

        return wait_for(attempt, timeout=30, what="an EdgeLB answer through the faults")[0]

    def list_pools(self) -> list[dict[str, Any]]:
        return self._steadily(super().list_pools)

    def get_pool(self, name: str) -> dict[str, Any]:
        return self._steadily(lambda: super(SteadyClient, self).get_pool(name))


@dataclass
class Rig:
    """One test's namespace, local EdgeLB (with its request log) and controller (with its database)."""

    world: World
    database: Path
    edgelb_log: Path

    @property
    def namespace(self) -> str:
        return self.world.namespace

    def settled(self) -> bool:
        return settled(core=self.world.core, namespace=self.namespace, database=self.database)

    def violations(self) -> list[str]:
        return violations(
            core=self.world.core, namespace=self.namespace, edgelb=self.world.client, database=self.database
        )

    def bindings(self) -> dict[str, Binding]:
        return bindings(self.database)

    def history(self) -> list[HistoryEntry]:
        return history(self.database, self.namespace)

    def restart_edgelb(self, *edgelb_args: str) -> None:
        """Stop edgelb-local and start it again on the same port and state (its pools survive),
        with ``edgelb_args`` instead of the faults it had: the end of an EdgeLB outage."""
        old = self.world.edgelb
        old.stop()
        listen = old.url.split("://", 1)[1]
        self.world.edgelb = start_edgelb(
            old.state_dir, extra=["--no-dataplane", *edgelb_args], log_path=self.edgelb_log, listen=listen
        )


@contextlib.contextmanager
def rig(
    core: kubernetes.client.CoreV1Api,
    kubeconfig: Path,
    directory: Path,
    edgelb_args: list[str],
    **flags: Any,
) -> Iterator[Rig]:
    """Start edgelb-local (``--no-dataplane`` + ``edgelb_args``) and ``dklb run`` (``flags``) for a
    new namespace; on the way out stop the controller, release the Services, stop EdgeLB."""
    with contextlib.ExitStack() as cleanup:
        edgelb_log = directory / "edgelb.log"
        edgelb = start_edgelb(
            directory / "edgelb", extra=["--no-dataplane", *edgelb_args], log_path=edgelb_log
        )
        database = directory / "dklb.db"
        args = controller_args(kubeconfig=kubeconfig, edgelb_url=edgelb.url, database=database, **flags)
        world = World(
            core=core,
            namespace=f"e2e-faults-{uuid.uuid4().hex[:6]}",
            edgelb=edgelb,
            client=SteadyClient(edgelb.url),
            controller=ControllerProcess(args=args, log_path=directory / "controller.log"),
            directory=directory,
        )
        # Whichever edgelb-local runs at the end (restart_edgelb replaces it), then the Services,
        # then (first of all) the controller.
        cleanup.callback(lambda: world.edgelb.stop())
        cleanup.callback(release, world)
        cleanup.callback(lambda: world.controller.stop())
        # The generated client is typed for its model classes; it takes the plain dict as well.
        core.create_namespace({"metadata": {"name": world.namespace}}, _preload_content=False)  # type: ignore[arg-type]
        world.controller.start()
        wait_for(lambda: migrated(database), what="the controller's database")
        yield Rig(world=world, database=database, edgelb_log=edgelb_log)


def migrated(database: Path) -> bool:
    """The controller has created and migrated its database: the tests may read it."""
    try:
        bindings(database)
    except (StoreError, SQLAlchemyError):
        return False
    return True


def release(world: World) -> None:
    """Strip the finalizers of the test's Services and delete them: nothing lingers."""
    response = world.core.list_namespaced_service(world.namespace, _preload_content=False)
    for service in response_json(response)["items"]:
        name = service["metadata"]["name"]
        with contextlib.suppress(kubernetes.client.ApiException):
            if service["metadata"].get("finalizers"):
                world.patch_service(name, {"metadata": {"finalizers": None}})
            world.delete_service(name)


def pool_config(pool: str, port: int, extra: str = "") -> str:
    return f"name: {pool}\n{extra}frontends:\n- {{port: {port}, servicePort: 6379}}\n"


# ---- reading the controller's records ----------------------------------------------------------


def open_store(database: Path) -> Store:
    return Store(database_url(str(database)), read_only=True)


def bindings(database: Path) -> dict[str, Binding]:
    """The bindings by Service name."""
    store = open_store(database)
    try:
        return {b.name: b for b in store.bindings()}
    finally:
        store.close()


def history(database: Path, namespace: str) -> list[HistoryEntry]:
    """Every history entry of the namespace, oldest first."""
    store = open_store(database)
    try:
        entries = [e for e in store.history(limit=None) if e.namespace == namespace]
    finally:
        store.close()
    return sorted(entries, key=lambda e: (e.at, e.id))


def retry_runs(entries: list[HistoryEntry]) -> dict[str, list[list[HistoryEntry]]]:
    """Per Service, its runs of consecutive failed attempts in one state (attempt 1, 2, 3, ...)."""
    runs: dict[str, list[list[HistoryEntry]]] = {}
    current: dict[str, list[HistoryEntry]] = {}
    for entry in entries:
        run = current.get(entry.name)
        failed = entry.trigger == "failed" and entry.from_state == entry.to_state
        if failed and run and run[-1].to_state == entry.to_state and entry.attempt == run[-1].attempt + 1:
            run.append(entry)
        elif failed and entry.attempt == 1:
            current[entry.name] = [entry]
            runs.setdefault(entry.name, []).append(current[entry.name])
        else:
            current.pop(entry.name, None)
    return runs


def edgelb_outcomes(log_text: str) -> list[tuple[str, str, str, float]]:
    """(method, path, outcome, milliseconds) of every request edgelb-local logged."""
    found = []
    for line in log_text.splitlines():
        match = EDGELB_LINE.search(line)
        if match:
            found.append((match.group(1), match.group(2), match.group(3), float(match.group(4))))
    return found


def seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


# ---- 1. EdgeLB faults --------------------------------------------------------------------------

# What the issue asks of a flaky EdgeLB, seeded. The probe rule comes first so that it decides
# alone: the probe's metadata always fails, after the same 100 ms, whatever the other draws.
FLAKY = [
    "--faults",
    f"GET /v2/pools/{PROBE}/metadata:5xx=1",
    "--faults",
    f"5xx=0.2,timeout=0.05,hold={HOLD}s,reset=0.02,latency=100ms",
    "--faults-seed",
    str(SEED),
]


def flaky_workload(r: Rig, *, outage_ends: bool, settle_timeout: float) -> None:
    """30 Services (17 dedicated pools, 12 Services on 3 shared pools, the probe) through a flaky
    EdgeLB; two deleted and one changed mid-workload; the probe deleted after 4 retries.

    ``outage_ends``: the faults stop once 24 Services are Ready (edgelb-local restarted on the same
    port and state with only the probe's rule and the latency), and the probe is created then, so
    its 4 retries are measured undisturbed and the wait for the slowest backoff is bounded.
    Otherwise the probe is created with the others and the faults never stop."""
    world = r.world
    started = time.monotonic()
    dedicated = {f"d{i:02}": (f"ded-{i:02}", 31000 + i) for i in range(17)}
    shared = {f"s{i:02}": (f"shared-{i % 3}", 32000 + i) for i in range(12)}
    probe = {PROBE: (PROBE, 33000)}
    for name, (pool, port) in {**dedicated, **shared, **({} if outage_ends else probe)}.items():
        world.create_service(name, config=pool_config(pool, port))

    def ready_count() -> int:
        return sum(b.state == "Ready" for b in r.bindings().values())

    wait_for(lambda: ready_count() >= 10, timeout=60, what="10 Services Ready through the faults")
    # Mid-workload, whatever their state: a dedicated and a shared Service go, one changes.
    world.delete_service("d01")
    world.delete_service("s05")
    world.set_config("d02", pool_config("ded-02", 31002, extra="cpus: 0.2\n"))
    faulty_for = ready_under_faults = None
    if outage_ends:
        # All but 3 of the 27 Services that stay: the stragglers are retrying with long backoffs.
        wait_for(lambda: ready_count() >= 24, timeout=90, what="24 Services Ready through the faults")
        faulty_for, ready_under_faults = time.monotonic() - started, ready_count()
        r.restart_edgelb(*FLAKY[:2], "--faults", "latency=100ms")
        world.create_service(PROBE, config=pool_config(*probe[PROBE]))

    # The probe's binding retries its metadata: record each wake-up as it is scheduled.
    scheduled: dict[int, float] = {}  # attempt -> seconds from its commit to its wake-up

    def probe_attempts() -> bool:
        binding = r.bindings().get(PROBE)
        if binding is not None and binding.state == "AwaitingMetadata" and binding.attempts:
            assert binding.next_wakeup is not None
            scheduled.setdefault(binding.attempts, seconds(binding.updated_at, binding.next_wakeup))
        return len(scheduled) >= 4 and max(scheduled) >= 4

    # Under faults that never end, the probe's own Provisioning may retry for minutes first.
    wait_for(probe_attempts, timeout=60 if outage_ends else 600, interval=0.05, what="4 retries of the probe")
    world.delete_service(PROBE)
    wait_for(r.settled, timeout=settle_timeout, what="every Service settled")
    converged = time.monotonic() - started
    assert r.violations() == []

    # Exactly the pools the Services want, each once.
    names = Counter(p["name"] for p in world.client.list_pools())
    expected = {p for n, (p, _) in dedicated.items() if n != "d01"} | {"shared-0", "shared-1", "shared-2"}
    assert dict(names) == dict.fromkeys(expected, 1)
    assert world.client.get_pool("ded-02")["cpus"] == 0.2, "the update reached EdgeLB"
    assert world.service("d01") is None and world.service("s05") is None and world.service(PROBE) is None
    left = [fe["name"] for fe in world.client.get_pool(shared["s05"][0])["haproxy"]["frontends"]]
    assert len(left) == 3 and not [fe for fe in left if ":s05:" in fe], "s05 left its shared pool"

    # The injector really injected, and the controller saw it. (After the outage the log goes
    # on, with no fault: only latency.)
    outcomes = edgelb_outcomes(r.edgelb_log.read_text(errors="replace"))
    probe_path = f"/v2/pools/{PROBE}/metadata"
    injected = Counter(
        o for _, path, o, _ in outcomes if o in ("reset", "timeout", "503") and path != probe_path
    )
    probe_503 = sum(1 for _, path, o, _ in outcomes if path == probe_path and o == "503")
    assert injected["503"] > 0 and injected["timeout"] > 0 and injected["reset"] > 0, injected
    url = wait_for(lambda: LISTENING.search(world.controller.log()), what="/metrics address").group(1)
    metrics = scrape(url + "/metrics")
    seen_503 = total(metrics, "dklb_edgelb_requests_total", code="503")
    no_answer = total(metrics, "dklb_edgelb_requests_total", code="error")
    assert seen_503 > 0 and no_answer > 0

    # History: retries for EdgeLBUnavailable, and the probe's run backing off as declared.
    entries = r.history()
    reasons = Counter(e.reason for e in entries if e.trigger == "failed")
    assert reasons["EdgeLBUnavailable"] > 0, reasons
    runs = retry_runs(entries)
    probe_run = max(runs[PROBE], key=len)
    # The probe is deleted once its 4th retry is scheduled; on a busy machine a 5th may run
    # before the delete is seen. What is promised: the attempts count up from 1, one by one.
    attempts = [e.attempt for e in probe_run]
    assert attempts[:4] == [1, 2, 3, 4] and attempts == list(range(1, len(attempts) + 1)), attempts
    assert {e.to_state for e in probe_run} == {"AwaitingMetadata"}
    assert {e.reason for e in probe_run} == {"EdgeLBUnavailable"}
    gaps = [seconds(a.at, b.at) for a, b in itertools.pairwise(probe_run)]
    backoff = lifecycle.load().states["AwaitingMetadata"].retry
    assert backoff is not None
    for attempt in (1, 2, 3, 4):
        nominal = min(backoff.cap, backoff.base * backoff.factor ** (attempt - 1))
        low, high = nominal * (1 - backoff.jitter), nominal * (1 + backoff.jitter)
        # The wake-up is "handler start + delay", the commit ~100 ms after the start (the probe's
        # one request): hence the allowance below the jittered window.
        assert low - 0.5 <= scheduled[attempt] <= high, (attempt, scheduled)
    for attempt in (1, 2, 3):
        # The retry ran at its wake-up: not before, and late only by its own request and the queue.
        assert scheduled[attempt] - 0.01 <= gaps[attempt - 1] <= scheduled[attempt] + 1.5, (gaps, scheduled)
    # Growth: the windows of attempts k and k+2 do not overlap (factor 2, jitter 0.5).
    assert scheduled[1] < scheduled[3] and scheduled[2] < scheduled[4], "the delay grows with the attempt"
    assert max(scheduled.values()) <= backoff.cap * (1 + backoff.jitter)
    longest = {n: max(len(run) for run in rs) for n, rs in runs.items()}

    print(
        "\nEdgeLB faults: "
        + (
            f"faults for {faulty_for:.1f}s ({ready_under_faults} Ready then)"
            if outage_ends
            else "faults throughout"
        )
        + f", settled {converged:.1f}s after the first create; "
        f"injected {dict(injected)} + {probe_503} probe 503s in {len(outcomes)} requests; controller "
        f"saw 503={seen_503:.0f} no-answer={no_answer:.0f}; failure reasons {dict(reasons)}; probe "
        f"scheduled delays {[round(scheduled[a], 2) for a in sorted(scheduled)]} gaps "
        f"{[round(g, 2) for g in gaps]}; longest retry run per Service "
        f"{dict(sorted(Counter(longest.values()).items()))} (length: Services)"
    )


def flaky_rig(
    kube_cluster: localcluster.LocalCluster, core: kubernetes.client.CoreV1Api, tmp_path: Path
) -> contextlib.AbstractContextManager[Rig]:
    return rig(
        core,
        kube_cluster.kubeconfig,
        tmp_path,
        FLAKY,
        resync_period="5s",
        edgelb_request_timeout=f"{REQUEST_TIMEOUT}s",
        http_listen="127.0.0.1:0",
        workers=16,
    )


def test_edgelb_faults_converge_and_retries_back_off(
    kube_cluster: localcluster.LocalCluster, core: kubernetes.client.CoreV1Api, tmp_path: Path
) -> None:
    # The faults last until the probe has retried 4 times (about 10-25 s), then the outage ends:
    # the wait is bounded by the longest backoff scheduled during the faults.
    with flaky_rig(kube_cluster, core, tmp_path) as r:
        flaky_workload(r, outage_ends=True, settle_timeout=120)


@pytest.mark.slow
def test_edgelb_faults_that_never_end_still_converge(
    kube_cluster: localcluster.LocalCluster, core: kubernetes.client.CoreV1Api, tmp_path: Path
) -> None:
    # With ~27 % of requests failing for good, a binding needing two requests per attempt fails
    # 5-6 times in a row now and then: backoff (1 s doubling) makes that a minute or two.
    with flaky_rig(kube_cluster, core, tmp_path) as r:
        flaky_workload(r, outage_ends=False, settle_timeout=600)


# Every pool POST is applied, but answered after the controller gave up on it: the answer is lost.
LOST_CREATES = ["--faults", "POST /v2/pools:latency=2500ms"]


def test_lost_create_answers_make_no_duplicate_pool(
    kube_cluster: localcluster.LocalCluster, core: kubernetes.client.CoreV1Api, tmp_path: Path
) -> None:
    with rig(
        core,
        kube_cluster.kubeconfig,
        tmp_path,
        LOST_CREATES,
        resync_period="5s",
        edgelb_request_timeout=f"{REQUEST_TIMEOUT}s",
        workers=8,
    ) as r:
        started = time.monotonic()
        services = {f"l{i}": (f"lost-{i}", 36000 + i) for i in range(4)}
        services |= {f"m{i}": ("lost-shared", 36100 + i) for i in range(3)}
        for name, (pool, port) in services.items():
            r.world.create_service(name, config=pool_config(pool, port))
        wait_for(r.settled, timeout=45, what="every Service settled despite lost answers")
        converged = time.monotonic() - started
        assert r.violations() == []
        names = Counter(p["name"] for p in r.world.client.list_pools())
        assert dict(names) == dict.fromkeys({pool for pool, _ in services.values()}, 1)

        def logged_posts() -> list[tuple[str, float]]:
            outcomes = edgelb_outcomes(r.edgelb_log.read_text())
            return [(o, ms) for method, _, o, ms in outcomes if method == "POST"]

        # A POST the controller gave up on may still be on its way: wait until EdgeLB has answered
        # every POST the controller sent (its debug log has one line per request).
        sent = r.world.controller.log().count("POST /v2/pools -> ")
        wait_for(lambda: len(logged_posts()) == sent, what="every POST answered by EdgeLB")
        lost = [e for e in r.history() if e.trigger == "failed" and "creating EdgeLB pool" in e.message]
        assert len(lost) == sent, "every POST the controller sent failed for it"
        posts = logged_posts()
        created = [ms for o, ms in posts if o.startswith("2")]
        conflicts = sum(1 for o, _ in posts if o == "409")
        assert len(created) == len(names), "one successful POST per pool"
        assert min(ms for _, ms in posts) > REQUEST_TIMEOUT * 1000, "every answer came after the timeout"
        # The retry re-read the pool before the first POST landed and POSTed again: EdgeLB said 409.
        assert conflicts >= 1
        entries = r.history()
        assert all("no answer within the read timeout" in e.message for e in lost)
        assert not [e for e in entries if e.reason == "PoolCreated"], "no create was ever acknowledged"
        adopted = Counter(e.reason for e in entries if e.trigger == "provisioned")
        assert adopted["PoolUpToDate"] >= 1

        print(
            f"\nlost create answers: settled {converged:.1f}s; POSTs {len(posts)} (200: {len(created)}, "
            f"409: {conflicts}); lost-answer retries {len(lost)}; provisioned by {dict(adopted)}"
        )


def test_a_create_landing_after_the_delete_leaves_no_orphan(
    kube_cluster: localcluster.LocalCluster, core: kubernetes.client.CoreV1Api, tmp_path: Path
) -> None:
    with rig(
        core,
        kube_cluster.kubeconfig,
        tmp_path,
        ["--faults", "POST /v2/pools:latency=5s"],
        resync_period="2s",
        edgelb_request_timeout=f"{REQUEST_TIMEOUT}s",
    ) as r:
        r.world.create_service("late", config=pool_config("late-pool", 37000))
        wait_for(
            lambda: [e for e in r.history() if e.trigger == "failed" and "creating EdgeLB pool" in e.message],
            what="the create's answer lost",
        )
        r.world.delete_service("late")
        wait_for(lambda: r.world.service("late") is None, what="the Service released (Deleting saw no pool)")
        wait_for(lambda: "POST /v2/pools 200" in r.edgelb_log.read_text(), what="the POST landing")
        assert "late" not in r.bindings()
        # The sweeper notices the pool dklb created for nobody and deletes it.
        wait_for(lambda: "late-pool" not in r.world.pool_names(), timeout=6, what="the orphan pool gone")


# ---- 2. Kubernetes faults (a dedicated API server) ---------------------------------------------


@dataclass
class Dedicated:
    cluster: localcluster.LocalCluster
    core: kubernetes.client.CoreV1Api


@pytest.fixture(scope="module")
def dedicated() -> Iterator[Dedicated]:
    """An API server of its own: these tests stop and restart it."""
    cluster = localcluster.start()
    try:
        api = kubernetes.config.new_client_from_config(str(cluster.kubeconfig))
        yield Dedicated(cluster=cluster, core=kubernetes.client.CoreV1Api(api))
    finally:
        localcluster.stop(cluster)


def test_apiserver_restart_mid_workload(dedicated: Dedicated, tmp_path: Path) -> None:
    cluster = dedicated.cluster
    # Metadata answers 504 for 1 s after each change: bindings spend a while in flight.
    with rig(
        dedicated.core,
        cluster.kubeconfig,
        tmp_path,
        ["--metadata-delay", "1", "--faults", "latency=50ms"],
        resync_period="2s",
    ) as r:
        world = r.world
        services = {f"a{i}": (f"pool-a{i}", 34000 + i) for i in range(8)}
        services |= {f"b{i}": (f"pool-b{i % 2}", 34100 + i) for i in range(4)}
        started = time.monotonic()
        for name, (pool, port) in services.items():
            world.create_service(name, config=pool_config(pool, port))

        def half_way() -> tuple[list[str], list[str]] | None:
            found = r.bindings()
            ready = [n for n in services if n in found and found[n].state == "Ready"]
            return (
                (ready, [n for n in services if n not in ready])
                if ready and len(ready) < len(services)
                else None
            )

        ready, in_flight = wait_for(half_way, timeout=30, what="a workload half-way")
        log_offset = len(world.controller.log())
        down = time.monotonic()
        localcluster.stop_apiserver(cluster)
        # The controller notices: its watch fails and it re-lists, with backoff, until it can.
        wait_for(
            lambda: "services: list/watch failed" in world.controller.log()[log_offset:],
            timeout=30,
            what="the controller noticing the API server is gone",
        )
        localcluster.start_apiserver(cluster)
        up = time.monotonic()

        # Right after the restart: a dedicated Service goes (its pool with it; Ready if one was when
        # the API server stopped), new ones come.
        victim = next((n for n in ready if n.startswith("a")), "a0")
        victim_pool, victim_state = services[victim][0], r.bindings()[victim].state
        world.delete_service(victim)
        for i in range(3):
            world.create_service(f"c{i}", config=pool_config(f"pool-c{i}", 34200 + i))
        wait_for(r.settled, timeout=60, what="convergence after the API server restart")
        converged = time.monotonic()
        assert r.violations() == []
        assert world.service(victim) is None, "the deleted Service is gone: finalizer released"
        assert victim_pool not in world.pool_names(), "its pool was removed"
        found = r.bindings()
        assert victim not in found
        assert all(found[f"c{i}"].state == "Ready" for i in range(3))
        after = world.controller.log()[log_offset:]
        failures = after.count("services: list/watch failed")
        assert failures >= 1 and "re-listing in" in after
        reasons = Counter(e.reason for e in r.history() if e.trigger == "failed")

        print(
            f"\nAPI server restart: {len(in_flight)} of {len(services)} Services in flight when it "
            f"stopped; down {up - down:.1f}s (stop + start); {failures} list/watch failures logged; "
            f"deleted {victim} ({victim_state}) right after; "
            f"settled {converged - up:.1f}s after it was back ({converged - started:.1f}s in all); "
            f"failure reasons {dict(reasons)}"
        )


def service_watches(cluster: localcluster.LocalCluster) -> float:
    """How many WATCH requests on Services across namespaces the API server is serving now."""
    metrics = scrape(f"{cluster.server}/metrics", Authorization=f"Bearer {cluster.token}")
    return total(metrics, "apiserver_longrunning_gauge", verb="WATCH", resource="services", scope="cluster")


def in_a_row(condition: Callable[[], bool], times: int = 4) -> Callable[[], bool]:
    """A condition for ``wait_for`` that holds once ``condition`` held on ``times`` polls in a row:
    a gauge that only flickered does not count (a watch request on its way when the controller
    froze registers a few ms later; the API server's own informer re-watches in a blink)."""
    streak = 0

    def check() -> bool:
        nonlocal streak
        streak = streak + 1 if condition() else 0
        return streak >= times

    return check


def etcd_revision(cluster: localcluster.LocalCluster) -> int:
    # etcd's JSON gateway (no etcdctl needed): any range answer carries the current revision.
    answer = requests.post(
        f"{cluster.etcd}/v3/kv/range", json={"key": base64.b64encode(b"/").decode()}, timeout=10
    )
    answer.raise_for_status()
    return int(answer.json()["header"]["revision"])


def compact_etcd(cluster: localcluster.LocalCluster, revision: int) -> None:
    answer = requests.post(
        f"{cluster.etcd}/v3/kv/compaction", json={"revision": str(revision), "physical": True}, timeout=30
    )
    answer.raise_for_status()


def test_watch_expiry_410_relists_and_misses_no_delete(dedicated: Dedicated, tmp_path: Path) -> None:
    cluster = dedicated.cluster
    # Without the watch cache a watch is served by etcd itself: a compacted revision is a 410.
    localcluster.restart_apiserver(cluster, apiserver_args=["--watch-cache=false"])
    baseline = wait_for(lambda: service_watches(cluster) or None, what="the API server's own watches")
    with rig(dedicated.core, cluster.kubeconfig, tmp_path, [], resync_period="2s") as r:
        world = r.world
        world.create_service("keep", config=pool_config("pool-keep", 35000))
        world.create_service("gone", config=pool_config("pool-gone", 35001))
        world.create_service("bad", config="name: __bad__\n")  # Rejected: dklb holds no finalizer
        wait_for(r.settled, what="the first workload")
        assert r.bindings()["bad"].state == "Rejected"
        assert "pool-gone" in world.pool_names()
        wait_for(lambda: service_watches(cluster) == baseline + 1, what="the controller's watch")

        assert world.controller.proc is not None
        pid = world.controller.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            # The server ends the frozen controller's watch (its timeout is the resync period):
            # from then on nothing reaches the controller until it watches again.
            frozen = time.monotonic()
            no_watch = in_a_row(lambda: service_watches(cluster) == baseline)
            wait_for(no_watch, timeout=30, what="the frozen controller's watch ended by the server")
            world.delete_service("gone")  # held by dklb's finalizer: deletionTimestamp only
            world.delete_service("bad")  # no finalizer: really deleted, a DELETED the watch never sees
            world.create_service("late", config=pool_config("pool-late", 35002))
            revision = etcd_revision(cluster)
            compact_etcd(cluster, revision)
            log_offset = len(world.controller.log())
        finally:
            os.kill(pid, signal.SIGCONT)
        thawed = time.monotonic()

        gone = wait_for(
            lambda: re.search(
                r"services: resourceVersion (\d+) is gone; re-listing", world.controller.log()[log_offset:]
            ),
            timeout=30,
            what="the controller's 410 re-list",
        )
        relisted = time.monotonic()
        assert int(gone.group(1)) < revision, "the watch resumed from a compacted resourceVersion"
        wait_for(r.settled, what="convergence after the 410")
        converged = time.monotonic()
        after = world.controller.log()[log_offset:]
        assert "list/watch failed" not in after, "the re-list came from the 410, not from a broken connection"
        assert r.violations() == []
        assert world.service("gone") is None, "the delete made in the gap was seen: finalizer released"
        assert "pool-gone" not in world.pool_names(), "its pool was removed"
        found = r.bindings()
        assert "gone" not in found and "bad" not in found, "both bindings went"
        assert found["late"].state == "Ready" and found["keep"].state == "Ready"
        removed = {e.name for e in r.history() if e.to_state == "Removed"}
        assert {"gone", "bad"} <= removed

        print(
            f"\n410: genuine (API server --watch-cache=false, etcd compacted at revision {revision}, "
            f"watch resumed from {gone.group(1)}); frozen {thawed - frozen:.1f}s; re-listed "
            f"{relisted - thawed:.2f}s after the thaw; settled {converged - thawed:.1f}s after it"
        )
