"""The composition root of ``dklb run``: build the parts, start them in order, stop them in reverse.

Where it sits: ``engine.cli.run`` turns the flags into an ``AppConfig``; ``App`` builds every
part from it in dependency order (the database is migrated first), then ``run`` starts them in
the order of ``parts`` and, once ``done`` is set (SIGTERM, SIGINT), stops them in reverse:

    metrics, store        closed last
    http                  /metrics, /healthz, /readyz: up first, down last (probes say
                          "stopping" while the rest shuts down)
    admission webhook     serving and registered before any Service is reconciled
    leader elector        the Lease; released after the controller stopped writing
    kube adapter          flushes the Events still queued
    controller            workers, wake-ups, the pool sweep (one listing per resync period
                          compared with every Ready binding, metadata per pool), the orphan
                          sweep and history retention; stopping it
                          first closes the fence, so nothing is written once leadership is
                          given up
    EdgeLB recovery       probes EdgeLB while it fails; wakes the retrying bindings once it answers
    watchers              Services (and Nodes): the cache fills, then ``mark_synced`` lets the
                          workers go

The database gate (``engine.runtime.fence.DatabaseGate``) pings the store every second; while
the database cannot be reached ``is_leading`` is False (every write is refused, the workers
pause) and the elector neither acquires nor renews the Lease, so a replica that can reach the
database (PostgreSQL, shared) takes over. When the database answers again every binding is
reconciled anew from what was committed.

Leadership is one ``is_leading`` callable (a Lease, when leader election is on) handed to what
must only act while leading: the fence around every write to EdgeLB, Kubernetes and the store,
the workers, and the orphan sweeper (which also waits for the start-up verification, so a
controller that lost its database re-adopts every Service before judging any pool).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from engine.admission.plan import AdmissionPlan
from engine.admission.tenancy import StoreTenancy
from engine.admission.webhook import AdmissionWebhook, WebhookError
from engine.edgelb.client import ClientOptions
from engine.edgelb.errors import EdgeLBError
from engine.kube.adapter import KubeAdapter
from engine.kube.api import api_client
from engine.kube.leader import LeaderElector, default_identity
from engine.kube.nodes import Nodes
from engine.kube.watch import Watcher
from engine.model.services import key
from engine.model.settings import DEFAULT_RESYNC_PERIOD, Settings
from engine.runtime import lifecycle
from engine.runtime.controller import Controller
from engine.runtime.fence import DatabaseGate, Fence, FencedEdgeLB, FencedKube
from engine.runtime.office import Office
from engine.runtime.orphans import OrphanSweeper
from engine.runtime.poolsweep import DEFAULT_METADATA_RESYNC_PERIOD, MetadataSchedule, PoolSweep
from engine.runtime.reconciler import Reconciler
from engine.runtime.recovery import EdgeLBRecovery
from engine.runtime.retention import RetentionJob
from engine.runtime.sharedmetadata import SharedMetadata
from engine.store import migrate
from engine.store.database import redacted
from engine.store.pruning import Retention
from engine.telemetry.health import BindError, HealthServer, Probes
from engine.telemetry.metrics import Metrics
from engine.telemetry.serving import format_address

log = logging.getLogger("dklb.run")

#: Seconds between two pings of the database. A ping that fails closes the gate at once; one
#: that hangs (a dead link) closes it once no ping has answered for ``DATABASE_STALE`` seconds,
#: generous enough that a ping queued behind busy workers for a pooled connection does not.
DATABASE_PING_INTERVAL = 1.0
DATABASE_STALE = 5.0


@dataclass(frozen=True)
class LeaderElection:
    namespace: str
    lease_name: str
    lease_duration: float
    renew_deadline: float
    retry_period: float


@dataclass(frozen=True)
class AppConfig:
    """Everything ``dklb run`` was told, parsed and checked (``engine.cli.run``)."""

    kubeconfig: str | None
    database: str
    settings: Settings
    edgelb: ClientOptions
    workers: int
    leader_election: LeaderElection | None
    http_listen: tuple[str, int]
    # An explicit address is a promise (fatal when taken); the default one is a convenience.
    http_listen_explicit: bool
    admission: AdmissionPlan
    # /metrics on an address of its own (--metrics-listen); None: beside the probes on http_listen.
    metrics_listen: tuple[str, int] | None = None
    # --history-max-age, --history-max-rows-per-service.
    retention: Retention = field(default_factory=Retention)
    # --metadata-resync-period: each Ready pool's metadata is read again once per this period.
    metadata_resync_period: float = DEFAULT_METADATA_RESYNC_PERIOD


class StartError(Exception):
    """A part cannot be built or started; the message says why (logged, exit status 1)."""


class Part(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Hooks:
    """A part made of two callables (either may do nothing)."""

    on_start: Callable[[], object] = lambda: None
    on_stop: Callable[[], object] = lambda: None

    def start(self) -> None:
        self.on_start()

    def stop(self) -> None:
        self.on_stop()


class App:
    def __init__(self, config: AppConfig) -> None:
        """Builds every part; ``StartError`` (what was built is closed again) when one cannot be."""
        self.config = config
        self.parts: list[Part] = []
        self.done = threading.Event()
        self._verified = threading.Event()
        self.identity = default_identity()
        try:
            self._build()
        except BaseException:
            self._stop(self.parts)
            raise

    def is_leading(self) -> bool:
        # Set by the elector's callbacks; the elector itself is also asked, which is exact to the
        # clock (a renew older than the deadline ends leadership before any callback runs). A
        # replica that cannot reach its database must not act: its side effects could never be
        # committed.
        return (
            self.office.claimed()
            and (self.elector is None or self.elector.is_leader())
            and self.database.reachable
        )

    def run(self) -> int:
        """Start every part, wait for ``done``, stop them in reverse; the exit status."""
        started: list[Part] = []
        for part in self.parts:
            try:
                part.start()
            except WebhookError as exc:
                log.error("%s", exc)
                # The part that failed may have started half of itself.
                self._stop([*started, part])
                return 1
            started.append(part)
        log.info(
            "dklb running: cluster %s, EdgeLB %s, database %s",
            self.config.settings.cluster_name,
            self.edgelb.base_url,
            redacted(self.config.database),
        )
        # A timed wait: SIGTERM may be delivered to any thread, and Python runs its handler in the
        # main thread only when that thread runs again; a wait without timeout may never return.
        while not self.done.wait(0.5):
            pass
        self._stop(self.parts)
        log.info("dklb stopped")
        return 0

    @staticmethod
    def _stop(parts: list[Part]) -> None:
        for part in reversed(parts):
            part.stop()

    # ---- building ------------------------------------------------------------------------------

    def _build(self) -> None:
        c = self.config
        self.metrics = metrics = Metrics()
        self.parts.append(Hooks(on_stop=metrics.close))
        self.store = store = migrate.open_store(c.database)
        self.parts.append(Hooks(on_stop=store.close))
        self.database = self._database_gate()
        self.office = Office(
            claim=lambda: store.claim_leadership(self.identity),
            holds_lease=lambda: self.elector is None or self.elector.is_leader(),
            # The gate closes: the Lease is not renewed, or the claim is tried again as soon as a
            # ping succeeds.
            claim_failed=self.database.failed,
            # Not on the elector's or the gate's thread: reading every binding must not delay
            # the next renew or ping.
            look_again=lambda: threading.Thread(
                target=self.controller.enqueue_all, name="dklb-look-again", daemon=True
            ).start(),
        )
        try:
            self.edgelb = c.edgelb.client(on_response=self._edgelb_response)
        except (ValueError, EdgeLBError) as exc:
            raise StartError(f"EdgeLB options: {exc}") from exc
        self.api = api_client(c.kubeconfig, on_request=metrics.kubernetes_request)
        self.elector = self._elector()
        if self.elector is None:
            self.office.assume()
        self.machine = lifecycle.load()
        self.resync_period = c.settings.resync_period or DEFAULT_RESYNC_PERIOD
        self.controller = self._controller()
        self.watchers = self._watchers()
        http = self._http()
        if http is not None:
            self.parts.append(Hooks(http.start, http.stop))
        if c.admission.listen is not None or c.admission.register:
            self.parts.append(
                AdmissionWebhook(
                    c.admission,
                    settings=c.settings,
                    api=self.api,
                    on_request=metrics.admission_review,
                    # The controller's own reads of a pool's owner and bindings, bounded: every
                    # replica serves the webhook, so it only reads.
                    pool_tenancy=StoreTenancy(store),
                    on_refused=metrics.http_refused,
                )
            )
        self.parts.append(Hooks(self.database.start, self.database.stop))
        elector = self.elector
        if elector is not None:
            self.parts.append(Hooks(elector.start, lambda: elector.stop(release=True)))
        self.parts.append(Hooks(on_stop=self.kube.close))
        self.parts.append(Hooks(self.controller.start, self._stop_controller))
        self.parts.append(Hooks(self.recovery.start, self.recovery.stop))
        self.parts.extend(self.watchers)

    def _elector(self) -> LeaderElector | None:
        election = self.config.leader_election
        if election is None:
            return None

        def stopped() -> None:
            log.warning("lost the lease: this replica stops writing")
            self.office.leave()

        margin = election.lease_duration - election.renew_deadline
        if self.config.edgelb.read_timeout >= margin:
            log.warning(
                "--edgelb-request-timeout %.1fs is not shorter than lease duration - renew deadline (%.1fs): "
                "a write started just before losing the lease could land after another replica took over",
                self.config.edgelb.read_timeout,
                margin,
            )
        return LeaderElector(
            self.api,
            namespace=election.namespace,
            name=election.lease_name,
            identity=self.identity,
            lease_duration=election.lease_duration,
            renew_deadline=election.renew_deadline,
            retry_period=election.retry_period,
            on_started_leading=self.office.take,
            on_stopped_leading=stopped,
            may_lead=lambda: self.database.reachable,
        )

    def _database_gate(self) -> DatabaseGate:
        def changed(reachable: bool) -> None:
            if reachable:
                self.office.database_back()

        gate = DatabaseGate(
            self.store.ping, interval=DATABASE_PING_INTERVAL, stale=DATABASE_STALE, on_change=changed
        )

        def reachability(reachable: bool) -> None:
            # A connection lost under any statement (the store saw it and logged why) closes the
            # gate now, not at the next ping; only a ping opens it again.
            if not reachable:
                gate.failed(ConnectionError("a statement lost its connection to the database"))

        self.store.reachability.on_change = reachability
        return gate

    def _controller(self) -> Controller:
        c, metrics = self.config, self.metrics
        self.kube = KubeAdapter(self.api, background_events=True)
        fence = Fence(self.is_leading)
        self.nodes = Nodes(
            on_change=lambda: self.controller.enqueue_all(),
            networks=tuple(ipaddress.ip_network(n) for n in c.settings.node_address_cidrs),
        )
        reconciler = Reconciler(
            store=self.store,
            lifecycle=self.machine,
            # Bindings of one pool polling its metadata share a read for a moment.
            edgelb=SharedMetadata(FencedEdgeLB(self.edgelb, fence)),
            kube=FencedKube(self.kube, fence),
            settings=c.settings,
            node_addresses=self.nodes.addresses if c.settings.backend_mode == "address" else tuple,
            may_write=self.is_leading,
            on_transition=metrics.transition,
        )

        def on_verified(seconds: float) -> None:
            metrics.verified(seconds)
            self._verified.set()

        sweep = PoolSweep(
            edgelb=reconciler.edgelb,
            store=self.store,
            cache=reconciler.cache,
            # The settled states with a handler (Ready): their bindings wait on the sweep.
            states=[n for n, s in self.machine.states.items() if s.settled and s.handler is not None],
            cluster=c.settings.cluster_name,
            metadata=MetadataSchedule(c.metadata_resync_period),
        )
        controller = Controller(
            reconciler,
            workers=c.workers,
            active=self.is_leading,
            on_reconcile=metrics.reconciled,
            on_verified=on_verified,
            sweep=sweep,
            on_sweep=metrics.pool_swept,
            sweep_interval=max(self.resync_period, 1.0),
            # Pools fall due one by one over the period: look for due ones often enough to
            # spread them, rarely enough that an idle look costs nothing.
            metadata_interval=min(max(c.metadata_resync_period / 30, 1.0), 10.0),
        )
        sweeper = OrphanSweeper(
            edgelb=reconciler.edgelb,
            store=self.store,
            cache=reconciler.cache,
            locks=reconciler.locks,
            cluster=c.settings.cluster_name,
            may_sweep=lambda: self._verified.is_set() and self.is_leading() and not controller.stopping,
            on_deleted=metrics.orphan_pool_deleted,
        )
        # After each periodic pool sweep, on its thread, with its listing: one list per period.
        controller.after_sweep = sweeper.run
        self.retention = RetentionJob(
            self.store,
            c.retention,
            # Like the sweep: the leader alone, and not before the start-up verification is done.
            may_run=lambda: self._verified.is_set() and self.is_leading() and not controller.stopping,
            on_pruned=metrics.history_rows_pruned,
        )
        if c.retention.enabled:
            self.retention.schedule(controller.scheduler, period=self.resync_period)
        # The final state is never stored (the binding row is deleted), so it has no gauge.
        metrics.watch_store(self.store, states=[s for s in self.machine.states if s != self.machine.final])
        metrics.watch_queue(lambda: len(controller.queue))
        metrics.watch_leader(self.is_leading)
        metrics.watch_database_outage(lambda: not self.database.reachable)
        recovery = self.recovery = EdgeLBRecovery(
            ping=self.edgelb.ping,
            wake=controller.retry_now,
            may_act=lambda: self.is_leading() and controller.synced,
        )
        metrics.watch_edgelb_outage(lambda: recovery.outage)
        return controller

    def _watchers(self) -> list[Watcher]:
        controller = self.controller
        watchers = [
            Watcher(
                self.api,
                resource="services",
                on_upsert=controller.observe,
                on_delete=lambda service: controller.forget(key(service)),
                on_synced=controller.mark_synced,
                resync_period=self.resync_period,
            )
        ]
        if self.config.settings.backend_mode == "address":
            watchers.append(
                Watcher(self.api, resource="nodes", on_upsert=self.nodes.upsert, on_delete=self.nodes.delete)
            )
        return watchers

    def _http(self) -> HealthServer | None:
        host, port = self.config.http_listen
        controller = self.controller
        try:
            # Bound now, before any thread starts: an address in use fails here, not half-way up.
            return HealthServer(
                host,
                port,
                registry=self.metrics.registry,
                probes=Probes(
                    threads=lambda: [*controller.threads, *self.watchers],
                    stopping=lambda: self.done.is_set() or controller.stopping,
                    synced=lambda: controller.synced,
                    database=self.store.ping,
                    leader=self.is_leading,
                ),
                metrics=self.config.metrics_listen,
                on_refused=self.metrics.http_refused,
            )
        except BindError as exc:
            where, why = format_address(*exc.address), exc.error.strerror or exc.error
            if self.config.http_listen_explicit or exc.which == "metrics":
                flag = "--metrics-listen" if exc.which == "metrics" else "--http-listen"
                raise StartError(f"cannot listen on {where} for {flag}: {why}") from exc
            # The default address is a convenience: a second replica on one machine (or a test
            # starting several) must still run.
            log.warning(
                "cannot listen on %s (%s): /metrics, /healthz and /readyz are not served; set --http-listen",
                where,
                why,
            )
            return None

    def _edgelb_response(self, method: str, route: str, status: int, seconds: float) -> None:
        self.metrics.edgelb_response(method, route, status, seconds)
        # Built with the controller, after the client: no request is made before.
        self.recovery.observe(method, route, status, seconds)

    def _stop_controller(self) -> None:
        # The fence closes first: nothing is written from here on, whatever a worker is doing.
        self.office.leave()
        self.controller.stop()
