"""The operator's bounds on pool-level values, and the shapes dklb hands on to EdgeLB unchecked (pure).

Where it sits in the data flow: ``engine.model.checks.check_service`` (the Pending handler, the
admission webhook and ``dklb plan``) parses a Service's annotation into a ``PoolConfig``, then
hands it here with the ``Limits`` of ``engine.model.settings.Settings``; ``check_pool`` returns
every problem, each naming the field, the value and the flag that bounds it. A Service with one
is Rejected like any invalid configuration: nothing reaches EdgeLB. ``engine.cli.options`` builds
``Limits`` from the flags named here, and judges the names an operator lists with the same
``role_problem`` and ``network_problem``.

Why bounds at all: a pool's size, CPU share and memory are resources of the DC/OS cluster, its
role decides whose reserved resources it takes, its virtual network whom it can reach. A Service
author in a shared cluster must not be able to ask for 10^12 HAProxy instances, another team's
Mesos role or the operator's overlay network. ``constraints`` reaches the DC/OS SDK's placement
parser verbatim and the defaulted configuration is written back into the annotation: both are
bounded so that a refusal happens here, with a message, and not as a pool that never deploys or
an annotation write Kubernetes refuses on every retry.

The defaults bound nothing the seed's documentation shows (size 3, 0.2 CPUs, 512 MiB, roles
``slave_public`` and ``*``, network ``dcos``) and allow every role and network name that Mesos
and DC/OS accept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine.model.config import PoolConfig, show

MAX_POOL_SIZE_FLAG = "--max-pool-size"
MAX_POOL_CPUS_FLAG = "--max-pool-cpus"
MAX_POOL_MEMORY_FLAG = "--max-pool-memory"
ALLOWED_POOL_ROLES_FLAG = "--allowed-pool-roles"
ALLOWED_POOL_NETWORKS_FLAG = "--allowed-pool-networks"

#: ``constraints`` is a one-line placement rule; 1 KiB holds dozens of rows.
MAX_CONSTRAINTS_BYTES = 1024

#: The DC/OS SDK's placement operators (``MarathonConstraintParser``), in any case; the set of
#: those whose value is required and those whose value is a count.
CONSTRAINT_OPERATORS = ("UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS")
_VALUE_REQUIRED = frozenset({"CLUSTER", "LIKE", "UNLIKE", "MAX_PER", "IS"})
_COUNT_VALUE = frozenset({"MAX_PER", "GROUP_BY"})
_COUNT = re.compile(r"[0-9]{1,9}")  # the SDK reads it with Java's Integer.parseInt

# A CNI network name (DC/OS overlay networks are CNI networks too): an alphanumeric, then
# alphanumerics, "_", "." or "-". Docker reserves these for its own networks.
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_RESERVED_NETWORKS = ("host", "bridge", "default")


@dataclass(frozen=True)
class Limits:
    """What the operator allows a pool to ask for (flags of ``dklb run`` and ``dklb plan``)."""

    max_pool_size: int = 32
    max_pool_cpus: float = 16.0
    max_pool_memory: int = 32768  # MiB, as the annotation's memory
    # None: any valid Mesos role / DC/OS virtual network name. The host network is no virtual
    # network: it is always allowed (only public and cloud pools run on it; roles govern those).
    allowed_roles: tuple[str, ...] | None = None
    allowed_networks: tuple[str, ...] | None = None


#: The defaults: every configuration of the seed's documentation is within them.
DEFAULT_LIMITS = Limits()


def check_pool(config: PoolConfig, limits: Limits) -> list[str]:
    """Every way ``config`` leaves the operator's bounds or a shape EdgeLB passes on unchecked."""
    errors = _bounds(config, limits) + _role(config.role, limits.allowed_roles)
    errors += _network(config.network, limits.allowed_networks)
    if config.constraints is not None:
        problem = constraints_problem(config.constraints)
        if problem:
            errors.append(f"constraints: {problem}")
    return errors


def _bounds(config: PoolConfig, limits: Limits) -> list[str]:
    over = "is over this cluster's limit of"
    errors = []
    if config.size > limits.max_pool_size:
        errors.append(f"size: {_amount(config.size)} {over} {limits.max_pool_size} ({MAX_POOL_SIZE_FLAG})")
    if config.cpus > limits.max_pool_cpus:
        errors.append(f"cpus: {_amount(config.cpus)} {over} {limits.max_pool_cpus:g} ({MAX_POOL_CPUS_FLAG})")
    if config.memory > limits.max_pool_memory:
        errors.append(
            f"memory: {_amount(config.memory)} (MiB) {over} {limits.max_pool_memory} MiB "
            f"({MAX_POOL_MEMORY_FLAG})"
        )
    return errors


def _amount(value: float) -> str:
    """``show(value)``, or its size in bits for an integer too long to print (Python refuses to
    print one of more than 4300 digits)."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    return show(value)


def _role(role: str, allowed: Sequence[str] | None) -> list[str]:
    problem = role_problem(role)
    if problem:
        return [f"role: {show(role)} is not a valid Mesos role: {problem}"]
    if allowed is not None and role not in allowed:
        shown = _list(allowed)
        return [f"role: {show(role)} is not a role this cluster allows ({ALLOWED_POOL_ROLES_FLAG}: {shown})"]
    return []


def _network(network: str, allowed: Sequence[str] | None) -> list[str]:
    if not network:
        return []  # the host network
    problem = network_problem(network)
    if problem:
        return [f"network: {show(network)} is not a valid DC/OS virtual network name: {problem}"]
    if allowed is not None and network not in allowed:
        shown = _list(allowed) if allowed else "none, only the host network"
        return [
            f"network: {show(network)} is not a virtual network this cluster allows "
            f"({ALLOWED_POOL_NETWORKS_FLAG}: {shown})"
        ]
    return []


def _list(names: Sequence[str]) -> str:
    return ", ".join(show(n) for n in names)


# --- names ---------------------------------------------------------------------------------------


def control_characters(text: str) -> bool:
    """Whether ``text`` holds a C0 or C1 control character or DEL (a terminal escape, a line break)."""
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def role_problem(role: str) -> str | None:
    """Why ``role`` is no Mesos role name, or None: Marathon's and Mesos' rules (a role is a
    directory name: not empty, "." or "..", no leading "-", no whitespace, "/" or DEL), plus no
    control character or backslash at all."""
    if not role:
        return "it is empty"
    if role in (".", ".."):
        return f"{show(role)} is reserved"
    if role.startswith("-"):
        return 'it starts with "-"'
    if control_characters(role):
        return "it contains a control character"
    if any(c.isspace() for c in role):
        return "it contains whitespace"
    for c in ("/", "\\"):
        if c in role:
            return f"it contains {show(c)}"
    return None


def network_problem(name: str) -> str | None:
    """Why ``name`` is no DC/OS virtual network name, or None: a CNI network name (an
    alphanumeric, then alphanumerics, "_", "." or "-"), not one Docker reserves."""
    if not _NETWORK_NAME.fullmatch(name):
        return 'it must start with a letter or digit, followed by letters, digits, "_", "." or "-"'
    if name in _RESERVED_NETWORKS:
        return f"{show(name)} is reserved (leave network empty for the host network)"
    return None


# --- constraints ---------------------------------------------------------------------------------


def constraints_problem(text: str) -> str | None:
    """Why the DC/OS SDK could not place a pool with ``text``, or None.

    The two forms its ``MarathonConstraintParser`` reads: JSON, ``[["hostname","UNIQUE"],
    ["@zone","GROUP_BY","3"]]`` (or one flat row), and Marathon's UI form ``hostname:UNIQUE,
    @zone:GROUP_BY:3`` (rows split on ",", fields on ":", "\\" escaping either). Empty and ``[]``
    place nothing. Each row is ``field:OPERATOR[:value]``.
    """
    size = len(text.encode("utf-8"))
    if size > MAX_CONSTRAINTS_BYTES:
        return f"{show(text)} is {size} bytes, over the limit of {MAX_CONSTRAINTS_BYTES}"
    if any(not " " <= c <= "~" for c in text):
        return f"{show(text)} holds a character other than printable ASCII"
    if not text:
        return None
    if text.lstrip().startswith("["):
        rows = _json_rows(text)
        if isinstance(rows, str):
            return f"{show(text)} is not a JSON list of [field, operator, value] lists: {rows}"
    else:
        rows = [_escaped_split(row, ":") for row in _escaped_split(text, ",")]
    for row in rows:
        problem = _row_problem(row)
        if problem:
            return f"{show(text)}: {problem}"
    return None


def _json_rows(text: str) -> list[list[str]] | str:
    """The rows of the JSON form, or why there are none."""
    try:
        value = json.loads(text)
    except RecursionError:
        return "it is nested too deeply"
    except ValueError as e:
        return f"not valid JSON ({e})"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [value] if value else []  # one flat row, as the SDK also reads it
    if isinstance(value, list) and all(
        isinstance(row, list) and all(isinstance(v, str) for v in row) for row in value
    ):
        return value
    return "every entry must be a list of strings"


def _escaped_split(text: str, separator: str) -> list[str]:
    """``text`` split on ``separator`` unless "\\" escapes it, each part trimmed (the SDK's rule)."""
    parts, current, escaped = [], [], False
    for c in text:
        if escaped:
            current.append(c if c == separator else "\\" + c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == separator:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(c)
    if escaped:
        current.append("\\")
    parts.append("".join(current).strip())
    return parts


def _row_problem(row: Sequence[str]) -> str | None:
    shown = ":".join(row)
    if not 2 <= len(row) <= 3 or not row[0]:
        return f"{show(shown)} is not field:OPERATOR or field:OPERATOR:value"
    operator = row[1].upper()
    if operator not in CONSTRAINT_OPERATORS:
        return f"{show(row[1])} is not a placement operator (one of {', '.join(CONSTRAINT_OPERATORS)})"
    if len(row) == 2 and operator in _VALUE_REQUIRED:
        return f"{show(shown)}: {operator} needs a value"
    if len(row) == 3 and operator in _COUNT_VALUE and not _COUNT.fullmatch(row[2]):
        return f"{show(shown)}: the value of {operator} must be a whole number"
    return None
