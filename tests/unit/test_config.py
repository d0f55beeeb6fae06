"""The configuration object: defaults, every validation rule and message, and the round trip."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from engine.model.config import (
    CLOUD_POOL_PREFIX,
    CREATION_STRATEGIES,
    DEFAULT_NETWORK,
    ROLE_PUBLIC,
    Frontend,
    ParseResult,
    PoolConfig,
    check_transition,
    default_pool_name,
)
from engine.model.parse import parse_config
from engine.model.report import MAX_INTEGER
from engine.model.services import ANNOTATION, PAUSED_ANNOTATION, is_paused

CLUSTER = "kubernetes-cluster"
PORTS = (8080, 9090)
SEED = 0
PARSE_FAILED = f'failed to parse the value of "{ANNOTATION}" as a configuration object: '
EXPECTED_STRATEGIES = "(expected one of IfNotPresent, Once, Never)"
CPUS_RULE = "the CPU share must be a finite number, 0 or more"


def parse(text: str | None, ports: tuple[int, ...] = PORTS, **kwargs: Any) -> ParseResult:
    kwargs.setdefault("cluster_name", CLUSTER)
    kwargs.setdefault("rng", random.Random(SEED))
    return parse_config(text, service_ports=ports, **kwargs)


def generated_name(cluster: str = CLUSTER, prefix: str = "") -> str:
    """The name parse() generates: the same seed gives the same name."""
    return default_pool_name(cluster, random.Random(SEED), prefix=prefix)


def frontends(*pairs: tuple[int, int]) -> tuple[Frontend, ...]:
    return tuple(Frontend(port, service_port) for port, service_port in pairs)


def config(**overrides: Any) -> PoolConfig:
    """A fully defaulted config for PORTS, with some fields replaced."""
    fields: dict[str, Any] = {
        "name": generated_name(),
        "role": ROLE_PUBLIC,
        "network": "",
        "cpus": 0.1,
        "memory": 128,
        "size": 1,
        "frontends": frontends((8080, 8080), (9090, 9090)),
    }
    fields.update(overrides)
    return PoolConfig(**fields)


# --- defaults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(None, id="an absent annotation is defaulted entirely"),
        pytest.param("", id="an empty annotation is defaulted entirely"),
        pytest.param("  \n\t\n", id="a blank annotation is defaulted entirely"),
        pytest.param("# nothing to say\n", id="an annotation holding only a comment is defaulted entirely"),
        pytest.param("{}", id="an empty mapping is defaulted entirely"),
        pytest.param("null", id="a null document is defaulted entirely"),
        pytest.param("~", id="a YAML null document is defaulted entirely"),
    ],
)
def test_an_annotation_without_fields_gives_the_defaulted_object(text: str | None) -> None:
    result = parse(text)

    assert result == ParseResult(config=config(), errors=(), warnings=(), defaulted_name=True)
    assert result.config is not None
    assert result.config.creation_strategy == "IfNotPresent"
    assert result.config.constraints is None
    assert result.config.cloud_provider_configuration is None


@pytest.mark.parametrize(
    ("text", "ports", "kwargs", "attribute", "expected"),
    [
        pytest.param(None, PORTS, {}, "role", ROLE_PUBLIC, id="role defaults to the public agents"),
        pytest.param(
            None, PORTS, {}, "network", "", id="network defaults to the host network for public pools"
        ),
        pytest.param(
            "role: '*'",
            PORTS,
            {},
            "network",
            DEFAULT_NETWORK,
            id="network defaults to dcos for private pools",
        ),
        pytest.param(
            "role: my-role",
            PORTS,
            {},
            "network",
            "dcos",
            id="network defaults to dcos for any non-public role",
        ),
        pytest.param(
            "role: slave_public",
            PORTS,
            {},
            "network",
            "",
            id="network defaults to host for an explicit public role",
        ),
        pytest.param(None, PORTS, {}, "cpus", 0.1, id="cpus default to 0.1"),
        pytest.param(None, PORTS, {}, "memory", 128, id="memory defaults to 128 MB"),
        pytest.param(None, PORTS, {}, "size", 1, id="size defaults to 1"),
        pytest.param(
            None, PORTS, {"default_size": 3}, "size", 3, id="size defaults to the default-size flag"
        ),
        pytest.param(
            None, PORTS, {}, "creation_strategy", "IfNotPresent", id="creation defaults to IfNotPresent"
        ),
        pytest.param(
            "strategies: {}",
            PORTS,
            {},
            "creation_strategy",
            "IfNotPresent",
            id="empty strategies default creation",
        ),
        pytest.param(None, PORTS, {}, "constraints", None, id="constraints default to unset"),
        pytest.param(
            None, PORTS, {}, "cloud_provider_configuration", None, id="no cloud provider by default"
        ),
        pytest.param(
            None,
            (9090, 80),
            {},
            "frontends",
            frontends((9090, 9090), (80, 80)),
            id="frontends default to one per service port in the Service's order",
        ),
        pytest.param(
            "frontends:\n- port: 18080\n  servicePort: 8080\n",
            (80, 8080, 443),
            {},
            "frontends",
            frontends((80, 80), (18080, 8080), (443, 443)),
            id="an entry maps only its own service port and the others keep port = servicePort",
        ),
        pytest.param(
            "frontends: []",
            PORTS,
            {},
            "frontends",
            config().frontends,
            id="an empty frontends list maps nothing",
        ),
        pytest.param(None, (), {}, "frontends", (), id="a Service without TCP ports has no frontends"),
        pytest.param(
            None,
            (80, 80),
            {},
            "frontends",
            frontends((80, 80)),
            id="a service port listed twice gets one frontend",
        ),
        pytest.param("cpus: 2", PORTS, {}, "cpus", 2.0, id="cpus accept an integer"),
        pytest.param("cpus: 0", PORTS, {}, "cpus", 0.0, id="cpus accept zero"),
        pytest.param("name: a", PORTS, {}, "name", "a", id="a one-character name is accepted"),
        pytest.param(f"name: {'a' * 63}", PORTS, {}, "name", "a" * 63, id="a 63-character name is accepted"),
        pytest.param(
            "name: '0123'", PORTS, {}, "name", "0123", id="a name of digits is accepted when quoted"
        ),
        pytest.param("memory: 0", PORTS, {}, "memory", 0, id="memory accepts zero"),
    ],
)
def test_field_defaults_and_accepted_values(
    text: str | None, ports: tuple[int, ...], kwargs: dict[str, Any], attribute: str, expected: Any
) -> None:
    result = parse(text, ports, **kwargs)

    assert result.errors == ()
    assert result.config is not None
    assert getattr(result.config, attribute) == expected


def test_cpus_given_as_an_integer_is_stored_as_a_float() -> None:
    result = parse("cpus: 2")

    assert result.config is not None
    assert isinstance(result.config.cpus, float)


@pytest.mark.parametrize(
    ("cluster_name", "prefix", "expected_start"),
    [
        pytest.param(
            "kubernetes-cluster", "", "kubernetes-cluster--", id="the cluster name prefixes the name"
        ),
        pytest.param("/dev/kubernetes01", "", "dev--kubernetes01--", id="a leading slash is removed"),
        pytest.param("/a/b/c", "", "a--b--c--", id="every slash becomes a double dash"),
        pytest.param("x" * 50, "", "x" * 38 + "--", id="the cluster part is cut to 38 characters"),
        pytest.param(
            "/" + "a" * 37 + "/b",
            "",
            "a" * 37 + "-" + "--",
            id="slashes are replaced before the cluster part is cut",
        ),
        pytest.param("/dev/k", "cloud--", "cloud--dev--k--", id="a prefix comes before the cluster part"),
    ],
)
def test_default_pool_name_shape(cluster_name: str, prefix: str, expected_start: str) -> None:
    name = default_pool_name(cluster_name, random.Random(SEED), prefix=prefix)

    assert re.fullmatch(re.escape(expected_start) + "[a-z0-9]{5}", name), name


def test_default_pool_name_is_deterministic_for_a_seeded_rng() -> None:
    first = default_pool_name(CLUSTER, random.Random(42))
    again = default_pool_name(CLUSTER, random.Random(42))
    others = {default_pool_name(CLUSTER, random.Random(seed)) for seed in range(20)}

    assert first == again
    assert len(others) > 1, "the suffix must depend on the random source"


def test_a_missing_name_is_generated_from_the_cluster_name() -> None:
    result = parse("role: '*'", rng=random.Random(5), cluster_name="/dev/kubernetes01")

    assert result.config is not None
    assert result.config.name == default_pool_name("/dev/kubernetes01", random.Random(5))
    assert result.defaulted_name is True


def test_a_given_name_is_not_marked_as_defaulted() -> None:
    result = parse("name: dklb-pool-0")

    assert result.config is not None
    assert result.config.name == "dklb-pool-0"
    assert result.defaulted_name is False


@pytest.mark.parametrize(
    "cluster_name",
    [
        pytest.param("Prod", id="an uppercase cluster name makes an invalid generated name"),
        pytest.param("", id="an empty cluster name makes an invalid generated name"),
        pytest.param("/", id="a cluster name of a single slash makes an invalid generated name"),
        pytest.param("dev_cluster", id="an underscore in the cluster name makes an invalid generated name"),
    ],
)
def test_a_cluster_name_that_makes_an_invalid_pool_name_is_reported(cluster_name: str) -> None:
    result = parse(None, cluster_name=cluster_name)
    name = generated_name(cluster_name)

    assert result.config is None
    assert result.errors == (
        f"name: {json.dumps(name)} (generated from the cluster name {json.dumps(cluster_name)}) "
        "is not a valid edgelb pool name",
    )


# --- validation ----------------------------------------------------------------------------------


def case(sentence: str, text: str, *errors: str, ports: tuple[int, ...] = PORTS) -> Any:
    """One row of the validation table: the annotation, and exactly the errors it must produce."""
    return pytest.param(text, ports, list(errors), id=sentence)


@pytest.mark.parametrize(
    ("text", "ports", "expected"),
    [
        # name
        case(
            "name: underscores are refused",
            'name: "__foo__"',
            'name: "__foo__" is not a valid edgelb pool name',
        ),
        case("name: uppercase is refused", "name: Foo", 'name: "Foo" is not a valid edgelb pool name'),
        case(
            "name: a trailing dash is refused", "name: foo-", 'name: "foo-" is not a valid edgelb pool name'
        ),
        case("name: a leading dash is refused", "name: -foo", 'name: "-foo" is not a valid edgelb pool name'),
        case("name: the empty string is refused", "name: ''", 'name: "" is not a valid edgelb pool name'),
        case(
            "name: 64 characters is too long",
            f"name: {'a' * 64}",
            f'name: "{"a" * 64}" is not a valid edgelb pool name',
        ),
        case(
            "name: a trailing newline is refused",
            'name: "foo\\n"',
            'name: "foo\\n" holds the control character U+000A (at character 4): only printable characters '
            "are allowed",
        ),
        case("name: a number is not a string", "name: 123", "name: 123 is not a string"),
        # role and network
        case("role: a number is not a string", "role: 1", "role: 1 is not a string"),
        case("role: the empty role is refused", "role: ''", 'role: "" is not a valid role'),
        case(
            "network: a public pool cannot join a virtual network",
            "network: dcos",
            'network: cannot join a virtual network when the pool\'s role is "slave_public"',
        ),
        case(
            "network: an explicitly public pool cannot join a virtual network",
            "role: slave_public\nnetwork: overlay",
            'network: cannot join a virtual network when the pool\'s role is "slave_public"',
        ),
        case(
            "network: a private pool cannot use the host network",
            "role: '*'\nnetwork: ''",
            'network: cannot join the host network when the pool\'s role is "*"',
        ),
        case("network: a boolean is not a string", "network: true", "network: true is not a string"),
        # cpus, memory, size
        case(
            "cpus: a negative float is refused, as Go printed it (%f) and as written",
            "cpus: -0.1",
            f"cpus: -0.100000 is not a valid cpu request (-0.1: {CPUS_RULE})",
        ),
        case(
            "cpus: a negative integer is refused",
            "cpus: -1",
            f"cpus: -1.000000 is not a valid cpu request (-1: {CPUS_RULE})",
        ),
        case(
            "cpus: a value %f rounds to zero is shown as written too",
            "cpus: -1.0e-9",
            f"cpus: -0.000000 is not a valid cpu request (-1e-09: {CPUS_RULE})",
        ),
        case(
            "cpus: nan is refused", "cpus: .nan", f"cpus: nan is not a valid cpu request (nan: {CPUS_RULE})"
        ),
        case(
            "cpus: infinity is refused",
            "cpus: .inf",
            f"cpus: inf is not a valid cpu request (inf: {CPUS_RULE})",
        ),
        case("cpus: a string is not a number", 'cpus: "abc"', 'cpus: "abc" is not a number'),
        case("cpus: a quoted number is not a number", 'cpus: "0.5"', 'cpus: "0.5" is not a number'),
        case("cpus: a boolean is never a number", "cpus: true", "cpus: true is not a number"),
        case(
            "memory: a negative value is refused",
            "memory: -256",
            "memory: -256 is not a valid memory request",
        ),
        case("memory: a float is not an integer", "memory: 1.5", "memory: 1.5 is not an integer"),
        case(
            "memory: an integral float is not an integer", "memory: 512.0", "memory: 512.0 is not an integer"
        ),
        case("memory: a string is not an integer", "memory: '512'", 'memory: "512" is not an integer'),
        case("memory: a boolean is never an integer", "memory: false", "memory: false is not an integer"),
        case("size: zero is refused", "size: 0", "size: 0 is not a valid size request"),
        case("size: a negative size is refused", "size: -1", "size: -1 is not a valid size request"),
        case("size: a float is not an integer", "size: 2.0", "size: 2.0 is not an integer"),
        case("size: a YAML boolean is never an integer", "size: yes", "size: true is not an integer"),
        # frontends: shape and types
        case("frontends: a string is not a list", "frontends: x", 'frontends: "x" is not a list'),
        case(
            "frontends: a mapping is not a list", "frontends: {port: 1}", "frontends: {port: 1} is not a list"
        ),
        case(
            "frontends: an entry must be a mapping",
            "frontends: [8080]",
            "frontends[0]: 8080 is not a mapping",
        ),
        case(
            "frontends: a string port is not an integer",
            "frontends:\n- port: x\n  servicePort: 8080",
            'frontends[0].port: "x" is not an integer',
        ),
        case(
            "frontends: a boolean port is never an integer",
            "frontends:\n- port: true\n  servicePort: 8080",
            "frontends[0].port: true is not an integer",
        ),
        case(
            "frontends: a float port is not an integer",
            "frontends:\n- port: 18080.0\n  servicePort: 8080",
            "frontends[0].port: 18080.0 is not an integer",
        ),
        case(
            "frontends: servicePort is required",
            "frontends:\n- port: 18080",
            "frontends[0].servicePort: the field is required",
        ),
        # frontends: ranges
        case(
            "frontends: a port above 65535 is refused",
            "frontends:\n- port: 123456\n  servicePort: 8080",
            "frontends[0].port: 123456 is not a valid port number",
        ),
        case(
            "frontends: port 0 is refused",
            "frontends:\n- port: 0\n  servicePort: 8080",
            "frontends[0].port: 0 is not a valid port number",
        ),
        case(
            "frontends: service port 0 is refused",
            "frontends:\n- port: 18080\n  servicePort: 8080\n- port: 19090\n  servicePort: 0",
            "frontends[1].servicePort: 0 is not a valid port number",
        ),
        case(
            "frontends: service port 65536 is refused",
            "frontends:\n- port: 18080\n  servicePort: 65536",
            "frontends[0].servicePort: 65536 is not a valid port number",
        ),
        case(
            "frontends: ports 1 and 65535 are valid",
            "frontends:\n- port: 65535\n  servicePort: 8080\n- port: 1\n  servicePort: 9090",
        ),
        # frontends: duplicates
        case(
            "frontends: a service port mapped twice is refused",
            "frontends:\n- port: 18080\n  servicePort: 8080\n- port: 18081\n  servicePort: 8080",
            "frontends[1].servicePort: service port 8080 has been specified twice",
        ),
        case(
            "frontends: a bind port used twice is refused",
            "frontends:\n- port: 18080\n  servicePort: 8080\n- port: 18080\n  servicePort: 9090",
            "frontends[1].port: frontend port 18080 has been specified twice",
        ),
        case(
            "frontends: duplicates are checked on the entries as given, dropped ones included",
            "frontends:\n- port: 18080\n  servicePort: 7777\n- port: 18080\n  servicePort: 8080",
            "frontends[1].port: frontend port 18080 has been specified twice",
        ),
        case(
            "frontends: a mapped port may not take the default port of another service port",
            "frontends:\n- port: 80\n  servicePort: 8080",
            "frontends: frontend port 80 of service port 8080 clashes with the default frontend port "
            "of service port 80",
            ports=(80, 8080),
        ),
        case(
            "frontends: swapping two ports is no clash",
            "frontends:\n- port: 9090\n  servicePort: 8080\n- port: 8080\n  servicePort: 9090",
        ),
        # constraints
        case("constraints: a number is not a string", "constraints: 1", "constraints: 1 is not a string"),
        case(
            "constraints: a YAML list is not a string",
            "constraints: [[hostname, UNIQUE]]",
            "constraints: [[hostname, UNIQUE]] is not a string",
        ),
        case(
            "contraints: the misspelled field is type-checked under its own name",
            "contraints: 1",
            "contraints: 1 is not a string",
        ),
        case(
            "constraints: giving both spellings is refused",
            "constraints: a\ncontraints: b",
            'constraints: "contraints" and "constraints" cannot both be given',
        ),
        # strategies
        case("strategies: a string is not a mapping", "strategies: x", 'strategies: "x" is not a mapping'),
        case(
            "strategies: an unknown creation strategy is refused",
            "strategies:\n  creation: Foo",
            'strategies.creation: failed to parse "Foo" as an edgelb pool creation strategy '
            + EXPECTED_STRATEGIES,
        ),
        case(
            "strategies: the creation strategy is case-sensitive",
            "strategies:\n  creation: ifnotpresent",
            'strategies.creation: failed to parse "ifnotpresent" as an edgelb pool creation strategy '
            + EXPECTED_STRATEGIES,
        ),
        case(
            "strategies: a number is not a creation strategy",
            "strategies:\n  creation: 1",
            "strategies.creation: failed to parse 1 as an edgelb pool creation strategy "
            + EXPECTED_STRATEGIES,
        ),
        # cloud provider
        case(
            "cloud: the configuration must be valid JSON",
            'cloudProviderConfiguration: "{"',
            "cloudProviderConfiguration: the cloud-provider configuration is not valid JSON: "
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        case(
            "cloud: the configuration must be a JSON object",
            "cloudProviderConfiguration: '[]'",
            "cloudProviderConfiguration: the cloud-provider configuration must be a JSON object, got a list",
        ),
        case(
            "cloud: the configuration is a string holding JSON, not YAML",
            "cloudProviderConfiguration: {aws: {}}",
            "cloudProviderConfiguration: {aws: {}} is not a string",
        ),
        case(
            "cloud: an invalid name is reported once, as invalid",
            "cloudProviderConfiguration: '{}'\nname: Cloud--x",
            'name: "Cloud--x" is not a valid edgelb pool name',
        ),
    ],
)
def test_validation_messages(text: str, ports: tuple[int, ...], expected: list[str]) -> None:
    result = parse(text, ports)

    assert list(result.errors) == expected
    assert (result.config is None) == bool(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("foo: 1", ['unknown field "foo"'], id="an unknown top-level field is refused"),
        pytest.param(
            "Name: x", ['unknown field "Name" (did you mean "name"?)'], id="field names are case-sensitive"
        ),
        pytest.param("1: x", ["unknown field 1"], id="a non-string top-level key is an unknown field"),
        pytest.param(
            "frontends:\n- port: 18080\n  servicePort: 8080\n  bar: 1",
            ['frontends[0]: unknown field "bar"'],
            id="an unknown field in a frontend entry is refused",
        ),
        pytest.param(
            "frontends:\n- port: 18080\n  service_port: 8080",
            [
                'frontends[0]: unknown field "service_port" (did you mean "servicePort"?)',
                "frontends[0].servicePort: the field is required",
            ],
            id="a misspelled servicePort is unknown and leaves servicePort missing",
        ),
        pytest.param(
            "strategies:\n  creation: Once\n  deletion: Never",
            ['strategies: unknown field "deletion"'],
            id="an unknown field in strategies is refused",
        ),
        pytest.param(
            "foo: 1\nbar: 2",
            ['unknown field "foo"', 'unknown field "bar"'],
            id="every unknown field is reported",
        ),
    ],
)
def test_unknown_fields_are_refused_at_every_level(text: str, expected: list[str]) -> None:
    result = parse(text)

    assert list(result.errors) == expected
    assert result.config is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "name: a\nname: b",
            PARSE_FAILED + 'found duplicate key "name" (line 2, column 1)',
            id="a duplicate top-level key is refused",
        ),
        pytest.param(
            "frontends:\n- port: 1\n  port: 2\n  servicePort: 8080",
            PARSE_FAILED + 'found duplicate key "port" (line 3, column 3)',
            id="a duplicate key in a frontend entry is refused",
        ),
        pytest.param(
            "strategies:\n  creation: Once\n  creation: Never",
            PARSE_FAILED + 'found duplicate key "creation" (line 3, column 3)',
            id="a duplicate key in strategies is refused",
        ),
        pytest.param(
            "name: [a",
            PARSE_FAILED
            + "while parsing a flow sequence: did not find expected ',' or ']' (at the end of the text)",
            id="a YAML syntax error is reported on one line with its position",
        ),
        pytest.param(
            "name: a: b",
            PARSE_FAILED + "mapping values are not allowed in this context (line 1, column 8)",
            id="an unquoted colon is a YAML syntax error",
        ),
        pytest.param(
            "---\nname: a\n---\nname: b",
            PARSE_FAILED
            + "expected a single document in the stream: but found another document (line 3, column 1)",
            id="several YAML documents are refused",
        ),
        pytest.param(
            "name: !!python/object:os.system x",
            PARSE_FAILED
            + "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object:os.system'"
            " (line 1, column 7)",
            id="python tags are refused by the safe loader",
        ),
        pytest.param(
            "- name: a",
            "the configuration object must be a mapping, got a list: [{name: a}]",
            id="a list is not a configuration object",
        ),
        pytest.param(
            "dklb-pool-0",
            'the configuration object must be a mapping, got a string: "dklb-pool-0"',
            id="a bare string is not a configuration object",
        ),
        pytest.param(
            "42",
            "the configuration object must be a mapping, got an integer: 42",
            id="a number is not one either",
        ),
    ],
)
def test_yaml_problems_are_reported_as_a_single_error(text: str, expected: str) -> None:
    result = parse(text)

    assert result.errors == (expected,)
    assert result.config is None
    assert "\n" not in expected


def test_all_errors_are_collected_at_once() -> None:
    text = (
        "name: __foo__\n"
        "role: slave_public\n"
        "network: dcos\n"
        "cpus: -0.1\n"
        "memory: 1.5\n"
        "size: 0\n"
        "frontends:\n"
        "- port: 123456\n"
        "  servicePort: 8080\n"
        "  bar: 1\n"
        "- port: 18080\n"
        "  servicePort: 8080\n"
        "strategies:\n"
        "  creation: Foo\n"
        "foo: 1\n"
    )

    result = parse(text)

    assert list(result.errors) == [
        'unknown field "foo"',
        'name: "__foo__" is not a valid edgelb pool name',
        'network: cannot join a virtual network when the pool\'s role is "slave_public"',
        f"cpus: -0.100000 is not a valid cpu request (-0.1: {CPUS_RULE})",
        "memory: 1.5 is not an integer",
        "size: 0 is not a valid size request",
        'frontends[0]: unknown field "bar"',
        "frontends[0].port: 123456 is not a valid port number",
        "frontends[1].servicePort: service port 8080 has been specified twice",
        'strategies.creation: failed to parse "Foo" as an edgelb pool creation strategy '
        + EXPECTED_STRATEGIES,
    ]
    assert result.config is None


# --- warnings ------------------------------------------------------------------------------------

SEED_CONSTRAINTS = '[["hostname","MAX_PER","1"],["@zone","GROUP_BY","3"]]'


def test_the_seeds_misspelled_contraints_is_accepted_with_a_warning() -> None:
    # Exactly as the seed documents it, escaped quotes included.
    text = 'contraints: "[[\\"hostname\\",\\"MAX_PER\\",\\"1\\"],[\\"@zone\\",\\"GROUP_BY\\",\\"3\\"]]"'

    result = parse(text)

    assert result.errors == ()
    assert result.config == config(constraints=SEED_CONSTRAINTS)
    assert result.warnings == ('"contraints" is accepted as "constraints"; please rename the field',)


def test_constraints_are_passed_through_untouched_without_a_warning() -> None:
    result = parse(f"constraints: '{SEED_CONSTRAINTS}'")

    assert result.config == config(constraints=SEED_CONSTRAINTS)
    assert result.warnings == ()


@pytest.mark.parametrize(
    ("text", "expected_frontends", "expected_warnings"),
    [
        pytest.param(
            "frontends:\n- port: 17777\n  servicePort: 7777\n- port: 18080\n  servicePort: 8080",
            frontends((18080, 8080), (9090, 9090)),
            ["frontends[0]: service port 7777 is not a TCP port of the Service; the entry is ignored"],
            id="an entry for a port the Service does not have is dropped with a warning",
        ),
        pytest.param(
            "frontends:\n- port: 17777\n  servicePort: 7777\n- port: 15353\n  servicePort: 53",
            frontends((8080, 8080), (9090, 9090)),
            [
                "frontends[0]: service port 7777 is not a TCP port of the Service; the entry is ignored",
                "frontends[1]: service port 53 is not a TCP port of the Service; the entry is ignored",
            ],
            id="every dropped entry is named",
        ),
        pytest.param(
            "frontends:\n- port: 8080\n  servicePort: 7777",
            frontends((8080, 8080), (9090, 9090)),
            ["frontends[0]: service port 7777 is not a TCP port of the Service; the entry is ignored"],
            id="a dropped entry's bind port does not clash with a default port",
        ),
    ],
)
def test_frontend_entries_for_unknown_service_ports_are_dropped(
    text: str, expected_frontends: tuple[Frontend, ...], expected_warnings: list[str]
) -> None:
    result = parse(text)

    assert result.errors == ()
    assert result.config is not None
    assert result.config.frontends == expected_frontends
    assert list(result.warnings) == expected_warnings


def test_a_dropped_entry_is_type_checked_first() -> None:
    result = parse("frontends:\n- port: 0\n  servicePort: 7777")

    assert result.errors == ("frontends[0].port: 0 is not a valid port number",)
    assert result.warnings == (
        "frontends[0]: service port 7777 is not a TCP port of the Service; the entry is ignored",
    )
    assert result.config is None


def test_an_ill_typed_service_port_is_an_error_not_a_dropped_entry() -> None:
    result = parse("frontends:\n- port: 17777\n  servicePort: '7777'")

    assert result.errors == ('frontends[0].servicePort: "7777" is not an integer',)
    assert result.warnings == ()


# --- the seed's examples -------------------------------------------------------------------------

SEED_POOL = """\
name: "dklb-pool-0"
role: "*"
network: "dcos"
size: 3
cpus: 0.2
memory: 512
frontends:
- port: 18080
  servicePort: 8080
- port: 19090
  servicePort: 9090
"""

SEED_REDIS = """\
name: dklb-redis
frontends:
- port: 16379
  servicePort: 6379
"""

REDIS = PoolConfig(
    name="dklb-redis",
    role=ROLE_PUBLIC,
    network="",
    cpus=0.1,
    memory=128,
    size=1,
    frontends=frontends((16379, 6379)),
)


def test_the_seeds_customized_pool_example() -> None:
    result = parse(SEED_POOL, (8080, 9090))

    assert result == ParseResult(
        config=PoolConfig(
            name="dklb-pool-0",
            role="*",
            network="dcos",
            cpus=0.2,
            memory=512,
            size=3,
            frontends=frontends((18080, 8080), (19090, 9090)),
            creation_strategy="IfNotPresent",
        ),
        errors=(),
        warnings=(),
        defaulted_name=False,
    )


def test_the_seeds_redis_example() -> None:
    result = parse(SEED_REDIS, (6379,))

    assert result == ParseResult(config=REDIS, errors=(), warnings=(), defaulted_name=False)


# --- cloud provider ------------------------------------------------------------------------------

CLOUD = '{"aws": {"elbs": [{"name": "lb", "type": "NLB", "internal": false}]}}'


def test_a_cloud_provider_configuration_generates_a_cloud_pool_name_on_the_host_network() -> None:
    result = parse(f"cloudProviderConfiguration: '{CLOUD}'")

    assert result.config == config(
        name=generated_name(prefix=CLOUD_POOL_PREFIX), cloud_provider_configuration=CLOUD
    )
    assert result.config is not None
    assert result.config.name.startswith("cloud--kubernetes-cluster--")
    assert result.defaulted_name is True


def test_a_cloud_pool_on_private_agents_still_uses_the_host_network() -> None:
    result = parse(f"role: '*'\ncloudProviderConfiguration: '{CLOUD}'")

    assert result.errors == ()
    assert result.config is not None
    assert (result.config.role, result.config.network) == ("*", "")


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("name: cloud--mine\n", id="a given name with the cloud prefix is kept"),
        pytest.param("name: cloud--mine\nnetwork: ''\n", id="an explicit host network is accepted"),
    ],
)
def test_a_cloud_pool_accepts_a_prefixed_name(extra: str) -> None:
    result = parse(extra + f"cloudProviderConfiguration: '{CLOUD}'")

    assert result.errors == ()
    assert result.config == config(name="cloud--mine", cloud_provider_configuration=CLOUD)
    assert result.defaulted_name is False


def test_the_cloud_provider_configuration_is_kept_verbatim() -> None:
    spaced = '{ "aws" :  {} }'

    result = parse(f"cloudProviderConfiguration: '{spaced}'")

    assert result.config is not None
    assert result.config.cloud_provider_configuration == spaced


# --- representations -----------------------------------------------------------------------------


def test_to_dict_uses_the_annotation_key_names_and_order() -> None:
    full = config(
        name="cloud--x",
        constraints=SEED_CONSTRAINTS,
        creation_strategy="Once",
        cloud_provider_configuration=CLOUD,
    )

    d = full.to_dict()

    assert list(d) == [
        "name",
        "role",
        "network",
        "cpus",
        "memory",
        "size",
        "frontends",
        "constraints",
        "strategies",
        "cloudProviderConfiguration",
    ]
    assert d["frontends"] == [{"port": 8080, "servicePort": 8080}, {"port": 9090, "servicePort": 9090}]
    assert d["strategies"] == {"creation": "Once"}
    assert d["constraints"] == SEED_CONSTRAINTS
    assert d["cloudProviderConfiguration"] == CLOUD


def test_to_dict_leaves_out_unset_optional_fields() -> None:
    assert list(config().to_dict()) == [
        "name",
        "role",
        "network",
        "cpus",
        "memory",
        "size",
        "frontends",
        "strategies",
    ]


def test_to_annotation_is_readable_yaml_in_key_order() -> None:
    assert REDIS.to_annotation() == (
        "name: dklb-redis\n"
        "role: slave_public\n"
        "network: ''\n"
        "cpus: 0.1\n"
        "memory: 128\n"
        "size: 1\n"
        "frontends:\n"
        "- port: 16379\n"
        "  servicePort: 6379\n"
        "strategies:\n"
        "  creation: IfNotPresent\n"
    )


@pytest.mark.parametrize(
    "pool",
    [
        pytest.param(REDIS, id="from_dict inverts to_dict for a minimal config"),
        pytest.param(
            config(
                constraints=SEED_CONSTRAINTS, creation_strategy="Never", cloud_provider_configuration=CLOUD
            ),
            id="from_dict inverts to_dict with every optional field set",
        ),
        pytest.param(config(frontends=()), id="from_dict inverts to_dict without frontends"),
    ],
)
def test_from_dict_inverts_to_dict(pool: PoolConfig) -> None:
    assert PoolConfig.from_dict(pool.to_dict()) == pool


def test_from_dict_accepts_a_record_round_tripped_through_json() -> None:
    pool = config(cpus=1.0, creation_strategy="Once")

    assert PoolConfig.from_dict(json.loads(json.dumps(pool.to_dict()))) == pool


def test_shared_settings_are_what_sharing_services_must_agree_on() -> None:
    pool = config(role="*", network="dcos", cpus=0.2, memory=512, size=3)

    assert pool.shared_settings() == {
        "role": "*",
        "network": "dcos",
        "cpus": 0.2,
        "memory": 512,
        "size": 3,
        # S1 (security review): a sharer must not flip the placement or the cloud load balancer.
        "constraints": None,
        "cloudProviderConfiguration": None,
    }


# --- round trip ----------------------------------------------------------------------------------


def service_ports_of(pool: PoolConfig) -> tuple[int, ...]:
    return tuple(f.service_port for f in pool.frontends)


def reparse(pool: PoolConfig) -> ParseResult:
    # A different seed: a re-parse that generated a name would show up as a different config.
    return parse_config(
        pool.to_annotation(),
        service_ports=service_ports_of(pool),
        cluster_name="other",
        rng=random.Random(99),
    )


@pytest.mark.parametrize(
    ("text", "ports"),
    [
        pytest.param(None, PORTS, id="the defaulted object is a fixpoint"),
        pytest.param(SEED_POOL, (8080, 9090), id="the seed's customized pool is a fixpoint"),
        pytest.param(SEED_REDIS, (6379,), id="the seed's redis example is a fixpoint"),
        pytest.param(
            f"contraints: '{SEED_CONSTRAINTS}'",
            PORTS,
            id="a misspelled constraints field is written back fixed",
        ),
        pytest.param(f"cloudProviderConfiguration: '{CLOUD}'", PORTS, id="a cloud pool is a fixpoint"),
    ],
)
def test_writing_back_the_defaulted_object_is_a_fixpoint(text: str | None, ports: tuple[int, ...]) -> None:
    first = parse(text, ports)
    assert first.config is not None

    second = reparse(first.config)

    assert second == ParseResult(config=first.config, errors=(), warnings=(), defaulted_name=False)


POOL_NAMES = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
CLOUD_POOL_NAMES = st.from_regex(r"cloud--[a-z0-9]([a-z0-9-]{0,54}[a-z0-9])?", fullmatch=True)
PORT_NUMBERS = st.integers(min_value=1, max_value=65535)
# What a string field may hold: no control characters, line separators or bidirectional overrides.
PRINTABLE_TEXT = st.text(
    st.characters(
        exclude_categories=("Cc", "Cs", "Zl", "Zp"),
        exclude_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
    )
)
CLOUD_ELBS = st.fixed_dictionaries(
    {"name": st.text(max_size=8)},
    optional={
        "type": st.just("NLB"),
        "internal": st.booleans(),
        "subnets": st.lists(st.text(max_size=8), max_size=2),
        "tags": st.lists(st.fixed_dictionaries({"key": st.text(max_size=5), "value": st.text(max_size=5)})),
    },
)
JSON_OBJECTS = st.one_of(
    st.just({}), st.builds(lambda elbs: {"aws": {"elbs": elbs}}, st.lists(CLOUD_ELBS, max_size=2))
).map(json.dumps)


@st.composite
def pool_configs(draw: st.DrawFn) -> PoolConfig:
    service_ports = draw(st.lists(PORT_NUMBERS, unique=True, max_size=5))
    bind_ports = draw(
        st.lists(PORT_NUMBERS, unique=True, min_size=len(service_ports), max_size=len(service_ports))
    )
    cloud = draw(st.none() | JSON_OBJECTS)
    role = draw(st.sampled_from([ROLE_PUBLIC, "*"]) | PRINTABLE_TEXT.filter(bool))
    if cloud is not None:
        name, network = draw(CLOUD_POOL_NAMES), ""
    elif role == ROLE_PUBLIC:
        name, network = draw(POOL_NAMES), ""
    else:
        name, network = draw(POOL_NAMES), draw(st.just(DEFAULT_NETWORK) | PRINTABLE_TEXT.filter(bool))
    return PoolConfig(
        name=name,
        role=role,
        network=network,
        cpus=draw(st.floats(min_value=0, allow_nan=False, allow_infinity=False)),
        memory=draw(st.integers(min_value=0, max_value=MAX_INTEGER)),
        size=draw(st.integers(min_value=1, max_value=MAX_INTEGER)),
        frontends=tuple(Frontend(p, sp) for p, sp in zip(bind_ports, service_ports, strict=True)),
        creation_strategy=draw(st.sampled_from(CREATION_STRATEGIES)),
        constraints=draw(st.none() | PRINTABLE_TEXT),
        cloud_provider_configuration=cloud,
    )


@given(pool_configs())
def test_any_valid_config_survives_the_annotation_round_trip(pool: PoolConfig) -> None:
    assert reparse(pool) == ParseResult(config=pool, errors=(), warnings=(), defaulted_name=False)


FIELD_NAMES = st.sampled_from(
    [
        *("name", "role", "network", "cpus", "memory", "size", "frontends", "port", "servicePort"),
        *("constraints", "contraints", "strategies", "creation", "cloudProviderConfiguration", "other"),
    ]
)
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(FIELD_NAMES, children, max_size=4),
    max_leaves=12,
)
ANNOTATION_TEXTS = st.text(max_size=200) | YAML_VALUES.map(yaml.safe_dump)


@given(ANNOTATION_TEXTS)
def test_any_text_gives_either_a_config_or_errors(text: str) -> None:
    result = parse(text)

    assert (result.config is None) == bool(result.errors)
    assert all("\n" not in message for message in result.errors + result.warnings)


@given(pool_configs())
def test_any_valid_config_survives_the_database_round_trip(pool: PoolConfig) -> None:
    assert PoolConfig.from_dict(json.loads(json.dumps(pool.to_dict()))) == pool


# --- transitions ---------------------------------------------------------------------------------

BEFORE = config(name="dklb-pool-0", role="*", network="dcos")


@pytest.mark.parametrize(
    ("new", "annotation_present", "expected"),
    [
        pytest.param(BEFORE, True, [], id="an unchanged config is accepted"),
        pytest.param(
            config(name="dklb-pool-0", role="*", network="dcos", cpus=1.0, memory=1024, size=2),
            True,
            [],
            id="resources may change",
        ),
        pytest.param(
            config(
                name="dklb-pool-0", role="*", network="dcos", frontends=frontends((18080, 8080), (9090, 9090))
            ),
            True,
            [],
            id="frontend ports may change",
        ),
        pytest.param(
            config(name="dklb-pool-0", role="*", network="dcos", creation_strategy="Never", constraints="[]"),
            True,
            [],
            id="the creation strategy and constraints may change",
        ),
        pytest.param(None, True, [], id="an invalid new config gives no transition errors of its own"),
        pytest.param(
            BEFORE,
            False,
            ["the kubernetes.dcos.io/dklb-config annotation cannot be removed"],
            id="the annotation cannot be removed",
        ),
        pytest.param(
            None,
            False,
            ["the kubernetes.dcos.io/dklb-config annotation cannot be removed"],
            id="removal is reported even when nothing else is known",
        ),
        pytest.param(
            config(name="other", role="*", network="dcos"),
            True,
            ['name: the name of the target edgelb pool cannot be changed (from "dklb-pool-0" to "other")'],
            id="the name cannot change",
        ),
        pytest.param(
            config(name="dklb-pool-0", role="private", network="dcos"),
            True,
            ['role: the role of the target edgelb pool cannot be changed (from "*" to "private")'],
            id="the role cannot change",
        ),
        pytest.param(
            config(name="dklb-pool-0", role="*", network="overlay"),
            True,
            [
                "network: the virtual network of the target edgelb pool cannot be changed "
                '(from "dcos" to "overlay")'
            ],
            id="the network cannot change",
        ),
        pytest.param(
            config(name="other"),
            True,
            [
                'name: the name of the target edgelb pool cannot be changed (from "dklb-pool-0" to "other")',
                'role: the role of the target edgelb pool cannot be changed (from "*" to "slave_public")',
                "network: the virtual network of the target edgelb pool cannot be changed "
                '(from "dcos" to "")',
            ],
            id="every immutable change is reported",
        ),
    ],
)
def test_check_transition(new: PoolConfig | None, annotation_present: bool, expected: list[str]) -> None:
    assert check_transition(BEFORE, new, annotation_present=annotation_present) == expected


def test_the_cloud_provider_configuration_cannot_be_removed() -> None:
    before = config(name="cloud--x", cloud_provider_configuration=CLOUD)

    assert check_transition(before, config(name="cloud--x"), annotation_present=True) == [
        "cloudProviderConfiguration: the cloud-provider configuration cannot be removed"
    ]


def test_the_cloud_provider_configuration_may_change() -> None:
    before = config(name="cloud--x", cloud_provider_configuration=CLOUD)
    after = config(name="cloud--x", cloud_provider_configuration='{"aws": {}}')

    assert check_transition(before, after, annotation_present=True) == []


# --- pause ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "paused"),
    [
        pytest.param({PAUSED_ANNOTATION: "true"}, True, id="exactly true pauses"),
        pytest.param({PAUSED_ANNOTATION: "True"}, False, id="True with a capital does not pause"),
        pytest.param({PAUSED_ANNOTATION: "TRUE"}, False, id="TRUE does not pause"),
        pytest.param({PAUSED_ANNOTATION: "1"}, False, id="1 does not pause"),
        pytest.param({PAUSED_ANNOTATION: "yes"}, False, id="yes does not pause"),
        pytest.param({PAUSED_ANNOTATION: " true"}, False, id="true with a space does not pause"),
        pytest.param({PAUSED_ANNOTATION: "false"}, False, id="false does not pause"),
        pytest.param({PAUSED_ANNOTATION: ""}, False, id="an empty value does not pause"),
        pytest.param({ANNOTATION: "true"}, False, id="another annotation does not pause"),
        pytest.param({}, False, id="no annotations do not pause"),
        pytest.param(None, False, id="a Service without annotations is not paused"),
    ],
)
def test_is_paused(annotations: dict[str, str] | None, paused: bool) -> None:
    assert is_paused(annotations) is paused
