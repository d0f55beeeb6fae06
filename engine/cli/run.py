"""``dklb run``: the controller's flags, turned into an ``engine.app.AppConfig`` and run.

Where it sits: the ``run`` sub-command. It takes every flag of the Go dklb's ``cmd/main.go``
(``--edgelb-host/--edgelb-scheme/--edgelb-path``, ``--edgelb-bearer-token``,
``--edgelb-pool-group``, ``--edgelb-default-pool-size``, ``--resync-period``, ``--log-level``
with logrus' level names...; those only Go had are ``engine.cli.goflags``'), and every flag can
be set as ``DKLB_<FLAG>``. Defaults that differ from Go's say so in their help. The
``--admission-*`` flags are checked together (``engine.admission.plan``) before anything starts:
a mistake costs no migration and no thread. ``engine.app`` builds and runs the rest; SIGTERM or
SIGINT stop it. ``--metadata-resync-period`` is dklb's own: the Go dklb re-read every
Service's pool metadata at every resync.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import logging
import os
import re
import signal
from typing import Any

from engine.admission.register import DEFAULT_NAME, FAILURE_POLICIES
from engine.cli import database, goflags, options
from engine.cli.options import IN_CLUSTER, add
from engine.edgelb.client import DEFAULT_IN_CLUSTER_HOST
from engine.model.durations import format_duration
from engine.model.settings import DEFAULT_RESYNC_PERIOD
from engine.runtime.poolsweep import DEFAULT_METADATA_RESYNC_PERIOD
from engine.store.pruning import DEFAULT_MAX_AGE, DEFAULT_MAX_ROWS_PER_SERVICE, Retention
from engine.telemetry.logs import configure_logging, level_name
from engine.telemetry.serving import parse_listen

log = logging.getLogger("dklb.run")

# /metrics, /healthz, /readyz. Not 8080: the local EdgeLB of the demo listens there. Outside a
# cluster only on loopback: nobody else needs a developer's metrics.
HTTP_PORT = 9420


def node_cidrs(text: str) -> tuple[str, ...]:
    """``--node-address-cidr``: a comma list of networks (``10.0.0.0/16,fd00::/64``), normalized."""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=True)))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{entry!r} is not a network in CIDR notation ({exc})") from None
    if not networks:
        raise argparse.ArgumentTypeError("give at least one network, e.g. 10.0.0.0/16")
    return tuple(networks)


def listen(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def log_level(text: str) -> str:
    try:
        return level_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def failure_policy(text: str) -> str:
    """Ignore or Fail in any case, as the Go dklb took them (its default was "ignore"). Anything
    else is kept as given: ``engine.admission.plan`` names it among the other webhook problems."""
    return next((p for p in FAILURE_POLICIES if p.lower() == text.strip().lower()), text)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Watch Services of type LoadBalancer and drive their EdgeLB pools. "
        "Every flag can also be set by the environment variable DKLB_<FLAG> (e.g. DKLB_EDGELB_URL)."
    )
    parser.epilog = (
        "examples:\n"
        "  dklb run --kubeconfig ~/.kube/config \\\n"
        "      --kubernetes-cluster-framework-name kubernetes-cluster \\\n"
        "      --edgelb-url http://127.0.0.1:8080 --database ./dklb.db\n"
        f"  dklb run --edgelb-host {DEFAULT_IN_CLUSTER_HOST}   # in a DC/OS cluster"
    )
    add(parser, "--kubeconfig", help="kubeconfig file (default: in-cluster, else ~/.kube/config)")
    options.cluster(parser)
    options.pool_defaults(parser)
    options.pool_limits(parser)
    database.flags(parser)
    _controller_flags(parser)
    _sharing_and_history_flags(parser)
    _leader_flags(parser)
    _admission_flags(parser)
    goflags.declare(parser)
    options.edgelb(
        parser,
        title="EdgeLB",
        host=DEFAULT_IN_CLUSTER_HOST,
        request_timeout=4.0,
        timeout_help="; keep it below lease duration - renew deadline",
    )
    parser.set_defaults(func=run)


def _namespaces(value: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{value!r}: give one or more namespaces, separated by commas")
    bad = sorted(n for n in names if not _NAMESPACE.fullmatch(n))
    if bad:
        raise argparse.ArgumentTypeError(
            f"{', '.join(map(repr, bad))} is not a namespace name (RFC 1123 label)"
        )
    return names


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _controller_flags(parser: argparse.ArgumentParser) -> None:
    add(
        parser,
        "--backend-mode",
        default="mesos",
        choices=["mesos", "address"],
        help="backends select kube-node tasks "
        "(mesos) or Node InternalIPs + nodePort (address); default %(default)s",
    )
    add(
        parser,
        "--node-address-cidr",
        metavar="CIDR[,CIDR...]",
        type=node_cidrs,
        default=(),
        help="with --backend-mode address: only Node InternalIPs inside these networks become "
        "backends (default: any ordinary unicast address). Loopback, link-local (169.254.169.254) "
        "and reserved addresses only inside a network of them named here, e.g. 127.0.0.0/8 for a "
        "local test cluster; non-IPs, multicast and unspecified addresses never",
    )
    add(
        parser,
        "--resync-period",
        type=options.duration,
        default=DEFAULT_RESYNC_PERIOD,
        help="how often the EdgeLB pools are listed and compared with every Ready binding (one "
        "request), the watch re-lists and orphans are swept "
        f"(default {format_duration(DEFAULT_RESYNC_PERIOD)}; the Go dklb's was 2m)",
    )
    add(
        parser,
        "--metadata-resync-period",
        type=options.duration,
        default=DEFAULT_METADATA_RESYNC_PERIOD,
        help="how often each Ready pool's metadata is read again (once per pool, each at its own "
        "time within the period) to refresh the Services' addresses "
        f"(default {format_duration(DEFAULT_METADATA_RESYNC_PERIOD)})",
    )
    add(
        parser, "--workers", type=int, default=4, help="bindings reconciled in parallel (default %(default)s)"
    )
    add(
        parser,
        "--http-listen",
        type=listen,
        metavar="HOST:PORT",
        help="serve /metrics, /healthz and /readyz here; port 0 picks a free port "
        f"(default: 0.0.0.0:{HTTP_PORT} in a cluster, else 127.0.0.1:{HTTP_PORT}; "
        "the default address, unlike an explicit one, is skipped with a warning when in use)",
    )
    add(
        parser,
        "--metrics-listen",
        type=listen,
        metavar="HOST:PORT",
        help="serve /metrics here instead, e.g. 127.0.0.1:9421 for a scraper in the Pod, while the "
        "kubelet's /healthz and /readyz stay on --http-listen (default: /metrics on --http-listen)",
    )
    add(
        parser,
        "--log-level",
        default="info",
        type=log_level,
        metavar="LEVEL",
        help="debug, info, warning, error or critical; also the Go dklb's (logrus) trace (= debug), "
        "warn (= warning), fatal and panic (= critical); any case (default %(default)s)",
    )
    add(
        parser,
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text or JSON lines (default %(default)s)",
    )


def _sharing_and_history_flags(parser: argparse.ArgumentParser) -> None:
    add(
        parser,
        "--history-max-age",
        type=options.duration,
        default=DEFAULT_MAX_AGE,
        metavar="DURATION",
        help="history entries older than this are pruned, those of removed Services too; 0 keeps "
        f"every age (default {format_duration(DEFAULT_MAX_AGE)}; pruned every resync period)",
    )
    add(
        parser,
        "--history-max-rows-per-service",
        type=options.count,
        default=DEFAULT_MAX_ROWS_PER_SERVICE,
        metavar="N",
        help="each Service keeps its newest N history entries; 0: no cap (default %(default)s)",
    )
    add(
        parser,
        "--load-balancer-class",
        metavar="CLASS",
        type=options.non_empty,
        help="take only the LoadBalancer Services whose spec.loadBalancerClass is CLASS (default: "
        "only those without a class); a Service of another class is left alone entirely",
    )
    add(
        parser,
        "--allow-cross-namespace-pools",
        action="store_true",
        help="let Services of different namespaces share a pool without a common "
        "kubernetes.dcos.io/dklb-shared-pool-key annotation, as the Go dklb did (default: off; "
        "a pool with a cloud load balancer is never shared across namespaces)",
    )
    add(
        parser,
        "--pre-existing-pool-namespaces",
        metavar="NS[,NS...]",
        type=_namespaces,
        help="only Services of these namespaces may use a pool dklb did not create "
        "(default: any namespace); dklb never changes nor deletes such a pool",
    )


def _leader_flags(parser: argparse.ArgumentParser) -> None:
    add(
        parser,
        "--leader-elect",
        type=options.boolean,
        default=IN_CLUSTER,
        help="elect a leader on a Lease (default: in a cluster)",
    )
    add(
        parser,
        "--leader-elect-namespace",
        metavar="NAMESPACE",
        help="the Lease's namespace (default: --pod-namespace, else $POD_NAMESPACE, else default)",
    )
    add(parser, "--leader-elect-lease-name", default="dklb", help="the Lease's name (default %(default)s)")
    add(
        parser,
        "--leader-elect-lease-duration",
        type=options.duration,
        default=15.0,
        help="lease duration (default 15s)",
    )
    add(
        parser,
        "--leader-elect-renew-deadline",
        type=options.duration,
        default=10.0,
        help="renew deadline (default 10s)",
    )
    add(
        parser,
        "--leader-elect-retry-period",
        type=options.duration,
        default=2.0,
        help="retry period (default 2s)",
    )


def _admission_flags(parser: argparse.ArgumentParser) -> None:
    # Plain strings, checked together at start-up (engine.admission.plan): a mistake is then one
    # clear line and exit 1, whether it came from a flag or from its DKLB_* variable.
    add(
        parser,
        "--admission-listen",
        metavar="HOST:PORT",
        help="serve the admission webhook (HTTPS: POST /mutate, POST /validate, GET /healthz) here; "
        "needs --admission-tls-cert-file and --admission-tls-private-key-file, or "
        "--admission-self-signed-dir (default: no webhook)",
    )
    add(parser, "--admission-tls-cert-file", metavar="FILE", help="the webhook's certificate (PEM)")
    add(
        parser,
        "--admission-tls-private-key-file",
        metavar="FILE",
        help="its private key (PEM); both files are re-read when they change (a rotated Secret)",
    )
    add(
        parser,
        "--admission-self-signed-dir",
        metavar="DIR",
        help="without certificate files: generate a CA and a certificate for the webhook's "
        "address here (ca.crt is reused across restarts); for demos and tests",
    )
    add(
        parser,
        "--admission-client-ca-file",
        metavar="FILE",
        help="accept only clients presenting a certificate this CA (PEM) signed: the API server, "
        "given a client certificate by its --admission-control-config-file; others are cut at the "
        "TLS handshake. Re-read when it changes (default: any client)",
    )
    add(
        parser,
        "--register-admission-webhook",
        type=options.boolean,
        nargs="?",
        const=True,
        default=False,
        metavar="true|false",
        help="create or update the MutatingWebhookConfiguration and ValidatingWebhookConfiguration "
        "at start-up; needs --admission-webhook-url or --admission-webhook-service",
    )
    add(
        parser,
        "--admission-webhook-name",
        default=DEFAULT_NAME,
        metavar="NAME",
        help="the name of both webhook configurations (default %(default)s, the one name "
        "deploy/components/register-webhook lets the controller GET and update)",
    )
    add(
        parser,
        "--admission-webhook-url",
        metavar="URL",
        help="where the API server calls the webhook, e.g. https://127.0.0.1:8443 "
        "(/mutate and /validate are appended)",
    )
    add(
        parser,
        "--admission-webhook-service",
        metavar="NAMESPACE/NAME:PORT",
        help="or the Service through which the API server calls it, e.g. dklb/dklb-webhook:443",
    )
    add(
        parser,
        "--admission-ca-bundle-file",
        metavar="FILE",
        help="the CA the API server trusts for the webhook (default: the generated ca.crt with "
        "--admission-self-signed-dir, else the certificate file itself, i.e. a self-signed one)",
    )
    add(
        parser,
        "--admission-failure-policy",
        default="Ignore",
        type=failure_policy,
        metavar="Ignore|Fail",
        help="what the API server does when the webhook does not answer: Ignore (store the "
        "Service unchecked; the controller still refuses what is invalid) or Fail (refuse the "
        "write), in any case (default %(default)s)",
    )
    add(
        parser,
        "--admission-namespace-selector",
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="call the webhook only for Services in namespaces carrying these labels (default: all)",
    )


def run(args: argparse.Namespace) -> int:
    configure_logging(level=args.log_level, fmt=args.log_format)
    # Before the database is resolved: no log line may carry its password.
    database.guard_logging()
    limit_malloc_arenas()
    # Everything the controller creates (the database and its -wal/-shm, a self-signed webhook
    # key) is its own alone (S10 of the security review). Restored on return: an embedding
    # process (a test) keeps its own.
    previous = os.umask(0o077)
    try:
        return _run(args)
    finally:
        os.umask(previous)


#: glibc's ``mallopt`` parameter for the number of malloc arenas.
M_ARENA_MAX = -8
#: Arenas the controller's allocations share (see ``limit_malloc_arenas``).
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> bool:
    """Let every thread share ``MALLOC_ARENAS`` glibc malloc arenas; True when set.

    glibc gives each thread that allocates its own arena (up to eight per core), and memory
    freed in one arena serves only that arena: with a dozen threads (workers, watchers, the
    scheduler, the HTTP server) each holding the high-water mark of what it once parsed, that
    is tens of MB of RSS at 20,000 Services. Python's small objects do not use malloc at all
    (pymalloc), so the contention two arenas add is small. ``MALLOC_ARENA_MAX`` in the
    environment, when set, is the operator's choice and wins; not glibc (musl): nothing to do.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS))
    except (OSError, AttributeError):
        return False


def _run(args: argparse.Namespace) -> int:
    from engine.admission.plan import AdmissionFlagError, admission_plan
    from engine.app import App, AppConfig, LeaderElection, StartError
    from engine.store import StoreError

    for notice in goflags.resolve(args):
        log.info("%s", notice)
    try:
        # Before anything starts: a mistake in these flags costs no migration and no thread.
        plan = admission_plan(args)
    except AdmissionFlagError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        return 1
    edgelb = options.edgelb_options(args)
    if edgelb is None:
        raise options.UsageError("give --edgelb-url or --edgelb-host: the controller needs an EdgeLB")
    explicit = args.http_listen is not None
    config = AppConfig(
        kubeconfig=args.kubeconfig,
        database=database.resolve(args).url,
        settings=options.settings(
            args,
            backend_mode=args.backend_mode,
            node_address_cidrs=args.node_address_cidr,
            resync_period=args.resync_period,
            load_balancer_class=args.load_balancer_class,
            allow_cross_namespace_pools=args.allow_cross_namespace_pools,
            pre_existing_pool_namespaces=args.pre_existing_pool_namespaces,
            limits=options.limits(args),
        ),
        edgelb=edgelb,
        workers=args.workers,
        metadata_resync_period=args.metadata_resync_period,
        leader_election=LeaderElection(
            namespace=args.leader_elect_namespace,
            lease_name=args.leader_elect_lease_name,
            lease_duration=args.leader_elect_lease_duration,
            renew_deadline=args.leader_elect_renew_deadline,
            retry_period=args.leader_elect_retry_period,
        )
        if args.leader_elect
        else None,
        http_listen=args.http_listen if explicit else ("0.0.0.0" if IN_CLUSTER else "127.0.0.1", HTTP_PORT),
        http_listen_explicit=explicit,
        admission=plan,
        metrics_listen=args.metrics_listen,
        retention=Retention(
            max_age=args.history_max_age, max_rows_per_service=args.history_max_rows_per_service
        ),
    )
    try:
        app = App(config)
    except StartError as exc:
        log.error("%s", exc)
        return 1
    except StoreError as exc:
        if args.log_format != "json":
            raise  # the command line prints it as "error: ..."
        log.error("%s", exc)
        return 1

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        app.done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return app.run()
