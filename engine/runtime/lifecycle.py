"""Loads the declared lifecycle (``states/lifecycle.yaml``) into a ``transitions`` machine.

The YAML says *what* the lifecycle is; this module checks it (every state, handler, guard and
trigger must exist), builds the machine, and derives the lookup the reconciler uses on its hot
path: ``transition(state, trigger)``. Timings become ``Backoff`` objects; ``mermaid()`` draws
the machine for ``dklb lifecycle``. What code outside ``states/`` needs to know about a state
is declared as a role (``settled``, ``wants_objects``, ``user_action``), and the function that
reads the observed world is declared as ``external``: the runtime and the CLI name no state.
"""

from __future__ import annotations

import importlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml
from transitions import Machine

from engine.contract import Context, Event, Fire, Outcome
from engine.model.durations import parse_duration

Handler = Callable[[Context], Outcome]
Guard = Callable[[Context, Fire], "str | None"]
# (binding as stored or None, Service as observed or None, node addresses) -> trigger to fire
External = Callable[..., "Fire | None"]

_TOP_LEVEL = {"initial", "final", "external", "states", "transitions"}
_STATE_KEYS = {
    "doc",
    "handler",
    "serialize",
    "retry",
    "poll",
    "resync",
    "first_run",
    "settled",
    "wants_objects",
    "user_action",
}


class LifecycleError(Exception):
    """The declaration is inconsistent (a developer error, found at load time)."""


class InvalidTrigger(Exception):
    """A trigger was fired from a state the lifecycle does not allow it in."""


@dataclass(frozen=True)
class Backoff:
    base: float
    factor: float
    cap: float
    jitter: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds before attempt ``attempt`` (1-based): exponential, capped, jittered.

        Jitter spreads retries of many bindings that failed together (an EdgeLB outage), so
        they do not return as one burst.
        """
        exponent = max(0, attempt - 1)
        if self.factor > 1:
            # Past this exponent the cap applies anyway; stopping there keeps factor**exponent
            # finite for any attempt count and any factor.
            exponent = min(exponent, math.ceil(math.log(max(self.cap / self.base, 1.0), self.factor)) + 1)
        raw = self.base * (self.factor**exponent)
        capped = min(self.cap, raw)
        spread = capped * self.jitter
        return max(0.0, capped + rng.uniform(-spread, spread))


@dataclass(frozen=True)
class StateSpec:
    name: str
    doc: str
    handler: Handler | None
    handler_path: str | None
    serialize: str | None
    retry: Backoff | None
    poll: Backoff | None
    resync: float | None
    first_run: str
    # Roles, for code that must not name states: nothing is wrong with a binding here (the CLI's
    # --stuck skips it); the binding still wants its objects in the pool (False: it is removing
    # them); what the user must do for a binding waiting here (no handler, nothing to retry).
    settled: bool = False
    wants_objects: bool = True
    user_action: str | None = None


@dataclass(frozen=True)
class TransitionSpec:
    trigger: str
    sources: tuple[str, ...]
    dest: str
    guards: tuple[Guard, ...]
    guard_paths: tuple[str, ...]
    # (trigger, reason) fired instead when a guard objects, with the guard's message.
    otherwise: tuple[str, str] | None
    event: Event | None


def _resolve(path: str) -> Any:
    """The module ``path``, or the attribute ``path`` names in its parent module."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name != path:
            # The module exists but one of its own imports is missing: report that one.
            raise LifecycleError(f"{path!r} cannot be imported: {exc}") from exc
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise LifecycleError(f"{path!r} cannot be imported: no module of that name")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise LifecycleError(f"{path!r} cannot be imported: {exc}") from exc
    if not hasattr(module, attr):
        raise LifecycleError(f"{path!r} cannot be imported: {module_name} has no {attr!r}")
    return getattr(module, attr)


def _backoff(raw: dict[str, Any] | None, where: str) -> Backoff | None:
    if raw is None:
        return None
    unknown = set(raw) - {"base", "factor", "cap", "jitter"}
    if unknown:
        raise LifecycleError(f"{where}: unknown keys {sorted(unknown)}")
    backoff = Backoff(
        base=parse_duration(raw["base"]),
        factor=float(raw.get("factor", 2)),
        cap=parse_duration(raw["cap"]),
        jitter=float(raw.get("jitter", 0)),
    )
    if backoff.factor < 1 or not 0 <= backoff.jitter < 1 or backoff.base <= 0:
        raise LifecycleError(f"{where}: factor must be >= 1, 0 <= jitter < 1, base > 0")
    return backoff


def _otherwise(raw: Any, trigger: str) -> tuple[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"trigger", "reason"}:
        raise LifecycleError(f"transition {trigger}: else must be {{trigger: ..., reason: ...}}")
    return str(raw["trigger"]), str(raw["reason"])


def _state(name: str, raw: dict[str, Any]) -> StateSpec:
    unknown = set(raw) - _STATE_KEYS
    if unknown:
        raise LifecycleError(f"state {name}: unknown keys {sorted(unknown)}")
    handler_path = raw.get("handler")
    handler = None
    if handler_path:
        handler = getattr(_resolve(handler_path), "enter", None)
        if not callable(handler):
            raise LifecycleError(f"state {name}: {handler_path} has no enter(ctx) function")
    first_run = raw.get("first_run", "now")
    if first_run not in ("now", "queued", "resync") or (first_run == "resync" and "resync" not in raw):
        raise LifecycleError(
            f"state {name}: first_run must be 'now', 'queued', or 'resync' with a resync period"
        )
    if raw.get("serialize") not in (None, "pool"):
        raise LifecycleError(f"state {name}: serialize must be 'pool'")
    return StateSpec(
        name=name,
        doc=str(raw.get("doc", "")),
        handler=handler,
        handler_path=handler_path,
        serialize=raw.get("serialize"),
        retry=_backoff(raw.get("retry"), f"state {name} retry"),
        poll=_backoff(raw.get("poll"), f"state {name} poll"),
        resync=parse_duration(raw["resync"]) if "resync" in raw else None,
        first_run=first_run,
        settled=bool(raw.get("settled", False)),
        wants_objects=bool(raw.get("wants_objects", True)),
        user_action=raw.get("user_action"),
    )


def _transition(raw: dict[str, Any], states: list[str]) -> TransitionSpec:
    sources = raw["source"] if isinstance(raw["source"], list) else [raw["source"]]
    for state in [*sources, raw["dest"]]:
        if state not in states:
            raise LifecycleError(f"transition {raw['trigger']}: unknown state {state}")
    guard_paths = tuple(raw.get("guards") or ())
    event = raw.get("event")
    return TransitionSpec(
        trigger=raw["trigger"],
        sources=tuple(sources),
        dest=raw["dest"],
        guards=tuple(_resolve(p) for p in guard_paths),
        guard_paths=guard_paths,
        otherwise=_otherwise(raw.get("else"), raw["trigger"]),
        event=Event(event["type"], event["reason"], event["message"]) if event else None,
    )


class Lifecycle:
    def __init__(self, declaration: dict[str, Any]) -> None:
        unknown = set(declaration) - _TOP_LEVEL
        if unknown:
            raise LifecycleError(f"unknown keys {sorted(unknown)}")
        self.initial: str = declaration["initial"]
        self.final: str = declaration["final"]
        external = _resolve(declaration["external"]) if "external" in declaration else None
        if external is not None and not callable(external):
            raise LifecycleError(f"external: {declaration['external']} is not a function")
        self._external: External | None = external
        self.states = {
            name: _state(name, raw or {}) for name, raw in (declaration.get("states") or {}).items()
        }
        if self.initial not in self.states:
            raise LifecycleError(f"initial state {self.initial} is not declared")
        if self.final in self.states:
            raise LifecycleError(f"final state {self.final} must not be a declared state")
        all_states = [*self.states, self.final]
        self.transitions = [_transition(raw, all_states) for raw in declaration.get("transitions") or []]
        triggers = {t.trigger for t in self.transitions}
        # Triggers fired when a guard objects: their message is what the binding is stuck on.
        self.failure_triggers = frozenset(t.otherwise[0] for t in self.transitions if t.otherwise)
        for t in self.transitions:
            if t.otherwise is not None and t.otherwise[0] not in triggers:
                raise LifecycleError(f"transition {t.trigger}: else trigger {t.otherwise[0]} is not declared")

        # The machine is the authority on what may follow what; the table below is read from it
        # once so that the reconciler's lookups need no model objects and no locks.
        self.machine = Machine(
            model=None,
            states=all_states,
            initial=self.initial,
            transitions=[
                {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest} for t in self.transitions
            ],
            auto_transitions=False,
        )
        self._next: dict[tuple[str, str], TransitionSpec] = {}
        specs = {(t.trigger, s): t for t in self.transitions for s in t.sources}
        for trigger, machine_event in self.machine.events.items():
            for source, machine_transitions in machine_event.transitions.items():
                for mt in machine_transitions:
                    spec = specs[(trigger, source)]
                    assert spec.dest == mt.dest
                    self._next[(source, trigger)] = spec

    def external(
        self, binding: Any, service: Any, *, nodes: tuple[str, ...] = (), policy: str | None = None
    ) -> Fire | None:
        """The trigger the observed world fires on ``binding`` (None: a binding to create, if any)."""
        if self._external is None:
            return None
        result: Fire | None = self._external(binding, service, nodes=nodes, policy=policy)
        return result

    @property
    def settled(self) -> frozenset[str]:
        """The states in which nothing is wrong with a binding."""
        return frozenset(name for name, spec in self.states.items() if spec.settled)

    def transition(self, state: str, trigger: str) -> TransitionSpec:
        try:
            return self._next[(state, trigger)]
        except KeyError:
            raise InvalidTrigger(f"trigger {trigger!r} is not allowed in state {state!r}") from None

    def can(self, state: str, trigger: str) -> bool:
        return (state, trigger) in self._next

    def mermaid(self) -> str:
        lines = ["stateDiagram-v2", f"    [*] --> {self.initial}: observed"]
        for t in self.transitions:
            dest = "[*]" if t.dest == self.final else t.dest
            label = t.trigger + (
                f" [{', '.join(p.rpartition('.')[2] for p in t.guard_paths)}]" if t.guards else ""
            )
            for source in t.sources:
                lines.append(f"    {source} --> {dest}: {label}")
        for name, spec in self.states.items():
            if spec.doc:
                lines.append(f"    note right of {name}: {spec.doc}")
        return "\n".join(lines)


def load(text: str | None = None) -> Lifecycle:
    """The lifecycle declared in ``states/lifecycle.yaml`` (or in ``text``)."""
    if text is None:
        text = resources.files("states").joinpath("lifecycle.yaml").read_text()
    return Lifecycle(yaml.safe_load(text))
