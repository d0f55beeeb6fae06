"""The benchmark's scenarios: burst, restart, churn and idle, for dklb and for the Go baseline.

Where it sits: ``bench.__main__`` calls ``suite(mode, n, ...)`` once per controller and size, and
``floor(n, ...)`` for the same burst made by ``bench.floor`` (the requests alone), each on fresh
servers (``bench.servers``), and gets back one dict of figures per phase; ``bench.report``
turns them into the JSON file and the markdown table. Every phase is measured the same way for
both controllers: ``Probe.snapshot()`` before and after (EdgeLB requests by method as the local
EdgeLB counted them, Kubernetes writes as the kube-apiserver counted them minus the benchmark's
own, the controller's CPU seconds, its peak RSS, and dklb's database transactions; on the
PostgreSQL store, the database server's CPU seconds too), and the wall
time until what the phase waits for is true (polled with a deadline, never slept on).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import measure
from bench.servers import (
    ControllerProc,
    Servers,
    baseline_controller,
    dklb_controller,
    floor_controller,
    start_servers,
)
from bench.workload import (
    EdgeLBPoller,
    Kube,
    ReadyWatcher,
    Spec,
    frontend_ports,
    in_parallel,
    pool_members,
    specs,
)
from engine.model.durations import parse_duration
from engine.model.translation import object_name
from localcluster.processes import wait_for

CLUSTER = "kubernetes-cluster"
POLL = 0.25


@dataclass(frozen=True)
class Options:
    metadata_delay: str = "2s"
    dklb_resync: str = "30s"  # how often dklb compares the pools (--resync-period)
    dklb_metadata_resync: str = "5m"  # how often a Ready pool's metadata is re-read (dklb)
    baseline_resync: str = "2m"  # the Go dklb's informer resync
    idle_periods: int = 3
    workers: int = 4
    timeout: float = 900.0


@dataclass
class Snapshot:
    at: float
    edgelb: dict[str, int]
    kube: dict[tuple[str, str], float]  # kube-apiserver requests by (verb, resource)
    own_writes: int
    cpu: float
    peak_rss: int
    transactions: int
    db_cpu: float = 0.0  # the PostgreSQL server's, sessions included (0 on SQLite: in-process)


class Probe:
    """Reads every counter of one run at once, so a phase's figures are differences of two reads."""

    def __init__(self, servers: Servers, controller: ControllerProc) -> None:
        self.servers = servers
        self.controller = controller
        self.own_writes = 0  # writes the benchmark itself made (creates, patches, deletes)

    def snapshot(self) -> Snapshot:
        process = measure.process_sample(self.controller.pid)
        transactions = 0
        if self.controller.mode == "dklb":
            metrics = self.controller.stats()
            transactions = int(measure.metric_sum(metrics, "dklb_store_write_transactions_total"))
        return Snapshot(
            at=time.monotonic(),
            edgelb=measure.by_method(measure.edgelb_requests(self.servers.edgelb_url)),
            kube=measure.apiserver_requests(self.servers.cluster.server, self.servers.cluster.token),
            own_writes=self.own_writes,
            cpu=process.cpu_seconds,
            peak_rss=process.peak_rss,
            transactions=transactions,
            db_cpu=self.db_cpu(),
        )

    def db_cpu(self) -> float:
        """The PostgreSQL server's CPU so far, its sessions included (0 on SQLite: in-process)."""
        return measure.tree_cpu_seconds(self.servers.postgres.pid or 0) if self.servers.postgres else 0.0

    def phase(self, before: Snapshot, *, latencies: list[float] | None = None) -> dict[str, Any]:
        after = self.snapshot()
        delta = measure.diff(before.kube, after.kube)
        writes = {
            resource: measure.write_requests(delta, resources=[resource])
            for resource in sorted({r for (_, r) in delta})
        }
        # The benchmark's own creates, patches and deletes are not the controller's.
        writes["services"] = writes.get("services", 0) - (after.own_writes - before.own_writes)
        writes = {r: n for r, n in writes.items() if n}
        edgelb = {
            m: after.edgelb.get(m, 0) - before.edgelb.get(m, 0) for m in ("GET", "POST", "PUT", "DELETE")
        }
        figures: dict[str, Any] = {
            "seconds": round(after.at - before.at, 2),
            "edgelb_requests": edgelb,
            "edgelb_writes": edgelb["POST"] + edgelb["PUT"] + edgelb["DELETE"],
            "kube_writes": sum(writes.values()),
            "kube_writes_by_resource": writes,
            "cpu_seconds": round(after.cpu - before.cpu, 2),
            "peak_rss_mb": round(after.peak_rss / 2**20, 1),
            "db_transactions": after.transactions - before.transactions
            if self.controller.mode == "dklb"
            else None,
        }
        if self.servers.postgres is not None:
            figures["db_server_cpu_seconds"] = round(after.db_cpu - before.db_cpu, 2)
        if latencies is not None:
            figures["latency_seconds"] = {
                f"p{q}": round(measure.percentile(latencies, q), 2) for q in (50, 90, 99)
            }
        return figures


def controller_for(mode: str, servers: Servers, options: Options, wanted: list[Spec]) -> ControllerProc:
    if mode == "dklb":
        return dklb_controller(
            servers,
            resync=options.dklb_resync,
            workers=options.workers,
            metadata_resync=options.dklb_metadata_resync,
        )
    if mode == "floor":
        return floor_controller(servers, plan=pool_members(wanted), workers=options.workers)
    return baseline_controller(servers, resync=options.baseline_resync)


@contextlib.contextmanager
def running(
    mode: str, work: Path, options: Options, wanted: list[Spec], *, store: str = "sqlite"
) -> Iterator[tuple[Servers, Kube, Probe]]:
    """Fresh servers, a namespace, and the controller of ``mode`` running on them (dklb on the
    ``store`` named); all stopped after."""
    servers = start_servers(work, metadata_delay=options.metadata_delay, store=store)
    # The servers run detached: whatever fails from here on must still stop them.
    with contextlib.ExitStack() as stack:
        stack.callback(servers.stop)
        controller = controller_for(mode, servers, options, wanted)
        kube = Kube(servers.cluster.server, servers.cluster.token, f"bench-{uuid.uuid4().hex[:6]}")
        stack.callback(controller.stop)
        kube.create_namespace()
        controller.start()
        yield servers, kube, Probe(servers, controller)


def suite(
    mode: str,
    n: int,
    work: Path,
    options: Options,
    *,
    churn: bool = True,
    idle_phase: bool = True,
    shared_fraction: float = 0.4,
    store: str = "sqlite",
) -> dict[str, Any]:
    """Burst, restart, churn and idle phases of one controller over ``n`` Services; dklb's
    database on ``store`` (a PostgreSQL server of the run's own for "postgresql")."""
    wanted = specs(n, shared_fraction=shared_fraction)
    results = _described(mode, wanted, shared_fraction)
    if mode == "dklb":
        results["store"] = store
    with (
        running(mode, work, options, wanted, store=store) as (servers, kube, probe),
        ReadyWatcher(str(servers.cluster.kubeconfig), kube.namespace) as watcher,
    ):
        results["burst"] = burst(probe, kube, watcher, wanted, options)
        results["restart"] = restart(probe, wanted, options)
        if churn:
            results["churn"] = churn_phase(probe, kube, servers, wanted, options)
        if idle_phase:
            results["idle"] = idle(probe, options)
    return results


def floor(n: int, work: Path, options: Options, *, shared_fraction: float = 0.4) -> dict[str, Any]:
    """The same burst for ``bench.floor``: the requests alone, no logic (burst only: it has no
    restart, no resync, no deletes)."""
    wanted = specs(n, shared_fraction=shared_fraction)
    results = _described("floor", wanted, shared_fraction)
    with (
        running("floor", work, options, wanted) as (servers, kube, probe),
        ReadyWatcher(str(servers.cluster.kubeconfig), kube.namespace) as watcher,
    ):
        results["burst"] = burst(probe, kube, watcher, wanted, options)
    return results


def _described(mode: str, wanted: list[Spec], shared_fraction: float) -> dict[str, Any]:
    return {
        "mode": mode,
        "services": len(wanted),
        "shared_fraction": shared_fraction,
        "pools": len({s.pool for s in wanted}),
    }


def burst(
    probe: Probe, kube: Kube, watcher: ReadyWatcher, wanted: list[Spec], options: Options
) -> dict[str, Any]:
    before = probe.snapshot()
    created = in_parallel(wanted, kube.create)
    probe.own_writes += len(wanted)
    names = [s.name for s in wanted]
    wait_for(
        lambda: watcher.count_ready(names) == len(names),
        timeout=options.timeout,
        interval=POLL,
        what=f"{len(names)} Services with an address",
    )
    latencies = [watcher.ready[s] - created[s] for s in names]
    figures = probe.phase(before, latencies=latencies)
    # The distribution, in 101 points (the plots draw its CDF; 20,000 raw values would bloat the JSON).
    figures["latency_quantiles"] = measure.quantiles(latencies)
    figures["cpu_ms_per_service"] = round(figures["cpu_seconds"] * 1000 / len(names), 2)
    figures["ready_seconds"] = round(max(watcher.ready[s] for s in names) - before.at, 2)
    return figures


def restart(probe: Probe, wanted: list[Spec], options: Options) -> dict[str, Any]:
    """SIGKILL with everything Ready, start again: until every binding was verified once."""
    controller = probe.controller
    controller.kill()
    # The servers' counters are read after the kill and before the start: what the killed process
    # had sent (the Events its background recorder was still posting when the burst's last
    # Service got its address) is not the restart's, and nothing the new process does is missed.
    # The kube-apiserver may still be serving requests of the dead process: read until its counts
    # stop moving. The new process's own counters (CPU, transactions) start at 0.
    kube = wait_for(lambda: _apiserver_quiet(probe), timeout=options.timeout, what="the apiserver quiet")
    started = time.monotonic()
    controller.start()
    before = Snapshot(
        at=started,
        edgelb=measure.by_method(measure.edgelb_requests(probe.servers.edgelb_url)),
        kube=kube,
        own_writes=probe.own_writes,
        cpu=0.0,
        peak_rss=0,
        transactions=0,
        db_cpu=probe.db_cpu(),
    )
    if controller.mode == "dklb":

        def verified() -> float:
            return measure.metric_sum(controller.stats(), "dklb_startup_verification_seconds")

        wait_for(verified, timeout=options.timeout, interval=POLL, what="dklb's start-up verification")
    else:
        # The Go dklb has no such notion: its informer's initial list queues every Service, and
        # they are done once it has synced each one.
        wait_for(
            lambda: controller.stats().get("syncs", 0) >= len(wanted),
            timeout=options.timeout,
            interval=POLL,
            what="the baseline's first pass over every Service",
        )
    figures = probe.phase(before)
    figures["verified_seconds"] = figures["seconds"]
    return figures


def _apiserver_quiet(probe: Probe) -> dict[tuple[str, str], float] | None:
    """The kube-apiserver's request counts when two reads 0.5 s apart agree, else None."""
    first = measure.apiserver_requests(probe.servers.cluster.server, probe.servers.cluster.token)
    time.sleep(0.5)  # the interval compared over, not a synchronization
    second = measure.apiserver_requests(probe.servers.cluster.server, probe.servers.cluster.token)
    return second if measure.write_requests(measure.diff(first, second)) == 0 else None


def churn_phase(
    probe: Probe, kube: Kube, servers: Servers, wanted: list[Spec], options: Options
) -> dict[str, Any]:
    """20% of the Services move their frontend port, 10% of the dedicated ones resize, 20% go."""
    poller = EdgeLBPoller(servers.edgelb_url)
    moved = [replace(s, port=s.port + 20000) for s in wanted[::5]]
    resized = [replace(s, size=2) for s in wanted[1::10] if not s.shared]
    deleted = [s for i, s in enumerate(wanted) if i % 5 == 2]
    before = probe.snapshot()
    started: dict[str, float] = {}
    started.update(in_parallel(moved, kube.set_annotation))
    started.update(in_parallel(resized, kube.set_annotation))
    started.update(in_parallel(deleted, lambda s: kube.delete(s.name)))
    probe.own_writes += len(moved) + len(resized) + len(deleted)
    landed: dict[str, float] = {}

    def converged() -> bool:
        pools = poller.pools()
        now = time.monotonic()
        for spec in moved + resized + deleted:
            if spec.name not in landed and _landed(
                spec, pools, namespace=kube.namespace, deleted=spec in deleted
            ):
                landed[spec.name] = now
        return len(landed) == len(started)

    wait_for(converged, timeout=options.timeout, interval=POLL, what="the churn to reach EdgeLB")
    figures = probe.phase(before, latencies=[landed[name] - started[name] for name in started])
    figures["changes"] = {"port": len(moved), "size": len(resized), "delete": len(deleted)}
    return figures


def _landed(spec: Spec, pools: dict[str, dict[str, Any]], *, namespace: str, deleted: bool) -> bool:
    """Does EdgeLB show ``spec`` (its port and size), or, for a deleted Service, nothing of it?"""
    frontend = object_name(cluster=CLUSTER, namespace=namespace, service=spec.name, service_port=80)
    pool = pools.get(spec.pool)
    port = frontend_ports(pool).get(frontend) if pool else None
    if deleted:
        return port is None
    if pool is None or port != spec.port:
        return False
    return spec.shared or int(pool.get("count") or 1) == spec.size


def idle(probe: Probe, options: Options) -> dict[str, Any]:
    """Nothing changes for some resync periods: what does keeping watch cost?"""
    dklb = probe.controller.mode == "dklb"
    period = parse_duration(options.dklb_resync if dklb else options.baseline_resync)
    # The baseline's 2-minute resync writes the same every period: one of them says it.
    periods = options.idle_periods if dklb else 1
    if dklb:
        # The previous phase's tail (Events and finalizers of the last deletes) is not idle work.
        wait_for(lambda: _settled(probe), timeout=options.timeout, interval=POLL, what="bindings settled")
    before = probe.snapshot()
    # A measurement window, not a synchronization: nothing is expected to happen in it.
    threading.Event().wait(period * periods)
    figures = probe.phase(before)
    figures["resync_seconds"] = period
    figures["per_resync"] = {
        "edgelb_writes": round(figures["edgelb_writes"] / periods, 1),
        "edgelb_reads": round(figures["edgelb_requests"]["GET"] / periods, 1),
        "kube_writes": round(figures["kube_writes"] / periods, 1),
        "cpu_seconds": round(figures["cpu_seconds"] / periods, 2),
    }
    return figures


def _settled(probe: Probe) -> bool:
    metrics = probe.controller.stats()
    total = measure.metric_sum(metrics, "dklb_bindings")
    return total > 0 and measure.metric_sum(metrics, "dklb_bindings", state="Ready") == total


def shared(mode: str, n: int, work: Path, options: Options) -> dict[str, Any]:
    """``n`` Services joining pools of 10 at once: how many EdgeLB writes until EdgeLB holds them all?"""
    wanted = specs(n, shared_fraction=1.0)
    with running(mode, work, options, wanted) as (servers, kube, probe):
        poller = EdgeLBPoller(servers.edgelb_url)
        before = probe.snapshot()
        in_parallel(wanted, kube.create)
        probe.own_writes += len(wanted)

        def all_in() -> bool:
            pools = poller.pools()
            return all(_landed(s, pools, namespace=kube.namespace, deleted=False) for s in wanted)

        wait_for(all_in, timeout=options.timeout, interval=POLL, what="every Service's frontend in EdgeLB")
        figures = probe.phase(before)
    figures.update(mode=mode, services=n, pools=len({s.pool for s in wanted}))
    return figures
