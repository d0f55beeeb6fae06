"""Parsing the ``kubernetes.dcos.io/dklb-config`` annotation: text in, a ``PoolConfig`` or every error out.

Where it sits in the data flow: the Pending handler and the admission webhook (both through
``engine.model.checks.check_service``) and ``dklb plan`` call ``parse_config`` with the
annotation's value and the Service's TCP ports; the result is an ``engine.model.config.PoolConfig``
with every default filled in, or the list of everything wrong with it.

Parsing is strict: unknown fields, duplicate keys and wrong types are errors, and every error is
collected so that one Warning Event tells the user everything to fix. Each names the field and
the value. An explicit ``null`` is a type error, not a request for the default: leaving a field
out is how one asks for the default.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.model.config import (
    CLOUD_POOL_PREFIX,
    CREATION_STRATEGIES,
    DEFAULT_CPUS,
    DEFAULT_CREATION_STRATEGY,
    DEFAULT_MEMORY,
    DEFAULT_NETWORK,
    HOST_NETWORK,
    ROLE_PUBLIC,
    Frontend,
    ParseResult,
    PoolConfig,
    default_pool_name,
    show,
)
from engine.model.services import ANNOTATION
from engine.model.strict_yaml import load_strict, one_line_problem

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
_FRONTEND_FIELDS = ("port", "servicePort")
_STRATEGY_FIELDS = ("creation",)
_STRATEGY_CHOICES = ", ".join(CREATION_STRATEGIES)

# Distinguishes "field left out" (default it) from "field given as null" (a type error).
_MISSING: Any = object()


@dataclass
class _Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}" if path else message)

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}" if path else message)


def parse_config(
    text: str | None,
    *,
    service_ports: Sequence[int],
    cluster_name: str,
    default_size: int = 1,
    rng: random.Random | None = None,
) -> ParseResult:
    """Parse, default and validate the annotation's value; ``config`` is None when there is any error.

    ``service_ports`` are the Service's TCP ports, in the Service's order: they decide which
    frontends exist. ``rng`` only matters when the name must be generated.
    """
    report = _Report()
    data = _load(text, report)
    if data is None:
        return ParseResult(None, tuple(report.errors), tuple(report.warnings), defaulted_name=False)
    config, defaulted_name = _build(
        data,
        report,
        service_ports=service_ports,
        cluster_name=cluster_name,
        default_size=default_size,
        rng=rng if rng is not None else random.SystemRandom(),
    )
    return ParseResult(
        config if not report.errors else None,
        tuple(report.errors),
        tuple(report.warnings),
        defaulted_name=defaulted_name,
    )


def _load(text: str | None, report: _Report) -> dict[Any, Any] | None:
    """The annotation's mapping ({} when it is empty), or None after reporting why there is none."""
    if text is None or not text.strip():
        return {}
    try:
        value = load_strict(text)
    except (yaml.YAMLError, RecursionError) as e:
        problem = one_line_problem(e)
        report.error(
            "", f"failed to parse the value of {show(ANNOTATION)} as a configuration object: {problem}"
        )
        return None
    if not isinstance(value, dict):
        shown = "" if value is None else f": {show(value)}"
        report.error("", f"the configuration object must be a mapping, got {_kind(value)}{shown}")
        return None
    return value


def _build(
    data: dict[Any, Any],
    report: _Report,
    *,
    service_ports: Sequence[int],
    cluster_name: str,
    default_size: int,
    rng: random.Random,
) -> tuple[PoolConfig, bool]:
    """Default and validate every field; the config is meaningful only when nothing was reported."""
    _reject_unknown_fields(data, _TOP_LEVEL_FIELDS, "", report)
    cloud_given = data.get("cloudProviderConfiguration", _MISSING) is not _MISSING
    name, defaulted_name = _name(data, report, cluster_name=cluster_name, rng=rng, cloud=cloud_given)
    role = _role(data, report)
    network = _network(data, report, role=role, cloud=cloud_given)
    config = PoolConfig(
        name=name,
        role=role,
        network=network,
        cpus=_cpus(data, report),
        memory=_memory(data, report),
        size=_size(data, report, default_size),
        frontends=_frontends(data, report, service_ports),
        constraints=_constraints(data, report),
        creation_strategy=_creation_strategy(data, report),
        cloud_provider_configuration=_cloud_provider_configuration(data, report),
    )
    return config, defaulted_name


def _reject_unknown_fields(data: Mapping[Any, Any], known: Iterable[str], path: str, report: _Report) -> None:
    known = set(known)
    for key in data:
        if key not in known:
            report.error(path, f"unknown field {show(key)}")


def _name(
    data: Mapping[Any, Any], report: _Report, *, cluster_name: str, rng: random.Random, cloud: bool
) -> tuple[str, bool]:
    value = data.get("name", _MISSING)
    if value is _MISSING:
        generated = default_pool_name(cluster_name, rng, prefix=CLOUD_POOL_PREFIX if cloud else "")
        if not _POOL_NAME.fullmatch(generated):
            report.error(
                "name",
                f"{show(generated)} (generated from the cluster name {show(cluster_name)}) "
                "is not a valid edgelb pool name",
            )
        return generated, True
    name = _string("name", value, report)
    if name is None:
        return "", False
    if not _POOL_NAME.fullmatch(name):
        report.error("name", f"{show(name)} is not a valid edgelb pool name")
    elif cloud and not name.startswith(CLOUD_POOL_PREFIX):
        report.error(
            "name",
            f"{show(name)} must start with {show(CLOUD_POOL_PREFIX)} "
            "when a cloud-provider configuration is provided",
        )
    return name, False


def _role(data: Mapping[Any, Any], report: _Report) -> str:
    value = data.get("role", _MISSING)
    if value is _MISSING:
        return ROLE_PUBLIC
    role = _string("role", value, report)
    if role is None:
        return ROLE_PUBLIC
    if not role:
        report.error("role", f"{show(role)} is not a valid role")
    return role


def _network(data: Mapping[Any, Any], report: _Report, *, role: str, cloud: bool) -> str:
    value = data.get("network", _MISSING)
    if cloud:
        # Cloud load balancers reach the pool's instances on the agents' addresses: always host.
        if value is not _MISSING and _string("network", value, report):
            report.error(
                "network", "cannot join a virtual network when a cloud-provider configuration is provided"
            )
        return HOST_NETWORK
    if value is _MISSING:
        return HOST_NETWORK if role == ROLE_PUBLIC else DEFAULT_NETWORK
    if _string("network", value, report) is None:
        return HOST_NETWORK
    # Public agents are reached on their host addresses; private pools are only reachable over an overlay.
    if role == ROLE_PUBLIC and value:
        report.error("network", f"cannot join a virtual network when the pool's role is {show(ROLE_PUBLIC)}")
    elif role != ROLE_PUBLIC and not value:
        report.error("network", f"cannot join the host network when the pool's role is {show(role)}")
    return value


def _cpus(data: Mapping[Any, Any], report: _Report) -> float:
    value = data.get("cpus", _MISSING)
    if value is _MISSING:
        return DEFAULT_CPUS
    cpus = _number("cpus", value, report, fallback=DEFAULT_CPUS)
    if _is_number(value) and not (math.isfinite(cpus) and cpus >= 0):
        report.error("cpus", f"{show(value)} is not a valid cpu request")
    return cpus


def _memory(data: Mapping[Any, Any], report: _Report) -> int:
    value = data.get("memory", _MISSING)
    if value is _MISSING:
        return DEFAULT_MEMORY
    memory = _integer("memory", value, report, fallback=DEFAULT_MEMORY)
    if memory < 0:
        report.error("memory", f"{show(memory)} is not a valid memory request")
    return memory


def _size(data: Mapping[Any, Any], report: _Report, default_size: int) -> int:
    value = data.get("size", _MISSING)
    if value is _MISSING:
        return default_size
    size = _integer("size", value, report, fallback=default_size)
    if size <= 0:
        report.error("size", f"{show(size)} is not a valid size request")
    return size


def _constraints(data: Mapping[Any, Any], report: _Report) -> str | None:
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
        return _string(_MISSPELLED_CONSTRAINTS, misspelled, report)
    if correct is _MISSING:
        return None
    return _string("constraints", correct, report)


def _creation_strategy(data: Mapping[Any, Any], report: _Report) -> str:
    strategies = data.get("strategies", _MISSING)
    if strategies is _MISSING:
        return DEFAULT_CREATION_STRATEGY
    if not isinstance(strategies, dict):
        report.error("strategies", f"{show(strategies)} is not a mapping")
        return DEFAULT_CREATION_STRATEGY
    _reject_unknown_fields(strategies, _STRATEGY_FIELDS, "strategies", report)
    value = strategies.get("creation", _MISSING)
    if value is _MISSING:
        return DEFAULT_CREATION_STRATEGY
    if value not in CREATION_STRATEGIES or not isinstance(value, str):
        report.error(
            "strategies.creation",
            f"{show(value)} is not a valid creation strategy (expected one of {_STRATEGY_CHOICES})",
        )
        return DEFAULT_CREATION_STRATEGY
    return value


def _cloud_provider_configuration(data: Mapping[Any, Any], report: _Report) -> str | None:
    value = data.get("cloudProviderConfiguration", _MISSING)
    if value is _MISSING:
        return None
    text = _string("cloudProviderConfiguration", value, report)
    if text is None:
        return None
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as e:
        report.error("cloudProviderConfiguration", f"the cloud-provider configuration is not valid JSON: {e}")
        return text
    if not isinstance(decoded, dict):
        report.error(
            "cloudProviderConfiguration",
            f"the cloud-provider configuration must be a JSON object, got {_kind(decoded)}",
        )
    return text  # kept verbatim: EdgeLB is the authority on its content


# --- frontends -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One ``frontends[i]`` item as given; a port is None when it was missing or invalid."""

    index: int
    port: int | None
    service_port: int | None


def _frontends(
    data: Mapping[Any, Any], report: _Report, service_ports: Sequence[int]
) -> tuple[Frontend, ...]:
    value = data.get("frontends", _MISSING)
    entries: list[_Entry] = []
    if value is not _MISSING:
        if isinstance(value, list):
            entries = [e for i, item in enumerate(value) if (e := _entry(i, item, report)) is not None]
        else:
            report.error("frontends", f"{show(value)} is not a list")
    _reject_duplicates(entries, report)
    mapping = _mapping_of_known_ports(entries, report, service_ports)
    ports = list(dict.fromkeys(service_ports))  # a port listed twice still gets one frontend
    _reject_default_clashes(mapping, ports, report)
    return tuple(Frontend(mapping.get(sp, sp), sp) for sp in ports)


def _entry(index: int, item: Any, report: _Report) -> _Entry | None:
    path = f"frontends[{index}]"
    if not isinstance(item, dict):
        report.error(path, f"{show(item)} is not a mapping")
        return None
    _reject_unknown_fields(item, _FRONTEND_FIELDS, path, report)
    return _Entry(
        index,
        _port_field(f"{path}.port", item.get("port", _MISSING), report),
        _port_field(f"{path}.servicePort", item.get("servicePort", _MISSING), report),
    )


def _port_field(path: str, value: Any, report: _Report) -> int | None:
    if value is _MISSING:
        report.error(path, "the field is required")
        return None
    if not _is_integer(value):
        report.error(path, f"{show(value)} is not an integer")
        return None
    if not 1 <= value <= 65535:
        report.error(path, f"{show(value)} is not a valid port number")
        return None
    return int(value)


def _reject_duplicates(entries: Sequence[_Entry], report: _Report) -> None:
    service_ports: set[int] = set()
    ports: set[int] = set()
    for e in entries:
        if e.service_port is not None:
            if e.service_port in service_ports:
                report.error(
                    f"frontends[{e.index}].servicePort",
                    f"service port {e.service_port} has been specified twice",
                )
            service_ports.add(e.service_port)
        if e.port is not None:
            if e.port in ports:
                report.error(f"frontends[{e.index}].port", f"frontend port {e.port} has been specified twice")
            ports.add(e.port)


def _mapping_of_known_ports(
    entries: Sequence[_Entry], report: _Report, service_ports: Sequence[int]
) -> dict[int, int]:
    """servicePort → bind port for the entries that name a port of the Service; warns about the others."""
    known = set(service_ports)
    mapping: dict[int, int] = {}
    for e in entries:
        if e.service_port is None:
            continue
        if e.service_port not in known:
            # Ports come and go with the Service's spec; a stale entry must not block the others.
            report.warn(
                f"frontends[{e.index}]",
                f"service port {e.service_port} is not a TCP port of the Service; the entry is ignored",
            )
        elif e.port is not None:
            mapping.setdefault(e.service_port, e.port)
    return mapping


def _reject_default_clashes(mapping: Mapping[int, int], ports: Sequence[int], report: _Report) -> None:
    """A defaulted bind port (= its service port) may be the bind port another entry maps to."""
    mapped_by_port = {port: sp for sp, port in mapping.items()}
    for sp in ports:
        if sp not in mapping and sp in mapped_by_port:
            report.error(
                "frontends",
                f"frontend port {sp} of service port {mapped_by_port[sp]} clashes with the default "
                f"frontend port of service port {sp}",
            )


# --- typed values --------------------------------------------------------------------------------


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # YAML booleans are never numbers


def _is_number(value: Any) -> bool:
    return _is_integer(value) or isinstance(value, float)


def _string(path: str, value: Any, report: _Report) -> str | None:
    if isinstance(value, str):
        return value
    report.error(path, f"{show(value)} is not a string")
    return None


def _integer(path: str, value: Any, report: _Report, *, fallback: int) -> int:
    if _is_integer(value):
        return int(value)
    report.error(path, f"{show(value)} is not an integer")
    return fallback


def _number(path: str, value: Any, report: _Report, *, fallback: float) -> float:
    if not _is_number(value):
        report.error(path, f"{show(value)} is not a number")
        return fallback
    try:
        return float(value)
    except OverflowError:
        return math.inf  # an integer too large for a float is no sensible request either


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"
