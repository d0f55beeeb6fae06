"""``dklb edgelb-local``: run the local EdgeLB (API server + dataplane) until SIGTERM/SIGINT.

Where it sits in the data flow: the demo, the end-to-end tests and the benchmarks start this
process; it builds the dataplane (real HAProxies through ``edgelb_local.haproxy``, or
``NullDataplane`` with ``--no-dataplane``), the ``FaultInjector`` from ``--faults``, and a
``LocalEdgeLB`` (``edgelb_local.server``) serving on ``--listen``. Once it answers, it writes
``STATE_DIR/edgelb.pid`` and prints one line ``edgelb-local listening on http://HOST:PORT`` to
stdout, which is how a starter learns the port when it asked for port 0. On SIGTERM/SIGINT it stops
answering, stops every HAProxy it runs and exits 0.

``configure`` adds the flags to the ``dklb edgelb-local`` parser (``engine.cli.dev``);
``python -m edgelb_local.command ARGS`` runs it directly.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import ssl
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from edgelb_local.dataplane import Dataplane, NullDataplane
from edgelb_local.faults import FaultInjector
from edgelb_local.render import DEFAULT_FRAMEWORK
from edgelb_local.server import LocalEdgeLB
from edgelb_local.state import StateError
from engine.model.durations import parse_duration
from engine.telemetry.serving import parse_listen

log = logging.getLogger("edgelb_local")

PID_FILE = "edgelb.pid"
DEFAULT_AGENT = "kube-node-0=127.0.0.1"

FAULTS_HELP = """\
fault specs (--faults SPEC, repeatable; each SPEC is one rule):
  SPEC      := [METHOD PATH-GLOB:]KIND=VALUE[,KIND=VALUE...]
  METHOD    := GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS|* ; PATH-GLOB: '*' one path segment,
               '**' anything, '?' one character; no selector = every request
  latency=DURATION   added to every matching request (100ms, 2s; bare number = seconds)
  5xx=P              probability of answering 503 {"code":503,"message":"injected fault"}
  timeout=P          probability of holding the request unanswered for `hold`, then closing
  hold=DURATION      how long a timeout holds (default 30s; only together with timeout)
  reset=P            probability of closing the connection with a TCP RST, no answer
  Faults are decided before a request touches state: a faulted write changes nothing.
  Matching rules add their latencies; reset, timeout, 5xx are drawn in that order, first hit wins.

examples:
  dklb edgelb-local --listen 127.0.0.1:0 --state-dir /tmp/edgelb --no-dataplane
  dklb edgelb-local --listen 127.0.0.1:8080 --state-dir /tmp/edgelb \\
      --agent kube-node-0=127.0.0.1 --metadata-delay 5 \\
      --faults latency=50ms --faults 'POST /v2/pools:5xx=0.2' \\
      --faults 'GET /v2/pools/*/metadata:timeout=0.1,hold=5s' --faults-seed 1
"""


def _listen(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _agent(text: str) -> tuple[str, str]:
    name, sep, address = text.partition("=")
    if not sep or not name or not address:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=ADDRESS (e.g. {DEFAULT_AGENT})")
    return name, address


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``edgelb-local`` sub-command's flags (``engine.cli.dev`` registers it on ``dklb``)."""
    parser.description = (
        "Serve the EdgeLB V2 API on loopback, run one HAProxy per pool, keep pools in "
        "STATE_DIR; stop with SIGTERM or SIGINT."
    )
    parser.epilog = FAULTS_HELP
    parser.add_argument(
        "--listen", required=True, type=_listen, metavar="HOST:PORT", help="API address (PORT 0 = any free)"
    )
    parser.add_argument(
        "--state-dir", required=True, type=Path, metavar="DIR", help="pools.json, edgelb.pid, HAProxy files"
    )
    parser.add_argument(
        "--agent",
        action="append",
        type=_agent,
        metavar="NAME=ADDRESS",
        help=f"where kube-node-* tasks run (repeatable; default {DEFAULT_AGENT})",
    )
    parser.add_argument(
        "--framework",
        default=DEFAULT_FRAMEWORK,
        metavar="NAME",
        help="the Mesos framework the agents' tasks belong to: backends selecting another framework"
        " select nothing (default %(default)s, dklb's default cluster name)",
    )
    parser.add_argument(
        "--metadata-delay",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="metadata answers 504 for this long after a pool is created or changed (default 0)",
    )
    parser.add_argument(
        "--no-dataplane",
        action="store_true",
        help="run no HAProxy: ports are allocated and reported, nothing listens (benchmarks)",
    )
    parser.add_argument(
        "--faults", action="append", default=[], metavar="SPEC", help="inject faults (grammar below)"
    )
    parser.add_argument("--faults-seed", type=int, default=None, metavar="N", help="seed fault decisions")
    parser.add_argument(
        "--pool-address",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="the address metadata reports for pool endpoints (default %(default)s)",
    )
    parser.add_argument(
        "--tls-cert-file", type=Path, default=None, metavar="FILE", help="serve HTTPS with this certificate"
    )
    parser.add_argument(
        "--tls-key-file", type=Path, default=None, metavar="FILE", help="the certificate's private key"
    )
    parser.set_defaults(func=run)


def _build_dataplane(args: argparse.Namespace) -> Dataplane:
    if args.no_dataplane:
        return NullDataplane()
    # Imported here: the HAProxy dataplane is only needed (and only has to exist) when it is used.
    from edgelb_local.haproxy import HAProxyDataplane

    agents = dict(args.agent or [_agent(DEFAULT_AGENT)])
    # HAProxy binds where metadata says the pool listens.
    return HAProxyDataplane(
        state_dir=args.state_dir, agents=agents, framework=args.framework, bind_address=args.pool_address
    )


def _write_pid(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_cert_file is None and args.tls_key_file is None:
        return None
    if args.tls_cert_file is None or args.tls_key_file is None:
        raise OSError("--tls-cert-file and --tls-key-file go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.tls_cert_file, args.tls_key_file)
    return context


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    try:
        faults = FaultInjector.parse(args.faults, seed=args.faults_seed)
    except ValueError as exc:
        print(f"edgelb-local: --faults: {exc}", file=sys.stderr)
        return 2
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before serving: a SIGTERM arriving while HAProxies start still shuts down cleanly.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            edgelb = LocalEdgeLB(
                state_dir=state_dir,
                dataplane=_build_dataplane(args),
                metadata_delay=args.metadata_delay,
                faults=faults,
                pool_address=args.pool_address,
                tls=_tls_context(args),
            )
            edgelb.serve(*args.listen)
        except (OSError, StateError) as exc:
            print(f"edgelb-local: {exc}", file=sys.stderr)
            return 1
        pid_file = state_dir / PID_FILE
        try:
            _write_pid(pid_file)
            print(f"edgelb-local listening on {edgelb.url}", flush=True)
            # A timed wait: the signal handler runs between waits even where a blocking wait
            # would not be interrupted.
            while not stop.wait(0.5):
                pass
            log.info("edgelb-local stopping")
        finally:
            edgelb.shutdown(stop_dataplane=True)
            with contextlib.suppress(OSError):
                if pid_file.read_text().strip() == str(os.getpid()):
                    pid_file.unlink()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgelb_local.command --listen ... --state-dir ...`` (the subcommand's arguments)."""
    parser = argparse.ArgumentParser(
        prog="edgelb_local", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    configure(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
