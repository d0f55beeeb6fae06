"""Bad input at the controller: generated annotations and Service specs through the real Reconciler.

Where it sits: ``tests.engine.harness.World`` plays the controller (the real ``Reconciler``, the
SQLite store, the declared lifecycle) over the fake Kubernetes and the fake EdgeLB. hypothesis
draws one case per example: a Service spec (odd protocols, ports listed twice or out of range,
missing port names and nodePorts, other Service types) and an annotation: either a valid
configuration object with one mutation whose verdict is known by construction (wrong types,
unknown keys, out-of-range ports and sizes, bad names, duplicate keys, huge values, unicode,
empty) or arbitrary YAML-ish text, which ``engine.model.checks.check_service`` judges. Every example
tells two stories:

* create: a Service created with the case. A valid one ends Ready after exactly one EdgeLB
  write; an invalid one ends Rejected with an InvalidConfiguration Warning naming the field
  and no EdgeLB call at all; a Service of another type is left alone. Deleting it leaves
  EdgeLB, the database and the cluster empty.
* edit: a valid Service is Ready, then its annotation (or its spec) is edited to the case. An
  edit the controller must refuse ends Rejected with the Warning while the pool keeps serving:
  EdgeLB unchanged, no write, the address, finalizer and pool reference kept; restoring the
  annotation brings it back to Ready, still without a write.

The admission webhook's pure ``review`` judges the same create and update: it never raises,
the mutating webhook never refuses, and the validating one refuses exactly what the controller
rejects, naming the same field. No example may make the reconciler raise or log a warning or
an error: the engine catches a handler's exception and retries, so a crash shows up in the log.

The 1,000-example run is marked slow; a 200-example sibling of the same property runs by default.
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import math
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.admission.review import review
from engine.kube.recorder import MAX_EVENT_MESSAGE_BYTES
from engine.model.checks import NO_TCP_PORT, check_service
from engine.model.config import PoolConfig
from engine.model.services import ANNOTATION, FINALIZER
from engine.model.settings import Settings
from states import pending
from tests import hostile
from tests.checks import present
from tests.engine.harness import CLUSTER, World

POOL = "fuzz-pool"
SERVICE_PORTS = (1000, 1001, 1002)
FIRST_BIND_PORT = 40000  # bind ports of the base configuration: 40000, 40001, ...
UNKNOWN_SERVICE_PORT = 999  # a frontends entry for a port the Service does not have (warned, ignored)
DEFAULT_SPEC_PORTS = [{"name": "main", "port": 1000, "protocol": "TCP", "nodePort": 31000}]
CREATED, EDITED = "created", "edited"
NAMESPACE = "fuzz"
ADMISSION = Settings(cluster_name=CLUSTER, default_pool_size=1)
KNOWN_FIELDS = {
    *("name", "role", "network", "cpus", "memory", "size", "frontends", "constraints"),
    *("contraints", "strategies", "cloudProviderConfiguration"),
}
NAME_CANNOT_CHANGE = "name: the name of the target edgelb pool cannot be changed"
ROLE_CANNOT_CHANGE = "role: the role of the target edgelb pool cannot be changed"
REMOVED = f"the {ANNOTATION} annotation cannot be removed"
NOT_A_MAPPING = "the configuration object must be a mapping"
GENERATED_NAME = re.compile(rf"(cloud--)?{CLUSTER}--[a-z0-9]{{5}}")
# The longest name whose DC/OS service name, "dcos-edgelbpools<name>", fits in 63 characters.
LONGEST_NAME = 63 - len(ADMISSION.pool_group.replace("/", ""))

# A verdict: None for a valid configuration, else the texts the Warning (and the admission
# refusal) must contain; ORACLE for arbitrary text, judged by check_service; MOVES for an edit
# that adds a cloud load balancer, which moves the Service to a new pool (allowed, as in Go).
Verdict = tuple[str, ...] | None
ORACLE: tuple[str, ...] = ("<judged by check_service>",)
MOVES: tuple[str, ...] = ("<moves to a new cloud pool>",)


# --- the case ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """The valid configuration object a mutation starts from, and the Service's exposed TCP ports."""

    data: dict[str, Any]
    exposed: tuple[int, ...]


@dataclass(frozen=True)
class Outcome:
    text: str | None  # the annotation's value; None: no annotation
    create: Verdict  # the verdict for a new Service
    edit: Verdict  # the verdict for an edit of a Ready Service configured with the base


@dataclass(frozen=True)
class Mutation:
    label: str
    build: Callable[[Base], Outcome]

    def __repr__(self) -> str:
        return self.label


def pick(*strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """One of ``strategies``, each as likely (``st.one_of`` leans on its first branches)."""
    return st.sampled_from(strategies).flatmap(lambda strategy: strategy)


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def exposed_ports(ports: list[dict[str, Any]]) -> tuple[int, ...]:
    """What Kubernetes semantics expose (independently of the product): TCP (or no protocol),
    a port number in 1-65535, the first entry of a port listed twice."""
    seen: list[int] = []
    for entry in ports:
        if (entry.get("protocol") or "TCP") != "TCP":
            continue
        port = entry.get("port")
        if isinstance(port, int) and 1 <= port <= 65535 and port not in seen:
            seen.append(port)
    return tuple(seen)


def base_config(exposed: tuple[int, ...]) -> dict[str, Any]:
    frontends = [{"port": FIRST_BIND_PORT + i, "servicePort": sp} for i, sp in enumerate(exposed)]
    if not frontends:  # keeps frontends[0] for the mutations; ignored with a warning
        frontends = [{"port": FIRST_BIND_PORT, "servicePort": UNKNOWN_SERVICE_PORT}]
    return {
        "name": POOL,
        "cpus": 0.1,
        "memory": 128,
        "size": 1,
        "frontends": frontends,
        "strategies": {"creation": "IfNotPresent"},
    }


def setting(
    path: tuple[str | int, ...], value: Any, create: Verdict, edit: Verdict | Literal["same"] = "same"
) -> Mutation:
    def build(base: Base) -> Outcome:
        data = copy.deepcopy(base.data)
        target: Any = data  # dicts and lists, walked along path
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return Outcome(dump(data), create, create if edit == "same" else edit)

    return Mutation(f"set {'.'.join(map(str, path))} = {value!r:.60}", build)


def invalid(
    path: tuple[str | int, ...], values: st.SearchStrategy[Any], needle: str
) -> st.SearchStrategy[Mutation]:
    return values.map(lambda v: setting(path, v, (needle,)))


def valid(path: tuple[str | int, ...], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Mutation]:
    return values.map(lambda v: setting(path, v, None, None))


# --- annotation mutations ------------------------------------------------------------------------

SMALL_LISTS = st.lists(st.integers(-5, 5), max_size=2)
SMALL_DICTS = st.dictionaries(st.text(max_size=3), st.integers(-5, 5), max_size=2)
# null is no wrong type: it asks for the default (NULLS below), as the Go dklb's annotations do.
NOT_STRING = pick(st.integers(), st.floats(), st.booleans(), SMALL_LISTS, SMALL_DICTS)
NOT_NUMBER = pick(st.text(max_size=8), st.booleans(), SMALL_LISTS, SMALL_DICTS)
NOT_INTEGER = pick(st.floats(), st.text(max_size=8), st.booleans(), SMALL_LISTS, SMALL_DICTS)
NOT_LIST = pick(st.integers(), st.text(max_size=8), st.booleans(), SMALL_DICTS)
NOT_MAPPING = pick(st.integers(), st.text(max_size=8), st.booleans(), SMALL_LISTS)
BAD_PORTS = pick(st.integers(max_value=0), st.integers(min_value=65536))
# EdgeLB reads size and memory as Go int32; 2^53 bounds every integer the parser takes (S8).
INT32 = 2**31 - 1
BEYOND_2_53 = pick(st.integers(min_value=2**53 + 1, max_value=10**40), st.integers(max_value=-(2**53) - 1))
# What a string field may hold: no control characters, line separators or bidirectional overrides.
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
PRINTABLE = st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters=BIDI)
# Not NEL or U+2028: YAML reads them as line breaks, which a quoted scalar folds into a space.
CONTROL = st.sampled_from(["\x00", "\x07", "\t", "\n", "\r", "\x1b", "\x7f", "\x9b", "\u202e"])
WITH_CONTROL = st.tuples(st.text(PRINTABLE, max_size=5), CONTROL, st.text(PRINTABLE, max_size=5)).map("".join)

WRONG_TYPES = pick(
    invalid(("name",), NOT_STRING, "name: "),
    invalid(("role",), NOT_STRING, "role: "),
    invalid(("network",), NOT_STRING, "network: "),
    invalid(("constraints",), NOT_STRING, "constraints: "),
    invalid(("cpus",), NOT_NUMBER, "cpus: "),
    invalid(("memory",), NOT_INTEGER, "memory: "),
    invalid(("size",), NOT_INTEGER, "size: "),
    invalid(("frontends",), NOT_LIST, "frontends: "),
    invalid(("frontends", 0), pick(NOT_MAPPING, st.none()), "frontends[0]: "),
    invalid(("frontends", 0, "port"), NOT_INTEGER, "frontends[0].port: "),
    invalid(("frontends", 0, "servicePort"), pick(NOT_INTEGER, st.none()), "frontends[0].servicePort: "),
    invalid(("strategies",), NOT_MAPPING, "strategies: "),
    invalid(("strategies", "creation"), NOT_STRING, "strategies.creation: "),
    invalid(("cloudProviderConfiguration",), NOT_STRING, "cloudProviderConfiguration: "),
)

NULLS = st.sampled_from(
    [
        setting(("name",), None, None, (NAME_CANNOT_CHANGE,)),  # generated, like a missing name
        *(
            setting((field,), None, None, None)
            for field in ("role", "network", "cpus", "memory", "size", "frontends", "constraints")
        ),
        *(setting((field,), None, None, None) for field in ("strategies", "cloudProviderConfiguration")),
        setting(("strategies", "creation"), None, None, None),
        setting(("frontends", 0, "port"), None, None, None),  # binds its service port
    ]
)

OUT_OF_RANGE = pick(
    invalid(("frontends", 0, "port"), BAD_PORTS, "frontends[0].port: "),
    invalid(("frontends", 0, "servicePort"), BAD_PORTS, "frontends[0].servicePort: "),
    invalid(("size",), st.integers(max_value=0), "size: "),
    invalid(("memory",), st.integers(max_value=-1), "memory: "),
    invalid(
        ("cpus",),
        pick(
            st.floats(max_value=-1e-9),
            st.sampled_from([math.inf, -math.inf, math.nan]),
            st.integers(max_value=-1),
            st.integers(min_value=10**309, max_value=10**400),  # too large for a float
        ),
        "cpus: ",
    ),
    invalid(
        ("strategies", "creation"),
        st.text(max_size=12).filter(lambda s: s not in ("IfNotPresent", "Once", "Never")),
        "strategies.creation: ",
    ),
    # S8 (security review): integers beyond 2^53 and control characters are refused, naming the field.
    invalid(("size",), BEYOND_2_53, "size: "),
    invalid(("memory",), BEYOND_2_53, "memory: "),
    invalid(("cpus",), st.integers(min_value=2**53 + 1, max_value=10**300), "cpus: "),
    invalid(("role",), WITH_CONTROL, "role: "),
    invalid(("network",), WITH_CONTROL, "network: "),
    invalid(("constraints",), WITH_CONTROL, "constraints: "),
    invalid(("contraints",), WITH_CONTROL, "contraints: "),
)

# S8 (security review): the operator's limits (defaults: size 32, 16 CPUs, 32768 MiB) bound what
# was once valid however large.
LIMITS = ADMISSION.limits
OVER_LIMITS = pick(
    invalid(("size",), st.integers(LIMITS.max_pool_size + 1, 10**40), "size: "),
    invalid(("memory",), st.integers(min_value=LIMITS.max_pool_memory + 1, max_value=10**40), "memory: "),
    invalid(
        ("cpus",),
        pick(st.floats(min_value=LIMITS.max_pool_cpus + 0.01, max_value=1e300), st.integers(17, 10**300)),
        "cpus: ",
    ),
)
# The DC/OS SDK's two forms of placement constraints (engine.model.policy), written independently.
CONSTRAINT_FIELDS = st.sampled_from(["hostname", "@zone", "@region", "rack_id"])
CONSTRAINT_ROWS = pick(
    st.tuples(CONSTRAINT_FIELDS, st.sampled_from(["UNIQUE", "unique"])),
    st.tuples(CONSTRAINT_FIELDS, st.sampled_from(["GROUP_BY", "MAX_PER"]), st.integers(0, 99).map(str)),
    st.tuples(
        CONSTRAINT_FIELDS,
        st.sampled_from(["CLUSTER", "LIKE", "UNLIKE", "IS"]),
        st.from_regex(r"[a-z0-9.-]{1,8}", fullmatch=True),
    ),
)
VALID_CONSTRAINTS = pick(
    st.sampled_from(["", "[]"]),
    st.lists(CONSTRAINT_ROWS, min_size=1, max_size=3).map(lambda rows: ",".join(":".join(r) for r in rows)),
    st.lists(CONSTRAINT_ROWS, min_size=1, max_size=3).map(lambda rows: json.dumps([list(r) for r in rows])),
)
INVALID_CONSTRAINTS = pick(
    # A control character, or anything else than printable ASCII, anywhere.
    st.tuples(VALID_CONSTRAINTS, st.characters().filter(lambda c: not " " <= c <= "~")).map(
        lambda vc: vc[0] + vc[1]
    ),
    st.sampled_from(
        ["hostname", "hostname:NEAR", "hostname:CLUSTER", "hostname:MAX_PER:x", "[[1]]", "x" * 1025]
    ),
)
HUGE_OR_ODD_VALID = pick(
    valid(("size",), st.integers(1, LIMITS.max_pool_size)),
    valid(("memory",), st.integers(min_value=0, max_value=LIMITS.max_pool_memory)),
    valid(("cpus",), pick(st.floats(min_value=0, max_value=LIMITS.max_pool_cpus), st.integers(0, 16))),
    valid(("constraints",), VALID_CONSTRAINTS),
    invalid(("constraints",), INVALID_CONSTRAINTS, "constraints: "),
    valid(
        ("frontends", 0, "port"),
        st.integers(1, 65535).filter(lambda p: not FIRST_BIND_PORT <= p < FIRST_BIND_PORT + 8),
    ),
    valid(("strategies", "creation"), st.just("Once")),
)


def _unknown_top(key: Any) -> Mutation:
    needle = (
        f'unknown field "{key}"'
        if isinstance(key, str) and key.isascii() and key.isprintable() and '"' not in key and "\\" not in key
        else "unknown field"
    )
    return setting((key,), 1, (needle,))


UNKNOWN_KEYS = pick(
    pick(st.text(max_size=20), st.integers(), st.booleans(), st.none())
    .filter(lambda k: k not in KNOWN_FIELDS)
    .map(_unknown_top),
    st.text(max_size=10)
    .filter(lambda k: k not in ("port", "servicePort"))
    .map(lambda k: setting(("frontends", 0, k), 1, ("frontends[0]: unknown field",))),
    st.text(max_size=10)
    .filter(lambda k: k != "creation")
    .map(lambda k: setting(("strategies", k), "x", ("strategies: unknown field",))),
)


def valid_pool_name(name: str) -> bool:
    """A DNS label of [a-z0-9-], neither starting nor ending with "-", short enough for DC/OS to
    install it in the pool group (written independently)."""
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    return 0 < len(name) <= LONGEST_NAME and set(name) <= allowed and name[0] != "-" and name[-1] != "-"


def _named(name: str) -> Mutation:
    if not valid_pool_name(name):
        return setting(("name",), name, ("name: ",))
    return setting(("name",), name, None, None if name == POOL else (NAME_CANNOT_CHANGE,))


NAMES = pick(
    st.sampled_from(
        [
            *("", "-a", "a-", "A", "a_b", "a.b", " a", "pööl", "__foo__"),
            *("a" * 47, "a" * 48, "a" * 63, "a" * 64, "a" * 10_000),
        ]
    ),
    st.text(alphabet=st.sampled_from("abz09-_.AÄéЖ :/\n\t"), max_size=70),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
).map(_named)


def _duplicate_key(key: str) -> Mutation:
    def build(base: Base) -> Outcome:
        line = dump({key: base.data[key]}) if key in base.data else f"{key}: 1\n"
        needle = (f'found duplicate key "{key}"',)
        return Outcome(dump(base.data) + line, needle, needle)

    return Mutation(f"duplicate key {key}", build)


def _duplicate_nested_key(base: Base) -> Outcome:
    data = {k: v for k, v in base.data.items() if k != "frontends"}
    first = base.data["frontends"][0]
    port, service_port = first["port"], first["servicePort"]
    text = dump(data) + f"frontends:\n- port: {port}\n  port: {port}\n  servicePort: {service_port}\n"
    return Outcome(text, ('found duplicate key "port"',), ('found duplicate key "port"',))


DUPLICATE_KEYS = pick(
    st.sampled_from(["name", "cpus", "memory", "size", "frontends", "strategies"]).map(_duplicate_key),
    st.just(Mutation("duplicate key frontends[0].port", _duplicate_nested_key)),
)


def _text(label: str, text: str | None, create: Verdict, edit: Verdict) -> Mutation:
    return Mutation(label, lambda base: Outcome(text, create, edit))


EMPTY = st.sampled_from(
    [
        _text("no annotation", None, None, (REMOVED,)),
        _text("empty annotation", "", None, (REMOVED,)),
        *(
            _text(f"empty document {t!r}", t, None, (NAME_CANNOT_CHANGE,))
            for t in ["  \n", "# nothing\n", "{}", "--- {}\n...\n"]
        ),
        *(_text(f"null document {t!r}", t, None, (NAME_CANNOT_CHANGE,)) for t in ["~", "null", "---\n"]),
        *(
            _text(f"not a mapping {t!r}", t, (NOT_A_MAPPING,), (NOT_A_MAPPING,))
            for t in ["[]", "- a", "42", "'text'", "true"]
        ),
    ]
)


def _role_network(role: Any, network: Any, create: Verdict, edit: Verdict) -> Mutation:
    def build(base: Base) -> Outcome:
        data = dict(base.data)
        data["role"] = role
        if network is not None:
            data["network"] = network
        return Outcome(dump(data), create, edit)

    return Mutation(f"role {role!r:.30} network {network!r:.30}", build)


# S8 (security review): a Mesos role (not "." or "..", no leading "-", no whitespace, "/", "\\" or
# control character) and a DC/OS virtual network name (CNI's: [A-Za-z0-9][A-Za-z0-9_.-]*, not
# host, bridge or default), written independently of engine.model.policy.
VALID_ROLES = st.text(
    alphabet=st.characters(exclude_categories=["Cc", "Cs", "Zs", "Zl", "Zp"], exclude_characters="/\\\x85"),
    min_size=1,
    max_size=12,
).filter(lambda r: r not in (".", "..", "slave_public") and not r.startswith("-"))
INVALID_ROLES = pick(
    st.sampled_from([".", "..", "-x", "a/b", "a\\b", "a b", "tenant\x1b[2J", "r\r\n"]),
    st.tuples(VALID_ROLES, st.sampled_from(["/", " ", "\t", "\x00", "\x7f", "\x9b"])).map("".join),
)
VALID_NETWORKS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True).filter(
    lambda n: n not in ("host", "bridge", "default")
)
INVALID_NETWORKS = pick(
    st.sampled_from(["host", "bridge", "default", "-net", ".net", "a b", "net\x1b", "ops/admin", "réseau"]),
)
ROLES = pick(
    st.just(_role_network("*", None, None, (ROLE_CANNOT_CHANGE,))),
    st.tuples(VALID_ROLES, VALID_NETWORKS).map(
        lambda rn: _role_network(rn[0], rn[1], None, (ROLE_CANNOT_CHANGE,))
    ),
    INVALID_ROLES.map(lambda r: _role_network(r, "dcos", ("role: ",), ("role: ",))),
    st.tuples(VALID_ROLES, INVALID_NETWORKS).map(
        lambda rn: _role_network(rn[0], rn[1], ("network: ",), ("network: ",))
    ),
    st.just(_role_network("", None, ("role: ",), ("role: ",))),
    st.text(PRINTABLE, min_size=1, max_size=12).map(
        lambda n: _role_network("slave_public", n, ("network: ",), ("network: ",))
    ),
    st.just(_role_network("*", "", ("network: ",), ("network: ",))),
)


def _frontends(label: str, change: Callable[[list[dict[str, Any]]], Verdict]) -> Mutation:
    def build(base: Base) -> Outcome:
        data = copy.deepcopy(base.data)
        verdict = change(data["frontends"])
        return Outcome(dump(data), verdict, verdict)

    return Mutation(label, build)


def _repeat_port(fes: list[dict[str, Any]]) -> Verdict:
    fes.append({"port": fes[0]["port"], "servicePort": UNKNOWN_SERVICE_PORT - 1})
    return (f"frontends[{len(fes) - 1}].port: ",)


def _repeat_service_port(fes: list[dict[str, Any]]) -> Verdict:
    fes.append({"port": FIRST_BIND_PORT - 1, "servicePort": fes[0]["servicePort"]})
    return (f"frontends[{len(fes) - 1}].servicePort: ",)


def _stale_entry(fes: list[dict[str, Any]]) -> Verdict:
    fes.append({"port": FIRST_BIND_PORT - 2, "servicePort": UNKNOWN_SERVICE_PORT - 2})
    return None


def _without(key: str) -> Callable[[list[dict[str, Any]]], Verdict]:
    def change(fes: list[dict[str, Any]]) -> Verdict:
        del fes[0][key]
        # No port: the frontend binds its service port (the Go dklb's default).
        return None if key == "port" else (f"frontends[0].{key}: the field is required",)

    return change


def _default_clash(fes: list[dict[str, Any]]) -> Verdict:
    known = [fe for fe in fes if fe["servicePort"] != UNKNOWN_SERVICE_PORT]
    if len(known) < 2:
        return None  # nothing to clash with: the entry list is left as it is
    # The first port bound where the second port's default frontend binds.
    fes[:] = [{"port": known[1]["servicePort"], "servicePort": known[0]["servicePort"]}]
    return ("frontends: frontend port",)


def _dropped(base: Base) -> Outcome:
    return Outcome(dump({k: v for k, v in base.data.items() if k != "frontends"}), None, None)


FRONTENDS = st.sampled_from(
    [
        _frontends("a bind port twice", _repeat_port),
        _frontends("a service port twice", _repeat_service_port),
        _frontends("an entry for a port the Service lacks", _stale_entry),
        _frontends("an entry without port", _without("port")),
        _frontends("an entry without servicePort", _without("servicePort")),
        _frontends("a default frontend port clash", _default_clash),
        Mutation("no frontends field", _dropped),
    ]
)


def _constraints_twice(base: Base) -> Outcome:
    data = {**base.data, "constraints": "a", "contraints": "b"}
    return Outcome(dump(data), ("constraints: ",), ("constraints: ",))


CONSTRAINTS = pick(
    VALID_CONSTRAINTS.map(lambda c: setting(("contraints",), c, None, None)),
    st.just(Mutation("constraints and contraints", _constraints_twice)),
)


def _cloud(value: str, create: Verdict, edit: Verdict, *, name: str | None = None) -> Mutation:
    def build(base: Base) -> Outcome:
        data = {k: v for k, v in base.data.items() if k != "name"}
        if name is not None:
            data = {"name": name, **data}
        data["cloudProviderConfiguration"] = value
        return Outcome(dump(data), create, edit)

    return Mutation(f"cloudProviderConfiguration {value!r:.40} name {name!r}", build)


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


CLOUD_ELB = '{"aws": {"elbs": [{"name": "fuzz-elb"}]}}'
CLOUD = pick(
    st.text(max_size=20)
    .filter(lambda t: t != "" and _not_json(t))
    .map(lambda t: _cloud(t, ("cloudProviderConfiguration: ",), ("cloudProviderConfiguration: ",))),
    st.sampled_from(["[]", "5", '"x"', "null", "true"]).map(
        lambda t: _cloud(t, ("cloudProviderConfiguration: ",), ("cloudProviderConfiguration: ",))
    ),
    st.sampled_from(
        [
            '{"aws": {"elb": []}}',  # EdgeLB would drop it silently: no load balancer
            '{"aws": {"elbs": [{"name": "x", "listeners": [{"port": 1000, "linkFrontend": "nope"}]}]}}',
            '{"aws": {"elbs": [{"name": "x", "type": "ALB"}]}}',
        ]
    ).map(lambda t: _cloud(t, ("cloudProviderConfiguration.aws",), ("cloudProviderConfiguration.aws",))),
    st.just(_cloud("", None, (NAME_CANNOT_CHANGE,))),  # "" is no cloud: a nameless object
    # Adding a cloud load balancer moves the Service to a new cloud pool, as in the Go dklb.
    st.sampled_from(["{}", CLOUD_ELB]).map(lambda t: _cloud(t, None, MOVES)),
    st.just(_cloud("{}", None, MOVES, name="cloud--fuzz")),
    st.just(_cloud("{}", None, MOVES, name=POOL)),  # not "cloud...": a cloud-- name is drawn, with a warning
)

# Arbitrary text: whatever it is, check_service's verdict must be what the controller does.
YAML_PIECES = [
    *(
        "name:",
        "cpus:",
        "frontends:",
        "port:",
        "servicePort:",
        "strategies:",
        "creation:",
        " ",
        "  ",
        "\n",
        "\t",
    ),
    *(
        "- ",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "&a ",
        "*a",
        "<<: *a",
        "? ",
        "'",
        '"',
        "#",
        "---",
        "...",
        "%YAML 1.1\n",
    ),
    *("!!python/object/apply:os.system ['true']", "!!binary aGk=", "!!set {a}", "!!timestamp 2001-12-14"),
    *("pool-a", "Ä", "\u2028", "\x00", "1e400", "0x1F", "0o17", "1_000", ".inf", "~", "yes", "1000", "40000"),
]
FIELD_NAMES = st.sampled_from([*sorted(KNOWN_FIELDS), "port", "servicePort", "creation", "other"])
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(FIELD_NAMES, children, max_size=4),
    max_leaves=12,
)
LAUGHS = "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
)
ARBITRARY = pick(
    st.text(max_size=120),
    st.lists(st.sampled_from(YAML_PIECES), max_size=12).map("".join),
    YAML_VALUES.map(dump),
    st.integers(1, 600).map(lambda n: "name: " + "[" * n + "]" * n),
    st.just("a: &a [x, x, x, x, x, x, x, x, x]\n" + LAUGHS + "name: *h\n"),
).map(lambda text: _text(f"text {text!r:.200}", text, ORACLE, ORACLE))

# S4, S5, S8, S9 (security review): the hostile annotations, each with the error it must give.
HOSTILE = st.sampled_from(hostile.ALL).map(
    lambda h: _text(f"hostile: {h.id}", h.text, (h.needle,), (h.needle,))
)

MUTATIONS = pick(
    HOSTILE,
    WRONG_TYPES,
    NULLS,
    OUT_OF_RANGE,
    HUGE_OR_ODD_VALID,
    OVER_LIMITS,
    UNKNOWN_KEYS,
    NAMES,
    DUPLICATE_KEYS,
    EMPTY,
    ROLES,
    FRONTENDS,
    CONSTRAINTS,
    CLOUD,
    ARBITRARY,
)

# --- Service specs -------------------------------------------------------------------------------

PORT_ENTRIES = st.fixed_dictionaries(
    {"port": pick(st.sampled_from(SERVICE_PORTS), st.sampled_from([0, -1, 65536, 70000]))},
    optional={
        "protocol": st.sampled_from(["TCP", "TCP", "UDP", "SCTP", "", None, "tcp", "HTTP"]),
        "nodePort": pick(st.integers(30000, 32767), st.just(0)),
        "name": st.text(max_size=10),
    },
)
ODD_PORTS = st.lists(PORT_ENTRIES, max_size=4)
TCP_PORTS = st.lists(
    st.fixed_dictionaries(
        {"port": st.sampled_from(SERVICE_PORTS), "protocol": st.just("TCP")},
        optional={"nodePort": st.integers(30000, 32767), "name": st.text(max_size=10)},
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda entry: entry["port"],
)
PORTS = pick(st.just(DEFAULT_SPEC_PORTS), TCP_PORTS, ODD_PORTS)
TYPES = st.sampled_from(["LoadBalancer"] * 12 + ["ClusterIP", "NodePort", "ExternalName", None])


@dataclass(frozen=True)
class Spec:
    type: str | None
    ports: list[dict[str, Any]]

    @property
    def exposed(self) -> tuple[int, ...]:
        return exposed_ports(self.ports)

    @property
    def load_balancer(self) -> bool:
        return self.type == "LoadBalancer"


SPECS = st.builds(Spec, TYPES, PORTS)


# --- the world -----------------------------------------------------------------------------------


class LogTrap(logging.Handler):
    """Every warning or error the controller logs: a caught handler exception is a crash."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        found = [f"{r.name}: {r.getMessage()} {r.exc_info[1] if r.exc_info else ''}" for r in self.records]
        self.records.clear()
        return found


class Worlds:
    """One world for many examples (a fresh SQLite file costs migrations); a new one after a failure."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self.world = self._new()
        self.trap = LogTrap()
        self.stories: collections.Counter[str] = collections.Counter()

    def _new(self) -> World:
        self.count += 1
        path = self.directory / f"world-{self.count}"
        path.mkdir()
        return World(path)

    def clean(self) -> World:
        w = self.world
        if w.kube.list() or w.store.bindings() or w.edgelb.names():
            w.store.close()
            self.world = self._new()
        return self.world


@pytest.fixture
def worlds() -> Iterator[Worlds]:
    """Shared by every example of one test (hence HealthCheck.function_scoped_fixture below)."""
    directory = Path(tempfile.mkdtemp(prefix="dklb-bad-input-"))
    holder = Worlds(directory)
    logger = logging.getLogger("dklb")
    logger.addHandler(holder.trap)
    try:
        yield holder
    finally:
        # The figures of the run (pytest -s shows them).
        print(f"\nbad input: {holder.stories.total() // 2} examples")
        for story, count in sorted(holder.stories.items()):
            print(f"  {count:5}  {story}")
        logger.removeHandler(holder.trap)
        holder.world.store.close()
        shutil.rmtree(directory, ignore_errors=True)


def service(name: str, spec: Spec, text: str | None) -> dict[str, Any]:
    annotations = {} if text is None else {ANNOTATION: text}
    body: dict[str, Any] = {"ports": copy.deepcopy(spec.ports)}
    if spec.type is not None:
        body["type"] = spec.type
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations},
        "spec": body,
        "status": {},
    }


def key(name: str) -> str:
    return f"{NAMESPACE}/{name}"


def warnings_since(w: World, start: int, name: str) -> list[dict[str, str]]:
    return [e for e in w.kube.events[start:] if e["key"] == key(name) and e["type"] == "Warning"]


def ingress(w: World, name: str) -> list[dict[str, str]]:
    stored = w.kube.get(key(name)) or {}
    return ((stored.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


def generic(message: str) -> str:
    """``message`` with generated pool names (random suffix) replaced by one placeholder."""
    return GENERATED_NAME.sub("<generated>", message)


def judge(svc: dict[str, Any], previous: PoolConfig | None) -> Any:
    return check_service(
        svc,
        previous=previous,
        cluster_name=CLUSTER,
        default_size=1,
        pool_group=ADMISSION.pool_group,
        rng=random.Random(0),
    )


def oracle(svc: dict[str, Any], previous: PoolConfig | None) -> Verdict:
    check = judge(svc, previous)
    if check.errors:
        return tuple(generic(e) for e in check.errors)
    if previous is not None and check.config.name != previous.name:
        return MOVES  # only a cloud configuration added frees the name
    return None


def with_ports(verdict: Verdict, spec: Spec) -> Verdict:
    """A Service without TCP port is refused too (after the configuration's own errors)."""
    if spec.exposed:
        return verdict
    return (*(verdict or ()), NO_TCP_PORT)


def admission(
    operation: str, obj: dict[str, Any], old: dict[str, Any] | None, *, mutate: bool
) -> dict[str, Any]:
    document = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "fuzz",
            "kind": {"group": "", "version": "v1", "kind": "Service"},
            "operation": operation,
            "object": obj,
            "oldObject": old,
        },
    }
    return review(document, settings=ADMISSION, mutate=mutate, rng=random.Random(0))["response"]


def assert_admission(
    operation: str, obj: dict[str, Any], old: dict[str, Any] | None, verdict: Verdict
) -> None:
    """The webhooks: the mutating one allows, the validating one refuses exactly ``verdict``,
    except a Service without TCP port, which it lets in with a warning (another controller's)."""
    assert admission(operation, obj, old, mutate=True)["allowed"] is True
    answer = admission(operation, obj, old, mutate=False)
    if verdict is not None and NO_TCP_PORT in verdict:
        assert any(w.startswith(NO_TCP_PORT) for w in answer.get("warnings", [])), answer
        verdict = tuple(n for n in verdict if n != NO_TCP_PORT) or None
    if verdict is None:
        assert answer["allowed"] is True, answer
        return
    assert answer["allowed"] is False and answer["status"]["code"] == 403, answer
    message = answer["status"]["message"]
    assert message and all(n in generic(message) for n in verdict), (verdict, message)


def assert_rejected(w: World, name: str, start: int, verdict: tuple[str, ...]) -> str:
    binding = w.binding(key(name))
    assert binding is not None and binding.state == "Rejected", binding and (
        binding.state,
        binding.last_error,
    )
    refusals = [e for e in warnings_since(w, start, name) if e["reason"] == "InvalidConfiguration"]
    assert refusals, f"no InvalidConfiguration Warning; got {warnings_since(w, start, name)}"
    message = refusals[-1]["message"]
    assert all(n in generic(message) for n in verdict), (verdict, message)
    assert binding.last_error == message
    return message


def assert_ready(w: World, name: str) -> None:
    binding = w.binding(key(name))
    assert binding is not None and binding.state == "Ready", binding and (binding.state, binding.last_error)
    assert ingress(w, name), "Ready with an address"
    assert w.edgelb.stored(binding.pool) is not None


def delete_all(w: World) -> None:
    for svc in w.kube.list():
        w.kube.delete(key(svc["metadata"]["name"]))
    w.settle()
    assert w.kube.list() == [], "every Service released"
    assert w.store.bindings() == []
    assert w.edgelb.names() == [], "no pool left behind"


# --- the property --------------------------------------------------------------------------------


def create_story(w: World, spec: Spec, mutation: Mutation) -> str:
    base = Base(base_config(spec.exposed), spec.exposed)
    outcome = mutation.build(base)
    svc = service(CREATED, spec, outcome.text)
    verdict = oracle(svc, None) if outcome.create is ORACLE else with_ports(outcome.create, spec)
    writes, calls, events = w.edgelb.writes(), sum(w.edgelb.calls.values()), len(w.kube.events)
    if spec.load_balancer:
        assert_admission("CREATE", svc, None, verdict)

    w.kube.apply(svc)
    w.settle()
    w.assert_invariants()

    if not spec.load_balancer:
        assert w.binding(key(CREATED)) is None, "a Service of another type is not ours"
        assert sum(w.edgelb.calls.values()) == calls and len(w.kube.events) == events
        assert FINALIZER not in (w.kube.get(key(CREATED)) or {})["metadata"]["finalizers"]
    elif verdict is None:
        assert_ready(w, CREATED)
        assert w.edgelb.writes() == writes + 1, "one POST creates the pool"
        pool = present(w.edgelb.stored(w.binding(key(CREATED)).pool))
        assert len(pool["haproxy"]["frontends"]) == len(spec.exposed), "one frontend per distinct TCP port"
    else:
        assert_rejected(w, CREATED, events, verdict)
        assert sum(w.edgelb.calls.values()) == calls, "an invalid Service never reaches EdgeLB"
        assert ingress(w, CREATED) == []
    delete_all(w)
    if spec.load_balancer and verdict is not None:
        assert w.edgelb.writes() == writes, "not even its deletion writes to EdgeLB"
    judged = "judged by check_service, " if outcome.create is ORACLE else ""
    if not spec.load_balancer:
        return "create: not a LoadBalancer, left alone"
    return f"create: {judged}{'Ready' if verdict is None else 'Rejected'}"


def edit_story(w: World, spec: Spec, mutation: Mutation, respec: Spec | None) -> str:
    """A Ready Service edited to the case (``respec``: its spec instead of its annotation)."""
    if not (spec.load_balancer and spec.exposed):
        spec = Spec("LoadBalancer", DEFAULT_SPEC_PORTS)
    base = Base(base_config(spec.exposed), spec.exposed)
    w.kube.apply(service(EDITED, spec, dump(base.data)))
    w.settle()
    assert_ready(w, EDITED)
    before = w.kube.get(key(EDITED))
    assert before is not None
    written = before["metadata"]["annotations"][ANNOTATION]
    binding = w.binding(key(EDITED))
    recorded = PoolConfig.from_dict(binding.config)
    pool, address = w.edgelb.stored(POOL), ingress(w, EDITED)
    writes, events = w.edgelb.writes(), len(w.kube.events)

    if respec is None:
        outcome = mutation.build(base)
        after = copy.deepcopy(before)
        if outcome.text is None:
            after["metadata"]["annotations"].pop(ANNOTATION)
        else:
            after["metadata"]["annotations"][ANNOTATION] = outcome.text
        verdict = oracle(after, recorded) if outcome.edit is ORACLE else outcome.edit
        released = False
        if verdict is MOVES:
            return cloud_switch(w, after, before, recorded)
    else:
        after = copy.deepcopy(before)
        after["spec"] = service(EDITED, respec, None)["spec"]
        released = not respec.load_balancer
        verdict = None if released else with_ports(None, respec)
    assert_admission("UPDATE", after, before, None if released else verdict)

    w.kube.apply(after)
    w.settle()
    w.assert_invariants()

    if released:
        assert w.binding(key(EDITED)) is None and w.edgelb.names() == [], "the pool goes with the type"
        assert (
            ingress(w, EDITED) == []
            and FINALIZER not in present(w.kube.get(key(EDITED)))["metadata"]["finalizers"]
        )
    elif verdict is None:
        assert_ready(w, EDITED)
    else:
        assert_rejected(w, EDITED, events, verdict)
        # The pool keeps serving exactly as before the edit.
        assert w.edgelb.stored(POOL) == pool and w.edgelb.writes() == writes, "EdgeLB untouched"
        assert ingress(w, EDITED) == address, "the Service keeps its address"
        assert FINALIZER in present(w.kube.get(key(EDITED)))["metadata"]["finalizers"]
        assert w.binding(key(EDITED)).pool == POOL
        assert {p.name: p.ref_count for p in w.store.pools()} == {POOL: 1}, "the binding still holds the pool"
        # Fixing the Service brings it back without touching EdgeLB.
        fixed = copy.deepcopy(present(w.kube.get(key(EDITED))))
        fixed["metadata"]["annotations"][ANNOTATION] = written
        fixed["spec"] = before["spec"]
        w.kube.apply(fixed)
        w.settle()
        assert_ready(w, EDITED)
        assert w.edgelb.stored(POOL) == pool and w.edgelb.writes() == writes, "fixing it writes nothing"
    delete_all(w)
    what = "annotation" if respec is None else "spec"
    if released:
        return f"edit {what}: type changed, pool released"
    return (
        f"edit {what}: {'Ready' if verdict is None else 'Rejected, pool kept serving, fixed back to Ready'}"
    )


def cloud_switch(w: World, after: dict[str, Any], before: dict[str, Any], recorded: PoolConfig) -> str:
    """The judgement of an edit adding a cloud load balancer: allowed, with a new cloud pool.

    Moving the binding to that pool (and off the old one) is the runtime's part, tested with it.
    """
    assert_admission("UPDATE", after, before, None)
    check = judge(after, recorded)
    assert check.errors == () and check.config is not None
    assert recorded.cloud_provider_configuration is None and check.config.cloud_provider_configuration
    assert check.config.name.startswith("cloud") and check.config.name != recorded.name
    assert check.config.network == ""
    delete_all(w)
    return "edit annotation: a cloud load balancer added, the Service moves to a new pool"


def check_case(worlds: Worlds, spec: Spec, mutation: Mutation, respec: Spec | None) -> None:
    w = worlds.clean()
    worlds.trap.take()  # what an earlier, failed example left
    for story in (create_story(w, spec, mutation), edit_story(w, spec, mutation, respec)):
        event(story)
        worlds.stories[story] += 1
    assert worlds.trap.take() == [], "the controller logged a warning or an error"


RESPECS = pick(st.none(), st.none(), st.none(), SPECS)


class HypothesisSettings(TypedDict):
    """The ``hypothesis.settings`` both property tests share."""

    database: None
    deadline: None
    derandomize: bool
    suppress_health_check: list[HealthCheck]


SETTINGS: HypothesisSettings = {
    "database": None,
    "deadline": None,
    "derandomize": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
}


@pytest.mark.slow
@settings(max_examples=1000, **SETTINGS)
@given(spec=SPECS, mutation=MUTATIONS, respec=RESPECS)
def test_a_thousand_bad_inputs_never_crash_and_never_reach_edgelb(
    worlds: Worlds, spec: Spec, mutation: Mutation, respec: Spec | None
) -> None:
    check_case(worlds, spec, mutation, respec)


@settings(max_examples=200, **SETTINGS)
@given(spec=SPECS, mutation=MUTATIONS, respec=RESPECS)
def test_bad_inputs_never_crash_and_never_reach_edgelb(
    worlds: Worlds, spec: Spec, mutation: Mutation, respec: Spec | None
) -> None:
    check_case(worlds, spec, mutation, respec)


# --- hostile annotations at the controller (security review S4, S5) ------------------------------


@pytest.mark.parametrize("case", [pytest.param(h, id=h.id) for h in hostile.ALL])
def test_a_hostile_annotation_ends_rejected_with_one_short_warning(
    tmp_path: Path, case: hostile.Hostile
) -> None:
    """S5 (security review): the binding looped in Pending with a HandlerError Warning and a
    full traceback on every retry. S4: one rejection posted a 5 MB Warning Event. Now it ends
    Rejected at once: one InvalidConfiguration Warning of at most 1 KiB, nothing logged above
    INFO, nothing sent to EdgeLB; time passing adds nothing."""
    w = World(tmp_path)
    trap = LogTrap()
    logging.getLogger("dklb").addHandler(trap)
    try:
        w.kube.apply(service(CREATED, Spec("LoadBalancer", DEFAULT_SPEC_PORTS), case.text))
        w.settle()
        w.advance(3600)
        w.settle()
    finally:
        logging.getLogger("dklb").removeHandler(trap)

    binding = w.binding(key(CREATED))
    assert binding.state == "Rejected" and binding.attempts == 0, (binding.state, binding.last_error)
    warnings = w.kube.events_for(key(CREATED), type="Warning")
    assert [e["reason"] for e in warnings] == ["InvalidConfiguration"]
    message = warnings[0]["message"]
    assert len(message.encode()) <= MAX_EVENT_MESSAGE_BYTES
    assert case.needle in message or message.endswith("bytes, cut)")
    assert trap.take() == []
    assert sum(w.edgelb.calls.values()) == 0
    w.store.close()


def test_a_handler_error_logs_its_traceback_once_per_binding_and_error_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """S4 (security review): a 731-byte annotation logged a traceback of about 220 KB on every
    retry, forever. A handler that keeps failing the same way now logs one traceback, then one
    line per retry; a new error type logs its own traceback once."""
    failure: list[Exception] = [ValueError("x" * 100_000)]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise failure[0]

    monkeypatch.setattr(pending, "check_service", broken)
    w = World(tmp_path)
    caplog.set_level(logging.INFO, logger="dklb")
    w.kube.apply(service(CREATED, Spec("LoadBalancer", DEFAULT_SPEC_PORTS), "name: p"))
    for _ in range(4):
        w.step()
        w.advance(600)
    failure[0] = TypeError("y")
    for _ in range(3):
        w.advance(600)

    failed = [r for r in caplog.records if "failed for" in r.getMessage()]
    tracebacks = [r for r in failed if r.exc_info]
    assert [type(r.exc_info[1]).__name__ for r in tracebacks if r.exc_info] == ["ValueError", "TypeError"]
    assert len(failed) > len(tracebacks) >= 2, "the retries are logged, as one line each"
    assert all(len(r.getMessage().encode()) <= 2 * MAX_EVENT_MESSAGE_BYTES for r in failed)
    binding = w.binding(key(CREATED))
    assert binding.state == "Pending" and len((binding.last_error or "").encode()) <= MAX_EVENT_MESSAGE_BYTES
    assert all(len(e["message"].encode()) <= MAX_EVENT_MESSAGE_BYTES for e in w.kube.events_for(key(CREATED)))
    w.store.close()
