"""Every flag two ``dklb`` commands share, declared once; the one error a user's input raises.

Where it sits: each command module (``engine.cli.<command>``) builds its parser from the groups
here (``cluster``, ``pool_defaults``, ``edgelb``, ``output``; the database's flags are in
``engine.cli.database``) plus its own flags, declared with ``add`` too, and turns the parsed
namespace back into what the layers below take (``settings``, ``edgelb_options``,
``edgelb_client``). So a flag's name, its ``DKLB_<FLAG>`` variable, its converter and its help
text exist once, whichever command takes it.

Environment: a configuration flag (how to reach EdgeLB, the database, the cluster's name, the
controller's settings) can also be set as ``DKLB_<FLAG>`` (``--edgelb-url`` is
``DKLB_EDGELB_URL``); the command line wins. A per-invocation flag (a filter, ``-o``) is not
bound: a forgotten variable would silently change every answer. A value from the environment
goes through the flag's own converter; a bad one is a ``UsageError`` naming the variable.
Abbreviated flags are refused (``allow_abbrev=False`` on every parser): a misspelt flag must
never be taken for another (a token for a token file's path, as once happened).

Secrets: ``--edgelb-bearer-token`` (the Go dklb's flag: the token itself) is held as a ``Secret``,
which no repr or str shows (an ``argparse.Namespace`` printed, a log line); ``edgelb_options``
hands its value to the client alone, and warns once that a token on the command line or in the
environment is visible to whoever sees the process list or the Pod spec.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.edgelb.auth import ALLOW_INSECURE_HTTP_FLAG, plaintext_refusal
from engine.edgelb.client import (
    DEFAULT_IN_CLUSTER_HOST,
    ClientOptions,
    EdgeLBClient,
    base_url_of,
    plaintext_credential,
)
from engine.model import policy
from engine.model.durations import parse_duration
from engine.model.policy import Limits
from engine.model.settings import Settings

log = logging.getLogger("dklb.cli")

IN_CLUSTER = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
CONTAINER_DATABASE = "/var/lib/dklb/dklb.db"
DEFAULT_CLUSTER = Settings.cluster_name
DEFAULT_POOL_GROUP = Settings.pool_group


class UsageError(Exception):
    """A mistake in what the user asked for (a flag, a variable, a file, a name): printed as
    ``error: ...`` without a traceback, exit status 1."""


# ---- converters (argparse calls them on flag values and on DKLB_* values) ------------------------


def env_name(flag: str) -> str:
    """The environment variable that can set ``--flag``: ``DKLB_`` + the flag in upper snake case."""
    return "DKLB_" + flag.lstrip("-").replace("-", "_").upper()


def default_database() -> str:
    """Where ``dklb run`` keeps its database: the volume in a container, the working directory
    otherwise. The other commands default to the same place: ``kubectl exec`` into the
    controller then needs no flag."""
    return CONTAINER_DATABASE if IN_CLUSTER or Path(CONTAINER_DATABASE).parent.is_dir() else "dklb.db"


def boolean(text: str) -> bool:
    """true/false, yes/no, on/off, 1/0, and Go's t/f (``strconv.ParseBool``), in any case."""
    value = text.strip().lower()
    if value in ("1", "t", "true", "yes", "on"):
        return True
    if value in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


def non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


class Secret:
    """A secret flag value: ``reveal()`` gives it; no repr or str does."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def count(text: str) -> int:
    """A whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def positive_count(text: str) -> int:
    """A whole number >= 1."""
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def cpu_share(text: str) -> float:
    """A finite number of CPUs > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
    return value


def name_list(problem: Callable[[str], str | None], what: str) -> Callable[[str], tuple[str, ...]]:
    """A converter of ``A,B,...`` (spaces around names ignored; "" is no name) whose names
    ``problem`` judges."""

    def convert(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        for name in names:
            reason = problem(name)
            if reason:
                raise argparse.ArgumentTypeError(f"{name!r} is not a valid {what}: {reason}")
        return names

    return convert


# ---- declaring flags -------------------------------------------------------------------------------

Container = argparse.ArgumentParser | argparse._ArgumentGroup


def add(parser: Container, *names: str, env: bool = True, **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(*names, **kwargs)``, bound to ``DKLB_<FLAG>`` unless ``env`` is False.

    The variable (named after the first, canonical name) becomes the default, converted as a
    command-line value would be; the help says which variable it is.
    """
    if env:
        variable = env_name(names[0])
        raw = os.environ.get(variable)
        if raw is not None:
            kwargs["default"] = _from_environment(variable, raw, kwargs)
            kwargs["required"] = False
        kwargs["help"] = (kwargs.get("help") or "").rstrip() + f" [env {variable}]"
    return parser.add_argument(*names, **kwargs)


def _from_environment(variable: str, raw: str, kwargs: dict[str, Any]) -> Any:
    convert: Callable[[str], Any] = kwargs.get("type") or str
    if kwargs.get("action") == "store_true":
        convert = boolean
    try:
        value = convert(raw)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise UsageError(f"{variable}: {exc}") from None
    choices = kwargs.get("choices")
    if choices is not None and value not in choices:
        raise UsageError(f"{variable}: {raw!r} is not one of {', '.join(map(str, choices))}")
    return value


def parser_options(**kwargs: Any) -> dict[str, Any]:
    """What every ``dklb`` parser is made with: no abbreviations, help texts kept as written."""
    return {"allow_abbrev": False, "formatter_class": argparse.RawDescriptionHelpFormatter, **kwargs}


# ---- the shared groups -----------------------------------------------------------------------------


def cluster(parser: Container, *, aliases: Sequence[str] = (), help: str | None = None) -> None:
    add(
        parser,
        "--kubernetes-cluster-framework-name",
        *aliases,
        metavar="NAME",
        type=non_empty,
        default=DEFAULT_CLUSTER,
        help=help
        or "the MKE cluster's framework name: names pools and backends (default %(default)s; "
        "the Go dklb required it: set it to the cluster's)",
    )


def pool_defaults(parser: Container, *, aliases: tuple[Sequence[str], Sequence[str]] = ((), ())) -> None:
    """The pool group of created pools and the size of pools whose annotation sets none."""
    add(
        parser,
        "--edgelb-pool-group",
        *aliases[0],
        metavar="GROUP",
        default=DEFAULT_POOL_GROUP,
        help="pool group of created pools (default %(default)s)",
    )
    add(
        parser,
        "--edgelb-default-pool-size",
        *aliases[1],
        metavar="N",
        type=int,
        default=Settings.default_pool_size,
        help="pool size when the annotation sets none (default %(default)s)",
    )


def pool_limits(parser: Container) -> None:
    """The operator's bounds on what a Service's annotation may ask of its pool (``Limits``)."""
    defaults = Limits()
    add(
        parser,
        policy.MAX_POOL_SIZE_FLAG,
        metavar="N",
        type=positive_count,
        default=defaults.max_pool_size,
        help="refuse a pool of more than N HAProxy instances (default %(default)s)",
    )
    add(
        parser,
        policy.MAX_POOL_CPUS_FLAG,
        metavar="CPUS",
        type=cpu_share,
        default=defaults.max_pool_cpus,
        help="refuse a pool whose instances ask for more CPUs each (default %(default)g)",
    )
    add(
        parser,
        policy.MAX_POOL_MEMORY_FLAG,
        metavar="MIB",
        type=positive_count,
        default=defaults.max_pool_memory,
        help="refuse a pool whose instances ask for more memory each, in MiB (default %(default)s)",
    )
    add(
        parser,
        policy.ALLOWED_POOL_ROLES_FLAG,
        metavar="ROLE[,ROLE...]",
        type=name_list(policy.role_problem, "Mesos role"),
        help='the Mesos roles a pool may run under, e.g. "slave_public,*" (default: any valid role)',
    )
    add(
        parser,
        policy.ALLOWED_POOL_NETWORKS_FLAG,
        metavar="NETWORK[,NETWORK...]",
        type=name_list(policy.network_problem, "DC/OS virtual network name"),
        help='the DC/OS virtual networks a private pool may join, e.g. "dcos"; "" for none '
        "(the host network of public and cloud pools is always allowed; default: any valid name)",
    )


def edgelb(
    parser: argparse.ArgumentParser,
    *,
    title: str,
    host: str | None,
    request_timeout: float,
    timeout_help: str = "",
) -> None:
    """How to reach EdgeLB. ``host``: the default ``--edgelb-host`` (None: EdgeLB is only read
    when a flag names it); ``request_timeout``: the default read timeout, in seconds."""
    group = parser.add_argument_group(title)
    add(group, "--edgelb-url", metavar="URL", help="EdgeLB base URL; wins over host/scheme/path")
    add(
        group,
        "--edgelb-host",
        metavar="HOST",
        default=host,
        help="EdgeLB host[:port]"
        + (" (default %(default)s)" if host else f", e.g. {DEFAULT_IN_CLUSTER_HOST}"),
    )
    add(
        group, "--edgelb-scheme", metavar="SCHEME", default="http", help="http or https (default %(default)s)"
    )
    add(group, "--edgelb-path", metavar="PATH", default="", help="path prefix, e.g. /service/edgelb")
    add(
        group,
        "--edgelb-bearer-token-file",
        metavar="FILE",
        help="file holding the bearer token, re-read on 401 (or the token itself in DKLB_EDGELB_TOKEN)",
    )
    add(
        group,
        "--edgelb-bearer-token",
        metavar="TOKEN",
        type=Secret,
        help="the bearer token itself (the Go dklb's flag): visible in the process list and the Pod "
        "spec, prefer --edgelb-bearer-token-file; never logged",
    )
    add(
        group,
        "--edgelb-service-account-secret-file",
        metavar="FILE",
        help="DC/OS service-account secret (JSON)",
    )
    add(group, "--edgelb-ca-bundle", metavar="FILE", help="CA bundle to verify EdgeLB's certificate")
    add(
        group,
        "--edgelb-insecure-skip-tls-verify",
        metavar="BOOL",
        nargs="?",
        const=True,
        type=boolean,
        default=False,
        help="do not verify EdgeLB's certificate (never in production); bare, or =true/=false",
    )
    add(
        group,
        ALLOW_INSECURE_HTTP_FLAG,
        metavar="BOOL",
        nargs="?",
        const=True,
        type=boolean,
        default=False,
        help="send a bearer token or a service-account login over plain http:// anyway, with a "
        "WARNING (default false: refused; a local test EdgeLB); bare, or =true/=false",
    )
    add(
        group,
        "--edgelb-request-timeout",
        metavar="DURATION",
        type=duration,
        default=request_timeout,
        help=f"how long to wait for EdgeLB's answer (default {request_timeout:g}s){timeout_help}",
    )


def filters(parser: Container, *, state: str, pool: str) -> None:
    """``--state`` and ``--pool`` of the operator commands (what they select is said in the help)."""
    add(parser, "--state", env=False, help=state)
    add(parser, "--pool", env=False, help=pool)


def wide(parser: Container, *, help: str) -> None:
    add(parser, "--wide", env=False, action="store_true", help=help)


def output(parser: Container, choices: Sequence[str], default: str) -> None:
    add(
        parser,
        "-o",
        "--output",
        env=False,
        choices=list(choices),
        default=default,
        help="(default %(default)s)",
    )


# ---- from parsed flags to what the layers below take ------------------------------------------------


def limits(args: argparse.Namespace) -> Limits:
    """The ``Limits`` of ``pool_limits``' flags; ``UsageError`` when no Service could be admitted
    without a size of its own."""
    if args.edgelb_default_pool_size > args.max_pool_size:
        raise UsageError(
            f"--edgelb-default-pool-size {args.edgelb_default_pool_size} is over "
            f"{policy.MAX_POOL_SIZE_FLAG} {args.max_pool_size}: every Service without a size would be refused"
        )
    if args.allowed_pool_roles == ():
        raise UsageError(f"{policy.ALLOWED_POOL_ROLES_FLAG} is empty: no pool could run under any role")
    return Limits(
        max_pool_size=args.max_pool_size,
        max_pool_cpus=args.max_pool_cpus,
        max_pool_memory=args.max_pool_memory,
        allowed_roles=args.allowed_pool_roles,
        allowed_networks=args.allowed_pool_networks,
    )


def settings(args: argparse.Namespace, **more: Any) -> Settings:
    return Settings(
        cluster_name=args.kubernetes_cluster_framework_name,
        pool_group=args.edgelb_pool_group,
        default_pool_size=args.edgelb_default_pool_size,
        **more,
    )


def edgelb_options(args: argparse.Namespace) -> ClientOptions | None:
    """The EdgeLB the flags name, or None when they name none (no URL and no host)."""
    if not args.edgelb_url and not args.edgelb_host:
        return None
    token: Secret | None = args.edgelb_bearer_token
    if token is not None:
        if args.edgelb_bearer_token_file or args.edgelb_service_account_secret_file:
            raise UsageError(
                "--edgelb-bearer-token and --edgelb-bearer-token-file or "
                "--edgelb-service-account-secret-file: give one"
            )
        log.warning(
            "the EdgeLB bearer token of --edgelb-bearer-token (or DKLB_EDGELB_BEARER_TOKEN) is visible "
            "in the process list / Pod spec: prefer --edgelb-bearer-token-file"
        )
    allow_insecure_http = bool(args.edgelb_allow_insecure_http)
    if not allow_insecure_http:
        # Here, before `dklb run` migrates anything; the client checks it again when built.
        try:
            base_url = base_url_of(
                url=args.edgelb_url, host=args.edgelb_host, scheme=args.edgelb_scheme, path=args.edgelb_path
            )
        except ValueError as exc:
            raise UsageError(f"EdgeLB options: {exc}") from None
        credential = plaintext_credential(
            base_url,
            token_file=args.edgelb_bearer_token_file,
            token_value=token.reveal() if token is not None else None,
            service_account_secret_file=args.edgelb_service_account_secret_file,
        )
        if credential is not None:
            raise UsageError(plaintext_refusal(credential, base_url))
    return ClientOptions(
        url=args.edgelb_url,
        host=args.edgelb_host,
        scheme=args.edgelb_scheme,
        path=args.edgelb_path,
        token_file=args.edgelb_bearer_token_file,
        service_account_secret_file=args.edgelb_service_account_secret_file,
        ca_bundle=args.edgelb_ca_bundle,
        insecure_skip_tls_verify=bool(args.edgelb_insecure_skip_tls_verify),
        read_timeout=args.edgelb_request_timeout,
        token_value=token.reveal() if token is not None else None,
        allow_insecure_http=allow_insecure_http,
    )


def edgelb_client(args: argparse.Namespace) -> EdgeLBClient | None:
    """A client for the EdgeLB the flags name (None when they name none); ``UsageError`` when
    the flags contradict each other or name an unreadable file."""
    chosen = edgelb_options(args)
    if chosen is None:
        return None
    try:
        return chosen.client()
    except ValueError as exc:
        raise UsageError(f"EdgeLB options: {exc}") from None
