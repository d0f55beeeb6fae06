"""``dklb run``: the controller process, wired from flags (or their ``DKLB_*`` variables).

Start-up order matters: the database is migrated first; the Service watcher fills the cache and
calls ``Controller.mark_synced`` after its first complete list; workers run only while this
replica leads (a Lease, when ``--leader-elect``), and every write to EdgeLB, to Kubernetes or to
the database is fenced by that leadership. SIGTERM or SIGINT stop everything and release the
lease, so another replica takes over at once.

Observability: one ``engine.metrics.Metrics`` is fed by hooks in the EdgeLB client, the
Kubernetes API client, the reconciler and the controller, and reads the database when scraped;
``engine.health`` serves it on ``--http-listen`` with the ``/healthz`` and ``/readyz`` probes.
In ``--log-format json`` every line the process writes is a JSON object: warnings and uncaught
exceptions (main thread or any other) go through logging too.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from .durations import parse_duration

log = logging.getLogger("dklb.run")

# The EdgeLB API's address inside a DC/OS cluster (the Go dklb's default).
DEFAULT_EDGELB_HOST = "api.edgelb.marathon.l4lb.thisdcos.directory"
IN_CLUSTER = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
CONTAINER_DATABASE = "/var/lib/dklb/dklb.db"
# /metrics, /healthz, /readyz. Not 8080: the local EdgeLB of the demo listens there. Outside a
# cluster only on loopback: nobody else needs a developer's metrics.
HTTP_PORT = 9420


def _env(flag: str) -> str:
    """The environment variable that can set ``--flag``: ``DKLB_`` + the flag in upper snake case."""
    return "DKLB_" + flag.lstrip("-").replace("-", "_").upper()


def _default_database() -> str:
    return CONTAINER_DATABASE if IN_CLUSTER or Path(CONTAINER_DATABASE).parent.is_dir() else "dklb.db"


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _listen(text: str) -> tuple[str, int]:
    from .health import parse_listen

    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _default_listen() -> tuple[str, int]:
    return ("0.0.0.0" if IN_CLUSTER else "127.0.0.1", HTTP_PORT)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the controller",
        description="Watch Services of type LoadBalancer and drive their EdgeLB pools. "
        "Every flag can also be set by the environment variable DKLB_<FLAG> (e.g. DKLB_EDGELB_URL).",
        epilog=(
            "examples:\n"
            "  dklb run --kubeconfig ~/.kube/config \\\n"
            "      --kubernetes-cluster-framework-name kubernetes-cluster \\\n"
            "      --edgelb-url http://127.0.0.1:8080 --database ./dklb.db\n"
            "  dklb run --edgelb-host api.edgelb.marathon.l4lb.thisdcos.directory   # in a DC/OS cluster"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def flag(name: str, **kwargs: Any) -> None:
        env = _env(name)
        if env in os.environ:
            raw = os.environ[env]
            convert = kwargs.get("type", str)
            kwargs["default"] = convert(raw) if kwargs.get("action") != "store_true" else _bool(raw)
        kwargs["help"] = kwargs.get("help", "") + f" [env {env}]"
        parser.add_argument(name, **kwargs)

    flag("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, else ~/.kube/config)")
    flag(
        "--kubernetes-cluster-framework-name",
        default="kubernetes-cluster",
        help="the MKE cluster's framework name: names pools and backends (default %(default)s)",
    )
    flag("--edgelb-url", default=None, help="EdgeLB base URL; wins over host/scheme/path")
    flag("--edgelb-host", default=DEFAULT_EDGELB_HOST, help="EdgeLB host (default %(default)s)")
    flag("--edgelb-scheme", default="http", help="http or https (default %(default)s)")
    flag("--edgelb-path", default="", help="path prefix, e.g. /service/edgelb through Admin Router")
    flag("--edgelb-bearer-token-file", default=None, help="file holding the bearer token (re-read on 401)")
    flag("--edgelb-service-account-secret-file", default=None, help="DC/OS service-account secret (JSON)")
    flag("--edgelb-ca-bundle", default=None, help="CA bundle to verify EdgeLB's certificate")
    flag(
        "--edgelb-insecure-skip-tls-verify",
        type=_bool,
        default=False,
        help="do not verify EdgeLB's certificate (never in production)",
    )
    flag(
        "--edgelb-pool-group",
        default="dcos-edgelb/pools",
        help="pool group of created pools (default %(default)s)",
    )
    flag("--edgelb-default-pool-size", type=int, default=1, help="pool size when the annotation sets none")
    flag(
        "--edgelb-request-timeout",
        type=_duration,
        default=4.0,
        help="EdgeLB read timeout; keep it below lease duration - renew deadline (default 4s)",
    )
    flag(
        "--backend-mode",
        default="mesos",
        choices=["mesos", "address"],
        help="backends select kube-node tasks "
        "(mesos) or Node InternalIPs + nodePort (address); default %(default)s",
    )
    flag(
        "--resync-period",
        type=_duration,
        default=300.0,
        help="how often a Ready binding re-verifies (default 5m)",
    )
    flag(
        "--database", default=_default_database(), help="SQLite path or SQLAlchemy URL (default %(default)s)"
    )
    flag("--workers", type=int, default=4, help="bindings reconciled in parallel (default %(default)s)")
    flag(
        "--leader-elect",
        type=_bool,
        default=IN_CLUSTER,
        help="elect a leader on a Lease (default: in a cluster)",
    )
    flag(
        "--leader-elect-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="the Lease's namespace",
    )
    flag("--leader-elect-lease-name", default="dklb", help="the Lease's name (default %(default)s)")
    flag("--leader-elect-lease-duration", type=_duration, default=15.0, help="lease duration (default 15s)")
    flag("--leader-elect-renew-deadline", type=_duration, default=10.0, help="renew deadline (default 10s)")
    flag("--leader-elect-retry-period", type=_duration, default=2.0, help="retry period (default 2s)")
    flag(
        "--http-listen",
        type=_listen,
        default=None,
        metavar="HOST:PORT",
        help="serve /metrics, /healthz and /readyz here; port 0 picks a free port "
        f"(default: 0.0.0.0:{HTTP_PORT} in a cluster, else 127.0.0.1:{HTTP_PORT}; "
        "the default address, unlike an explicit one, is skipped with a warning when in use)",
    )
    flag(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="(default %(default)s)",
    )
    flag(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text or JSON lines (default %(default)s)",
    )
    parser.set_defaults(func=run)
    return parser


def _service_key(service: dict[str, Any]) -> str:
    meta = service["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


class Nodes:
    """The Node objects seen by the node watcher, for the "address" backend mode."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, dict[str, Any]] = {}
        self._addresses: tuple[str, ...] = ()
        self._on_change = on_change

    def upsert(self, node: dict[str, Any]) -> None:
        with self._lock:
            self._nodes[node["metadata"]["name"]] = node
        self._refresh()

    def delete(self, node: dict[str, Any]) -> None:
        with self._lock:
            self._nodes.pop(node["metadata"]["name"], None)
        self._refresh()

    def addresses(self) -> tuple[str, ...]:
        with self._lock:
            return self._addresses

    def _refresh(self) -> None:
        from .kube.watch import node_addresses

        with self._lock:
            fresh = node_addresses(self._nodes.values())
            changed = fresh != self._addresses
            self._addresses = fresh
        if changed:
            self._on_change()


def _route_stray_output_through_logging() -> None:
    """Warnings and uncaught exceptions would go to stderr as plain text, breaking JSON lines."""
    logging.captureWarnings(True)

    def thread_hook(hook: threading.ExceptHookArgs) -> None:
        if hook.exc_type is SystemExit:
            return  # what the default hook does too
        name = hook.thread.name if hook.thread is not None else "?"
        log.critical(
            "uncaught exception in thread %s",
            name,
            exc_info=(hook.exc_type, hook.exc_value, hook.exc_traceback),
        )

    def main_hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        log.critical("uncaught exception", exc_info=(kind, value, tb))

    def unraisable_hook(hook: Any) -> None:
        # "Exception ignored in ...": errors in __del__ or finalizers, often at shutdown.
        log.error(
            "%s: %r",
            hook.err_msg or "Exception ignored in",
            hook.object,
            exc_info=(hook.exc_type, hook.exc_value, hook.exc_traceback),
        )

    threading.excepthook = thread_hook
    sys.excepthook = main_hook
    sys.unraisablehook = unraisable_hook


def run(args: argparse.Namespace) -> int:
    from .logs import configure_logging
    from .store import StoreError

    configure_logging(level=args.log_level, fmt=args.log_format)
    if args.log_format == "json":
        _route_stray_output_through_logging()
    try:
        return _run(args)
    except StoreError as exc:
        if args.log_format != "json":
            raise  # the command line prints it as "error: ..."
        log.error("%s", exc)
        return 1


def _run(args: argparse.Namespace) -> int:
    # Imported here: `dklb plan` and the other light commands should not pay for the
    # Kubernetes client, the scheduler and prometheus-client.
    from . import lifecycle, migrate
    from .contract import Settings
    from .controller import Controller
    from .edgelb.client import client_from_options
    from .fence import Fence, FencedEdgeLB, FencedKube
    from .health import HealthServer, Probes, format_address
    from .kube.adapter import KubeAdapter
    from .kube.api import api_client
    from .kube.watch import Watcher
    from .metrics import Metrics
    from .reconciler import Reconciler

    metrics = Metrics()
    store = migrate.open_store(args.database)
    edgelb = client_from_options(
        url=args.edgelb_url,
        host=args.edgelb_host,
        scheme=args.edgelb_scheme,
        path=args.edgelb_path,
        token_file=args.edgelb_bearer_token_file,
        service_account_secret_file=args.edgelb_service_account_secret_file,
        ca_bundle=args.edgelb_ca_bundle,
        insecure_skip_tls_verify=args.edgelb_insecure_skip_tls_verify,
        read_timeout=args.edgelb_request_timeout,
        on_response=metrics.edgelb_response,
    )
    api = api_client(args.kubeconfig, on_request=metrics.kubernetes_request)
    kube = KubeAdapter(api)
    settings = Settings(
        cluster_name=args.kubernetes_cluster_framework_name,
        pool_group=args.edgelb_pool_group,
        default_pool_size=args.edgelb_default_pool_size,
        backend_mode=args.backend_mode,
        resync_period=args.resync_period,
    )
    # Set by the elector's callbacks; is_leading() also asks the elector itself, which is exact
    # to the clock (a renew older than the deadline ends leadership before any callback runs).
    leading = threading.Event()
    elector_box: list[Any] = []
    if not args.leader_elect:
        leading.set()

    def is_leading() -> bool:
        return leading.is_set() and all(e.is_leader() for e in elector_box)

    fence = Fence(is_leading)
    controller_box: list[Any] = []
    nodes = Nodes(on_change=lambda: controller_box and controller_box[0].enqueue_all())
    machine = lifecycle.load()
    reconciler = Reconciler(
        store=store,
        lifecycle=machine,
        edgelb=FencedEdgeLB(edgelb, fence),
        kube=FencedKube(kube, fence),
        settings=settings,
        node_addresses=nodes.addresses if args.backend_mode == "address" else tuple,
        may_write=is_leading,
        on_transition=metrics.transition,
    )
    controller = Controller(
        reconciler, workers=args.workers, active=is_leading, on_reconcile=metrics.reconciled
    )
    controller_box.append(controller)
    watchers = [
        Watcher(
            api,
            resource="services",
            on_upsert=controller.observe,
            on_delete=lambda service: controller.forget(_service_key(service)),
            on_synced=controller.mark_synced,
            resync_period=args.resync_period,
        )
    ]
    if args.backend_mode == "address":
        watchers.append(Watcher(api, resource="nodes", on_upsert=nodes.upsert, on_delete=nodes.delete))

    # The final state is never stored (the binding row is deleted), so it has no gauge.
    database = metrics.watch_store(store, states=[s for s in machine.states if s != machine.final])
    metrics.watch_queue(lambda: len(controller.queue))
    metrics.watch_leader(is_leading)

    done = threading.Event()
    http: HealthServer | None = None
    explicit = args.http_listen is not None
    host, port = args.http_listen if explicit else _default_listen()
    try:
        # Bound before any thread starts: an address in use fails here, not half-way up.
        http = HealthServer(
            host,
            port,
            registry=metrics.registry,
            probes=Probes(
                threads=lambda: [*controller.threads, *watchers],
                stopping=lambda: done.is_set() or controller.stopping,
                synced=lambda: controller.synced,
                database=database.ping,
                leader=is_leading,
            ),
        )
    except OSError as exc:
        if explicit:
            log.error(
                "cannot listen on %s for --http-listen: %s", format_address(host, port), exc.strerror or exc
            )
            metrics.close()
            store.close()
            return 1
        # The default address is a convenience: a second replica on one machine (or a test
        # starting several) must still run. An explicit address is a promise, hence fatal above.
        log.warning(
            "cannot listen on %s (%s): /metrics, /healthz and /readyz are not served; set --http-listen",
            format_address(host, port),
            exc.strerror or exc,
        )

    elector = None
    if args.leader_elect:
        from .kube.leader import LeaderElector, default_identity

        def started() -> None:
            log.info("leading: this replica writes now")
            leading.set()
            # Not on the elector's thread: reading every binding must not delay the next renew.
            threading.Thread(target=controller.enqueue_all, name="dklb-takeover", daemon=True).start()

        def stopped() -> None:
            log.warning("lost the lease: this replica stops writing")
            leading.clear()

        elector = LeaderElector(
            api,
            namespace=args.leader_elect_namespace,
            name=args.leader_elect_lease_name,
            identity=default_identity(),
            lease_duration=args.leader_elect_lease_duration,
            renew_deadline=args.leader_elect_renew_deadline,
            retry_period=args.leader_elect_retry_period,
            on_started_leading=started,
            on_stopped_leading=stopped,
        )
        elector_box.append(elector)
        margin = args.leader_elect_lease_duration - args.leader_elect_renew_deadline
        if args.edgelb_request_timeout >= margin:
            log.warning(
                "--edgelb-request-timeout %.1fs is not shorter than lease duration - renew deadline (%.1fs): "
                "a write started just before losing the lease could land after another replica took over",
                args.edgelb_request_timeout,
                margin,
            )

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    controller.start()
    for watcher in watchers:
        watcher.start()
    if elector is not None:
        elector.start()
    if http is not None:
        # Only now: a probe before the threads start would find them "dead".
        http.start()
    log.info(
        "dklb running: cluster %s, EdgeLB %s, database %s",
        settings.cluster_name,
        edgelb.base_url,
        args.database,
    )
    done.wait()

    for watcher in watchers:
        watcher.stop()
    leading.clear()
    controller.stop()
    if elector is not None:
        elector.stop(release=True)
    if http is not None:
        # Last to go: probes answer "stopping" while the rest shuts down.
        http.stop()
    metrics.close()
    store.close()
    log.info("dklb stopped")
    return 0
