"""``dklb run``: the controller process, wired from flags (or their ``DKLB_*`` variables).

Start-up order matters: the database is migrated first; the Service watcher fills the cache and
calls ``Controller.mark_synced`` after its first complete list; workers run only while this
replica leads (a Lease, when ``--leader-elect``), and every write to EdgeLB, to Kubernetes or to
the database is fenced by that leadership. SIGTERM or SIGINT stop everything and release the
lease, so another replica takes over at once. Every resync period the leader, once its start-up
verification is done, sweeps the pools it created that nothing uses any more (``engine.orphans``).

Observability: one ``engine.metrics.Metrics`` is fed by hooks in the EdgeLB client, the
Kubernetes API client, the reconciler and the controller, and reads the database when scraped;
``engine.health`` serves it on ``--http-listen`` with the ``/healthz`` and ``/readyz`` probes.
In ``--log-format json`` every line the process writes is a JSON object: warnings and uncaught
exceptions (main thread or any other) go through logging too.

Admission webhook (optional, ``--admission-*``): before the controller starts, ``AdmissionWebhook``
serves ``engine.admission_server`` on ``--admission-listen`` (a certificate from files, or one
generated in ``--admission-self-signed-dir``) and, with ``--register-admission-webhook``, has
``engine.admission_register`` point the API server at it. From then on a Service reaches the
controller already defaulted and validated; the controller checks it all the same, for writes
made while the webhook was unreachable (``--admission-failure-policy Ignore``). Certificate
files that change on disk (a renewed Secret) are reloaded, and re-registered when the CA does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from engine.cli.options import IN_CLUSTER, boolean, default_database, duration, env_name

log = logging.getLogger("dklb.run")

# The EdgeLB API's address inside a DC/OS cluster (the Go dklb's default).
DEFAULT_EDGELB_HOST = "api.edgelb.marathon.l4lb.thisdcos.directory"
# /metrics, /healthz, /readyz. Not 8080: the local EdgeLB of the demo listens there. Outside a
# cluster only on loopback: nobody else needs a developer's metrics.
HTTP_PORT = 9420
# Both webhook configurations' name; deploy/rbac.yaml grants GET and update on this name only.
ADMISSION_WEBHOOK_NAME = "dklb"
ADMISSION_FAILURE_POLICIES = ("Ignore", "Fail")
# How often the webhook's certificate files are compared with what is loaded: a Secret volume
# is updated in place (kubelet sync, about a minute), and nothing signals the process.
ADMISSION_CERT_CHECK_PERIOD = 30.0


def _listen(text: str) -> tuple[str, int]:
    from engine.telemetry.health import parse_listen

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
        env = env_name(name)
        if env in os.environ:
            raw = os.environ[env]
            convert = kwargs.get("type", str)
            kwargs["default"] = convert(raw) if kwargs.get("action") != "store_true" else boolean(raw)
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
        type=boolean,
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
        type=duration,
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
        type=duration,
        default=300.0,
        help="how often a Ready binding re-verifies (default 5m)",
    )
    flag("--database", default=default_database(), help="SQLite path or SQLAlchemy URL (default %(default)s)")
    flag("--workers", type=int, default=4, help="bindings reconciled in parallel (default %(default)s)")
    flag(
        "--leader-elect",
        type=boolean,
        default=IN_CLUSTER,
        help="elect a leader on a Lease (default: in a cluster)",
    )
    flag(
        "--leader-elect-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="the Lease's namespace",
    )
    flag("--leader-elect-lease-name", default="dklb", help="the Lease's name (default %(default)s)")
    flag("--leader-elect-lease-duration", type=duration, default=15.0, help="lease duration (default 15s)")
    flag("--leader-elect-renew-deadline", type=duration, default=10.0, help="renew deadline (default 10s)")
    flag("--leader-elect-retry-period", type=duration, default=2.0, help="retry period (default 2s)")
    flag(
        "--http-listen",
        type=_listen,
        default=None,
        metavar="HOST:PORT",
        help="serve /metrics, /healthz and /readyz here; port 0 picks a free port "
        f"(default: 0.0.0.0:{HTTP_PORT} in a cluster, else 127.0.0.1:{HTTP_PORT}; "
        "the default address, unlike an explicit one, is skipped with a warning when in use)",
    )
    # The admission webhook (engine.admission_server): checked together in admission_plan.
    # Plain strings here, checked at start-up: a mistake is then one clear line and exit 1,
    # whether it came from a flag or from its DKLB_* variable.
    flag(
        "--admission-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve the admission webhook (HTTPS: POST /mutate, POST /validate, GET /healthz) here; "
        "needs --admission-tls-cert-file and --admission-tls-private-key-file, or "
        "--admission-self-signed-dir (default: no webhook)",
    )
    flag("--admission-tls-cert-file", default=None, metavar="FILE", help="the webhook's certificate (PEM)")
    flag(
        "--admission-tls-private-key-file",
        default=None,
        metavar="FILE",
        help="its private key (PEM); both files are re-read when they change (a rotated Secret)",
    )
    flag(
        "--admission-self-signed-dir",
        default=None,
        metavar="DIR",
        help="without certificate files: generate a CA and a certificate for the webhook's "
        "address here (ca.crt is reused across restarts); for demos and tests",
    )
    flag(
        "--register-admission-webhook",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        metavar="true|false",
        help="create or update the MutatingWebhookConfiguration and ValidatingWebhookConfiguration "
        "at start-up; needs --admission-webhook-url or --admission-webhook-service",
    )
    flag(
        "--admission-webhook-name",
        default=ADMISSION_WEBHOOK_NAME,
        metavar="NAME",
        help="the name of both webhook configurations (default %(default)s, the one name "
        "deploy/rbac.yaml lets the controller GET and update)",
    )
    flag(
        "--admission-webhook-url",
        default=None,
        metavar="URL",
        help="where the API server calls the webhook, e.g. https://127.0.0.1:8443 "
        "(/mutate and /validate are appended)",
    )
    flag(
        "--admission-webhook-service",
        default=None,
        metavar="NAMESPACE/NAME:PORT",
        help="or the Service through which the API server calls it, e.g. dklb/dklb-webhook:443",
    )
    flag(
        "--admission-ca-bundle-file",
        default=None,
        metavar="FILE",
        help="the CA the API server trusts for the webhook (default: the generated ca.crt with "
        "--admission-self-signed-dir, else the certificate file itself, i.e. a self-signed one)",
    )
    flag(
        "--admission-failure-policy",
        default="Ignore",
        metavar="Ignore|Fail",
        help="what the API server does when the webhook does not answer: Ignore (store the "
        "Service unchecked; the controller still refuses what is invalid) or Fail (refuse the "
        "write) (default %(default)s)",
    )
    flag(
        "--admission-namespace-selector",
        default=None,
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="call the webhook only for Services in namespaces carrying these labels (default: all)",
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
        from engine.kube.watch import node_addresses

        with self._lock:
            fresh = node_addresses(self._nodes.values())
            changed = fresh != self._addresses
            self._addresses = fresh
        if changed:
            self._on_change()


# ---- the admission webhook ------------------------------------------------------------------------


@dataclass(frozen=True)
class AdmissionPlan:
    """What the ``--admission-*`` flags ask for, checked and parsed (``admission_plan``)."""

    listen: tuple[str, int] | None  # None: no webhook server in this process
    cert_file: str | None
    key_file: str | None
    self_signed_dir: str | None
    register: bool
    name: str
    url: str | None
    service: tuple[str, str, int] | None
    ca_bundle_file: str | None
    failure_policy: str
    namespace_selector: dict[str, str] | None


class AdmissionFlagError(Exception):
    """The ``--admission-*`` flags contradict each other or name something unusable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def admission_plan(args: argparse.Namespace) -> AdmissionPlan:
    """The webhook flags parsed and checked together; every problem is reported at once."""
    from engine.admission.register import check_url, parse_namespace_selector, parse_service_reference

    problems: list[str] = []

    def parse(flag: str, value: str | None, parser: Callable[[str], Any]) -> Any:
        if value is None:
            return None
        try:
            return parser(value)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            problems.append(f"{flag}: {exc}")
            return None

    listen = parse("--admission-listen", args.admission_listen, _listen)
    url = parse("--admission-webhook-url", args.admission_webhook_url, check_url)
    service = parse("--admission-webhook-service", args.admission_webhook_service, parse_service_reference)
    selector = parse(
        "--admission-namespace-selector", args.admission_namespace_selector, parse_namespace_selector
    )
    cert, key = args.admission_tls_cert_file, args.admission_tls_private_key_file
    self_signed, ca_bundle = args.admission_self_signed_dir, args.admission_ca_bundle_file
    serving = args.admission_listen is not None

    if (cert is None) != (key is None):
        problems.append(
            "--admission-tls-cert-file and --admission-tls-private-key-file go together: give both"
        )
    if cert is not None and self_signed is not None:
        problems.append(
            "--admission-self-signed-dir generates the certificate that "
            "--admission-tls-cert-file names: give one or the other"
        )
    if serving and cert is None and key is None and self_signed is None:
        problems.append(
            "--admission-listen needs a certificate: --admission-tls-cert-file and "
            "--admission-tls-private-key-file, or --admission-self-signed-dir"
        )
    if not serving:
        for flag, value in (
            ("--admission-tls-cert-file", cert),
            ("--admission-tls-private-key-file", key),
            ("--admission-self-signed-dir", self_signed),
        ):
            if value is not None:
                problems.append(f"{flag} is for the webhook server, which only --admission-listen starts")
    if args.admission_failure_policy not in ADMISSION_FAILURE_POLICIES:
        problems.append(
            f"--admission-failure-policy: {args.admission_failure_policy!r} is not one of "
            + ", ".join(ADMISSION_FAILURE_POLICIES)
        )
    if args.register_admission_webhook:
        if (args.admission_webhook_url is None) == (args.admission_webhook_service is None):
            problems.append(
                "--register-admission-webhook needs where the API server calls the webhook: "
                "--admission-webhook-url or --admission-webhook-service (exactly one)"
            )
        if not serving and ca_bundle is None:
            problems.append(
                "--register-admission-webhook for a webhook this process does not serve "
                "(no --admission-listen) needs --admission-ca-bundle-file"
            )
    else:
        # Almost certainly a forgotten --register-admission-webhook: say so rather than ignore it.
        for flag, value in (
            ("--admission-webhook-url", args.admission_webhook_url),
            ("--admission-webhook-service", args.admission_webhook_service),
            ("--admission-ca-bundle-file", ca_bundle),
            ("--admission-namespace-selector", args.admission_namespace_selector),
        ):
            if value is not None:
                problems.append(f"{flag} only matters with --register-admission-webhook")
    for flag, value in (
        ("--admission-tls-cert-file", cert),
        ("--admission-tls-private-key-file", key),
        ("--admission-ca-bundle-file", ca_bundle),
    ):
        if value is not None and not os.access(value, os.R_OK):
            problems.append(f"{flag}: cannot read {value}")
    if problems:
        raise AdmissionFlagError(problems)
    return AdmissionPlan(
        listen=listen,
        cert_file=cert,
        key_file=key,
        self_signed_dir=self_signed,
        register=bool(args.register_admission_webhook),
        name=args.admission_webhook_name,
        url=url,
        service=service,
        ca_bundle_file=ca_bundle,
        failure_policy=args.admission_failure_policy,
        namespace_selector=selector,
    )


def _self_signed_hosts(plan: AdmissionPlan) -> list[str]:
    """The names the API server may use to reach the webhook: the generated certificate's SANs."""
    from urllib.parse import urlsplit

    hosts: list[str] = []
    if plan.url is not None:
        hosts.append(urlsplit(plan.url).hostname or "")
    if plan.service is not None:
        namespace, name, _ = plan.service
        hosts += [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
    assert plan.listen is not None
    if plan.listen[0] not in ("", "0.0.0.0", "::"):
        hosts.append(plan.listen[0])
    return list(dict.fromkeys(h for h in hosts if h)) or ["localhost", "127.0.0.1"]


class AdmissionWebhook:
    """The webhook server of ``dklb run`` and its registration, from an ``AdmissionPlan``."""

    def __init__(self, plan: AdmissionPlan, *, cluster_name: str, default_pool_size: int) -> None:
        self.plan = plan
        self._settings = (cluster_name, default_pool_size)
        self.server: Any = None
        self._files: tuple[str, ...] = ()
        self._seen: tuple[bytes, ...] = ()
        self._ca_bundle: bytes | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Serves (when ``--admission-listen``). Raises ``OSError``/``ValueError`` (ssl.SSLError
        is an OSError): an address in use, certificate files that do not load."""
        from engine.admission.review import AdmissionSettings
        from engine.admission.server import AdmissionServer, generate_self_signed

        plan = self.plan
        cert, key, ca = plan.cert_file, plan.key_file, plan.ca_bundle_file
        if plan.listen is not None:
            if cert is None:
                assert plan.self_signed_dir is not None
                generated_ca, generated_cert, generated_key = generate_self_signed(
                    Path(plan.self_signed_dir), hosts=_self_signed_hosts(plan)
                )
                cert, key, ca = str(generated_cert), str(generated_key), ca or str(generated_ca)
            assert key is not None
            cluster_name, default_pool_size = self._settings
            self.server = AdmissionServer(
                host=plan.listen[0],
                port=plan.listen[1],
                cert_file=cert,
                key_file=key,
                settings=AdmissionSettings(cluster_name=cluster_name, default_pool_size=default_pool_size),
            )
            self.server.start()
        # Without a CA file the serving certificate itself is the trust anchor: right for a
        # self-signed certificate (and a chain file that ends in its CA).
        self._files = tuple(f for f in (cert, key, ca or cert) if f is not None)
        self._seen = self._read()
        self._ca_bundle = Path(ca or cert).read_bytes() if (ca or cert) else None

    def open(self, api: Any) -> str | None:
        """``start``, then ``register`` when asked to; what went wrong, or None."""
        from engine.admission.register import RegistrationError
        from engine.telemetry.health import format_address

        try:
            self.start()
        except (OSError, ValueError) as exc:
            where = format_address(*self.plan.listen) if self.plan.listen else "-"
            return f"cannot serve the admission webhook on {where}: {exc}"
        if self.plan.register:
            # Whatever this replica's leadership: registering writes no Service, and every
            # replica registers the same objects (idempotently), so none depends on another.
            try:
                self.register(api)
            except (RegistrationError, ValueError) as exc:
                return str(exc)
        return None

    def register(self, api: Any) -> None:
        """Creates or updates both configurations. Raises ``RegistrationError``, ``ValueError``."""
        from engine.admission.register import register

        assert self._ca_bundle is not None
        register(
            api,
            name=self.plan.name,
            ca_bundle=self._ca_bundle,
            url=self.plan.url,
            service=self.plan.service,
            failure_policy=self.plan.failure_policy,
            namespace_selector=self.plan.namespace_selector,
        )

    def watch_certificates(self, api: Any) -> None:
        """Reload the certificate when its files change; re-register when the CA bundle does.

        cert-manager (or anyone) renewing the Secret changes the mounted files under a running
        process: without this it would serve the old certificate until it expires.
        """
        if self.server is None and not self.plan.register:
            return

        def loop() -> None:
            while not self._stopping.wait(ADMISSION_CERT_CHECK_PERIOD):
                self.check_certificates(api)

        self._thread = threading.Thread(target=loop, name="dklb-admission-certs", daemon=True)
        self._thread.start()

    def check_certificates(self, api: Any) -> None:
        from engine.admission.register import RegistrationError

        current = self._read()
        if current == self._seen:
            return
        try:
            if self.server is not None:
                self.server.reload_certificates()
            self._seen = current
        except (OSError, ValueError) as exc:
            # Half-written (key and certificate do not match yet): the next check retries.
            log.warning("admission webhook certificate not reloaded: %s", exc)
            return
        bundle = current[-1]
        if self.plan.register and bundle != self._ca_bundle:
            self._ca_bundle = bundle
            try:
                self.register(api)
            except (RegistrationError, ValueError) as exc:
                log.error("admission webhook not re-registered with the new CA bundle: %s", exc)

    def _read(self) -> tuple[bytes, ...]:
        contents = []
        for name in self._files:
            try:
                contents.append(Path(name).read_bytes())
            except OSError:
                contents.append(b"")
        return tuple(contents)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.server is not None:
            self.server.stop()


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
    from engine.store import StoreError
    from engine.telemetry.logs import configure_logging

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
    from apscheduler.executors.pool import ThreadPoolExecutor

    from engine.contract import Settings
    from engine.edgelb.client import client_from_options
    from engine.kube.adapter import KubeAdapter
    from engine.kube.api import api_client
    from engine.kube.watch import Watcher
    from engine.runtime import lifecycle
    from engine.runtime.controller import Controller
    from engine.runtime.fence import Fence, FencedEdgeLB, FencedKube
    from engine.runtime.orphans import OrphanSweeper
    from engine.runtime.reconciler import Reconciler
    from engine.store import migrate
    from engine.telemetry.health import HealthServer, Probes, format_address
    from engine.telemetry.metrics import Metrics

    try:
        # Before anything starts: a mistake in these flags costs no migration and no thread.
        plan = admission_plan(args)
    except AdmissionFlagError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        return 1

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
    kube = KubeAdapter(api, background_events=True)
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
    # Set once every key known at start has been reconciled once (after a lost database: every
    # Service re-adopted). Before that the orphan sweeper must not judge any pool.
    verified = threading.Event()

    def on_verified(seconds: float) -> None:
        metrics.verified(seconds)
        verified.set()

    controller = Controller(
        reconciler,
        workers=args.workers,
        active=is_leading,
        on_reconcile=metrics.reconciled,
        on_verified=on_verified,
    )
    controller_box.append(controller)
    sweeper = OrphanSweeper(
        edgelb=reconciler.edgelb,
        store=store,
        cache=reconciler.cache,
        locks=reconciler.locks,
        cluster=settings.cluster_name,
        may_sweep=lambda: verified.is_set() and is_leading() and not controller.stopping,
        on_deleted=metrics.orphan_pool_deleted,
    )
    # Its own thread: a sweep waiting on EdgeLB must not delay the wake-up jobs.
    controller.scheduler.add_executor(ThreadPoolExecutor(1), alias="orphans")
    controller.scheduler.add_job(
        sweeper.run, "interval", seconds=max(args.resync_period, 1.0), id="sweep-orphans", executor="orphans"
    )
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
        from engine.kube.leader import LeaderElector, default_identity

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

    webhook: AdmissionWebhook | None = None
    if plan.listen is not None or plan.register:
        webhook = AdmissionWebhook(
            plan, cluster_name=settings.cluster_name, default_pool_size=settings.default_pool_size
        )
        problem = webhook.open(api)
        if problem is not None:
            log.error("%s", problem)
            webhook.stop()
            if http is not None:
                http.stop()
            metrics.close()
            store.close()
            return 1
        webhook.watch_certificates(api)

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
    kube.close()
    if elector is not None:
        elector.stop(release=True)
    if webhook is not None:
        # The configurations stay registered: the next start (or another replica) serves them.
        # Meanwhile the API server applies --admission-failure-policy.
        webhook.stop()
    if http is not None:
        # Last to go: probes answer "stopping" while the rest shuts down.
        http.stop()
    metrics.close()
    store.close()
    log.info("dklb stopped")
    return 0
