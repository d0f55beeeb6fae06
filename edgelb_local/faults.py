"""Fault injection for the local EdgeLB: added latency, 503 answers, held requests and TCP resets.

Where it sits in the data flow: ``edgelb_local.server`` reads each request, then asks
``FaultInjector.decide(method, path)`` what to do with it BEFORE the request touches any state (so a
faulted write changes nothing), sleeps the decided latency, and then either answers normally or
carries out the fault. ``edgelb_local.command`` builds the injector from ``--faults`` /
``--faults-seed``; tests and benchmarks read ``counts()`` to see what was injected.

Spec grammar (``--faults SPEC``, repeatable; each SPEC is one rule)::

    SPEC      := [SELECTOR ":"] ITEM ("," ITEM)*
    SELECTOR  := METHOD " " PATH-GLOB
    METHOD    := GET | POST | PUT | DELETE | PATCH | HEAD | OPTIONS | "*"   (any method)
    PATH-GLOB := a path starting with "/"; "*" matches within one path segment, "**" matches
                 anything (slashes included), "?" matches one character other than "/"
    ITEM      := KIND "=" VALUE
    KIND      := latency   DURATION (100ms, 2s, 1m; a bare number is seconds) added to the request
               | 5xx       PROBABILITY (0..1) of answering 503 {"code":503,"message":"injected fault"}
               | timeout   PROBABILITY of holding the request unanswered for `hold`, then closing
               | reset     PROBABILITY of closing the connection with a TCP RST (SO_LINGER 0), no answer
               | hold      DURATION a `timeout` holds the request (default 30s, or ``parse(hold=)``;
                           only together with timeout)

Examples: ``latency=100ms``, ``5xx=0.2``, ``timeout=0.05,hold=5s``, ``reset=0.01``,
``POST /v2/pools:5xx=1``, ``GET /v2/pools/*/metadata:latency=2s``.

Semantics: a rule without a selector matches every request. Every matching rule applies: their
latencies add up; their probabilities are drawn independently, rule by rule in the order given,
each rule in the order reset, timeout, 5xx, and the first hit decides the request's fate (at most
one of reset/timeout/5xx per request). Draws come from one ``random.Random(seed)``, so a seeded
injector fed the same sequence of requests makes the same decisions.
"""

from __future__ import annotations

import collections
import math
import random
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from engine.model.durations import parse_duration

KINDS = ("latency", "5xx", "timeout", "reset", "hold")
# The order in which a rule's probabilities are drawn: the most disruptive first.
ACTIONS = ("reset", "timeout", "5xx")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "*")
DEFAULT_HOLD = 30.0


@dataclass(frozen=True)
class Decision:
    """What to do with one request: wait ``latency`` seconds, then ``action`` (None = answer normally)."""

    latency: float = 0.0
    action: str | None = None  # "reset" | "timeout" | "5xx"
    hold: float = DEFAULT_HOLD  # how long a "timeout" holds the request


NO_FAULT = Decision()


@dataclass(frozen=True)
class Rule:
    spec: str
    method: str  # "*" for any
    glob: str | None  # None for any path
    pattern: re.Pattern[str] | None
    latency: float
    probabilities: dict[str, float]  # action -> probability, only the actions the spec names
    hold: float

    def matches(self, method: str, path: str) -> bool:
        if self.method != "*" and self.method != method.upper():
            return False
        return self.pattern is None or self.pattern.fullmatch(_strip_slash(path.split("?", 1)[0])) is not None


def _strip_slash(path: str) -> str:
    # "/v2/pools/" and "/v2/pools" are the same route to the server, so they match the same globs.
    return path.rstrip("/") or "/"


def _glob_regex(glob: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def _probability(item: str, value: str) -> float:
    try:
        p = float(value)
    except ValueError:
        raise ValueError(f"fault item {item!r}: {value!r} is not a probability (0..1)") from None
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"fault item {item!r}: probability must be between 0 and 1")
    return p


def _duration(item: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f"fault item {item!r}: {value!r} is not a duration (e.g. 100ms, 2s)") from None


def parse_rule(spec: str, *, default_hold: float = DEFAULT_HOLD) -> Rule:
    """One SPEC of the grammar above (``default_hold`` when it sets no ``hold``); ValueError naming
    the bad part otherwise."""
    method, glob, pattern = "*", None, None
    items_text = spec
    # Items never contain ":", so the last ":" (if any) ends the selector.
    if ":" in spec:
        selector, _, items_text = spec.rpartition(":")
        parts = selector.split()
        if len(parts) != 2 or not parts[1].startswith("/"):
            raise ValueError(
                f"fault spec {spec!r}: bad route selector {selector.strip()!r} "
                "(expected 'METHOD /PATH-GLOB', e.g. 'POST /v2/pools')"
            )
        method = parts[0].upper()
        if method not in METHODS:
            raise ValueError(
                f"fault spec {spec!r}: unknown method {parts[0]!r} in selector (one of {', '.join(METHODS)})"
            )
        glob = _strip_slash(parts[1])
        pattern = _glob_regex(glob)

    seen: set[str] = set()
    latency, hold = 0.0, default_hold
    probabilities: dict[str, float] = {}
    for raw in items_text.split(","):
        item = raw.strip()
        if not item:
            raise ValueError(f"fault spec {spec!r}: empty item")
        kind, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not value:
            raise ValueError(f"fault spec {spec!r}: item {item!r} is not KIND=VALUE")
        kind = kind.lower()
        if kind not in KINDS:
            raise ValueError(
                f"fault spec {spec!r}: unknown kind {kind!r} in item {item!r} ({', '.join(KINDS)})"
            )
        if kind in seen:
            raise ValueError(f"fault spec {spec!r}: kind {kind!r} given twice (item {item!r})")
        seen.add(kind)
        if kind == "latency":
            latency = _duration(item, value)
        elif kind == "hold":
            hold = _duration(item, value)
        else:
            probabilities[kind] = _probability(item, value)
    if "hold" in seen and "timeout" not in seen:
        # A hold alone would silently do nothing: almost certainly a typo'd spec.
        raise ValueError(f"fault spec {spec!r}: hold has no effect without timeout in the same spec")
    ordered = {action: probabilities[action] for action in ACTIONS if action in probabilities}
    return Rule(
        spec=spec,
        method=method,
        glob=glob,
        pattern=pattern,
        latency=latency,
        probabilities=ordered,
        hold=hold,
    )


class FaultInjector:
    """Decides, request by request, which faults to inject; thread-safe (handler threads share it)."""

    def __init__(self, rules: Iterable[Rule] = (), *, seed: int | None = None) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    @classmethod
    def parse(
        cls, specs: Iterable[str], seed: int | None = None, *, hold: float = DEFAULT_HOLD
    ) -> FaultInjector:
        """An injector with one rule per spec (grammar in the module docstring); ValueError if one is
        bad. ``hold`` is how long a ``timeout`` holds a request when its spec sets no ``hold=``."""
        if hold < 0:
            raise ValueError(f"hold must not be negative (got {hold})")
        return cls([parse_rule(spec, default_hold=hold) for spec in specs], seed=seed)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def decide(self, method: str, path: str) -> Decision:
        matching = [rule for rule in self.rules if rule.matches(method, path)]
        if not matching:
            return NO_FAULT
        latency = sum(rule.latency for rule in matching)
        action, hold = None, DEFAULT_HOLD
        # One lock around the draws: the RNG sequence is the order decisions are made in.
        with self._lock:
            for rule in matching:
                for kind, p in rule.probabilities.items():
                    if p > 0.0 and self._rng.random() < p:
                        action, hold = kind, rule.hold
                        break
                if action is not None:
                    break
            if latency > 0:
                self._counts["latency"] += 1
            if action is not None:
                self._counts[action] += 1
        return Decision(latency=latency, action=action, hold=hold)

    def counts(self) -> dict[str, int]:
        """Injected faults so far by kind ("latency", "5xx", "timeout", "reset"), zeros included."""
        with self._lock:
            return {kind: self._counts[kind] for kind in ("latency", *ACTIONS)}
