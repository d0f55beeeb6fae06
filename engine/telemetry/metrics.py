"""Prometheus metrics of ``dklb run``: what the controller did, and what the database holds now.

Where it sits in the data flow: ``dklb run`` builds one ``Metrics`` and hands its hooks to the
parts it wires together:

* ``EdgeLBClient(on_response=metrics.edgelb_response)``: every HTTP request to EdgeLB;
* ``api_client(on_request=metrics.kubernetes_request)``: every request to the API server;
* ``Reconciler(on_transition=metrics.transition)``: every committed state change;
* ``Controller(on_reconcile=metrics.reconciled)``: every ``reconcile(key)`` call of a worker;
* ``OrphanSweeper(on_deleted=metrics.orphan_pool_deleted)``: every orphaned pool deleted;
* ``AdmissionWebhook(on_request=metrics.admission_review)``: every AdmissionReview answered;
* ``HealthServer`` / ``AdmissionWebhook(on_refused=metrics.http_refused)``: every connection or
  request the bounded HTTP servers (``engine.telemetry.serving``) refused or cut;
* ``watch_store`` / ``watch_queue`` / ``watch_leader`` / ``watch_edgelb_outage`` /
  ``watch_database_outage``: values read
  only when scraped.

``engine.telemetry.health`` serves ``registry`` on ``/metrics``. Everything lives in a dedicated
``CollectorRegistry`` (never the process-global one), so tests can build as many as they like.

Label values are bounded by construction: states and triggers come from the declared lifecycle,
EdgeLB routes are templates (``/v2/pools/{name}``), Kubernetes resources are resource names
(``services/status``): never a pool, Service or namespace name, which would make one time
series per object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.telemetry.serving import REASONS

if TYPE_CHECKING:
    # For the annotations only: the webhook and /metrics servers (and their load test's process)
    # need the hooks without the database layer's imports (SQLAlchemy: ~24 MB of RSS).
    from engine.store import Store

log = logging.getLogger("dklb.metrics")

# Seconds. The defaults of prometheus-client stop at 10 s; a reconcile that waits on EdgeLB
# (read timeout up to 30 s, a 401 doubling a request) can take longer and must not all land in +Inf.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# The ``code`` label of a request that got no HTTP answer (refused, reset, timed out): the
# hooks report status 0 for it. Same spelling idea as client-go's ``<error>``.
NO_ANSWER = "error"


def _code(status: int) -> str:
    return str(status) if status else NO_ANSWER


class StoreCollector(Collector):
    """``dklb_bindings{state}`` and ``dklb_pools``, counted in the database at scrape time.

    Counting at scrape time (rather than keeping gauges up to date on every commit) makes the
    numbers right whoever wrote the database: another replica, ``dklb retry``, a restart.
    ``Store.counts`` runs on the store's reader engine: a scrape never queues behind, or holds
    up, a worker's commit.
    """

    def __init__(self, store: Store, *, states: Iterable[str] = ()) -> None:
        self._store = store
        # Declared states are always exported, 0 when empty: a dashboard sees "no Failed
        # binding" as 0, not as a missing series.
        self._states = tuple(states)

    def describe(self) -> Iterator[Metric]:
        # Names only: without describe() a registry would run the queries just to register us.
        yield GaugeMetricFamily("dklb_bindings", "", labels=["state"])
        yield GaugeMetricFamily("dklb_pools", "")
        yield CounterMetricFamily("dklb_store_write_transactions", "")

    def collect(self) -> Iterator[Metric]:
        try:
            by_state, pools = self._store.counts()
        except Exception:
            # The rest of /metrics stays useful; /readyz reports a database that does not answer.
            log.warning("could not count bindings and pools for /metrics", exc_info=True)
            return
        bindings = GaugeMetricFamily(
            "dklb_bindings", "Bindings (LoadBalancer Services handled by dklb) by state.", labels=["state"]
        )
        for state in sorted(set(self._states) | set(by_state)):
            bindings.add_metric([state], by_state.get(state, 0))
        yield bindings
        yield GaugeMetricFamily("dklb_pools", "EdgeLB pools dklb keeps track of (pools table).", value=pools)
        yield CounterMetricFamily(
            "dklb_store_write_transactions",
            "Write transactions this process committed to the database (one per transition).",
            value=self._store.write_transactions,
        )


DATABASE_OUTAGE_HELP = "1 while the database does not answer (writes stop, no Lease renewal), else 0."


class Metrics:
    """Every metric of one controller process, in its own registry, plus the hooks that feed them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.transitions = Counter(
            "dklb_transitions",
            'State transitions committed ("from" is empty for a binding just created).',
            ["from", "to", "trigger"],
            registry=r,
        )
        self.edgelb_requests = Counter(
            "dklb_edgelb_requests",
            f'HTTP requests to the EdgeLB API; code "{NO_ANSWER}" when no answer came.',
            ["method", "route", "code"],
            registry=r,
        )
        self.edgelb_duration = Histogram(
            "dklb_edgelb_request_duration_seconds",
            "Time to EdgeLB's answer (or to the failure), per route template.",
            ["method", "route"],
            buckets=BUCKETS,
            registry=r,
        )
        self.kubernetes_requests = Counter(
            "dklb_kubernetes_requests",
            f'Requests to the Kubernetes API server; code "{NO_ANSWER}" when no answer came.',
            ["verb", "resource", "code"],
            registry=r,
        )
        self.kubernetes_duration = Histogram(
            "dklb_kubernetes_request_duration_seconds",
            "Time to the API server's answer (response headers, for a watch).",
            ["verb", "resource"],
            buckets=BUCKETS,
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "dklb_reconcile_duration_seconds",
            "Duration of one reconcile(key) call by a worker.",
            buckets=BUCKETS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            "dklb_reconcile_errors",
            "reconcile(key) calls that raised (retried after 5s); handler failures are transitions.",
            registry=r,
        )
        self.workqueue_depth = Gauge(
            "dklb_workqueue_depth",
            "Keys waiting in the work queue (not counting those in progress).",
            registry=r,
        )
        self.verification_seconds = Gauge(
            "dklb_startup_verification_seconds",
            "Seconds from the first complete list to every binding verified, by a reconcile or the "
            "first pool sweep (0 until then).",
            registry=r,
        )
        self.leader = Gauge("dklb_leader", "1 while this replica leads (and may write), else 0.", registry=r)
        self.edgelb_outage = Gauge(
            "dklb_edgelb_outage",
            "1 while EdgeLB has not answered for a while (engine.runtime.recovery probes it), else 0.",
            registry=r,
        )
        self.database_outage = Gauge("dklb_database_outage", DATABASE_OUTAGE_HELP, registry=r)
        self.orphan_pools_deleted = Counter(
            "dklb_orphan_pools_deleted",
            "EdgeLB pools dklb created that no Service used any more, deleted (engine.runtime.orphans).",
            registry=r,
        )
        self.pool_sweeps = Counter(
            "dklb_pool_sweeps",
            "Pool sweeps (one GET /v2/pools compared with every Ready binding), by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.pool_sweep_woken = Counter(
            "dklb_pool_sweep_woken",
            "Ready bindings a pool sweep found differing from the listing (or without an address), woken.",
            registry=r,
        )
        self.history_pruned = Counter(
            "dklb_history_pruned_rows",
            "History rows deleted by retention, by rule (max-age, max-rows-per-service).",
            ["rule"],
            registry=r,
        )
        self._declare_endpoint_metrics(r)
        self._store: StoreCollector | None = None

    def _declare_endpoint_metrics(self, r: CollectorRegistry) -> None:
        """What the HTTP endpoints (the webhook, /metrics and the probes) answered and refused."""
        self.admission_reviews = Counter(
            "dklb_admission_reviews",
            'AdmissionReviews answered by the webhook, by path; allowed "false" when refused or failed.',
            ["path", "allowed"],
            registry=r,
        )
        self.admission_duration = Histogram(
            "dklb_admission_review_duration_seconds",
            "Time to answer one AdmissionReview, per path.",
            ["path"],
            buckets=BUCKETS,
            registry=r,
        )
        self.http_refused_total = Counter(
            "dklb_http_refused",
            "Connections and requests the HTTP servers refused or cut, by server (http: /metrics and "
            "the probes; webhook) and reason (" + ", ".join(REASONS) + ").",
            ["server", "reason"],
            registry=r,
        )

    # ---- hooks (called from the client, adapter, reconciler and controller threads) -----------

    def transition(self, source: str | None, dest: str, trigger: str) -> None:
        self.transitions.labels(source or "", dest, trigger).inc()

    def edgelb_response(self, method: str, route: str, status: int, seconds: float) -> None:
        self.edgelb_requests.labels(method, route, _code(status)).inc()
        self.edgelb_duration.labels(method, route).observe(seconds)

    def kubernetes_request(self, verb: str, resource: str, status: int, seconds: float) -> None:
        self.kubernetes_requests.labels(verb, resource, _code(status)).inc()
        self.kubernetes_duration.labels(verb, resource).observe(seconds)

    def verified(self, seconds: float) -> None:
        self.verification_seconds.set(seconds)

    def orphan_pool_deleted(self, _pool: str) -> None:
        # The pool name is not a label: one time series per pool would grow without bound.
        self.orphan_pools_deleted.inc()

    def pool_swept(self, ok: bool, woken: int) -> None:
        self.pool_sweeps.labels("ok" if ok else "failed").inc()
        self.pool_sweep_woken.inc(woken)

    def history_rows_pruned(self, rule: str, rows: int) -> None:
        self.history_pruned.labels(rule).inc(rows)

    def admission_review(self, path: str, allowed: bool, seconds: float) -> None:
        self.admission_reviews.labels(path, "true" if allowed else "false").inc()
        self.admission_duration.labels(path).observe(seconds)

    def http_refused(self, server: str, reason: str) -> None:
        self.http_refused_total.labels(server, reason).inc()

    def reconciled(self, seconds: float, failed: bool) -> None:
        self.reconcile_duration.observe(seconds)
        if failed:
            self.reconcile_errors.inc()

    # ---- values read at scrape time -----------------------------------------------------------

    def watch_store(self, store: Store, *, states: Iterable[str] = ()) -> None:
        """Export ``dklb_bindings{state}`` and ``dklb_pools`` from ``store``, read at every scrape."""
        if self._store is not None:
            raise RuntimeError("a store is already watched")
        self._store = StoreCollector(store, states=states)
        self.registry.register(self._store)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.workqueue_depth.set_function(lambda: float(depth()))

    def watch_leader(self, leading: Callable[[], bool]) -> None:
        self.leader.set_function(lambda: 1.0 if leading() else 0.0)

    def watch_edgelb_outage(self, outage: Callable[[], bool]) -> None:
        self.edgelb_outage.set_function(lambda: 1.0 if outage() else 0.0)

    def watch_database_outage(self, outage: Callable[[], bool]) -> None:
        self.database_outage.set_function(lambda: 1.0 if outage() else 0.0)

    def close(self) -> None:
        if self._store is not None:
            self.registry.unregister(self._store)
            self._store = None
