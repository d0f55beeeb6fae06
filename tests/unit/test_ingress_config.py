"""An Ingress's configuration annotation (engine.model.ingress.config): defaults, messages, write-back."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from engine.model.ingress.config import IngressConfigResult, IngressFrontends, parse_ingress_config
from engine.model.report import MAX_MESSAGES

CLUSTER = "kubernetes-cluster"
RANGE = "(valid range is between 1 and 65535)"
NO_TLS = (
    "an HTTPS frontend needs a certificate, and the Ingress has no spec.tls: "
    "add spec.tls or remove frontends.https"
)
SAME_PORT = (
    "is also the HTTP port (frontends.http.port): one port cannot serve both; change one, "
    "or set frontends.http.mode to disabled"
)
MODES = "(expected one of enabled, disabled, redirect)"


def parse(text: str | None, *, tls: bool = False, **kwargs: Any) -> IngressConfigResult:
    return parse_ingress_config(text, tls=tls, cluster_name=CLUSTER, rng=random.Random(0), **kwargs)


@pytest.mark.parametrize(
    ("text", "tls", "expected"),
    [
        (None, False, IngressFrontends("enabled", 80, None)),
        ("", True, IngressFrontends("enabled", 80, 443)),
        ("frontends: null", True, IngressFrontends("enabled", 80, 443)),
        ("frontends: {http: null, https: null}", False, IngressFrontends("enabled", 80, None)),
        ("frontends: {http: null, https: null}", True, IngressFrontends("enabled", 80, 443)),
        ("frontends: {http: {mode: null, port: null}}", False, IngressFrontends("enabled", 80, None)),
        ("frontends: {http: {mode: ''}}", False, IngressFrontends("enabled", 80, None)),
        ("frontends: {http: {port: 18080}}", False, IngressFrontends("enabled", 18080, None)),
        ("frontends: {http: {mode: disabled}}", True, IngressFrontends("disabled", 80, 443)),
        ("frontends: {http: {mode: redirect}}", True, IngressFrontends("redirect", 80, 443)),
        ("frontends: {http: {mode: redirect}}", False, IngressFrontends("redirect", 80, None)),
        ("frontends: {https: {port: 8443}}", True, IngressFrontends("enabled", 80, 8443)),
        ("frontends: {https: {port: null}}", True, IngressFrontends("enabled", 80, 443)),
        ("frontends: {https: {}}", False, IngressFrontends("enabled", 80, None)),
        # One port for both is fine when HTTP is disabled.
        ("frontends: {http: {mode: disabled, port: 443}}", True, IngressFrontends("disabled", 443, 443)),
        # The Go dklb's written-back form, nulls and the empty cloud configuration included.
        (
            "name: pool\nrole: slave_public\nnetwork: null\ncpus: 0.2\nmemory: 256\nsize: 1\n"
            "constraints: null\nstrategies: {creation: IfNotPresent}\ncloudProviderConfiguration: ''\n"
            "frontends: {http: {mode: enabled, port: 18080}, https: null}",
            False,
            IngressFrontends("enabled", 18080, None),
        ),
    ],
)
def test_frontends_defaults_and_accepted_values(
    text: str | None, tls: bool, expected: IngressFrontends
) -> None:
    result = parse(text, tls=tls)
    assert result.errors == ()
    assert result.frontends == expected
    assert result.config is not None and result.config.frontends == ()


def test_the_base_fields_have_the_service_defaults() -> None:
    result = parse(None)
    config = result.config
    assert config is not None and result.defaulted_name
    assert config.name.startswith(f"{CLUSTER}--") and len(config.name) == len(CLUSTER) + 7
    assert (config.role, config.network, config.cpus, config.memory, config.size) == (
        "slave_public",
        "",
        0.1,
        128,
        1,
    )
    assert config.creation_strategy == "IfNotPresent"


def test_the_base_fields_are_parsed_as_for_a_service() -> None:
    text = (
        "name: shared\nrole: '*'\nnetwork: dcos\ncpus: 0.2\nmemory: 256\nsize: 2\n"
        'constraints: \'[["hostname","UNIQUE"]]\''
    )
    config = parse(text).config
    assert config is not None and not parse(text).defaulted_name
    assert (config.name, config.role, config.network, config.cpus, config.memory, config.size) == (
        "shared",
        "*",
        "dcos",
        0.2,
        256,
        2,
    )
    assert config.constraints == '[["hostname","UNIQUE"]]'


def test_default_size_is_the_operators() -> None:
    config = parse(None, default_size=3).config
    assert config is not None and config.size == 3


@pytest.mark.parametrize(
    ("text", "tls", "expected"),
    [
        # Scenario 3: Go's texts, after the field's path.
        (
            "frontends: {http: {port: 123456}}",
            False,
            [f"frontends.http.port: 123456 is not a valid HTTP port number {RANGE}"],
        ),
        (
            "frontends: {http: {port: 0}}",
            False,
            [f"frontends.http.port: 0 is not a valid HTTP port number {RANGE}"],
        ),
        (
            "frontends: {http: {port: '80'}}",
            False,
            [f'frontends.http.port: "80" is not a valid HTTP port number {RANGE}'],
        ),
        (
            "frontends: {http: {port: " + "9" * 200 + "}}",
            False,
            [f"frontends.http.port: an integer of 200 digits is not a valid HTTP port number {RANGE}"],
        ),
        (
            "frontends: {http: {port: true}}",
            False,
            [f"frontends.http.port: true is not a valid HTTP port number {RANGE}"],
        ),
        (
            "frontends: {http: {mode: invalid}}",
            False,
            [f"frontends.http.mode: invalid is not a valid HTTP mode {MODES}"],
        ),
        ("frontends: {http: {mode: 3}}", False, [f"frontends.http.mode: 3 is not a valid HTTP mode {MODES}"]),
        (
            "frontends: {http: {mode: 'no way'}}",
            False,
            [f'frontends.http.mode: "no way" is not a valid HTTP mode {MODES}'],
        ),
        (
            "frontends: {http: {mode: Disabled}}",
            False,
            [
                "frontends.http.mode: Disabled is not a valid HTTP mode "
                '(modes are lower-case: did you mean "disabled"?)'
            ],
        ),
        (
            "frontends: {http: {mode: REDIRECT}}",
            True,
            [
                "frontends.http.mode: REDIRECT is not a valid HTTP mode "
                '(modes are lower-case: did you mean "redirect"?)'
            ],
        ),
        (
            "frontends: {https: {port: 123456}}",
            True,
            [f"frontends.https.port: 123456 is not a valid HTTPS port number {RANGE}"],
        ),
        ("frontends: {https: {port: 8443}}", False, [f"frontends.https.port: 8443: {NO_TLS}"]),
        ("frontends: {https: {port: 443}}", False, [f"frontends.https.port: 443: {NO_TLS}"]),
        ("frontends: {http: {port: 443}}", True, [f"frontends.https.port: 443 {SAME_PORT}"]),
        (
            "frontends: {http: {mode: redirect, port: 8443}, https: {port: 8443}}",
            True,
            [
                f"frontends.https.port: 8443 {SAME_PORT}",
                'frontends.http.mode: "redirect" sends clients to port 443 (EdgeLB\'s redirectToHttps), but '
                "frontends.https.port is 8443: use port 443, or another mode",
            ],
        ),
        (
            "frontends: {http: {mode: redirect}, https: {port: 8443}}",
            True,
            [
                'frontends.http.mode: "redirect" sends clients to port 443 (EdgeLB\'s redirectToHttps), but '
                "frontends.https.port is 8443: use port 443, or another mode"
            ],
        ),
        (
            "frontends: [{port: 80, servicePort: 80}]",
            False,
            [
                "frontends: [{port: 80, servicePort: 80}] is not a mapping "
                "(an Ingress takes frontends.http and frontends.https)"
            ],
        ),
        ("frontends: {http: 80}", False, ["frontends.http: 80 is not a mapping"]),
        ("frontends: {https: [443]}", True, ["frontends.https: [443] is not a mapping"]),
        ("frontends: {htp: {}}", False, ['frontends: unknown field "htp" (did you mean "http"?)']),
        (
            "frontends: {http: {mode: enabled, Port: 80}}",
            False,
            ['frontends.http: unknown field "Port" (did you mean "port"?)'],
        ),
        ("frontends: {https: {mode: enabled}}", True, ['frontends.https: unknown field "mode"']),
        (
            "cloudProviderConfiguration: '{\"aws\": {}}'",
            False,
            [
                "cloudProviderConfiguration: a cloud load balancer is not supported for an Ingress: "
                "remove the field"
            ],
        ),
        # Scenario 3: the base fields' Go texts, as for a Service.
        ("name: __foo__", False, ['name: "__foo__" is not a valid edgelb pool name']),
        (
            "network: dcos",
            False,
            ['network: cannot join a virtual network when the pool\'s role is "slave_public"'],
        ),
        (
            "cpus: -0.1",
            False,
            [
                "cpus: -0.100000 is not a valid cpu request "
                "(-0.1: the CPU share must be a finite number, 0 or more)"
            ],
        ),
        ("memory: -256", False, ["memory: -256 is not a valid memory request"]),
        ("size: -1", False, ["size: -1 is not a valid size request"]),
        (
            "strategies: {creation: InvalidStrategy}",
            False,
            [
                'strategies.creation: failed to parse "InvalidStrategy" as an edgelb pool creation strategy '
                "(expected one of IfNotPresent, Once, Never)"
            ],
        ),
        ("elbs: 1", False, ['unknown field "elbs"']),
        # Every error at once, base fields first.
        (
            "size: 0\nfrontends: {http: {mode: invalid, port: 123456}, https: {port: 0}}",
            True,
            [
                "size: 0 is not a valid size request",
                f"frontends.http.mode: invalid is not a valid HTTP mode {MODES}",
                f"frontends.http.port: 123456 is not a valid HTTP port number {RANGE}",
                f"frontends.https.port: 0 is not a valid HTTPS port number {RANGE}",
            ],
        ),
    ],
)
def test_validation_messages(text: str, tls: bool, expected: list[str]) -> None:
    result = parse(text, tls=tls)
    assert list(result.errors) == expected
    assert result.config is None and result.frontends is None
    assert result.to_annotation() is None


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("{a", 'failed to parse the value of "kubernetes.dcos.io/dklb-config" as a configuration object'),
        ("- 1", "the configuration object must be a mapping, got a list"),
        ("x" * 17000, 'the value of "kubernetes.dcos.io/dklb-config" is 17,000 bytes long'),
        (
            "a: 1\na: 2",
            'failed to parse the value of "kubernetes.dcos.io/dklb-config" as a configuration object',
        ),
    ],
)
def test_unreadable_text_gives_the_base_parsers_one_error(text: str, start: str) -> None:
    result = parse(text)
    assert len(result.errors) == 1 and result.errors[0].startswith(start), result.errors
    assert result.config is None


def test_errors_are_capped() -> None:
    text = "frontends: {" + ", ".join(f"f{i}: 1" for i in range(40)) + "}"
    errors = parse(text).errors
    assert len(errors) == MAX_MESSAGES + 1 and errors[-1] == "and 20 more"


@pytest.mark.parametrize(
    ("text", "tls", "frontends"),
    [
        (None, False, {"http": {"mode": "enabled", "port": 80}, "https": None}),
        (None, True, {"http": {"mode": "enabled", "port": 80}, "https": {"port": 443}}),
        (
            "frontends: {http: {mode: disabled}, https: {port: 8443}}",
            True,
            {"http": {"mode": "disabled", "port": 80}, "https": {"port": 8443}},
        ),
    ],
)
def test_the_defaulted_object_is_written_back_and_reads_the_same(
    text: str | None, tls: bool, frontends: dict[str, Any]
) -> None:
    result = parse(text, tls=tls)
    written = result.to_annotation()
    assert written is not None
    data = yaml.safe_load(written)
    assert list(data) == ["name", "role", "network", "cpus", "memory", "size", "frontends", "strategies"]
    assert data["frontends"] == frontends
    again = parse(written, tls=tls)
    assert again.errors == () and (again.config, again.frontends) == (result.config, result.frontends)
    assert not again.defaulted_name


def test_warnings_of_the_base_fields_are_kept() -> None:
    result = parse("contraints: '[]'")
    assert result.errors == ()
    assert result.warnings == ('"contraints" is accepted as "constraints"; please rename the field',)


def test_http_enabled() -> None:
    assert [IngressFrontends(mode).http_enabled for mode in ("enabled", "redirect", "disabled")] == [
        True,
        True,
        False,
    ]


@pytest.mark.parametrize("frontends", ["", "frontends: {http: {port: 8080}}\n"])
def test_the_pool_group_bounds_the_name_with_or_without_frontends(frontends: str) -> None:
    result = parse(frontends + "name: " + "a" * 50, pool_group="dcos-edgelb/pools")
    assert len(result.errors) == 1
    assert result.errors[0].startswith(
        f'name: "{"a" * 50}" is too long for the pool group "dcos-edgelb/pools"'
    )


def test_a_generated_name_is_marked_as_defaulted_when_frontends_are_given() -> None:
    result = parse("frontends: {http: {port: 8080}}")
    assert result.defaulted_name and result.config is not None
    assert result.config.name.startswith(f"{CLUSTER}--")
