"""Parsing the ``kubernetes.dcos.io/dklb-config`` annotation: text in, a ``PoolConfig`` or every error out.

Where it sits in the data flow: the Pending handler and the admission webhook (both through
``engine.model.checks.check_service``) and ``dklb plan`` call ``parse_config`` with the
annotation's value and the Service's TCP ports; the result is an ``engine.model.config.PoolConfig``
with every default filled in, or the list of everything wrong with it.

Parsing is strict: unknown fields, duplicate keys and wrong types are errors, and every error is
collected so that one Warning Event tells the user everything to fix. Each names the field and
the value. An explicit ``null`` asks for the default, as leaving the field out does: the Go dklb
wrote every field it had no value for as ``null`` (and ``cloudProviderConfiguration: ""`` for
"no cloud load balancer") into every Service it admitted, and those annotations must keep working.
Where the Go dklb's end-to-end tests matched a message, its text is kept inside ours.

Any Service author writes this text, so what judging it costs is bounded (security review S4,
S5): a value over ``MAX_ANNOTATION_BYTES`` is refused before parsing, ``strict_yaml`` bounds
depth, size and integers, at most ``MAX_MESSAGES`` errors are listed, and ``parse_config``
never raises: an unexpected failure is one more error.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from engine.model.cloud import check_cloud_provider
from engine.model.config import (
    CLOUD_NAME_PREFIX,
    CLOUD_POOL_PREFIX,
    CREATION_STRATEGIES,
    DCOS_SERVICE_NAME_LIMIT,
    DEFAULT_CPUS,
    DEFAULT_CREATION_STRATEGY,
    DEFAULT_MEMORY,
    DEFAULT_NETWORK,
    DEFAULT_POOL_GROUP,
    HOST_NETWORK,
    ROLE_PUBLIC,
    ParseResult,
    PoolConfig,
    dcos_service_name,
    default_pool_name,
    show,
)
from engine.model.frontends import MISSING, frontends
from engine.model.report import (
    Report,
    capped,
    described,
    integer,
    is_number,
    kind,
    number,
    reject_unknown_fields,
    string,
    without_nulls,
)
from engine.model.services import ANNOTATION
from engine.model.strict_yaml import load_strict, one_line_problem
from engine.model.translation import object_name

# EdgeLB pool names become Marathon app ids and DNS labels, hence the DNS-label shape.
_POOL_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MISSPELLED_CONSTRAINTS = "contraints"
_TOP_LEVEL_FIELDS = (
    "name",
    "role",
    "network",
    "cpus",
    "memory",
    "size",
    "frontends",
    "constraints",
    _MISSPELLED_CONSTRAINTS,
    "strategies",
    "cloudProviderConfiguration",
)
_STRATEGY_FIELDS = ("creation",)
_STRATEGY_CHOICES = ", ".join(CREATION_STRATEGIES)

#: The longest annotation value read, in UTF-8 bytes; a longer one is refused before parsing.
MAX_ANNOTATION_BYTES = 16 * 1024

# A field left out, or given as null (without_nulls drops those): its default applies.
_MISSING: Any = MISSING


def parse_config(
    text: str | None,
    *,
    service_ports: Sequence[int],
    cluster_name: str,
    default_size: int = 1,
    rng: random.Random | None = None,
    pool_group: str | None = None,
    owner: tuple[str, str] | None = None,
) -> ParseResult:
    """Parse, default and validate the annotation's value; ``config`` is None when there is any error.

    ``service_ports`` are the Service's TCP ports, in the Service's order: they decide which
    frontends exist. ``rng`` only matters when the name must be generated. ``pool_group``
    (``--edgelb-pool-group``) is where EdgeLB installs the pool: the name must fit in a DC/OS
    service name with it (None: not checked, for callers that only want the pool's name).
    ``owner`` (namespace, name) is the Service: a cloud listener must link one of its frontends
    (None: not checked).

    Never raises: any text, however hostile, is a result (at most ``MAX_MESSAGES`` errors listed).
    """
    try:
        return _parse(
            text,
            service_ports=service_ports,
            cluster_name=cluster_name,
            default_size=default_size,
            rng=rng,
            pool_group=pool_group,
            owner=owner,
        )
    except Exception as e:
        problem = described(e)
        return ParseResult(
            None,
            (f"the value of {show(ANNOTATION)} could not be checked ({problem}); this is a bug in dklb",),
            (),
            defaulted_name=False,
        )


def _parse(
    text: str | None,
    *,
    service_ports: Sequence[int],
    cluster_name: str,
    default_size: int,
    rng: random.Random | None,
    pool_group: str | None,
    owner: tuple[str, str] | None,
) -> ParseResult:
    report = Report()
    data = _load(text, report)
    if data is None:
        return _result(None, report, defaulted_name=False)
    frontend_names = None
    if owner is not None:
        namespace, service = owner
        frontend_names = {
            sp: object_name(cluster=cluster_name, namespace=namespace, service=service, service_port=sp)
            for sp in service_ports
        }
    config, defaulted_name = _build(
        data,
        report,
        service_ports=service_ports,
        cluster_name=cluster_name,
        default_size=default_size,
        rng=rng if rng is not None else random.SystemRandom(),
        pool_group=pool_group,
        frontend_names=frontend_names,
    )
    if not report.errors:
        _check_written_size(config, report)
    return _result(config, report, defaulted_name=defaulted_name)


def _result(config: PoolConfig | None, report: Report, *, defaulted_name: bool) -> ParseResult:
    return ParseResult(
        config if not report.errors else None,
        capped(report.errors),
        capped(report.warnings),
        defaulted_name=defaulted_name,
    )


def _load(text: str | None, report: Report) -> dict[Any, Any] | None:
    """The annotation's mapping ({} when it is empty or null), or None after reporting why there is none."""
    if text is None or not text.strip():
        return {}
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_ANNOTATION_BYTES:
        # Refused before parsing: real configurations are under 1 KiB, and what parsing costs
        # grows with the text.
        report.error(
            "",
            f"the value of {show(ANNOTATION)} is {size:,} bytes long: at most {MAX_ANNOTATION_BYTES:,} "
            "are read (a configuration object is usually under 1 KiB)",
        )
        return None
    try:
        value = load_strict(text)
    except yaml.YAMLError as e:
        problem = one_line_problem(e, text)
        report.error(
            "", f"failed to parse the value of {show(ANNOTATION)} as a configuration object: {problem}"
        )
        return None
    if value is None:
        return {}  # a null document: every field null, i.e. every default (yaml.v2 reads it so)
    if not isinstance(value, dict):
        report.error("", f"the configuration object must be a mapping, got {kind(value)}: {show(value)}")
        return None
    return value


def _check_written_size(config: PoolConfig, report: Report) -> None:
    """The defaulted object is written back into the annotation (non-ASCII escaped) and read
    again at every change: it must be readable too, or the Service would flip to Rejected later."""
    strings = (
        config.name,
        config.role,
        config.network,
        config.constraints,
        config.cloud_provider_configuration,
    )
    # An escaped character takes at most 10 bytes ("\U0001F600"), folding adds a few per line, a
    # frontend entry under 64, the other fields under 512: below that bound, no need to write it.
    bound = 12 * sum(len(s or "") for s in strings) + 64 * len(config.frontends) + 512
    if bound <= MAX_ANNOTATION_BYTES:
        return
    size = len(config.to_annotation().encode("utf-8"))
    if size > MAX_ANNOTATION_BYTES:
        report.error(
            "",
            f"the configuration object, defaulted and written back into {show(ANNOTATION)} (non-ASCII "
            f"characters escaped), would be {size:,} bytes long: at most {MAX_ANNOTATION_BYTES:,} are read",
        )


def _build(
    data: dict[Any, Any],
    report: Report,
    *,
    service_ports: Sequence[int],
    cluster_name: str,
    default_size: int,
    rng: random.Random,
    pool_group: str | None,
    frontend_names: Mapping[int, str] | None,
) -> tuple[PoolConfig, bool]:
    """Default and validate every field; the config is meaningful only when nothing was reported."""
    reject_unknown_fields(data, _TOP_LEVEL_FIELDS, "", report)
    data = without_nulls(data)
    # As in the Go dklb, "" is "no cloud load balancer" (what it wrote when there was none).
    cloud = data.get("cloudProviderConfiguration", "") != ""
    name, defaulted_name = _name(
        data, report, cluster_name=cluster_name, rng=rng, cloud=cloud, pool_group=pool_group
    )
    if pool_group is not None:
        _check_service_name(name, pool_group, report, generated_from=cluster_name if defaulted_name else None)
    role = _role(data, report)
    network = _network(data, report, role=role, cloud=cloud)
    config = PoolConfig(
        name=name,
        role=role,
        network=network,
        cpus=_cpus(data, report),
        memory=_memory(data, report),
        size=_size(data, report, default_size),
        frontends=frontends(data, report, service_ports),
        constraints=_constraints(data, report),
        creation_strategy=_creation_strategy(data, report),
        cloud_provider_configuration=_cloud_provider_configuration(data, report, frontend_names),
    )
    return config, defaulted_name


def _name(
    data: Mapping[Any, Any],
    report: Report,
    *,
    cluster_name: str,
    rng: random.Random,
    cloud: bool,
    pool_group: str | None,
) -> tuple[str, bool]:
    """The pool's name, and whether it was drawn at random (not given, or given unfit for cloud)."""
    value = data.get("name", _MISSING)
    if value is not _MISSING:
        name = string("name", value, report)
        if name is None:
            return "", False
        if not _POOL_NAME.fullmatch(name):
            report.error("name", f"{show(name)} is not a valid edgelb pool name")
            return name, False
        if not cloud or name.startswith(CLOUD_NAME_PREFIX):
            return name, False
    generated = default_pool_name(
        cluster_name,
        rng,
        prefix=CLOUD_POOL_PREFIX if cloud else "",
        pool_group=DEFAULT_POOL_GROUP if pool_group is None else pool_group,
    )
    if value is not _MISSING:
        # The Go dklb's rule: a cloud load balancer gets a pool of its own, named "cloud...".
        report.warn(
            "name",
            f"{show(value)} does not start with {show(CLOUD_NAME_PREFIX)}, which the pool of a cloud "
            f"load balancer must: the pool is named {show(generated)} instead",
        )
    if not _POOL_NAME.fullmatch(generated):
        report.error(
            "name",
            f"{show(generated)} (generated from the cluster name {show(cluster_name)}) "
            "is not a valid edgelb pool name",
        )
    return generated, True


def _check_service_name(name: str, pool_group: str, report: Report, *, generated_from: str | None) -> None:
    """EdgeLB installs the pool as the DC/OS service ``<pool group>/<name>``, which DC/OS limits."""
    service = dcos_service_name(pool_group, name)
    if len(service) <= DCOS_SERVICE_NAME_LIMIT or not name:
        return
    origin = f" (generated from the cluster name {show(generated_from)})" if generated_from else ""
    report.error(
        "name",
        f"{show(name)}{origin} is too long for the pool group {show(pool_group)}: EdgeLB would install "
        f"the pool as the DC/OS service {show(service)} ({len(service)} characters without slashes), "
        f"and DC/OS refuses more than {DCOS_SERVICE_NAME_LIMIT}",
    )


def _role(data: Mapping[Any, Any], report: Report) -> str:
    value = data.get("role", _MISSING)
    if value is _MISSING:
        return ROLE_PUBLIC
    role = string("role", value, report)
    if role is None:
        return ROLE_PUBLIC
    if not role:
        report.error("role", f"{show(role)} is not a valid role")
    return role


def _network(data: Mapping[Any, Any], report: Report, *, role: str, cloud: bool) -> str:
    value = data.get("network", _MISSING)
    if cloud:
        # Cloud load balancers reach the pool's instances on the agents' addresses: always host,
        # whatever the role (the Go dklb forced it too).
        if value is not _MISSING and string("network", value, report):
            report.warn(
                "network",
                f"a pool with a cloud load balancer runs on the host network: {show(value)} is ignored",
            )
        return HOST_NETWORK
    if value is _MISSING:
        return HOST_NETWORK if role == ROLE_PUBLIC else DEFAULT_NETWORK
    if string("network", value, report) is None:
        return HOST_NETWORK
    # Public agents are reached on their host addresses; private pools are only reachable over an overlay.
    if role == ROLE_PUBLIC and value:
        report.error("network", f"cannot join a virtual network when the pool's role is {show(ROLE_PUBLIC)}")
    elif role != ROLE_PUBLIC and not value:
        report.error("network", f"cannot join the host network when the pool's role is {show(role)}")
    return value


def _cpus(data: Mapping[Any, Any], report: Report) -> float:
    value = data.get("cpus", _MISSING)
    if value is _MISSING:
        return DEFAULT_CPUS
    cpus = number("cpus", value, report, fallback=DEFAULT_CPUS)
    if is_number(value) and not (math.isfinite(cpus) and cpus >= 0):
        # The Go dklb's text (printf %f), which its tests matched, then the value as written.
        report.error(
            "cpus",
            f"{cpus:f} is not a valid cpu request ({show(value)}: the CPU share must be a finite "
            "number, 0 or more)",
        )
    return cpus


def _memory(data: Mapping[Any, Any], report: Report) -> int:
    value = data.get("memory", _MISSING)
    if value is _MISSING:
        return DEFAULT_MEMORY
    memory = integer("memory", value, report, fallback=DEFAULT_MEMORY)
    if memory < 0:
        report.error("memory", f"{show(memory)} is not a valid memory request")
    return memory


def _size(data: Mapping[Any, Any], report: Report, default_size: int) -> int:
    value = data.get("size", _MISSING)
    if value is _MISSING:
        return default_size
    size = integer("size", value, report, fallback=default_size)
    if size <= 0:
        report.error("size", f"{show(size)} is not a valid size request")
    return size


def _constraints(data: Mapping[Any, Any], report: Report) -> str | None:
    correct = data.get("constraints", _MISSING)
    misspelled = data.get(_MISSPELLED_CONSTRAINTS, _MISSING)
    if correct is not _MISSING and misspelled is not _MISSING:
        report.error("constraints", f'{show(_MISSPELLED_CONSTRAINTS)} and "constraints" cannot both be given')
        return None
    if misspelled is not _MISSING:
        # The seed's documentation spells it this way, so existing Services do too.
        report.warn(
            "",
            f'{show(_MISSPELLED_CONSTRAINTS)} is accepted as "constraints"; please rename the field',
        )
        return string(_MISSPELLED_CONSTRAINTS, misspelled, report)
    if correct is _MISSING:
        return None
    return string("constraints", correct, report)


def _creation_strategy(data: Mapping[Any, Any], report: Report) -> str:
    strategies = data.get("strategies", _MISSING)
    if strategies is _MISSING:
        return DEFAULT_CREATION_STRATEGY
    if not isinstance(strategies, dict):
        report.error("strategies", f"{show(strategies)} is not a mapping")
        return DEFAULT_CREATION_STRATEGY
    reject_unknown_fields(strategies, _STRATEGY_FIELDS, "strategies", report)
    value = without_nulls(strategies).get("creation", _MISSING)
    if value is _MISSING:
        return DEFAULT_CREATION_STRATEGY
    if value not in CREATION_STRATEGIES or not isinstance(value, str):
        # The Go dklb's text, which its tests matched, then the choices.
        report.error(
            "strategies.creation",
            f"failed to parse {show(value)} as an edgelb pool creation strategy "
            f"(expected one of {_STRATEGY_CHOICES})",
        )
        return DEFAULT_CREATION_STRATEGY
    return value


def _cloud_provider_configuration(
    data: Mapping[Any, Any], report: Report, frontend_names: Mapping[int, str] | None
) -> str | None:
    value = data.get("cloudProviderConfiguration", "")
    # JSON text: it may span lines; JSON itself refuses control characters inside its strings.
    text = string("cloudProviderConfiguration", value, report, multiline=True)
    if not text:
        return None
    check_cloud_provider(text, report, path="cloudProviderConfiguration", frontends=frontend_names)
    return text  # kept verbatim: it is what the user wrote, and EdgeLB's to read
