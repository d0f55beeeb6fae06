"""The configuration object: the user's request for an EdgeLB pool, parsed, defaulted and validated.

Where it sits in the data flow: the Pending handler calls ``parse_config`` with the value of the
Service's ``kubernetes.dcos.io/dklb-config`` annotation and the Service's TCP ports. A valid result
is recorded in the database (``PoolConfig.to_dict``, read back with ``PoolConfig.from_dict``) and
written back into the annotation (``PoolConfig.to_annotation``), so that the random default name
is generated once and the user sees every default. ``check_transition`` compares a later version
of the annotation with the recorded one, because some fields cannot change once a pool serves the
Service. The pool translation and the shared-pool checks read the ``PoolConfig`` (and its
``shared_settings``); nothing here performs I/O.

Parsing is strict: unknown fields, duplicate keys and wrong types are errors, and every error is
collected so that one Warning Event tells the user everything to fix. An explicit ``null`` is a
type error, not a request for the default: leaving a field out is how one asks for the default.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.model.services import ANNOTATION

CREATION_STRATEGIES = ("IfNotPresent", "Once", "Never")
ROLE_PUBLIC = "slave_public"
DEFAULT_NETWORK = "dcos"
CLOUD_POOL_PREFIX = "cloud--"

HOST_NETWORK = ""
DEFAULT_CPUS = 0.1
DEFAULT_MEMORY = 128
DEFAULT_CREATION_STRATEGY = "IfNotPresent"

# EdgeLB pool names become Marathon app ids and DNS labels, hence the DNS-label shape.
_POOL_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
_SUFFIX_LENGTH = 5
# 38 keeps "cloud--" + cluster part + "--" + suffix within the 63 characters of a DNS label.
_CLUSTER_PART_LENGTH = 38

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
_MAX_SHOWN_VALUE = 80

# Distinguishes "field left out" (default it) from "field given as null" (a type error).
_MISSING: Any = object()


@dataclass(frozen=True)
class Frontend:
    port: int  # frontend bind port
    service_port: int


@dataclass(frozen=True)
class PoolConfig:
    name: str
    role: str
    network: str
    cpus: float
    memory: int
    size: int
    frontends: tuple[Frontend, ...]
    creation_strategy: str = DEFAULT_CREATION_STRATEGY
    constraints: str | None = None
    cloud_provider_configuration: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The configuration-object form, with the annotation's key names and order."""
        d: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "network": self.network,
            "cpus": self.cpus,
            "memory": self.memory,
            "size": self.size,
            "frontends": [{"port": f.port, "servicePort": f.service_port} for f in self.frontends],
        }
        if self.constraints is not None:
            d["constraints"] = self.constraints
        d["strategies"] = {"creation": self.creation_strategy}
        if self.cloud_provider_configuration is not None:
            d["cloudProviderConfiguration"] = self.cloud_provider_configuration
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PoolConfig:
        """Inverse of ``to_dict``; the input is trusted (it was validated before it was recorded)."""
        return cls(
            name=d["name"],
            role=d["role"],
            network=d["network"],
            cpus=float(d["cpus"]),
            memory=int(d["memory"]),
            size=int(d["size"]),
            frontends=tuple(Frontend(int(f["port"]), int(f["servicePort"])) for f in d["frontends"]),
            creation_strategy=d.get("strategies", {}).get("creation", DEFAULT_CREATION_STRATEGY),
            constraints=d.get("constraints"),
            cloud_provider_configuration=d.get("cloudProviderConfiguration"),
        )

    def to_annotation(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_SafeDumper, sort_keys=False)

    def shared_settings(self) -> dict[str, Any]:
        """What every Service sharing the pool must agree on (the pool has only one of each)."""
        return {
            "role": self.role,
            "network": self.network,
            "cpus": self.cpus,
            "memory": self.memory,
            "size": self.size,
        }


@dataclass(frozen=True)
class ParseResult:
    config: PoolConfig | None  # None when there is any error
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    defaulted_name: bool  # True when the name was generated (the annotation had none)


def default_pool_name(cluster_name: str, rng: random.Random, *, prefix: str = "") -> str:
    """``<prefix><cluster>--<5 random [a-z0-9]>``, the historical dklb naming scheme."""
    cluster_part = cluster_name.removeprefix("/").replace("/", "--")[:_CLUSTER_PART_LENGTH]
    suffix = "".join(rng.choice(_SUFFIX_ALPHABET) for _ in range(_SUFFIX_LENGTH))
    return f"{prefix}{cluster_part}--{suffix}"


def check_transition(previous: PoolConfig, new: PoolConfig | None, *, annotation_present: bool) -> list[str]:
    """Why ``new`` may not replace ``previous``: these fields identify or place a pool that serves."""
    if not annotation_present:
        # Re-defaulting would generate a new random name, i.e. silently move the Service to a new pool.
        return [f"the {ANNOTATION} annotation cannot be removed"]
    if new is None:
        return []  # an invalid configuration reports its own errors
    problems = [
        _immutable("name", "the name", previous.name, new.name),
        _immutable("role", "the role", previous.role, new.role),
        _immutable("network", "the virtual network", previous.network, new.network),
    ]
    if previous.cloud_provider_configuration is not None and new.cloud_provider_configuration is None:
        problems.append("cloudProviderConfiguration: the cloud-provider configuration cannot be removed")
    return [p for p in problems if p]


def _immutable(path: str, what: str, old: str, new: str) -> str:
    if old == new:
        return ""
    return f"{path}: {what} of the target edgelb pool cannot be changed (from {_show(old)} to {_show(new)})"


# --- parsing -------------------------------------------------------------------------------------


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


# libyaml's emitter and parser when PyYAML was built with them: every Service's annotation is parsed
# and written back, and the pure-Python ones cost more CPU than the rest of Pending. A text libyaml
# refuses is parsed again by PyYAML's own parser, whose messages say more about what is wrong.
_FastSafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SafeDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _NoDuplicateKeys:
    """Refuses duplicate keys, which PyYAML would otherwise resolve as last-one-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # merge keys ("<<") are allowed to repeat and to be overridden
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: the base class reports it properly
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found duplicate key {_show(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


class _StrictLoader(_NoDuplicateKeys, yaml.SafeLoader):
    pass


class _FastStrictLoader(_NoDuplicateKeys, _FastSafeLoader):  # type: ignore[misc]
    pass


def _load(text: str | None, report: _Report) -> dict[Any, Any] | None:
    """The annotation's mapping ({} when it is empty), or None after reporting why there is none."""
    if text is None or not text.strip():
        return {}
    try:
        value = _load_yaml(text)
    except (yaml.YAMLError, RecursionError) as e:
        report.error(
            "", f"failed to parse the value of {_show(ANNOTATION)} as a configuration object: {_problem(e)}"
        )
        return None
    if not isinstance(value, dict):
        shown = "" if value is None else f": {_show(value)}"
        report.error("", f"the configuration object must be a mapping, got {_kind(value)}{shown}")
        return None
    return value


def _load_yaml(text: str) -> Any:
    """One YAML document; a stream holding no document (only comments) means "nothing given"."""
    try:
        return _load_with(_FastStrictLoader, text)
    except yaml.YAMLError:
        if _FastSafeLoader is yaml.SafeLoader:
            raise
        return _load_with(_StrictLoader, text)


def _load_with(loader_class: Any, text: str) -> Any:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return {} if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


def _problem(e: yaml.YAMLError | RecursionError) -> str:
    """PyYAML's multi-line message squeezed into one line, so that it fits in an Event."""
    if isinstance(e, RecursionError):
        return "the value is nested too deeply"
    if not isinstance(e, yaml.MarkedYAMLError) or not e.problem:
        return " ".join(str(e).split())
    text = f"{e.context}: {e.problem}" if e.context else e.problem
    if e.problem_mark is not None:
        text += f" (line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1})"
    return " ".join(text.split())


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
            report.error(path, f"unknown field {_show(key)}")


def _name(
    data: Mapping[Any, Any], report: _Report, *, cluster_name: str, rng: random.Random, cloud: bool
) -> tuple[str, bool]:
    value = data.get("name", _MISSING)
    if value is _MISSING:
        generated = default_pool_name(cluster_name, rng, prefix=CLOUD_POOL_PREFIX if cloud else "")
        if not _POOL_NAME.fullmatch(generated):
            report.error(
                "name",
                f"{_show(generated)} (generated from the cluster name {_show(cluster_name)}) "
                "is not a valid edgelb pool name",
            )
        return generated, True
    name = _string("name", value, report)
    if name is None:
        return "", False
    if not _POOL_NAME.fullmatch(name):
        report.error("name", f"{_show(name)} is not a valid edgelb pool name")
    elif cloud and not name.startswith(CLOUD_POOL_PREFIX):
        report.error(
            "name",
            f"{_show(name)} must start with {_show(CLOUD_POOL_PREFIX)} "
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
        report.error("role", f"{_show(role)} is not a valid role")
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
        report.error("network", f"cannot join a virtual network when the pool's role is {_show(ROLE_PUBLIC)}")
    elif role != ROLE_PUBLIC and not value:
        report.error("network", f"cannot join the host network when the pool's role is {_show(role)}")
    return value


def _cpus(data: Mapping[Any, Any], report: _Report) -> float:
    value = data.get("cpus", _MISSING)
    if value is _MISSING:
        return DEFAULT_CPUS
    cpus = _number("cpus", value, report, fallback=DEFAULT_CPUS)
    if _is_number(value) and not (math.isfinite(cpus) and cpus >= 0):
        report.error("cpus", f"{_show(value)} is not a valid cpu request")
    return cpus


def _memory(data: Mapping[Any, Any], report: _Report) -> int:
    value = data.get("memory", _MISSING)
    if value is _MISSING:
        return DEFAULT_MEMORY
    memory = _integer("memory", value, report, fallback=DEFAULT_MEMORY)
    if memory < 0:
        report.error("memory", f"{_show(memory)} is not a valid memory request")
    return memory


def _size(data: Mapping[Any, Any], report: _Report, default_size: int) -> int:
    value = data.get("size", _MISSING)
    if value is _MISSING:
        return default_size
    size = _integer("size", value, report, fallback=default_size)
    if size <= 0:
        report.error("size", f"{_show(size)} is not a valid size request")
    return size


def _constraints(data: Mapping[Any, Any], report: _Report) -> str | None:
    correct = data.get("constraints", _MISSING)
    misspelled = data.get(_MISSPELLED_CONSTRAINTS, _MISSING)
    if correct is not _MISSING and misspelled is not _MISSING:
        report.error(
            "constraints", f'{_show(_MISSPELLED_CONSTRAINTS)} and "constraints" cannot both be given'
        )
        return None
    if misspelled is not _MISSING:
        # The seed's documentation spells it this way, so existing Services do too.
        report.warn(
            "",
            f'{_show(_MISSPELLED_CONSTRAINTS)} is accepted as "constraints"; please rename the field',
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
        report.error("strategies", f"{_show(strategies)} is not a mapping")
        return DEFAULT_CREATION_STRATEGY
    _reject_unknown_fields(strategies, _STRATEGY_FIELDS, "strategies", report)
    value = strategies.get("creation", _MISSING)
    if value is _MISSING:
        return DEFAULT_CREATION_STRATEGY
    if value not in CREATION_STRATEGIES or not isinstance(value, str):
        report.error(
            "strategies.creation",
            f"{_show(value)} is not a valid creation strategy (expected one of {_STRATEGY_CHOICES})",
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
            report.error("frontends", f"{_show(value)} is not a list")
    _reject_duplicates(entries, report)
    mapping = _mapping_of_known_ports(entries, report, service_ports)
    ports = list(dict.fromkeys(service_ports))  # a port listed twice still gets one frontend
    _reject_default_clashes(mapping, ports, report)
    return tuple(Frontend(mapping.get(sp, sp), sp) for sp in ports)


def _entry(index: int, item: Any, report: _Report) -> _Entry | None:
    path = f"frontends[{index}]"
    if not isinstance(item, dict):
        report.error(path, f"{_show(item)} is not a mapping")
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
        report.error(path, f"{_show(value)} is not an integer")
        return None
    if not 1 <= value <= 65535:
        report.error(path, f"{_show(value)} is not a valid port number")
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
    report.error(path, f"{_show(value)} is not a string")
    return None


def _integer(path: str, value: Any, report: _Report, *, fallback: int) -> int:
    if _is_integer(value):
        return int(value)
    report.error(path, f"{_show(value)} is not an integer")
    return fallback


def _number(path: str, value: Any, report: _Report, *, fallback: float) -> float:
    if not _is_number(value):
        report.error(path, f"{_show(value)} is not a number")
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


def _show(value: Any) -> str:
    """A value as the user would recognise it: strings quoted, floats as Python repr, others as YAML."""
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, bool) or value is None:
        shown = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, int | float):
        shown = repr(value)
    else:
        dumped = yaml.safe_dump(value, default_flow_style=True, width=2**31)
        shown = " ".join(dumped.split()).removesuffix(" ...")
    # Values end up in Events; a huge one would drown the message.
    return shown if len(shown) <= _MAX_SHOWN_VALUE else shown[: _MAX_SHOWN_VALUE - 3] + "..."
