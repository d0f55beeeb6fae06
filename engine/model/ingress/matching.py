"""Which backend a request reaches: through EdgeLB's map entries, and by Kubernetes' own rules.

Not in the controller's path: the composed map (``rules.compose_map``) goes to EdgeLB, and HAProxy
evaluates it. These two evaluators say what it will do, so tests (and, later, ``dklb plan``) can check
that the generated conditions agree with Kubernetes' semantics, independently written:

* ``matches``/``route`` read the entries as EdgeLB renders them for HAProxy: ``hostEq`` matches
  the Host header case-insensitively, a ``:port`` suffix tolerated; ``hostReg`` and ``pathReg``
  are searched (they carry their own anchors); ``pathBeg``/``pathEnd`` are prefix/suffix tests;
  conditions are ANDed; the first matching entry wins, else the default backend;
* ``kubernetes_matches``/``kubernetes_route`` follow the Ingress documentation without any regex
  for Exact and Prefix: Prefix matches element-wise on ``/``; a wildcard host covers exactly one
  DNS label; among matching rules the exact host wins, then the wildcard, then none, then the
  longest path, then Exact over Prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from engine.model.ingress.rules import EXACT, PREFIX, ComposedMap, Rule, precedence


def _host_only(host: str) -> str:
    return host.rsplit(":", 1)[0].lower() if re.search(r":[0-9]*$", host) else host.lower()


def matches(conditions: Mapping[str, str], host: str, path: str) -> bool:
    """Whether a request (Host header, path) satisfies one map entry's conditions."""
    checks = {
        "hostEq": lambda v: _host_only(host) == v.lower(),
        "hostReg": lambda v: re.search(v, host, re.IGNORECASE) is not None,
        "pathBeg": lambda v: path.startswith(v),
        "pathEnd": lambda v: path.endswith(v),
        "pathReg": lambda v: re.search(v, path) is not None,
    }
    return all(checks[name](value) for name, value in conditions.items() if name != "backend")


def route(composed: ComposedMap, host: str, path: str) -> str | None:
    """The backend HAProxy picks: the first matching entry's, else the default (None: 503)."""
    for entry in composed.entries:
        if matches(entry.conditions(), host, path):
            return entry.backend
    return composed.default_backend


def kubernetes_matches(rule: Rule, host: str, path: str) -> bool:
    """Whether a request matches a rule by the Ingress API's definition."""
    return _host_matches(rule.host, _host_only(host)) and _path_matches(rule, path)


def _host_matches(pattern: str | None, host: str) -> bool:
    if not pattern:
        return True
    pattern = pattern.lower()
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern


def _path_matches(rule: Rule, path: str) -> bool:
    given = rule.path or ""
    if rule.path_type == EXACT:
        return path == given
    if rule.path_type == PREFIX:
        prefix = [e for e in given.split("/") if e]
        elements = [e for e in path.split("/") if e]
        return elements[: len(prefix)] == prefix
    return not given or re.fullmatch(given, path) is not None


def kubernetes_route(
    items: Sequence[tuple[str, Rule]], host: str, path: str, *, default_backend: str | None = None
) -> str | None:
    """The backend Kubernetes' precedence picks among every rule of a listener."""
    candidates = [(key, rule) for key, rule in items if kubernetes_matches(rule, host, path)]
    if not candidates:
        return default_backend
    return min(candidates, key=lambda item: precedence(*item))[1].backend
