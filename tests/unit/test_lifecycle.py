"""The declared lifecycle: what ``states/lifecycle.yaml`` allows, how it is loaded, how it is drawn.

Proves that the shipped declaration loads with the handlers, timings and guards it declares;
that every declared ``(state, trigger)`` pair leads to its destination and that every other pair
raises ``InvalidTrigger``; the ``Backoff.delay`` arithmetic (base, growth, cap, jitter bounds,
determinism, no overflow); that the loader refuses inconsistent declarations with a message
naming the culprit; and that ``mermaid()`` draws every transition.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from engine.runtime.lifecycle import Backoff, InvalidTrigger, Lifecycle, LifecycleError, load
from states import guards

STATES = ["Pending", "Provisioning", "AwaitingMetadata", "Ready", "Rejected", "Paused", "Moving", "Deleting"]

# Every transition the shipped lifecycle declares, one row per source.
ALLOWED: list[tuple[str, str, str]] = [
    ("Pending", "accept", "Provisioning"),
    ("Pending", "reject", "Rejected"),
    ("Provisioning", "reject", "Rejected"),
    ("Pending", "pause", "Paused"),
    ("Pending", "move", "Moving"),
    ("Moving", "moved", "Pending"),
    ("Provisioning", "claim_pool", "Provisioning"),
    ("Provisioning", "claim_withdrawn", "Provisioning"),
    ("Provisioning", "provisioned", "AwaitingMetadata"),
    ("AwaitingMetadata", "addresses_found", "Ready"),
    ("AwaitingMetadata", "drift", "Provisioning"),
    ("Ready", "drift", "Provisioning"),
    ("Provisioning", "spec_changed", "Pending"),
    ("AwaitingMetadata", "spec_changed", "Pending"),
    ("Ready", "spec_changed", "Pending"),
    ("Rejected", "spec_changed", "Pending"),
    ("Paused", "spec_changed", "Pending"),
    ("Moving", "spec_changed", "Pending"),
    ("Pending", "delete", "Deleting"),
    ("Provisioning", "delete", "Deleting"),
    ("AwaitingMetadata", "delete", "Deleting"),
    ("Ready", "delete", "Deleting"),
    ("Rejected", "delete", "Deleting"),
    ("Paused", "delete", "Deleting"),
    ("Moving", "delete", "Deleting"),
    ("Deleting", "deleted", "Removed"),
]
TRIGGERS = sorted({t for _, t, _ in ALLOWED})


@pytest.fixture(scope="module")
def shipped() -> Lifecycle:
    return load()


def test_the_shipped_lifecycle_loads_with_its_states_and_handlers(shipped: Lifecycle) -> None:
    assert (shipped.initial, shipped.final) == ("Pending", "Removed")
    assert list(shipped.states) == STATES
    handlers = {name: spec.handler_path for name, spec in shipped.states.items()}
    assert handlers == {
        "Pending": "states.pending",
        "Provisioning": "states.provisioning",
        "AwaitingMetadata": "states.awaiting_metadata",
        "Ready": "states.ready",
        "Rejected": None,
        "Paused": None,
        "Moving": "states.moving",
        "Deleting": "states.deleting",
    }
    for name, spec in shipped.states.items():
        assert (spec.handler is None) == (spec.handler_path is None), name
        if spec.handler is not None:
            assert spec.handler.__name__ == "enter" and spec.handler.__module__ == spec.handler_path
        assert spec.doc, f"{name} is documented"


TIMINGS: list[tuple[str, str, Backoff | float | str | None]] = [
    ("Pending", "retry", Backoff(base=1.0, factor=2.0, cap=120.0, jitter=0.5)),
    ("Provisioning", "retry", Backoff(base=1.0, factor=2.0, cap=300.0, jitter=0.5)),
    ("AwaitingMetadata", "poll", Backoff(base=1.0, factor=1.5, cap=30.0, jitter=0.2)),
    ("AwaitingMetadata", "retry", Backoff(base=2.0, factor=2.0, cap=120.0, jitter=0.5)),
    ("Ready", "retry", Backoff(base=5.0, factor=2.0, cap=300.0, jitter=0.5)),
    ("Ready", "resync", 86400.0),  # a backstop: the pool sweep is what resyncs Ready
    ("Ready", "first_run", "resync"),
    ("Provisioning", "first_run", "queued"),
    ("Pending", "first_run", "now"),
    ("Provisioning", "serialize", "pool"),
    ("Deleting", "serialize", "pool"),
    ("Pending", "serialize", None),
    ("Rejected", "retry", None),
    ("Pending", "poll", None),
]


@pytest.mark.parametrize(("state", "field", "value"), TIMINGS, ids=[f"{s}.{f}" for s, f, _ in TIMINGS])
def test_the_shipped_timings(shipped: Lifecycle, state: str, field: str, value: object) -> None:
    assert getattr(shipped.states[state], field) == value


@pytest.mark.parametrize(("state", "trigger", "dest"), ALLOWED, ids=[f"{s}-{t}->{d}" for s, t, d in ALLOWED])
def test_every_declared_transition_leads_to_its_destination(
    shipped: Lifecycle, state: str, trigger: str, dest: str
) -> None:
    assert shipped.can(state, trigger)
    spec = shipped.transition(state, trigger)
    assert spec.dest == dest
    assert spec.trigger == trigger and state in spec.sources


def test_the_table_above_is_the_whole_lifecycle(shipped: Lifecycle) -> None:
    declared = {(s, t, tr.dest) for tr in shipped.transitions for s in tr.sources for t in [tr.trigger]}
    assert declared == set(ALLOWED)
    allowed_pairs = {(s, t) for s, t, _ in ALLOWED}
    for state, trigger in itertools.product([*STATES, "Removed"], TRIGGERS):
        assert shipped.can(state, trigger) == ((state, trigger) in allowed_pairs), (state, trigger)


FORBIDDEN: list[tuple[str, str]] = [
    ("Ready", "accept"),
    ("Rejected", "accept"),
    ("Pending", "provisioned"),
    ("Pending", "claim_pool"),
    ("Ready", "claim_pool"),
    ("Pending", "deleted"),
    ("Pending", "spec_changed"),
    ("Paused", "pause"),
    ("Paused", "reject"),
    ("AwaitingMetadata", "reject"),
    ("Provisioning", "addresses_found"),
    ("Rejected", "drift"),
    ("Deleting", "delete"),
    ("Deleting", "spec_changed"),
    ("Removed", "deleted"),
    ("Removed", "accept"),
    ("Pending", "observed"),
    ("Ready", "no-such-trigger"),
    ("NoSuchState", "accept"),
]


@pytest.mark.parametrize(("state", "trigger"), FORBIDDEN, ids=[f"{s}-{t}" for s, t in FORBIDDEN])
def test_forbidden_pairs_raise_invalid_trigger(shipped: Lifecycle, state: str, trigger: str) -> None:
    assert not shipped.can(state, trigger)
    with pytest.raises(InvalidTrigger) as caught:
        shipped.transition(state, trigger)
    assert str(caught.value) == f"trigger {trigger!r} is not allowed in state {state!r}"


def test_accept_is_guarded_and_falls_back_to_reject(shipped: Lifecycle) -> None:
    accept = shipped.transition("Pending", "accept")
    assert accept.guards == (guards.may_use_pool, guards.shares_pool_settings, guards.no_frontend_port_clash)
    assert accept.guard_paths == (
        "states.guards.may_use_pool",
        "states.guards.shares_pool_settings",
        "states.guards.no_frontend_port_clash",
    )
    assert accept.otherwise == ("reject", "PoolConflict")
    assert accept.event is not None
    assert (accept.event.type, accept.event.reason) == ("Normal", "EnsuringLoadBalancer")
    assert "{pool}" in accept.event.message


def test_failure_triggers_are_the_else_triggers(shipped: Lifecycle) -> None:
    assert shipped.failure_triggers == frozenset({"reject"})


def test_roles_are_declared_so_that_no_code_outside_states_names_a_state(shipped: Lifecycle) -> None:
    assert shipped.settled == frozenset({"Ready"})
    assert [name for name, spec in shipped.states.items() if not spec.wants_objects] == ["Moving", "Deleting"]
    waiting = {name for name, spec in shipped.states.items() if spec.user_action}
    assert waiting == {name for name, spec in shipped.states.items() if spec.handler is None}


def test_the_declared_external_function_reads_the_world(shipped: Lifecycle) -> None:
    service = {
        "metadata": {"namespace": "default", "name": "a", "uid": "u"},
        "spec": {"type": "LoadBalancer"},
    }
    fire = shipped.external(None, service)
    assert fire is not None and (fire.trigger, fire.reason) == ("observed", "ServiceObserved")
    assert shipped.can(shipped.initial, "accept")
    assert shipped.external(None, {**service, "spec": {"type": "ClusterIP"}}) is None
    assert load(yaml.safe_dump(BASE)).external(None, service) is None, "no external function declared"


EVENTS: list[tuple[str, str, str | None]] = [
    ("Pending", "accept", "EnsuringLoadBalancer"),
    ("AwaitingMetadata", "addresses_found", "EnsuredLoadBalancer"),
    ("Ready", "delete", "DeletingLoadBalancer"),
    ("Deleting", "deleted", "DeletedLoadBalancer"),
    ("Ready", "drift", None),
    ("Provisioning", "claim_pool", None),
    ("Pending", "reject", None),
]


@pytest.mark.parametrize(("state", "trigger", "reason"), EVENTS, ids=[f"{s}-{t}" for s, t, _ in EVENTS])
def test_transition_events(shipped: Lifecycle, state: str, trigger: str, reason: str | None) -> None:
    event = shipped.transition(state, trigger).event
    assert (event.reason if event else None) == reason


# ---- mermaid ---------------------------------------------------------------------------------

MERMAID_TRANSITION_LINES = [
    "    [*] --> Pending: observed",
    "    Pending --> Provisioning: accept [may_use_pool, shares_pool_settings, no_frontend_port_clash]",
    "    Pending --> Rejected: reject",
    "    Provisioning --> Rejected: reject",
    "    Pending --> Paused: pause",
    "    Pending --> Moving: move",
    "    Moving --> Pending: moved",
    "    Provisioning --> Provisioning: claim_pool",
    "    Provisioning --> Provisioning: claim_withdrawn",
    "    Provisioning --> AwaitingMetadata: provisioned",
    "    AwaitingMetadata --> Ready: addresses_found",
    "    AwaitingMetadata --> Provisioning: drift",
    "    Ready --> Provisioning: drift",
    "    Provisioning --> Pending: spec_changed",
    "    AwaitingMetadata --> Pending: spec_changed",
    "    Ready --> Pending: spec_changed",
    "    Rejected --> Pending: spec_changed",
    "    Paused --> Pending: spec_changed",
    "    Moving --> Pending: spec_changed",
    "    Pending --> Deleting: delete",
    "    Provisioning --> Deleting: delete",
    "    AwaitingMetadata --> Deleting: delete",
    "    Ready --> Deleting: delete",
    "    Rejected --> Deleting: delete",
    "    Paused --> Deleting: delete",
    "    Moving --> Deleting: delete",
    "    Deleting --> [*]: deleted",
]


def test_mermaid_draws_every_transition_and_documents_every_state(shipped: Lifecycle) -> None:
    lines = shipped.mermaid().splitlines()
    assert lines[0] == "stateDiagram-v2"
    transition_lines = [line for line in lines[1:] if "-->" in line]
    assert transition_lines == MERMAID_TRANSITION_LINES
    assert len(transition_lines) == len(ALLOWED) + 1, "one line per (source, trigger), plus the entry"
    notes = [line for line in lines if line.startswith("    note right of ")]
    assert [n.split(":", 1)[0].removeprefix("    note right of ") for n in notes] == STATES
    assert f"    note right of Ready: {shipped.states['Ready'].doc}" in notes


# ---- Backoff.delay ---------------------------------------------------------------------------

EXACT = Backoff(base=1.0, factor=2.0, cap=300.0, jitter=0.0)

DELAYS: list[tuple[int, float]] = [
    (1, 1.0),
    (2, 2.0),
    (3, 4.0),
    (5, 16.0),
    (9, 256.0),
    (10, 300.0),
    (11, 300.0),
    (0, 1.0),
    (-7, 1.0),
    (10**6, 300.0),
    (10**18, 300.0),
]


@pytest.mark.parametrize(("attempt", "seconds"), DELAYS, ids=[f"attempt-{a}" for a, _ in DELAYS])
def test_delay_without_jitter_is_exponential_and_capped(attempt: int, seconds: float) -> None:
    assert EXACT.delay(attempt, random.Random(0)) == seconds


def test_delay_grows_with_the_factor_until_the_cap() -> None:
    backoff = Backoff(base=1.0, factor=1.5, cap=30.0, jitter=0.0)
    delays = [backoff.delay(n, random.Random(0)) for n in range(1, 14)]
    assert delays[:4] == [1.0, 1.5, 2.25, 3.375]
    assert all(a < b for a, b in itertools.pairwise(delays[:10])), delays
    assert delays[-1] == 30.0 and max(delays) == 30.0


JITTERED: list[tuple[str, Backoff, int, float]] = [
    ("pending-attempt-1", Backoff(1.0, 2.0, 120.0, 0.5), 1, 1.0),
    ("pending-attempt-4", Backoff(1.0, 2.0, 120.0, 0.5), 4, 8.0),
    ("pending-capped", Backoff(1.0, 2.0, 120.0, 0.5), 30, 120.0),
    ("metadata-poll-attempt-1", Backoff(1.0, 1.5, 30.0, 0.2), 1, 1.0),
    ("ready-retry-attempt-1", Backoff(5.0, 2.0, 300.0, 0.5), 1, 5.0),
]


@pytest.mark.parametrize(
    ("backoff", "attempt", "centre"), [c[1:] for c in JITTERED], ids=[c[0] for c in JITTERED]
)
def test_jitter_stays_within_its_spread(backoff: Backoff, attempt: int, centre: float) -> None:
    rng = random.Random(42)
    delays = [backoff.delay(attempt, rng) for _ in range(500)]
    spread = centre * backoff.jitter
    assert all(centre - spread <= d <= centre + spread for d in delays)
    # The jitter really spreads: both halves of the window are used.
    assert min(delays) < centre - spread / 2 and max(delays) > centre + spread / 2


def test_delay_is_deterministic_with_a_seeded_rng() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=300.0, jitter=0.5)
    first = [backoff.delay(n, random.Random(7)) for n in range(1, 12)]
    again = [backoff.delay(n, random.Random(7)) for n in range(1, 12)]
    other = [backoff.delay(n, random.Random(8)) for n in range(1, 12)]
    assert first == again
    assert first != other


class LowestRng(random.Random):
    """Always draws the lower end of the jitter window."""

    def uniform(self, a: float, b: float) -> float:
        return a


def test_delay_is_never_negative_even_with_an_oversized_jitter() -> None:
    backoff = Backoff(base=10.0, factor=2.0, cap=60.0, jitter=1.5)
    assert backoff.delay(1, LowestRng()) == 0.0
    assert backoff.delay(100, LowestRng()) == 0.0


@given(
    base=st.floats(min_value=0.001, max_value=3600),
    factor=st.floats(min_value=1.0, max_value=10.0),
    cap=st.floats(min_value=0.001, max_value=86400),
    jitter=st.floats(min_value=0.0, max_value=0.99),
    attempt=st.integers(min_value=-(10**6), max_value=10**30),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_is_finite_non_negative_and_within_the_capped_window(
    base: float, factor: float, cap: float, jitter: float, attempt: int, seed: int
) -> None:
    delay = Backoff(base=base, factor=factor, cap=cap, jitter=jitter).delay(attempt, random.Random(seed))
    assert math.isfinite(delay)
    # The un-jittered delay, computed in log space so that huge attempts cannot overflow here either.
    exact = min(cap, base * math.exp(min(700.0, max(0, attempt - 1) * math.log(factor))))
    assert 0.0 <= delay <= exact * (1 + jitter) + 1e-9


def test_a_huge_attempt_with_a_large_factor_returns_the_cap() -> None:
    backoff = Backoff(base=1.0, factor=1e6, cap=60.0, jitter=0.0)
    assert backoff.delay(10**6, random.Random(0)) == 60.0


def test_the_loader_accepts_a_large_factor() -> None:
    text = yaml.safe_dump(
        {
            "initial": "A",
            "final": "Gone",
            "states": {"A": {"retry": {"base": "1s", "factor": 1e6, "cap": "1m"}}},
            "transitions": [{"trigger": "stop", "source": "A", "dest": "Gone"}],
        }
    )
    retry = load(text).states["A"].retry
    assert retry is not None and retry.factor == 1e6


# ---- loader errors ---------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "initial": "A",
    "final": "Gone",
    "states": {
        "A": {"doc": "first", "handler": "states.pending", "retry": {"base": "1s", "cap": "1m"}},
        "B": {"doc": "second"},
    },
    "transitions": [
        {"trigger": "go", "source": "A", "dest": "B", "guards": ["states.guards.shares_pool_settings"]},
        {"trigger": "stop", "source": ["A", "B"], "dest": "Gone"},
    ],
}

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(declaration: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = declaration
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


LOADER_ERRORS: list[tuple[str, Mutation, str]] = [
    ("unknown-dest", _set("transitions.0.dest", "C"), "transition go: unknown state C"),
    ("unknown-source", _set("transitions.1.source", ["A", "X"]), "transition stop: unknown state X"),
    ("unknown-state-key", _set("states.B.colour", "red"), "state B: unknown keys ['colour']"),
    (
        "handler-without-enter",
        _set("states.A.handler", "states.guards"),
        "state A: states.guards has no enter(ctx) function",
    ),
    (
        "handler-not-importable",
        _set("states.A.handler", "states.no_such_module"),
        "'states.no_such_module' cannot be imported",
    ),
    (
        "else-undeclared",
        _set("transitions.0.else", {"trigger": "nope", "reason": "Nope"}),
        "transition go: else trigger nope is not declared",
    ),
    (
        "else-without-reason",
        _set("transitions.0.else", "reject"),
        "transition go: else must be {trigger: ..., reason: ...}",
    ),
    (
        "first-run-unknown",
        _set("states.A.first_run", "later"),
        "state A: first_run must be 'now', 'queued', or 'resync' with a resync period",
    ),
    (
        "first-run-resync-without-period",
        _set("states.A.first_run", "resync"),
        "state A: first_run must be 'now', 'queued', or 'resync' with a resync period",
    ),
    ("serialize-unknown", _set("states.A.serialize", "service"), "state A: serialize must be 'pool'"),
    ("backoff-unknown-key", _set("states.A.retry.max", "5m"), "state A retry: unknown keys ['max']"),
    (
        "backoff-factor-below-one",
        _set("states.A.retry.factor", 0.5),
        "state A retry: factor must be >= 1, 0 <= jitter < 1, base > 0",
    ),
    (
        "backoff-jitter-one",
        _set("states.A.retry.jitter", 1),
        "state A retry: factor must be >= 1, 0 <= jitter < 1, base > 0",
    ),
    ("initial-undeclared", _set("initial", "Z"), "initial state Z is not declared"),
    ("unknown-top-level-key", _set("colour", "red"), "unknown keys ['colour']"),
    (
        "external-not-importable",
        _set("external", "states.observe.no_such_function"),
        "'states.observe.no_such_function' cannot be imported",
    ),
    ("external-not-a-function", _set("external", "states.observe.ANNOTATION"), "is not a function"),
    ("final-declared", _set("states.Gone", {}), "final state Gone must not be a declared state"),
    (
        "guard-not-importable",
        _set("transitions.0.guards", ["states.guards.no_such_guard"]),
        "'states.guards.no_such_guard' cannot be imported",
    ),
]


def test_the_base_declaration_of_the_error_table_is_valid() -> None:
    machine = load(yaml.safe_dump(BASE))
    assert machine.transition("A", "go").dest == "B"
    assert machine.transition("B", "stop").dest == "Gone"
    assert machine.states["A"].retry == Backoff(base=1.0, factor=2.0, cap=60.0, jitter=0.0)


@pytest.mark.parametrize(
    ("mutate", "message"), [(m, msg) for _, m, msg in LOADER_ERRORS], ids=[i for i, _, _ in LOADER_ERRORS]
)
def test_the_loader_refuses_an_inconsistent_declaration(mutate: Mutation, message: str) -> None:
    declaration = copy.deepcopy(BASE)
    mutate(declaration)
    with pytest.raises(LifecycleError) as caught:
        load(yaml.safe_dump(declaration))
    assert message in str(caught.value)


def test_a_bad_duration_in_a_backoff_names_the_value() -> None:
    declaration = copy.deepcopy(BASE)
    declaration["states"]["A"]["retry"]["cap"] = "soon"
    with pytest.raises(ValueError, match="'soon' is not a valid duration"):
        load(yaml.safe_dump(declaration))


def test_first_run_resync_with_a_period_is_accepted() -> None:
    declaration = copy.deepcopy(BASE)
    declaration["states"]["B"].update({"first_run": "resync", "resync": "5m"})
    machine = load(yaml.safe_dump(declaration))
    assert (machine.states["B"].first_run, machine.states["B"].resync) == ("resync", 300.0)


def _with_handler(path: str) -> str:
    declaration = copy.deepcopy(BASE)
    declaration["states"]["A"]["handler"] = path
    return yaml.safe_dump(declaration)


def test_an_undotted_unknown_handler_is_a_lifecycle_error() -> None:
    with pytest.raises(LifecycleError, match="'nosuchhandler' cannot be imported"):
        load(_with_handler("nosuchhandler"))


def test_a_handler_that_fails_to_import_reports_the_real_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "dklb_probe_handlers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text(
        "import dklb_no_such_dependency\n\n\ndef enter(ctx):\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LifecycleError) as caught:
        load(_with_handler("dklb_probe_handlers.broken"))
    assert "dklb_no_such_dependency" in str(caught.value)
