"""The Go dklb's user contract, kept: its annotations, its messages, its names, its cloud switch.

Every annotation marked "verbatim" below is what the Go dklb (v1.0.1) wrote: ``yaml.Marshal``
(gopkg.in/yaml.v2) of its ``ServiceEdgeLBPoolSpec``, whose pointer fields have no ``omitempty``.
The webhook wrote the fully defaulted object into every LoadBalancer Service; its e2e helpers
(``SetServiceEdgeLBPoolSpec``) wrote partly filled ones, unset fields as ``null``. The texts were
produced by marshalling a struct of the same shape with yaml.v2 2.4.0 (2.2.2, which dklb pinned,
writes nil pointers, empty strings and nil slices the same way).
"""

from __future__ import annotations

import base64
import json
import random
import re
from typing import Any

import pytest
import yaml

from engine.admission.review import review
from engine.model.checks import check_service
from engine.model.config import (
    DEFAULT_POOL_GROUP,
    Frontend,
    ParseResult,
    PoolConfig,
    check_transition,
    default_pool_name,
    show,
)
from engine.model.parse import parse_config
from engine.model.services import ANNOTATION
from engine.model.settings import Settings
from tests.checks import present

GO_CLUSTER = "/dev/kubernetes01"
CLUSTER = "kubernetes-cluster"
CPUS_RULE = "the CPU share must be a finite number, 0 or more"

# Verbatim: what the Go webhook wrote into a Service with one port, 6379, mapped to 16379.
GO_DEFAULTED = """\
cloudProviderConfiguration: ""
constraints: null
cpus: 0.1
memory: 128
name: dev--kubernetes01--x7k2p
network: ""
role: slave_public
size: 1
strategies:
  creation: IfNotPresent
frontends:
- port: 16379
  servicePort: 6379
"""

# Verbatim: the e2e helper's spec with only a name set.
GO_NAME_ONLY = """\
cloudProviderConfiguration: null
constraints: null
cpus: null
memory: null
name: ns1
network: null
role: null
size: null
strategies: null
frontends: []
"""

# Verbatim: a private pool as the e2e helper wrote it.
GO_PRIVATE = """\
cloudProviderConfiguration: null
constraints: null
cpus: null
memory: null
name: ns1
network: null
role: '*'
size: null
strategies: null
frontends:
- port: 16379
  servicePort: 6379
"""


def go_spec(**fields: str) -> str:
    """The e2e helper's annotation with the given fields set (YAML text as yaml.v2 writes them)."""
    lines = {
        "cloudProviderConfiguration": "null",
        "constraints": "null",
        "cpus": "null",
        "memory": "null",
        "name": "null",
        "network": "null",
        "role": "null",
        "size": "null",
        "strategies": "null",
        "frontends": "[]",
    }
    lines.update(fields)
    return "".join(f"{key}: {value}\n" for key, value in lines.items())


def parse(text: str | None, ports: tuple[int, ...] = (6379,), **kwargs: Any) -> ParseResult:
    kwargs.setdefault("cluster_name", GO_CLUSTER)
    kwargs.setdefault("rng", random.Random(0))
    return parse_config(text, service_ports=ports, **kwargs)


def service(text: str | None, *, ports: tuple[int, ...] = (6379,), name: str = "redis") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "ns1",
            "annotations": {} if text is None else {ANNOTATION: text},
        },
        "spec": {"type": "LoadBalancer", "ports": [{"port": p, "protocol": "TCP"} for p in ports]},
    }


def admission(
    operation: str,
    new: dict[str, Any],
    old: dict[str, Any] | None = None,
    *,
    mutate: bool,
    settings: Settings | None = None,
) -> dict[str, Any]:
    document = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "kind": {"group": "", "version": "v1", "kind": "Service"},
            "operation": operation,
            "object": new,
            "oldObject": old,
        },
    }
    answer = review(
        document, settings=settings or Settings(cluster_name=GO_CLUSTER), mutate=mutate, rng=random.Random(0)
    )
    return answer["response"]


# --- 1. annotations the Go dklb wrote -----------------------------------------------------------

REDIS_GO = PoolConfig(
    name="dev--kubernetes01--x7k2p",
    role="slave_public",
    network="",
    cpus=0.1,
    memory=128,
    size=1,
    frontends=(Frontend(16379, 6379),),
)


def test_the_go_webhooks_defaulted_annotation_is_accepted_as_it_is() -> None:
    result = parse(GO_DEFAULTED, pool_group=DEFAULT_POOL_GROUP, owner=("ns1", "redis"))

    assert result == ParseResult(config=REDIS_GO, errors=(), warnings=(), defaulted_name=False)


def test_the_go_annotation_is_recognised_as_fully_defaulted() -> None:
    """Same config as our own written form: re-parsing either gives it, nothing generated.

    The controller decides to write the annotation back by comparing texts (``states.pending``):
    a Go-written one is therefore rewritten once, into our form, in the very write that adds the
    finalizer, which a Service admitted by the Go dklb never had (so no extra write); after that
    the text is a fixpoint.
    """
    ours = REDIS_GO.to_annotation()

    assert parse(ours) == parse(GO_DEFAULTED)
    assert ours != GO_DEFAULTED
    again = parse(ours, cluster_name="another-cluster", rng=random.Random(99))
    assert again.config is not None and again.config.to_annotation() == ours


def test_the_go_annotation_passes_the_webhook_and_an_update_to_our_form_is_no_transition() -> None:
    go_service = service(GO_DEFAULTED)
    assert admission("CREATE", go_service, mutate=False) == {"uid": "u", "allowed": True}
    patched = admission("CREATE", go_service, mutate=True)
    assert patched["allowed"] is True and patched["patchType"] == "JSONPatch"
    # The Service written back in our form, its old object still in Go's: nothing changed.
    ours = service(REDIS_GO.to_annotation())
    assert admission("UPDATE", ours, go_service, mutate=False) == {"uid": "u", "allowed": True}
    assert admission("UPDATE", go_service, ours, mutate=False) == {"uid": "u", "allowed": True}


@pytest.mark.parametrize(
    ("text", "ports", "expected"),
    [
        pytest.param(
            GO_NAME_ONLY,
            (80,),
            PoolConfig("ns1", "slave_public", "", 0.1, 128, 1, (Frontend(80, 80),)),
            id="verbatim: only a name set, every other field null, frontends []",
        ),
        pytest.param(
            GO_PRIVATE,
            (6379,),
            PoolConfig("ns1", "*", "dcos", 0.1, 128, 1, (Frontend(16379, 6379),)),
            id="verbatim: a private pool, network null defaults to dcos",
        ),
        pytest.param(
            "name: dklb\nsize: 2\nfrontends:\n- port:\n  servicePort: 6379",
            (6379,),
            PoolConfig("dklb", "slave_public", "", 0.1, 128, 2, (Frontend(6379, 6379),)),
            id="Go's unit test 'should not fail with empty frontend port'",
        ),
        pytest.param(
            "name: dklb\nfrontends:\n- servicePort: 6379",
            (6379,),
            PoolConfig("dklb", "slave_public", "", 0.1, 128, 1, (Frontend(6379, 6379),)),
            id="a frontend without port binds its service port",
        ),
        pytest.param(
            "name: dklb\nfrontends:\n- servicePort: 80\n- port: 8443\n  servicePort: 443",
            (80, 443),
            PoolConfig("dklb", "slave_public", "", 0.1, 128, 1, (Frontend(80, 80), Frontend(8443, 443))),
            id="a port-less entry beside a mapped one",
        ),
        pytest.param(
            "name: dklb\nrole: '*'\nnetwork: null",
            (80,),
            PoolConfig("dklb", "*", "dcos", 0.1, 128, 1, (Frontend(80, 80),)),
            id="network null follows the role",
        ),
        pytest.param(
            "name: dklb\nstrategies:\n  creation: null",
            (80,),
            PoolConfig("dklb", "slave_public", "", 0.1, 128, 1, (Frontend(80, 80),)),
            id="strategies.creation null is IfNotPresent",
        ),
        pytest.param(
            "name: dklb\ncontraints: null",
            (80,),
            PoolConfig("dklb", "slave_public", "", 0.1, 128, 1, (Frontend(80, 80),)),
            id="the misspelled constraints as null: nothing, and nothing to warn about",
        ),
        pytest.param(
            "name: dklb\ncloudProviderConfiguration: ''\nnetwork: ''",
            (80,),
            PoolConfig("dklb", "slave_public", "", 0.1, 128, 1, (Frontend(80, 80),)),
            id="an empty cloudProviderConfiguration is no cloud (no cloud-- name needed)",
        ),
    ],
)
def test_null_means_the_default(text: str, ports: tuple[int, ...], expected: PoolConfig) -> None:
    assert parse(text, ports) == ParseResult(config=expected, errors=(), warnings=(), defaulted_name=False)


def test_a_null_name_is_generated_like_a_missing_one() -> None:
    result = parse(go_spec(), (80,))

    assert result.errors == () and result.defaulted_name is True
    assert result.config is not None
    assert result.config.name == default_pool_name(GO_CLUSTER, random.Random(0))


def test_a_null_service_port_is_still_required() -> None:
    """No default exists for it (Go read it as 0 and dropped the entry without a word)."""
    result = parse("frontends:\n- port: 16379\n  servicePort: null")

    assert result.errors == ("frontends[0].servicePort: the field is required",)


# --- 2. the Go e2e tests' message regexps --------------------------------------------------------

# (Go's test description, the annotation its helper wrote, the regexp it matched the refusal with)
GO_CREATE_REFUSALS = [
    ("cannot be parsed as yaml", "invalid: yaml: str",
     'failed to parse the value of "kubernetes.dcos.io/dklb-config" as a configuration object'),
    ("invalid edgelb pool name", go_spec(name="__foo__"), '"__foo__" is not a valid edgelb pool name'),
    ("invalid edgelb pool network", go_spec(network="dcos"),
     'cannot join a virtual network when the pool\'s role is "slave_public"'),
    ("invalid cpu request", go_spec(cpus="-0.1"), "-0.100000 is not a valid cpu request"),
    ("invalid memory request", go_spec(memory="-256"), "-256 is not a valid memory request"),
    ("invalid size request", go_spec(size="-1"), "-1 is not a valid size request"),
    ("invalid creation strategy", go_spec(strategies="\n  creation: InvalidStrategy"),
     'failed to parse "InvalidStrategy" as an edgelb pool creation strategy'),
    ("invalid frontend port", go_spec(frontends="\n- port: 123456\n  servicePort: 80"),
     "123456 is not a valid port number"),
]  # fmt: skip


def test_the_table_holds_the_eight_go_regexps() -> None:
    assert len(GO_CREATE_REFUSALS) == 8


@pytest.mark.parametrize(("description", "text", "regexp"), GO_CREATE_REFUSALS)
def test_each_go_e2e_regexp_matches_our_refusal(description: str, text: str, regexp: str) -> None:
    response = admission("CREATE", service(text, ports=(80,)), mutate=False)

    assert response["allowed"] is False
    assert re.search(regexp, response["status"]["message"]), (description, response["status"]["message"])


GO_TRANSITION_REFUSALS = [
    ("name", "new-name", "the name of the target edgelb pool cannot be changed"),
    ("role", "new-role", "the role of the target edgelb pool cannot be changed"),
    ("network", "new-network", "the virtual network of the target edgelb pool cannot be changed"),
]


@pytest.mark.parametrize(("field", "value", "regexp"), GO_TRANSITION_REFUSALS)
def test_each_go_e2e_transition_regexp_matches_our_refusal(field: str, value: str, regexp: str) -> None:
    # Go's test: created with name = the namespace, role "*"; then one field changed through the helper.
    old = service(go_spec(name="ns1", role="'*'"), ports=(80,))
    defaulted = yaml.safe_load(present_patch(old))
    new = service(yaml.safe_dump({**defaulted, field: value}), ports=(80,))

    response = admission("UPDATE", new, old, mutate=False)

    assert response["allowed"] is False
    assert re.search(regexp, response["status"]["message"]), response["status"]["message"]


def present_patch(obj: dict[str, Any]) -> str:
    """The annotation the mutating webhook writes into ``obj``."""
    response = admission("CREATE", obj, mutate=True)
    operations = json.loads(base64.b64decode(response["patch"]))
    value = operations[0]["value"]
    return value[ANNOTATION] if isinstance(value, dict) else value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cpus: -0.1", f"cpus: -0.100000 is not a valid cpu request (-0.1: {CPUS_RULE})"),
        ("strategies: {creation: InvalidStrategy}",
         'strategies.creation: failed to parse "InvalidStrategy" as an edgelb pool creation strategy '
         "(expected one of IfNotPresent, Once, Never)"),
    ],
)  # fmt: skip
def test_the_two_reworded_messages_keep_the_path_and_the_explanation(text: str, message: str) -> None:
    assert parse(text).errors == (message,)


# --- 3. names and the pool group -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool_group", "length", "fits"),
    [
        # dcos-edgelb/pools -> "dcos-edgelbpools" (16): 16 + 47 = 63 fits, 48 does not.
        (DEFAULT_POOL_GROUP, 47, True),
        (DEFAULT_POOL_GROUP, 48, False),
        (DEFAULT_POOL_GROUP, 63, False),
        # A deeper group: "edgelbteam-apools" (17).
        ("edgelb/team-a/pools", 46, True),
        ("edgelb/team-a/pools", 47, False),
        # A short one leaves room for any valid name but the longest.
        ("lb", 61, True),
        ("lb", 62, False),
        ("/lb/", 61, True),
    ],
)
def test_a_given_name_must_fit_a_dcos_service_name_with_the_pool_group(
    pool_group: str, length: int, fits: bool
) -> None:
    name = "n" * length
    service_name = (pool_group + "/" + name).replace("/", "")
    assert (len(service_name) <= 63) is fits  # the table says what DC/OS says

    result = parse(f"name: {name}", pool_group=pool_group)

    if fits:
        assert result.errors == ()
    else:
        assert result.errors == (
            f'name: "{name}" is too long for the pool group "{pool_group}": EdgeLB would install the '
            f"pool as the DC/OS service {show(service_name)} ({len(service_name)} characters without "
            "slashes), and DC/OS refuses more than 63",
        )


def test_the_name_length_message_names_the_name_and_the_pool_group() -> None:
    result = parse(f"name: {'a' * 48}", pool_group=DEFAULT_POOL_GROUP)

    assert result.errors == (
        f'name: "{"a" * 48}" is too long for the pool group "dcos-edgelb/pools": EdgeLB would install '
        f'the pool as the DC/OS service "dcos-edgelbpools{"a" * 48}" (64 characters without slashes), '
        "and DC/OS refuses more than 63",
    )


def test_without_a_pool_group_the_length_is_not_judged() -> None:
    """``states.deleting`` only wants the pool's name out of an annotation."""
    assert parse(f"name: {'a' * 63}").errors == ()


LONG_CLUSTER = "one--sixty--three--character--string--used--for--testing--this"


@pytest.mark.parametrize(
    ("cluster", "text", "pool_group", "expected"),
    [
        # Go's own unit-test expectations (TestNewRandomEdgeLBPoolName).
        ("dev/test", "", DEFAULT_POOL_GROUP, r"dev--test--[a-z0-9]{5}"),
        (LONG_CLUSTER, "", DEFAULT_POOL_GROUP, r"one--sixty--three--character--string----[a-z0-9]{5}"),
        (LONG_CLUSTER, "cloudProviderConfiguration: '{}'", DEFAULT_POOL_GROUP,
         r"cloud--one--sixty--three--character--s--[a-z0-9]{5}"),
        ("/foldered/cluster/name", "", DEFAULT_POOL_GROUP, r"foldered--cluster--name--[a-z0-9]{5}"),
        # The review's example: 20 + "--" + 16 characters of cluster name.
        ("a" * 20 + "/" + "b" * 16, "cloudProviderConfiguration: '{}'", DEFAULT_POOL_GROUP,
         r"cloud--a{20}--b{9}--[a-z0-9]{5}"),
        # A longer group leaves less room, and the generated name still fits.
        (LONG_CLUSTER, "cloudProviderConfiguration: '{}'", "dcos-edgelb/pools/team-blue",
         r"cloud--one--sixty--three--ch--[a-z0-9]{5}"),
        (LONG_CLUSTER, "", "dcos-edgelb/pools/team-blue", r"one--sixty--three--character--[a-z0-9]{5}"),
    ],
)  # fmt: skip
def test_generated_names_are_cut_as_go_cut_them(
    cluster: str, text: str, pool_group: str, expected: str
) -> None:
    result = parse(text, (80,), cluster_name=cluster, pool_group=pool_group)

    assert result.errors == (), result.errors
    name = present(result.config).name
    assert re.fullmatch(expected, name), name
    assert len((pool_group + name).replace("/", "")) <= 63


def test_a_pool_group_too_long_for_any_generated_name_is_reported_with_both() -> None:
    group = "g" * 60
    result = parse(None, (80,), cluster_name="dev", pool_group=group)

    assert result.config is None
    assert any(
        e.startswith("name: ") and "(generated from the cluster name " in e and f'pool group "{group}"' in e
        for e in result.errors
    ), result.errors


def test_check_service_judges_the_name_with_the_pool_group() -> None:
    svc = service(f"name: {'a' * 48}")
    short = check_service(svc, previous=None, cluster_name=CLUSTER, default_size=1, pool_group="lb")
    default = check_service(
        svc, previous=None, cluster_name=CLUSTER, default_size=1, pool_group=DEFAULT_POOL_GROUP
    )

    assert short.errors == ()
    assert len(default.errors) == 1 and "too long for the pool group" in default.errors[0]


def test_the_webhook_judges_the_name_with_its_pool_group() -> None:
    svc = service(f"name: {'a' * 48}")

    refused = admission("CREATE", svc, mutate=False)
    allowed = admission(
        "CREATE", svc, mutate=False, settings=Settings(cluster_name=GO_CLUSTER, pool_group="lb")
    )

    assert refused["allowed"] is False and "too long for the pool group" in refused["status"]["message"]
    assert allowed == {"uid": "u", "allowed": True}


def test_the_default_pool_group_is_the_settings_default() -> None:
    assert Settings().pool_group == DEFAULT_POOL_GROUP


# --- 5. the cloud switch of Go's e2e test ---------------------------------------------------------

FRONTEND = ".dev.kubernetes01:ns1:redis:6379"  # Go's rule: every "/" of the cluster becomes "."
GO_CLOUD_JSON = json.dumps(
    {
        "aws": {
            "elbs": [
                {
                    "internal": False,
                    "listeners": [{"linkFrontend": FRONTEND, "port": 6379}],
                    "name": "redis",
                    "subnets": ["subnet-0123"],
                    "type": "NLB",
                }
            ]
        }
    },
    separators=(",", ":"),
)
# Verbatim shape: the helper re-read the defaulted annotation, then set name, cloud, size and role.
GO_SWITCHED = f"""\
cloudProviderConfiguration: '{GO_CLOUD_JSON}'
constraints: null
cpus: 0.1
memory: 128
name: cloud--ns1
network: ""
role: '*'
size: 2
strategies:
  creation: IfNotPresent
frontends:
- port: 16379
  servicePort: 6379
"""
BEFORE_SWITCH = PoolConfig("ns1", "slave_public", "", 0.1, 128, 1, (Frontend(16379, 6379),))


def switch(text: str, previous: PoolConfig = BEFORE_SWITCH) -> Any:
    return check_service(
        service(text),
        previous=previous,
        cluster_name=GO_CLUSTER,
        default_size=1,
        pool_group=DEFAULT_POOL_GROUP,
        rng=random.Random(3),
    )


def test_the_go_cloud_switch_is_accepted_with_the_new_name_role_and_size() -> None:
    check = switch(GO_SWITCHED)

    assert check.errors == () and check.warnings == ()
    assert check.config == PoolConfig(
        name="cloud--ns1",
        role="*",
        network="",
        cpus=0.1,
        memory=128,
        size=2,
        frontends=(Frontend(16379, 6379),),
        cloud_provider_configuration=GO_CLOUD_JSON,
    )


def test_the_go_cloud_switch_passes_the_webhook() -> None:
    old = service(BEFORE_SWITCH.to_annotation())
    new = service(GO_SWITCHED)

    assert admission("UPDATE", new, old, mutate=False) == {"uid": "u", "allowed": True}
    assert admission("UPDATE", new, old, mutate=True)["allowed"] is True


@pytest.mark.parametrize(
    ("name", "expected", "warned"),
    [
        ("cloud--ns1", r"cloud--ns1", False),
        ("cloudy-pool", r"cloudy-pool", False),  # Go asked only for the "cloud" prefix
        ("ns1", r"cloud--dev--kubernetes01--[a-z0-9]{5}", True),
        ("lb-for-cloud", r"cloud--dev--kubernetes01--[a-z0-9]{5}", True),
    ],
)
def test_a_name_without_the_cloud_prefix_is_replaced_with_a_warning(
    name: str, expected: str, warned: bool
) -> None:
    check = switch(GO_SWITCHED.replace("name: cloud--ns1", f"name: {name}"))

    assert check.errors == ()
    assert check.config is not None and re.fullmatch(expected, check.config.name)
    assert check.result.defaulted_name is warned
    if warned:
        assert check.warnings == (
            f'name: "{name}" does not start with "cloud", which the pool of a cloud load balancer must: '
            f'the pool is named "{check.config.name}" instead',
        )
    else:
        assert check.warnings == ()


def test_a_virtual_network_beside_a_cloud_configuration_is_forced_to_host_with_a_warning() -> None:
    check = switch(GO_SWITCHED.replace('network: ""', "network: dcos"))

    assert check.errors == ()
    assert check.config is not None and check.config.network == ""
    assert check.warnings == (
        'network: a pool with a cloud load balancer runs on the host network: "dcos" is ignored',
    )


def test_the_webhook_keeps_a_cloud_pools_name_when_a_reapply_brings_back_the_old_one() -> None:
    """A cloud pool exists; a manifest with the old (non-cloud) name is applied again."""
    cloud = PoolConfig(
        "cloud--dev--kubernetes01--abcde", "*", "", 0.1, 128, 2, (Frontend(16379, 6379),),
        cloud_provider_configuration=GO_CLOUD_JSON,
    )  # fmt: skip
    old = service(cloud.to_annotation())
    new = service(GO_SWITCHED.replace("name: cloud--ns1", "name: ns1"))

    response = admission("UPDATE", new, old, mutate=True)

    assert response["allowed"] is True and "patch" in response
    value = json.loads(base64.b64decode(response["patch"]))[0]["value"]
    assert yaml.safe_load(value)["name"] == "cloud--dev--kubernetes01--abcde"


CLOUD = '{"aws": {"elbs": [{"name": "lb"}]}}'
PRIVATE = PoolConfig("ns1", "*", "dcos", 0.1, 128, 1)
PUBLIC_CLOUD = PoolConfig("cloud--a", "slave_public", "", 0.1, 128, 1, cloud_provider_configuration=CLOUD)


@pytest.mark.parametrize(
    ("previous", "new", "expected"),
    [
        pytest.param(
            PRIVATE,
            PoolConfig("cloud--ns1", "slave_public", "", 0.1, 128, 2, cloud_provider_configuration=CLOUD),
            [],
            id="adding a cloud configuration frees the name, the role and the network",
        ),
        pytest.param(
            PRIVATE,
            PoolConfig("ns1", "*", "", 0.1, 128, 1, cloud_provider_configuration=CLOUD),
            [],
            id="adding it with a name already fit for cloud keeps the pool",
        ),
        pytest.param(
            PUBLIC_CLOUD,
            PoolConfig("cloud--a", "slave_public", "", 0.1, 128, 1),
            ["cloudProviderConfiguration: the cloud-provider configuration cannot be removed"],
            id="removing it stays an error",
        ),
        pytest.param(
            PUBLIC_CLOUD,
            PoolConfig("cloud--b", "*", "", 0.1, 128, 1, cloud_provider_configuration='{"aws": {}}'),
            [
                'name: the name of the target edgelb pool cannot be changed (from "cloud--a" to "cloud--b")',
                'role: the role of the target edgelb pool cannot be changed (from "slave_public" to "*")',
            ],
            id="changing it frees nothing",
        ),
        pytest.param(
            PRIVATE,
            PoolConfig("other", "*", "dcos", 0.1, 128, 1),
            ['name: the name of the target edgelb pool cannot be changed (from "ns1" to "other")'],
            id="without cloud the name stays fixed",
        ),
    ],
)
def test_check_transition_and_the_cloud_configuration(
    previous: PoolConfig, new: PoolConfig, expected: list[str]
) -> None:
    assert check_transition(previous, new, annotation_present=True) == expected
