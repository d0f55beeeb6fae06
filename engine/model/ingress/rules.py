"""An Ingress's rules → EdgeLB ``linkBackend`` map entries, ordered over every Ingress of a frontend.

An Ingress arrives from the watcher and its configuration was parsed (``config``); ``rules_of``
flattens its ``spec.rules`` into ``Rule`` values pointing at backend names (``naming``); the
Provisioning state gathers the rules of every Ingress sharing one frontend and ``compose_map``
turns them into one ``defaultBackend`` and an ordered ``map``, which go onto the frontend.

Conditions, per the issue's specification:

* ``Exact /p`` → ``pathReg ^<p, escaped>$``; ``Prefix /p`` → ``pathReg ^<p without trailing /,
  escaped>(/.*)?$`` (element-wise, as Kubernetes defines it), ``Prefix /`` → no path condition;
  ``ImplementationSpecific /p`` → ``pathReg ^/p$``: the path is a regex, as the Go dklb made it;
* exact host → ``hostEq`` (lower-case; EdgeLB tolerates a port); ``*.example.com`` →
  ``hostReg ^[^.]+\\.example\\.com(:[0-9]+)?$`` (one DNS label, port tolerated); no host → none.

EdgeLB applies the map in order and needs a condition per entry, so the order is computed here
over all rules at once: exact host, then wildcard, then none; longer path first; Exact, Prefix,
ImplementationSpecific; then (Ingress key, rule index). A rule with no condition at all becomes
the default backend when there is none, else ``pathReg ^/.*$``. A rule that can never match
(same conditions as an earlier one) is left out and listed in ``shadowed``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.model.config import show
from engine.model.ingress.naming import backend_name

EXACT = "Exact"
PREFIX = "Prefix"
IMPLEMENTATION_SPECIFIC = "ImplementationSpecific"
PATH_TYPES = (EXACT, PREFIX, IMPLEMENTATION_SPECIFIC)
#: The map entry a condition-less rule becomes when the frontend already has a default backend.
CATCH_ALL_PATH = "^/.*$"
# Only what is special in a regex (PCRE, Go's RE2 and Python agree on these escapes).
_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


@dataclass(frozen=True)
class Rule:
    """One (host, path, backend) of an Ingress; ``index`` is its place among the Ingress's paths."""

    index: int
    backend: str
    host: str | None = None
    path: str | None = None
    path_type: str = IMPLEMENTATION_SPECIFIC


@dataclass(frozen=True)
class MapEntry:
    backend: str
    host_eq: str | None = None
    host_reg: str | None = None
    path_beg: str | None = None
    path_end: str | None = None
    path_reg: str | None = None

    def conditions(self) -> dict[str, str]:
        """The conditions, with EdgeLB's field names (ANDed; an entry has at least one)."""
        fields = {
            "hostEq": self.host_eq,
            "hostReg": self.host_reg,
            "pathBeg": self.path_beg,
            "pathEnd": self.path_end,
            "pathReg": self.path_reg,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def to_dict(self) -> dict[str, str]:
        """EdgeLB's ``V2FrontendLinkBackendMapItems0``."""
        return {"backend": self.backend, **self.conditions()}


@dataclass(frozen=True)
class ComposedMap:
    default_backend: str | None
    entries: tuple[MapEntry, ...]
    shadowed: tuple[tuple[str, Rule], ...] = field(default=())  # (Ingress key, rule) never reached

    def to_link_backend(self) -> dict[str, Any]:
        """EdgeLB's ``V2FrontendLinkBackend``."""
        link: dict[str, Any] = {"map": [e.to_dict() for e in self.entries]}
        if self.default_backend is not None:
            link = {"defaultBackend": self.default_backend, **link}
        return link


def escape(text: str) -> str:
    return _SPECIAL.sub(r"\\\1", text)


def entry_for(rule: Rule) -> MapEntry | None:
    """The map entry of one rule, or None when it has no condition (a catch-all)."""
    host_eq = host_reg = path_reg = None
    if rule.host:
        host = rule.host.lower()
        if host.startswith("*."):
            host_reg = rf"^[^.]+\.{escape(host[2:])}(:[0-9]+)?$"
        else:
            host_eq = host
    path = rule.path or ""
    if rule.path_type == EXACT:
        path_reg = f"^{escape(path)}$"
    elif rule.path_type == PREFIX:
        prefix = path.rstrip("/")
        path_reg = f"^{escape(prefix)}(/.*)?$" if prefix else None
    elif path:
        path_reg = f"^{path}$"
    if host_eq is None and host_reg is None and path_reg is None:
        return None
    return MapEntry(rule.backend, host_eq=host_eq, host_reg=host_reg, path_reg=path_reg)


def precedence(key: str, rule: Rule) -> tuple[int, int, int, str, int]:
    """The sort key: exact host, wildcard, none; longer path; Exact, Prefix, other; then stable."""
    host_rank = 2 if not rule.host else 1 if rule.host.startswith("*.") else 0
    return (host_rank, -path_length(rule), _type_rank(rule.path_type), key, rule.index)


def path_length(rule: Rule) -> int:
    path = rule.path or ""
    return len(path.rstrip("/")) if rule.path_type == PREFIX else len(path)


def _type_rank(path_type: str) -> int:
    return PATH_TYPES.index(path_type) if path_type in PATH_TYPES else len(PATH_TYPES)


def compose_map(items: Sequence[tuple[str, Rule]], *, default_backend: str | None = None) -> ComposedMap:
    """The frontend's ``linkBackend`` from the (Ingress key, rule) items of every Ingress sharing it.

    ``default_backend`` is the one the Ingresses chose (``spec.defaultBackend``), if any.
    """
    entries: list[MapEntry] = []
    shadowed: list[tuple[str, Rule]] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    default = default_backend
    for key, rule in sorted(items, key=lambda item: precedence(*item)):
        entry = entry_for(rule)
        if entry is None:
            if default is None:
                default = rule.backend
                # Every later item matches less than everything: none is shadowed by the default,
                # but a later catch-all is (it would win over the default it cannot replace).
                seen.add((("pathReg", CATCH_ALL_PATH),))
                continue
            entry = MapEntry(rule.backend, path_reg=CATCH_ALL_PATH)
        conditions = tuple(sorted(entry.conditions().items()))
        if conditions in seen:
            shadowed.append((key, rule))
            continue
        seen.add(conditions)
        entries.append(entry)
    return ComposedMap(default, tuple(entries), tuple(shadowed))


def rules_of(ingress: Mapping[str, Any], *, cluster: str) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """The Ingress's rules, in its order, and what is wrong with those left out (each naming the field)."""
    meta = ingress.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    rules: list[Rule] = []
    problems: list[str] = []
    index = 0
    for i, rule in enumerate((ingress.get("spec") or {}).get("rules") or []):
        rule = rule or {}
        host = rule.get("host") or None
        for j, path in enumerate((rule.get("http") or {}).get("paths") or []):
            where = f"spec.rules[{i}].http.paths[{j}]"
            path = path or {}
            service = ((path.get("backend") or {}).get("service")) or {}
            port = service.get("port") or {}
            ref = port.get("number") if port.get("number") is not None else port.get("name")
            problem = _problem(path, service.get("name"), ref, where)
            if problem is not None or not isinstance(ref, int | str):
                problems.append(problem or f"{where}.backend: {show(ref)} is not a port")
                continue
            backend = backend_name(
                cluster=cluster, namespace=namespace, ingress=name, service=service["name"], port=ref
            )
            rules.append(
                Rule(
                    index,
                    backend,
                    host,
                    path.get("path") or None,
                    path.get("pathType") or IMPLEMENTATION_SPECIFIC,
                )
            )
            index += 1
    return tuple(rules), tuple(problems)


def _problem(path: Mapping[str, Any], service: Any, port: Any, where: str) -> str | None:
    path_type = path.get("pathType") or IMPLEMENTATION_SPECIFIC
    if path_type not in PATH_TYPES:
        expected = ", ".join(PATH_TYPES)
        return f"{where}.pathType: {show(path_type)} is not a path type (expected one of {expected})"
    if not isinstance(service, str) or not service or not isinstance(port, int | str) or port == "":
        return f"{where}.backend: only a Service backend (service.name and service.port) is supported"
    value = path.get("path") or ""
    if path_type == IMPLEMENTATION_SPECIFIC and value:
        try:
            re.compile(value)
        except re.error as e:
            return f"{where}.path: {show(value)} is not a valid regular expression ({e})"
    return None
