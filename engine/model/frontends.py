"""The ``frontends`` of the configuration object: which bind port each Service port gets (pure).

Where it sits: ``engine.model.parse`` hands it the annotation's ``frontends`` list and the
Service's TCP ports; every port gets one frontend, bound to the port an entry maps it to, or to
the service port itself (the Go dklb's default). Entries for ports the Service does not have are
warned about and ignored; duplicates and clashes are errors, each naming the entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.model.config import Frontend, show
from engine.model.report import Report, is_integer, reject_unknown_fields, without_nulls

_FRONTEND_FIELDS = ("port", "servicePort")
#: A field left out, or given as null (``without_nulls`` drops those): its default applies.
MISSING: Any = object()


@dataclass(frozen=True)
class _Entry:
    """One ``frontends[i]`` item as given; a port is None when it was missing or invalid."""

    index: int
    port: int | None
    service_port: int | None


def frontends(data: Mapping[Any, Any], report: Report, service_ports: Sequence[int]) -> tuple[Frontend, ...]:
    value = data.get("frontends", MISSING)
    entries: list[_Entry] = []
    if value is not MISSING:
        if isinstance(value, list):
            entries = [e for i, item in enumerate(value) if (e := _entry(i, item, report)) is not None]
        else:
            report.error("frontends", f"{show(value)} is not a list")
    _reject_duplicates(entries, report)
    mapping = _mapping_of_known_ports(entries, report, service_ports)
    ports = list(dict.fromkeys(service_ports))  # a port listed twice still gets one frontend
    _reject_default_clashes(mapping, ports, report)
    return tuple(Frontend(mapping.get(sp, sp), sp) for sp in ports)


def _entry(index: int, item: Any, report: Report) -> _Entry | None:
    path = f"frontends[{index}]"
    if not isinstance(item, dict):
        report.error(path, f"{show(item)} is not a mapping")
        return None
    reject_unknown_fields(item, _FRONTEND_FIELDS, path, report)
    given = without_nulls(item)
    port = given.get("port", MISSING)
    return _Entry(
        index,
        # No port: the frontend binds the service port (the Go dklb's default).
        None if port is MISSING else _port_field(f"{path}.port", port, report),
        _port_field(f"{path}.servicePort", given.get("servicePort", MISSING), report),
    )


def _port_field(path: str, value: Any, report: Report) -> int | None:
    if value is MISSING:
        report.error(path, "the field is required")
        return None
    if not is_integer(value):
        report.error(path, f"{show(value)} is not an integer")
        return None
    if not 1 <= value <= 65535:
        report.error(path, f"{show(value)} is not a valid port number")
        return None
    return int(value)


def _reject_duplicates(entries: Sequence[_Entry], report: Report) -> None:
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
    entries: Sequence[_Entry], report: Report, service_ports: Sequence[int]
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


def _reject_default_clashes(mapping: Mapping[int, int], ports: Sequence[int], report: Report) -> None:
    """A defaulted bind port (= its service port) may be the bind port another entry maps to."""
    mapped_by_port = {port: sp for sp, port in mapping.items()}
    for sp in ports:
        if sp not in mapping and sp in mapped_by_port:
            report.error(
                "frontends",
                f"frontend port {sp} of service port {mapped_by_port[sp]} clashes with the default "
                f"frontend port of service port {sp}",
            )
