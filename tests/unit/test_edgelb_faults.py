"""The local EdgeLB's fault injector: spec grammar, route selectors, seeded probabilities, latency."""

from __future__ import annotations

import pytest

from edgelb_local.faults import DEFAULT_HOLD, NO_FAULT, FaultInjector, parse_rule


@pytest.mark.parametrize(
    ("spec", "method", "glob", "latency", "probabilities", "hold"),
    [
        ("latency=100ms", "*", None, 0.1, {}, DEFAULT_HOLD),
        ("latency=2s", "*", None, 2.0, {}, DEFAULT_HOLD),
        ("latency=0.25", "*", None, 0.25, {}, DEFAULT_HOLD),
        ("5xx=0.2", "*", None, 0.0, {"5xx": 0.2}, DEFAULT_HOLD),
        ("timeout=0.05", "*", None, 0.0, {"timeout": 0.05}, DEFAULT_HOLD),
        ("timeout=1,hold=500ms", "*", None, 0.0, {"timeout": 1.0}, 0.5),
        ("reset=0.01", "*", None, 0.0, {"reset": 0.01}, DEFAULT_HOLD),
        ("POST /v2/pools:5xx=1", "POST", "/v2/pools", 0.0, {"5xx": 1.0}, DEFAULT_HOLD),
        ("GET /v2/pools/*/metadata:latency=2s", "GET", "/v2/pools/*/metadata", 2.0, {}, DEFAULT_HOLD),
        (" get  /v2/pools/ : latency = 1s , 5XX = 0 ", "GET", "/v2/pools", 1.0, {"5xx": 0.0}, DEFAULT_HOLD),
        ("* /**:reset=0.5,5xx=0.5,timeout=0.5", "*", "/**", 0.0, None, DEFAULT_HOLD),
    ],
)
def test_good_specs(
    spec: str, method: str, glob: str | None, latency: float, probabilities: dict | None, hold: float
) -> None:
    rule = parse_rule(spec)
    assert (rule.method, rule.glob, rule.latency, rule.hold) == (method, glob, latency, hold)
    if probabilities is not None:
        assert rule.probabilities == probabilities
    else:
        # Stored in draw order whatever order the spec gives them in.
        assert list(rule.probabilities) == ["reset", "timeout", "5xx"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty item"),
        ("latency=1s,", "empty item"),
        ("latency", "item 'latency' is not KIND=VALUE"),
        ("latency=", "item 'latency=' is not KIND=VALUE"),
        ("slow=1s", "unknown kind 'slow' in item 'slow=1s'"),
        ("latency=fast", "fault item 'latency=fast': 'fast' is not a duration"),
        ("latency=-1s", "fault item 'latency=-1s'"),
        ("5xx=1.5", "fault item '5xx=1.5': probability must be between 0 and 1"),
        ("5xx=-0.1", "fault item '5xx=-0.1': probability must be between 0 and 1"),
        ("reset=often", "fault item 'reset=often': 'often' is not a probability"),
        ("timeout=nan", "fault item 'timeout=nan': probability must be between 0 and 1"),
        ("5xx=0.1,5xx=0.2", "kind '5xx' given twice"),
        ("hold=1s", "hold has no effect without timeout"),
        ("POST:5xx=1", "bad route selector 'POST'"),
        ("POST v2/pools:5xx=1", "bad route selector 'POST v2/pools'"),
        ("FETCH /v2/pools:5xx=1", "unknown method 'FETCH'"),
        ("POST /v2/pools:", "empty item"),
        ("latency=1s,POST /v2/pools:5xx=1", "unknown method 'latency=1s,POST'"),
    ],
)
def test_bad_specs_name_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="fault") as info:
        FaultInjector.parse(["latency=1ms", spec])
    assert message in str(info.value)
    assert repr(spec) in str(info.value)  # which of several --faults is wrong


@pytest.mark.parametrize(
    ("selector", "method", "path", "matches"),
    [
        ("POST /v2/pools", "POST", "/v2/pools", True),
        ("POST /v2/pools", "POST", "/v2/pools/", True),
        ("POST /v2/pools", "post", "/v2/pools?x=1", True),
        ("POST /v2/pools", "GET", "/v2/pools", False),
        ("POST /v2/pools", "POST", "/v2/pools/a", False),
        ("GET /v2/pools/*/metadata", "GET", "/v2/pools/dklb-redis/metadata", True),
        ("GET /v2/pools/*/metadata", "GET", "/v2/pools/dklb-redis", False),
        ("GET /v2/pools/*/metadata", "GET", "/v2/pools/a/b/metadata", False),  # * is one segment
        ("GET /v2/pools/*", "GET", "/v2/pools/a/metadata", False),
        ("GET /v2/**", "GET", "/v2/pools/a/metadata", True),
        ("GET /v2/**", "GET", "/ping", False),
        ("* /v2/pools/*", "DELETE", "/v2/pools/a", True),
        ("* /v2/pools/*", "PUT", "/v2/pools/a", True),
        ("GET /v?/config", "GET", "/v2/config", True),
    ],
)
def test_selector_matching(selector: str, method: str, path: str, matches: bool) -> None:
    injector = FaultInjector.parse([f"{selector}:5xx=1"], seed=0)
    assert (injector.decide(method, path).action == "5xx") is matches


def test_no_selector_matches_everything_and_no_rules_match_nothing() -> None:
    injector = FaultInjector.parse(["5xx=1"], seed=0)
    for method, path in [("GET", "/ping"), ("DELETE", "/v2/pools/a"), ("POST", "/v2/pools")]:
        assert injector.decide(method, path).action == "5xx"
    empty = FaultInjector.parse([], seed=0)
    assert not empty
    assert empty.decide("GET", "/ping") is NO_FAULT


@pytest.mark.parametrize("kind", ["5xx", "timeout", "reset"])
@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_probability_frequency_with_seeded_rng(kind: str, p: float) -> None:
    injector = FaultInjector.parse([f"{kind}={p}"], seed=1234)
    draws = 20000
    hits = sum(injector.decide("GET", "/v2/pools").action == kind for _ in range(draws))
    # Binomial standard deviation is at most 0.0035 here; 4 sigma keeps a seeded test far from flaky.
    assert abs(hits / draws - p) < 0.015
    assert injector.counts()[kind] == hits


def test_probability_zero_and_one() -> None:
    never = FaultInjector.parse(["reset=0,timeout=0,5xx=0"], seed=1)
    always = FaultInjector.parse(["reset=1"], seed=1)
    for _ in range(1000):
        assert never.decide("GET", "/ping").action is None
        assert always.decide("GET", "/ping").action == "reset"
    assert never.counts() == {"latency": 0, "5xx": 0, "timeout": 0, "reset": 0}
    assert always.counts()["reset"] == 1000


def test_same_seed_same_decisions() -> None:
    specs = ["5xx=0.3,reset=0.1", "GET /v2/pools/*/metadata:timeout=0.2"]
    requests = [("GET", "/v2/pools/a/metadata"), ("POST", "/v2/pools"), ("GET", "/ping")] * 300

    def run(seed: int) -> list[str | None]:
        injector = FaultInjector.parse(specs, seed=seed)
        return [injector.decide(method, path).action for method, path in requests]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_first_hit_wins_in_draw_order() -> None:
    # reset is drawn before 5xx: with both certain, reset decides and 5xx is never counted.
    injector = FaultInjector.parse(["5xx=1,reset=1"], seed=0)
    assert injector.decide("GET", "/ping").action == "reset"
    assert injector.counts() == {"latency": 0, "5xx": 0, "timeout": 0, "reset": 1}


def test_timeout_carries_its_rules_hold() -> None:
    injector = FaultInjector.parse(["GET /slow:timeout=1,hold=250ms", "GET /slower:timeout=1"], seed=0)
    assert injector.decide("GET", "/slow") == injector.decide("GET", "/slow")
    assert injector.decide("GET", "/slow").hold == 0.25
    assert injector.decide("GET", "/slower").hold == DEFAULT_HOLD
    # parse(hold=) is the default for specs that set none; a spec's own hold= wins.
    short = FaultInjector.parse(["GET /slow:timeout=1,hold=250ms", "GET /slower:timeout=1"], hold=1.0)
    assert (short.decide("GET", "/slow").hold, short.decide("GET", "/slower").hold) == (0.25, 1.0)
    with pytest.raises(ValueError, match="hold"):
        FaultInjector.parse(["timeout=1"], hold=-1)


def test_latency_is_added_by_every_matching_rule() -> None:
    injector = FaultInjector.parse(
        ["latency=100ms", "GET /v2/pools/*/metadata:latency=2s", "POST /v2/pools:latency=1s"], seed=0
    )
    assert injector.decide("GET", "/v2/pools/a/metadata").latency == pytest.approx(2.1)
    assert injector.decide("POST", "/v2/pools").latency == pytest.approx(1.1)
    assert injector.decide("GET", "/ping").latency == pytest.approx(0.1)
    assert injector.decide("GET", "/ping").action is None
    assert injector.counts()["latency"] == 4


def test_latency_and_an_action_together() -> None:
    injector = FaultInjector.parse(["latency=50ms,5xx=1"], seed=0)
    decision = injector.decide("PUT", "/v2/pools/a")
    assert (decision.latency, decision.action) == (0.05, "5xx")
    assert injector.counts() == {"latency": 1, "5xx": 1, "timeout": 0, "reset": 0}
