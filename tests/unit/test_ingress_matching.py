"""The generated map entries agree with Kubernetes' Ingress semantics (engine.model.ingress.matching).

Each row is (rule, Host header, path, expected) from the Ingress documentation and scenarios 14
and 16; it is checked three ways: the expected value, the Kubernetes evaluator (no regex for
Exact and Prefix), and the entry ``rules.entry_for`` generates as EdgeLB/HAProxy evaluates it.
"""

from __future__ import annotations

import pytest

from engine.model.ingress.matching import kubernetes_matches, kubernetes_route, matches, route
from engine.model.ingress.rules import Rule, compose_map, entry_for

IS = "ImplementationSpecific"


def rule(path: str | None = None, path_type: str = IS, host: str | None = None) -> Rule:
    return Rule(0, "b", host, path, path_type)


TABLE = [
    # Scenario 14: Prefix is element-wise, a trailing slash ignored.
    (rule("/foo", "Prefix"), "h", "/foo", True),
    (rule("/foo", "Prefix"), "h", "/foo/", True),
    (rule("/foo", "Prefix"), "h", "/foo/bar", True),
    (rule("/foo", "Prefix"), "h", "/foobar", False),
    (rule("/foo", "Prefix"), "h", "/fo", False),
    (rule("/foo", "Prefix"), "h", "/", False),
    (rule("/foo/", "Prefix"), "h", "/foo", True),
    (rule("/foo/", "Prefix"), "h", "/foo/bar", True),
    (rule("/foo/", "Prefix"), "h", "/foobar", False),
    (rule("/aaa/bb", "Prefix"), "h", "/aaa/bbb", False),
    (rule("/aaa/bbb", "Prefix"), "h", "/aaa/bbb/", True),
    (rule("/a.c", "Prefix"), "h", "/abc", False),
    (rule("/a.c", "Prefix"), "h", "/a.c/d", True),
    (rule("/", "Prefix"), "h", "/", True),
    (rule("/", "Prefix"), "h", "/anything/at/all", True),
    # Exact: only the path itself, case-sensitively.
    (rule("/foo", "Exact"), "h", "/foo", True),
    (rule("/foo", "Exact"), "h", "/foo/", False),
    (rule("/foo", "Exact"), "h", "/foo/bar", False),
    (rule("/foo", "Exact"), "h", "/FOO", False),
    (rule("/foo/", "Exact"), "h", "/foo", False),
    (rule("/a+b", "Exact"), "h", "/a+b", True),
    (rule("/a+b", "Exact"), "h", "/aab", False),
    # ImplementationSpecific: the Go dklb's anchored regex.
    (rule("/bar(/.*)?"), "h", "/bar", True),
    (rule("/bar(/.*)?"), "h", "/bar/baz", True),
    (rule("/bar(/.*)?"), "h", "/barbaz", False),
    (rule("/foo"), "h", "/foo/bar", False),
    (rule(None), "h", "/x", True),
    # Hosts: exact (case-insensitive, port tolerated).
    (rule(host="foo.bar.com"), "foo.bar.com", "/", True),
    (rule(host="foo.bar.com"), "FOO.bar.com:8080", "/", True),
    (rule(host="foo.bar.com"), "bar.com", "/", False),
    (rule(host="foo.bar.com"), "x.foo.bar.com", "/", False),
    (rule(host="foo.bar.com"), "foo.bar.com.evil", "/", False),
    # Scenario 16: a wildcard covers exactly one DNS label.
    (rule(host="*.example.com"), "a.example.com", "/", True),
    (rule(host="*.example.com"), "A.Example.com:18080", "/", True),
    (rule(host="*.example.com"), "example.com", "/", False),
    (rule(host="*.example.com"), "a.b.example.com", "/", False),
    (rule(host="*.example.com"), ".example.com", "/", False),
    (rule(host="*.example.com"), "aexample.com", "/", False),
    (rule(host="*.example.com"), "a.example.com.evil", "/", False),
    (rule(host="*.example.com"), "a.examplexcom", "/", False),
    # Host and path together.
    (rule("/x", "Prefix", "a.com"), "a.com", "/x/y", True),
    (rule("/x", "Prefix", "a.com"), "b.com", "/x/y", False),
    (rule("/x", "Prefix", "*.a.com"), "w.a.com", "/xy", False),
]


@pytest.mark.parametrize(("r", "host", "path", "expected"), TABLE)
def test_generated_conditions_agree_with_kubernetes(r: Rule, host: str, path: str, expected: bool) -> None:
    assert kubernetes_matches(r, host, path) is expected
    entry = entry_for(r)
    # A rule without conditions becomes the default backend or a catch-all: it matches everything.
    generated = True if entry is None else matches(entry.conditions(), host, path)
    assert generated is expected


@pytest.mark.parametrize(
    ("conditions", "host", "path", "expected"),
    [
        ({"pathBeg": "/a"}, "h", "/abc", True),
        ({"pathBeg": "/a"}, "h", "/b", False),
        ({"pathEnd": ".png"}, "h", "/x.png", True),
        ({"pathEnd": ".png"}, "h", "/x.jpg", False),
        ({"hostEq": "h.com", "pathReg": "^/x$"}, "h.com", "/x", True),
        ({"hostEq": "h.com", "pathReg": "^/x$"}, "h.com", "/y", False),
        ({"hostReg": "^h\\.com$", "backend": "ignored"}, "H.COM", "/", True),
    ],
)
def test_matches_evaluates_every_edgelb_condition(
    conditions: dict[str, str], host: str, path: str, expected: bool
) -> None:
    assert matches(conditions, host, path) is expected


# Scenario 14 across two Ingresses sharing one frontend, with hosts and a default backend.
SHARED = [
    ("ns/one", Rule(0, "one-foo-prefix", None, "/foo", "Prefix")),
    ("ns/one", Rule(1, "one-root", None, "/", "Prefix")),
    ("ns/two", Rule(0, "two-foo-exact", None, "/foo", "Exact")),
    ("ns/two", Rule(1, "two-foo-bar", None, "/foo/bar", "Prefix")),
    ("ns/two", Rule(2, "two-wild", "*.example.com", "/foo", "Prefix")),
    ("ns/one", Rule(2, "one-host", "a.example.com", "/", "Prefix")),
    ("ns/two", Rule(3, "two-regex", None, "/bar(/.*)?", IS)),
]


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("h", "/foo", "two-foo-exact"),  # Exact beats Prefix at equal length
        ("h", "/foo/", "one-foo-prefix"),
        ("h", "/foo/bar", "two-foo-bar"),  # the longest matching path wins, across Ingresses
        ("h", "/foo/bar/baz", "two-foo-bar"),
        ("h", "/foo/baz", "one-foo-prefix"),
        ("h", "/foobar", "one-root"),
        ("h", "/bar/x", "two-regex"),
        ("h", "/", "one-root"),
        ("b.example.com", "/foo/bar", "two-wild"),  # a host rule beats any host-less one
        ("b.example.com", "/x", "one-root"),
        ("a.example.com", "/foo/bar", "one-host"),  # the exact host beats the wildcard
        ("a.example.com:8080", "/x", "one-host"),
    ],
)
def test_the_composed_map_routes_as_kubernetes_does(host: str, path: str, expected: str) -> None:
    composed = compose_map(SHARED, default_backend="dflt")
    assert kubernetes_route(SHARED, host, path, default_backend="dflt") == expected
    assert route(composed, host, path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/foo/x", "foo"), ("/other", "dflt"), ("/", "dflt")],
)
def test_unmatched_requests_go_to_the_default_backend(path: str, expected: str) -> None:
    items = [("ns/a", Rule(0, "foo", None, "/foo", "Prefix"))]
    assert route(compose_map(items, default_backend="dflt"), "h", path) == expected
    assert kubernetes_route(items, "h", path, default_backend="dflt") == expected


def test_no_default_backend_and_no_match_is_none() -> None:
    items = [("ns/a", Rule(0, "foo", None, "/foo", "Exact"))]
    assert route(compose_map(items), "h", "/x") is None
    assert kubernetes_route(items, "h", "/x") is None
