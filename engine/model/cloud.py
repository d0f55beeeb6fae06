"""The ``cloudProviderConfiguration``: EdgeLB's ``cloudProvider``, checked before EdgeLB sees it (pure).

Where it sits in the data flow: ``engine.model.parse`` hands it the annotation's
``cloudProviderConfiguration`` (a string holding JSON) and the names of the frontends dklb makes
for the Service; the text is kept verbatim in the ``PoolConfig``, and
``engine.model.translation.link_listeners`` later links the listeners the user left unlinked.

EdgeLB drops unknown fields without a word (an ``elb`` for ``elbs``: no load balancer is ever
made) and refuses, for ever, a pool whose listener links no frontend. Both are errors here, so
that the webhook refuses them and the controller rejects the Service instead of retrying.

The shape, from EdgeLB's cloud-connector documentation (1.5 to 1.7), the same in every version::

    {"aws": {"elbs": [{"name", "type": "NLB", "internal": bool, "subnets": [str],
                       "elasticIPs": [str], "tags": [{"key", "value"}],
                       "listeners": [{"port": 1-65535, "protocol": "TCP"|"TLS",
                                      "tls": {"policy", "certificates": [str]},
                                      "linkFrontend": str}],
                       "accessLogS3Location": str, "deletionProtection": bool, "arn": str}]}}

JSON is strict (no duplicate keys, no NaN, at most 16 KiB), except that a ``null`` field means
"not given", as it does to EdgeLB (Go's encoding/json).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.model.config import show
from engine.model.report import Report, is_integer, kind, reject_unknown_fields, without_nulls

ELB_TYPES = ("NLB",)
LISTENER_PROTOCOLS = ("TCP", "TLS")

Check = Callable[[Any, str, Report], None]
#: Deeper than any cloudProviderConfiguration (``aws.elbs[].listeners[].tls.certificates[]`` is 8).
MAX_DEPTH = 32
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def check_cloud_provider(
    text: str, report: Report, *, path: str, frontends: Mapping[int, str] | None
) -> None:
    """Report everything wrong with ``text`` under ``path``.

    ``frontends`` maps each servicePort to the name of its frontend (the Service's objects);
    None when the Service is unknown (listeners are then not checked against frontends).
    """
    if _depth(text) > MAX_DEPTH:
        # Checked before decoding: json's RecursionError comes at a depth that depends on the
        # caller's stack, so the same text would be judged differently in different places.
        report.error(path, "the cloud-provider configuration is not valid JSON: it is nested too deeply")
        return
    try:
        decoded = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant, parse_int=_bounded_int
        )
    except RecursionError:
        report.error(path, "the cloud-provider configuration is not valid JSON: it is nested too deeply")
        return
    except ValueError as e:  # json.JSONDecodeError included
        report.error(path, f"the cloud-provider configuration is not valid JSON: {e}")
        return
    if not isinstance(decoded, dict):
        report.error(path, f"the cloud-provider configuration must be a JSON object, got {kind(decoded)}")
        return
    errors_before = len(report.errors)
    _CLOUD_PROVIDER(decoded, path, report)
    if frontends is not None and len(report.errors) == errors_before:
        _check_links(decoded, path, frontends, report)


def _no_duplicate_keys(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {show(key)}")
        result[key] = value
    return result


def _depth(text: str) -> int:
    """How deep ``text``'s arrays and objects nest (strings left out), without recursion."""
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _bounded_int(text: str) -> int:
    # Python refuses to convert more than 4,300 digits, with a message about sys; no field takes
    # more than 2^53 (16 digits).
    digits = len(text.lstrip("-"))
    if digits > 16:
        raise ValueError(f"an integer of {digits:,} digits is out of range")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


# --- the shape -----------------------------------------------------------------------------------


def _string(value: Any, path: str, report: Report) -> None:
    if not isinstance(value, str):
        report.error(path, f"{show(value)} is not a string")


def _boolean(value: Any, path: str, report: Report) -> None:
    if not isinstance(value, bool):
        report.error(path, f"{show(value)} is not a boolean")


def _port(value: Any, path: str, report: Report) -> None:
    if not is_integer(value):
        report.error(path, f"{show(value)} is not an integer")
    elif not 1 <= value <= 65535:
        report.error(path, f"{show(value)} is not a valid port number")


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any, path: str, report: Report) -> None:
        if value not in choices or not isinstance(value, str):
            report.error(path, f"{show(value)} is not one of {', '.join(choices)}")

    return check


def _list_of(item: Check) -> Check:
    def check(value: Any, path: str, report: Report) -> None:
        if not isinstance(value, list):
            report.error(path, f"{show(value)} is not a list")
            return
        for i, entry in enumerate(value):
            item(entry, f"{path}[{i}]", report)

    return check


def _object(fields: Mapping[str, Check], required: tuple[str, ...] = ()) -> Check:
    def check(value: Any, path: str, report: Report) -> None:
        if not isinstance(value, dict):
            report.error(path, f"{show(value)} is not an object")
            return
        reject_unknown_fields(value, fields, path, report)
        given = without_nulls(value)
        for name in required:
            if name not in given:
                report.error(f"{path}.{name}", "the field is required")
        for name, entry in given.items():
            if name in fields:
                fields[name](entry, f"{path}.{name}", report)

    return check


_LISTENER = _object(
    {
        "port": _port,
        "protocol": _one_of(LISTENER_PROTOCOLS),
        "tls": _object({"policy": _string, "certificates": _list_of(_string)}),
        "linkFrontend": _string,
    },
    required=("port",),
)
_ELB = _object(
    {
        "name": _string,
        "type": _one_of(ELB_TYPES),
        "internal": _boolean,
        "subnets": _list_of(_string),
        "elasticIPs": _list_of(_string),
        "tags": _list_of(_object({"key": _string, "value": _string}, required=("key",))),
        "listeners": _list_of(_LISTENER),
        "accessLogS3Location": _string,
        "deletionProtection": _boolean,
        "arn": _string,
    },
    required=("name",),
)
_CLOUD_PROVIDER = _object({"aws": _object({"elbs": _list_of(_ELB)})})


# --- the listeners' frontends --------------------------------------------------------------------


def _check_links(cloud: dict[str, Any], path: str, frontends: Mapping[int, str], report: Report) -> None:
    """Every listener must end up linking a frontend of this Service, as ``link_listeners`` links."""
    names = list(frontends.values())
    shown = ", ".join(show(n) for n in names) if names else "none: the Service has no TCP port"
    elbs = ((cloud.get("aws") or {}).get("elbs")) or []
    for i, elb in enumerate(elbs):
        for j, listener in enumerate(elb.get("listeners") or []):  # none: one per frontend
            where = f"{path}.aws.elbs[{i}].listeners[{j}]"
            link, port = listener.get("linkFrontend"), listener.get("port")
            if link:
                if link not in names:
                    report.error(
                        f"{where}.linkFrontend",
                        f"{show(link)} is not a frontend of this Service (its frontends: {shown})",
                    )
            elif port not in frontends and len(names) != 1:
                report.error(
                    where,
                    f"the listener on port {port} has no linkFrontend, and the Service has no TCP port "
                    f"{port} to link it to: give linkFrontend (the Service's frontends: {shown})",
                )
