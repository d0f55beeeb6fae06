"""Ingress rules → ordered EdgeLB map entries (engine.model.ingress.rules)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.model.ingress.rules import (
    CATCH_ALL_PATH,
    ComposedMap,
    MapEntry,
    Rule,
    compose_map,
    entry_for,
    escape,
    rules_of,
)

IS = "ImplementationSpecific"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/foo", "/foo"),
        ("/a.b", r"/a\.b"),
        ("/a-b_c~d", "/a-b_c~d"),
        ("/(x)[y]{z}", r"/\(x\)\[y\]\{z\}"),
        ("/a+b*c?d|e^f$g\\h", r"/a\+b\*c\?d\|e\^f\$g\\h"),
    ],
)
def test_escape_only_escapes_regex_specials(text: str, expected: str) -> None:
    assert escape(text) == expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (Rule(0, "b", path="/foo", path_type="Exact"), {"backend": "b", "pathReg": "^/foo$"}),
        (Rule(0, "b", path="/foo/", path_type="Exact"), {"backend": "b", "pathReg": "^/foo/$"}),
        (Rule(0, "b", path="/a.b", path_type="Exact"), {"backend": "b", "pathReg": r"^/a\.b$"}),
        (Rule(0, "b", path="/foo", path_type="Prefix"), {"backend": "b", "pathReg": "^/foo(/.*)?$"}),
        (Rule(0, "b", path="/foo/", path_type="Prefix"), {"backend": "b", "pathReg": "^/foo(/.*)?$"}),
        (Rule(0, "b", path="/a.b/c", path_type="Prefix"), {"backend": "b", "pathReg": r"^/a\.b/c(/.*)?$"}),
        (Rule(0, "b", path="/", path_type="Prefix"), None),
        (Rule(0, "b", path="/bar(/.*)?", path_type=IS), {"backend": "b", "pathReg": "^/bar(/.*)?$"}),
        (Rule(0, "b", path=None, path_type=IS), None),
        (Rule(0, "b", host="Foo.COM", path_type=IS), {"backend": "b", "hostEq": "foo.com"}),
        (
            Rule(0, "b", host="*.example.com", path_type=IS),
            {"backend": "b", "hostReg": r"^[^.]+\.example\.com(:[0-9]+)?$"},
        ),
        (
            Rule(0, "b", host="a.com", path="/x", path_type="Prefix"),
            {"backend": "b", "hostEq": "a.com", "pathReg": "^/x(/.*)?$"},
        ),
        (Rule(0, "b", host="a.com", path="/", path_type="Prefix"), {"backend": "b", "hostEq": "a.com"}),
    ],
)
def test_entry_for(rule: Rule, expected: dict[str, str] | None) -> None:
    entry = entry_for(rule)
    assert (entry.to_dict() if entry is not None else None) == expected


def r(
    index: int, backend: str, host: str | None = None, path: str | None = None, path_type: str = IS
) -> Rule:
    return Rule(index, backend, host, path, path_type)


def backends(composed: ComposedMap) -> list[str]:
    return [e.backend for e in composed.entries]


def test_order_exact_host_then_wildcard_then_none_then_longer_path_then_type() -> None:
    items = [
        ("ns/a", r(0, "none-short", path="/a", path_type="Prefix")),
        ("ns/a", r(1, "wild", host="*.x.com", path="/a", path_type="Prefix")),
        ("ns/a", r(2, "none-long", path="/abc", path_type="Prefix")),
        ("ns/b", r(0, "exact-host", host="y.x.com", path="/", path_type="Prefix")),
        ("ns/b", r(1, "none-prefix", path="/ab", path_type="Prefix")),
        ("ns/b", r(2, "none-exact", path="/ab", path_type="Exact")),
        ("ns/b", r(3, "none-is", path="/a.", path_type=IS)),
        ("ns/a", r(3, "host-long", host="y.x.com", path="/zzzzzz", path_type="Prefix")),
    ]
    assert backends(compose_map(items)) == [
        "host-long",
        "exact-host",
        "wild",
        "none-long",
        "none-exact",
        "none-prefix",
        "none-is",
        "none-short",
    ]


def test_a_trailing_slash_does_not_lengthen_a_prefix() -> None:
    items = [
        ("ns/a", r(0, "slash", path="/foo/", path_type="Prefix")),
        ("ns/b", r(0, "exact", path="/foo", path_type="Exact")),
    ]
    assert backends(compose_map(items)) == ["exact", "slash"]


def test_ties_break_by_ingress_key_then_rule_index_whatever_the_input_order() -> None:
    items = [
        ("ns/b", r(0, "b0", path="/x", path_type="Prefix")),
        ("ns/a", r(1, "a1", path="/y", path_type="Prefix")),
        ("ns/a", r(0, "a0", path="/z", path_type="Prefix")),
    ]
    assert backends(compose_map(items)) == ["a0", "a1", "b0"]
    assert compose_map(list(reversed(items))) == compose_map(items)


@pytest.mark.parametrize(
    ("default", "items", "expected_default", "expected_entries", "expected_shadowed"),
    [
        # A condition-less rule becomes the default backend when there is none...
        (None, [("ns/a", r(0, "all", path="/", path_type="Prefix"))], "all", [], []),
        # ...else a catch-all entry, last (the rule wins over the default backend, as in Kubernetes).
        (
            "dflt",
            [
                ("ns/a", r(0, "all", path="/", path_type="Prefix")),
                ("ns/a", r(1, "x", path="/x", path_type="Prefix")),
            ],
            "dflt",
            [MapEntry("x", path_reg="^/x(/.*)?$"), MapEntry("all", path_reg=CATCH_ALL_PATH)],
            [],
        ),
        # Two catch-alls without a default: the first in order is the default, the other never matches.
        (
            None,
            [("ns/b", r(0, "b-all")), ("ns/a", r(0, "a-all", path="/", path_type="Prefix"))],
            "a-all",
            [],
            [("ns/b", r(0, "b-all"))],
        ),
        # Same conditions twice: the first in order wins, the other is reported.
        (
            None,
            [
                ("ns/b", r(0, "b", host="h.com", path="/x", path_type="Exact")),
                ("ns/a", r(0, "a", host="H.com", path="/x", path_type="Exact")),
            ],
            None,
            [MapEntry("a", host_eq="h.com", path_reg="^/x$")],
            [("ns/b", r(0, "b", host="h.com", path="/x", path_type="Exact"))],
        ),
        # Prefix /x/ and Prefix /x are the same condition.
        (
            None,
            [
                ("ns/a", r(0, "a", path="/x/", path_type="Prefix")),
                ("ns/a", r(1, "b", path="/x", path_type="Prefix")),
            ],
            None,
            [MapEntry("a", path_reg="^/x(/.*)?$")],
            [("ns/a", r(1, "b", path="/x", path_type="Prefix"))],
        ),
        (None, [], None, [], []),
    ],
)
def test_default_backend_catch_alls_and_shadowed_rules(
    default: str | None,
    items: list[tuple[str, Rule]],
    expected_default: str | None,
    expected_entries: list[MapEntry],
    expected_shadowed: list[tuple[str, Rule]],
) -> None:
    composed = compose_map(items, default_backend=default)
    assert composed.default_backend == expected_default
    assert list(composed.entries) == expected_entries
    assert list(composed.shadowed) == expected_shadowed


@pytest.mark.parametrize(
    ("composed", "expected"),
    [
        (ComposedMap(None, ()), {"map": []}),
        (
            ComposedMap("d", (MapEntry("b", host_eq="h.com", path_reg="^/x$"),)),
            {"defaultBackend": "d", "map": [{"backend": "b", "hostEq": "h.com", "pathReg": "^/x$"}]},
        ),
        (
            ComposedMap(None, (MapEntry("b", host_reg="^h$", path_beg="/a", path_end=".png"),)),
            {"map": [{"backend": "b", "hostReg": "^h$", "pathBeg": "/a", "pathEnd": ".png"}]},
        ),
    ],
)
def test_to_link_backend_uses_edgelb_field_names(composed: ComposedMap, expected: dict[str, Any]) -> None:
    assert composed.to_link_backend() == expected


def path(p: str | None, path_type: str | None, backend: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend}
    if p is not None:
        out["path"] = p
    if path_type is not None:
        out["pathType"] = path_type
    return out


SVC = {"service": {"name": "echo", "port": {"number": 80}}}
NAMED = {"service": {"name": "echo", "port": {"name": "http"}}}


def test_rules_of_flattens_rules_and_paths_with_backend_names() -> None:
    ingress = {
        "metadata": {"namespace": "ns", "name": "web"},
        "spec": {
            "rules": [
                {"host": "a.com", "http": {"paths": [path("/x", "Prefix", SVC), path("/y", "Exact", NAMED)]}},
                {"http": {"paths": [path(None, None, SVC)]}},
                {"host": "b.com"},
            ]
        },
    }
    rules, problems = rules_of(ingress, cluster="dev/k8s")
    assert problems == ()
    assert rules == (
        Rule(0, "dev.k8s:ns:web:echo:80", "a.com", "/x", "Prefix"),
        Rule(1, "dev.k8s:ns:web:echo:http", "a.com", "/y", "Exact"),
        Rule(2, "dev.k8s:ns:web:echo:80", None, None, IS),
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            path("/x", "Regex", SVC),
            'spec.rules[0].http.paths[1].pathType: "Regex" is not a path type '
            "(expected one of Exact, Prefix, ImplementationSpecific)",
        ),
        (
            path(
                "/x", "Prefix", {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "b"}}
            ),
            "spec.rules[0].http.paths[1].backend: only a Service backend "
            "(service.name and service.port) is supported",
        ),
        (
            path("/x", "Prefix", {"service": {"name": "echo", "port": {}}}),
            "spec.rules[0].http.paths[1].backend: only a Service backend "
            "(service.name and service.port) is supported",
        ),
        (
            path("/x(", IS, SVC),
            'spec.rules[0].http.paths[1].path: "/x(" is not a valid regular expression '
            "(missing ), unterminated subpattern at position 2)",
        ),
    ],
)
def test_rules_of_reports_the_paths_it_leaves_out(entry: dict[str, Any], problem: str) -> None:
    ingress = {
        "metadata": {"namespace": "ns", "name": "web"},
        "spec": {"rules": [{"http": {"paths": [path("/ok", "Exact", SVC), entry]}}]},
    }
    rules, problems = rules_of(ingress, cluster="c")
    assert rules == (Rule(0, "c:ns:web:echo:80", None, "/ok", "Exact"),)
    assert problems == (problem,)


def test_an_exact_path_with_regex_characters_is_not_a_regex() -> None:
    rules, problems = rules_of(
        {
            "metadata": {"namespace": "ns", "name": "w"},
            "spec": {"rules": [{"http": {"paths": [path("/x(", "Exact", SVC)]}}]},
        },
        cluster="c",
    )
    assert problems == ()
    entry = entry_for(rules[0])
    assert entry is not None and entry.path_reg == r"^/x\($"
