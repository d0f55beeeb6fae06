"""The configuration object: the user's request for an EdgeLB pool, once parsed and defaulted.

Where it sits in the data flow: ``engine.model.parse.parse_config`` turns the value of the
Service's ``kubernetes.dcos.io/dklb-config`` annotation into a ``PoolConfig`` (or every error).
A valid one is recorded in the database (``PoolConfig.to_dict``, read back with
``PoolConfig.from_dict``) and written back into the annotation (``PoolConfig.to_annotation``), so
that the random default name (``default_pool_name``) is generated once and the user sees every
default. ``check_transition`` compares a later version of the annotation with the recorded one,
because some fields cannot change once a pool serves the Service. The pool translation and the
shared-pool checks read the ``PoolConfig`` (and its ``shared_settings``); nothing here performs
I/O. ``show`` writes a value the way the user wrote it, for every message that names one.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from engine.model.services import ANNOTATION

CREATION_STRATEGIES = ("IfNotPresent", "Once", "Never")
ROLE_PUBLIC = "slave_public"
DEFAULT_NETWORK = "dcos"
#: What a pool with a cloud load balancer must be named with, as the Go dklb required (so
#: ``cloudy-pool`` qualifies); ``CLOUD_POOL_PREFIX`` is what a generated cloud name starts with.
CLOUD_NAME_PREFIX = "cloud"
CLOUD_POOL_PREFIX = "cloud--"
#: ``--edgelb-pool-group``'s default: the DC/OS service folder EdgeLB installs pools under.
DEFAULT_POOL_GROUP = "dcos-edgelb/pools"
#: The DC/OS SDK refuses a service whose name, slashes removed, is longer (DNS label).
DCOS_SERVICE_NAME_LIMIT = 63

HOST_NETWORK = ""
DEFAULT_CPUS = 0.1
DEFAULT_MEMORY = 128
DEFAULT_CREATION_STRATEGY = "IfNotPresent"

_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
_SUFFIX_LENGTH = 5
_SEPARATOR = "--"

# Values end up in Events; a huge one would drown the message.
_MAX_SHOWN_VALUE = 80


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
    frontends: tuple[Frontend, ...] = ()
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

    @property
    def cloud_provider(self) -> dict[str, Any] | None:
        """The parsed ``cloudProviderConfiguration``: EdgeLB's ``cloudProvider`` object (a fresh
        dict at every call; the parser checked that it is a JSON object)."""
        if self.cloud_provider_configuration is None:
            return None
        value: dict[str, Any] = json.loads(self.cloud_provider_configuration)
        return value

    def shared_settings(self) -> dict[str, Any]:
        """What every Service sharing the pool must agree on (the pool has only one of each): if
        one could differ, the last Service written would flip it for all of them."""
        return {
            "role": self.role,
            "network": self.network,
            "cpus": self.cpus,
            "memory": self.memory,
            "size": self.size,
            "constraints": self.constraints,
            "cloudProviderConfiguration": self.cloud_provider_configuration,
        }


@dataclass(frozen=True)
class ParseResult:
    config: PoolConfig | None  # None when there is any error
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    defaulted_name: bool  # True when the name was generated (the annotation had none)


def default_pool_name(
    cluster_name: str, rng: random.Random, *, prefix: str = "", pool_group: str = DEFAULT_POOL_GROUP
) -> str:
    """``<prefix><cluster>--<5 random [a-z0-9]>``, the historical dklb naming scheme.

    The cluster part is cut as the Go dklb cut it, so that ``<pool group>/<name>`` fits the
    DC/OS service-name limit: 63 - (pool group + "/") - prefix - "--xxxxx", that is 38
    characters, or 31 with the ``cloud--`` prefix, for the default pool group. Go counted the
    slashes (one character more than DC/OS does) and always the default group: here the
    configured one, so a longer group still gets names that fit.
    """
    room = DCOS_SERVICE_NAME_LIMIT - (len(pool_group) + 1) - len(prefix) - len(_SEPARATOR) - _SUFFIX_LENGTH
    cluster_part = cluster_name.removeprefix("/").replace("/", _SEPARATOR)[: max(room, 0)]
    suffix = "".join(rng.choice(_SUFFIX_ALPHABET) for _ in range(_SUFFIX_LENGTH))
    return f"{prefix}{cluster_part}{_SEPARATOR}{suffix}"


def dcos_service_name(pool_group: str, name: str) -> str:
    """The DC/OS service EdgeLB installs the pool as, as the SDK measures it: slashes removed."""
    return f"{pool_group}/{name}".replace("/", "")


def check_transition(previous: PoolConfig, new: PoolConfig | None, *, annotation_present: bool) -> list[str]:
    """Why ``new`` may not replace ``previous``: these fields identify or place a pool that serves.

    Adding a cloud-provider configuration is the exception (the Go dklb's rule): the Service
    moves to a pool of its own, so its name, role and network are free; removing one is refused.
    """
    if not annotation_present:
        # Re-defaulting would generate a new random name, i.e. silently move the Service to a new pool.
        return [f"the {ANNOTATION} annotation cannot be removed"]
    if new is None:
        return []  # an invalid configuration reports its own errors
    if previous.cloud_provider_configuration is None and new.cloud_provider_configuration is not None:
        # Adding a cloud load balancer moves the Service to a new (cloud--) pool, as the Go dklb
        # did: the old pool's name, role and network no longer bind it.
        return []
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
    return f"{path}: {what} of the target edgelb pool cannot be changed (from {show(old)} to {show(new)})"


# libyaml's emitter when PyYAML was built with it: every Service's defaulted configuration is
# written back, and the pure-Python emitter costs more CPU than the rest of Pending.
_SafeDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def show(value: Any) -> str:
    """A value as the user would recognise it: strings quoted, floats as Python repr, others as YAML
    flow style; at most ``_MAX_SHOWN_VALUE`` characters, control characters escaped.

    Never raises and never recurses: it names values from any annotation, however hostile (a
    list nested 900 deep, an integer of 16,000 bits, a 200 KiB string).
    """
    if isinstance(value, str):
        shown = _quoted(value)
    elif isinstance(value, list | tuple | dict | set | frozenset):
        shown = _flow(value)
    else:
        shown = _scalar(value)
    return _escaped(_cut(shown))


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN_VALUE else text[: _MAX_SHOWN_VALUE - 3] + "..."


def _quoted(text: str) -> str:
    # Only what can be shown is encoded: a 200 KiB string costs no more than an 80-character one.
    return json.dumps(text[:_MAX_SHOWN_VALUE], ensure_ascii=False) + (
        "..." if len(text) > _MAX_SHOWN_VALUE else ""
    )


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        digits = getattr(value, "digits", None)  # strict_yaml.LongInteger: never converted
        if digits is not None:
            return f"an integer of {digits:,} digits"
        if value.bit_length() > _MAX_SHOWN_BITS:
            return f"an integer of {value.bit_length():,} bits"
        return repr(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) and _resolves_to_str(value) else _quoted(value)
    # Timestamps, binary: what they are, and the start of their text.
    return f"a {type(value).__name__} {_cut(str(value))}"


def _flow(value: Any) -> str:
    """YAML flow style (``{port: 1}``, ``[a, b]``), written left to right until it is long enough."""
    out: list[str] = []
    length = 0
    # A stack of pending tokens: strings to write, or values to expand.
    stack: list[Any] = [_Expand(value)]
    while stack and length <= _MAX_SHOWN_VALUE:
        item = stack.pop()
        if isinstance(item, _Expand):
            item = item.value
            if isinstance(item, dict):
                parts: list[Any] = ["{"]
                for i, (k, v) in enumerate(item.items()):
                    parts += [", "] * (i > 0) + [_Expand(k), ": ", _Expand(v)]
                    if i > _MAX_SHOWN_VALUE:
                        break
                stack.extend(reversed([*parts, "}"]))
                continue
            if isinstance(item, list | tuple | set | frozenset):
                opening, closing = ("{", "}") if isinstance(item, set | frozenset) else ("[", "]")
                parts = [opening]
                for i, v in enumerate(item):
                    parts += [", "] * (i > 0) + [_Expand(v)]
                    if i > _MAX_SHOWN_VALUE:
                        break
                stack.extend(reversed([*parts, closing]))
                continue
            item = _scalar(item)
        out.append(item)
        length += len(item)
    return "".join(out)


@dataclass(frozen=True)
class _Expand:
    value: Any


# Shown as written inside a collection ({port: 1}, [hostname, UNIQUE]); anything else is quoted.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./=-]*")
_RESOLVER = yaml.resolver.Resolver()
# repr() of a larger integer is refused by Python (over 4,300 digits) or drowns the message;
# 2^256 has 78 digits.
_MAX_SHOWN_BITS = 256
# Controls (C0, DEL, C1), line and paragraph separators and bidirectional overrides: shown as
# escapes, so that no message can rewrite a terminal, a log line or the reading order.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _resolves_to_str(text: str) -> bool:
    return bool(_RESOLVER.resolve(yaml.ScalarNode, text, (True, False)) == "tag:yaml.org,2002:str")


def _escaped(text: str) -> str:
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
