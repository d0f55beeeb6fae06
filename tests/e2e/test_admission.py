"""The admission webhook end to end: the real kube-apiserver calls `dklb run`'s webhook over HTTPS.

`dklb run` is restarted with the webhook flags (``--admission-listen 127.0.0.1:<port>`` with a
certificate generated in ``--admission-self-signed-dir``, ``--register-admission-webhook`` in URL
mode, ``--admission-failure-policy Fail``). The webhook configurations get a name of their own
and a ``--admission-namespace-selector`` matching a label only this test's namespace carries, so
no other test sharing the API server is ever sent to this webhook; they are deleted at the end
whatever happens. Every request below goes through the API server as ``kubectl`` would send it
(create, merge patch, replace), and what is checked is what the user sees: the object the API
server answers and stores, the error it returns, the Events, the EdgeLB pool.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from engine.admission.register import register, unregister
from engine.kube.api import response_json
from engine.model.checks import NO_TCP_PORT, check_service
from engine.model.services import ANNOTATION, PAUSED_ANNOTATION
from tests.checks import present
from tests.e2e.conftest import World
from tests.e2e.test_controller import REDIS, frontend_ports, redis_command
from tests.integration.conftest import free_port
from tests.processes import wait_for

# The label that scopes the webhooks to one test's namespace (its value: the namespace's name).
SCOPE_LABEL = "dklb.e2e/admission"
CLUSTER = "kubernetes-cluster"  # the controller's default --kubernetes-cluster-framework-name
POOL_GROUP = "dcos-edgelb/pools"  # the controller's default --edgelb-pool-group

Obj = dict[str, Any]


@dataclass
class Webhook:
    name: str  # of both webhook configurations
    url: str
    certificates: Path  # --admission-self-signed-dir
    selector: dict[str, str]
    base_args: list[str]  # the controller's flags without the webhook's
    api: kubernetes.client.AdmissionregistrationV1Api

    @property
    def webhook_name(self) -> str:
        """The webhook's name inside its configuration, as the API server's errors quote it."""
        return f"{self.name}.kubernetes.dcos.io"

    def ca_bundle(self) -> bytes:
        return (self.certificates / "ca.crt").read_bytes()

    def configuration(self, kind: str) -> Obj:
        read = getattr(self.api, f"read_{kind}_webhook_configuration")
        return response_json(read(self.name, _preload_content=False))


def probe_body(name: str = "probe", *, type: str = "LoadBalancer") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": type, "ports": [{"port": 6379, "protocol": "TCP"}]},
    }


def error(exc: kubernetes.client.ApiException) -> tuple[int, str]:
    """(HTTP status, the API server's message) of a refused request."""
    return int(exc.status), str(json.loads(present(exc.body))["message"])


def controller_message(service: Obj) -> str:
    """The message of the Warning Event the controller writes for this new Service: Pending's
    own check (``engine.model.checks.check_service``), with the controller's default settings."""
    return check_service(
        service, previous=None, cluster_name=CLUSTER, default_size=1, pool_group=POOL_GROUP
    ).message


@pytest.fixture
def webhook(world: World, tmp_path: Path) -> Iterator[Webhook]:
    """`dklb run` serving and registering the webhook, failurePolicy Fail, for this namespace only."""
    api = kubernetes.client.AdmissionregistrationV1Api(world.core.api_client)
    world.core.patch_namespace(
        world.namespace, {"metadata": {"labels": {SCOPE_LABEL: world.namespace}}}, _preload_content=False
    )
    port = free_port()
    hook = Webhook(
        name=f"dklb-{world.namespace}",
        url=f"https://127.0.0.1:{port}",
        certificates=tmp_path / "webhook-certs",
        selector={SCOPE_LABEL: world.namespace},
        base_args=list(world.controller.args),
        api=api,
    )
    try:
        world.restart_controller(
            "--admission-listen",
            f"127.0.0.1:{port}",
            "--admission-self-signed-dir",
            str(hook.certificates),
            "--register-admission-webhook",
            "--admission-webhook-name",
            hook.name,
            "--admission-webhook-url",
            hook.url,
            "--admission-failure-policy",
            "Fail",
            "--admission-namespace-selector",
            f"{SCOPE_LABEL}={world.namespace}",
        )
        wait_until_in_effect(world)
        yield hook
    finally:
        # Before the world's own clean-up (which deletes the Services): a Fail webhook left
        # behind would refuse every later write in this namespace.
        unregister(api, hook.name)


def wait_until_in_effect(world: World) -> None:
    """Until the API server calls the webhook: a dry-run create comes back with the annotation."""

    def injected() -> bool:
        proc = world.controller.proc
        if proc is None or proc.poll() is not None:
            raise AssertionError(f"dklb run exited:\n{world.controller.log()[-3000:]}")
        try:
            response = world.core.create_namespaced_service(
                world.namespace,
                probe_body(),  # type: ignore[arg-type]  # a dict body: the client takes it for its V1Service
                dry_run="All",
                _preload_content=False,
            )
        except kubernetes.client.ApiException:
            return False  # registered (Fail) before this replica's server answered: not yet
        return ANNOTATION in (response_json(response)["metadata"].get("annotations") or {})

    wait_for(injected, timeout=60, interval=0.2, what="the webhook in effect")


def create(world: World, body: Obj) -> Obj:
    return create_with_warnings(world, body)[0]


def create_with_warnings(world: World, body: Obj) -> tuple[Obj, list[str]]:
    """The stored object, and the admission warnings the API server passed on (Warning headers)."""
    # The generated client is typed for its model classes; it takes the plain dict as well.
    response: Any = world.core.create_namespaced_service(world.namespace, body, _preload_content=False)  # type: ignore[arg-type]
    # RFC 7234 warn-codes: 299 - "<text>", the text quoted and escaped.
    warnings = [json.loads(header.split(" ", 2)[2]) for header in response.headers.getlist("Warning")]
    return response_json(response), warnings


def patch_config(world: World, name: str, text: str | None) -> Obj:
    """A merge patch of the annotation (None removes it), as `kubectl annotate` sends it.

    A 409 means the controller wrote the Service in the same instant (its finalizer, its
    status): the API server asks for a retry, and a retry is what kubectl does too.
    """
    body = {"metadata": {"annotations": {ANNOTATION: text}}}
    outcome: list[Obj] = []

    def patched() -> bool:
        try:
            response = world.core.patch_namespaced_service(
                name, world.namespace, body, _preload_content=False
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:
                return False
            raise
        outcome.append(response_json(response))
        return True

    wait_for(patched, timeout=30, what=f"a patch of {name} without conflict")
    return outcome[0]


def replace_config(world: World, name: str, text: str) -> Obj:
    """A PUT of the whole Service with the annotation set to ``text``, as `kubectl replace` sends
    it; read again and retried when the Service changed in between (409, stale resourceVersion)."""
    outcome: list[Obj] = []

    def replaced() -> bool:
        whole = world.service(name)
        assert whole is not None
        whole["metadata"].setdefault("annotations", {})[ANNOTATION] = text
        try:
            response = world.core.replace_namespaced_service(
                name,
                world.namespace,
                whole,  # type: ignore[arg-type]  # a dict body: the client takes it for its V1Service
                _preload_content=False,
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:
                return False
            raise
        outcome.append(response_json(response))
        return True

    wait_for(replaced, timeout=30, what=f"a replace of {name} without conflict")
    return outcome[0]


def annotation(service: Obj | None) -> str | None:
    return (((service or {}).get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)


# ---- the tests ------------------------------------------------------------------------------------


def test_the_registration_is_stored_as_asked_and_a_restart_rewrites_nothing(
    world: World, webhook: Webhook
) -> None:
    versions = {}
    for kind, path in (("mutating", "/mutate"), ("validating", "/validate")):
        stored = webhook.configuration(kind)
        (hook,) = stored["webhooks"]
        assert hook["clientConfig"]["url"] == webhook.url + path
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == webhook.ca_bundle()
        assert hook["failurePolicy"] == "Fail"
        assert hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] == 5
        assert hook["namespaceSelector"] == {"matchLabels": webhook.selector}
        assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert hook["rules"][0]["resources"] == ["services"]
        assert hook["rules"][0]["scope"] == "Namespaced"
        assert hook.get("reinvocationPolicy") == ("IfNeeded" if kind == "mutating" else None)
        versions[kind] = stored["metadata"]["resourceVersion"]

    # The same flags again: the CA in the directory is reused, so the objects are already right.
    world.restart_controller()
    wait_for(
        lambda: world.controller.log().count(f"ValidatingWebhookConfiguration {webhook.name} unchanged"),
        what="the second registration",
    )
    wait_until_in_effect(world)
    for kind, version in versions.items():
        assert webhook.configuration(kind)["metadata"]["resourceVersion"] == version, kind


def test_a_created_service_is_stored_with_the_defaulted_configuration(world: World, webhook: Webhook) -> None:
    port = free_port()
    created = world.create_service("redis", ports=[(port, "TCP")])
    # The creation's own answer, i.e. the object as first stored: no controller could have
    # written anything yet (it has not even seen the object). The finalizer it adds proves it.
    assert "finalizers" not in created["metadata"]
    text = annotation(created)
    assert text is not None, "the mutating webhook defaulted the configuration"
    config = yaml.safe_load(text)
    assert re.fullmatch(r"kubernetes-cluster--[a-z0-9]{5}", config["name"])
    assert (config["cpus"], config["memory"], config["size"], config["role"]) == (0.1, 128, 1, "slave_public")
    assert config["frontends"] == [{"port": port, "servicePort": port}]
    assert annotation(world.service("redis")) == text

    # One frontend per TCP port, in the Service's order.
    ports = [free_port(), free_port()]
    web = world.create_service("web", ports=[(p, "TCP") for p in ports])
    assert yaml.safe_load(annotation(web) or "")["frontends"] == [
        {"port": p, "servicePort": p} for p in ports
    ]
    world.delete_service("web")

    # The controller takes the configuration as it is: the pool gets the webhook's name, and the
    # annotation is never rewritten.
    world.redis_on_node_port(created)
    wait_for(lambda: world.ingress("redis"), what="the Service ready")
    assert config["name"] in world.pool_names()
    assert frontend_ports(world.pool(config["name"])) == [port]
    assert redis_command(port, "PING") == b"+PONG\r\n"
    assert annotation(world.service("redis")) == text


def go_spec(**fields: str) -> str:
    """The annotation the Go dklb's e2e helper wrote (yaml.v2, no omitempty): unset fields null."""
    lines = dict.fromkeys(
        ("cloudProviderConfiguration", "constraints", "cpus", "memory", "name", "network", "role"), "null"
    )
    lines.update(size="null", strategies="null", frontends="[]")
    lines.update(fields)
    return "".join(f"{key}: {value}\n" for key, value in lines.items())


# The Go dklb's e2e table: the annotation its helper wrote, and the regexp the refusal matched.
INVALID = [
    ("bad-yaml", "invalid: yaml: str",
     'failed to parse the value of "kubernetes.dcos.io/dklb-config" as a configuration object'),
    ("bad-name", go_spec(name="__foo__"), '"__foo__" is not a valid edgelb pool name'),
    ("public-network", go_spec(network="dcos"),
     'cannot join a virtual network when the pool\'s role is "slave_public"'),
    ("negative-cpus", go_spec(cpus="-0.1"), "-0.100000 is not a valid cpu request"),
    ("negative-memory", go_spec(memory="-256"), "-256 is not a valid memory request"),
    ("negative-size", go_spec(size="-1"), "-1 is not a valid size request"),
    ("bad-strategy", go_spec(strategies="\n  creation: InvalidStrategy"),
     'failed to parse "InvalidStrategy" as an edgelb pool creation strategy'),
    ("bad-port", go_spec(frontends="\n- port: 123456\n  servicePort: 6379"),
     "123456 is not a valid port number"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "config", "regexp"), INVALID, ids=[i[0] for i in INVALID])
def test_an_invalid_configuration_is_refused_and_nothing_is_stored(
    world: World, webhook: Webhook, name: str, config: str, regexp: str
) -> None:
    body = probe_body(name)
    body["metadata"]["annotations"] = {ANNOTATION: config + "\n"}
    with pytest.raises(kubernetes.client.ApiException) as refused:
        create(world, body)
    status, message = error(refused.value)
    assert 400 <= status < 500, (status, message)
    assert re.search(regexp, message), message
    # Word for word what the controller's Warning Event would say, behind the API server's prefix.
    expected = controller_message(body)
    assert expected
    assert message == f'admission webhook "{webhook.webhook_name}" denied the request: {expected}'
    assert world.service(name) is None, "nothing stored"
    assert world.pool_names() == []


def test_forbidden_changes_are_refused_and_allowed_ones_go_through(world: World, webhook: Webhook) -> None:
    port = free_port()
    created = world.create_service("redis", config=REDIS.format(port=port))
    world.redis_on_node_port(created)
    wait_for(lambda: world.ingress("redis"), what="the Service ready")
    text = annotation(world.service("redis"))
    assert text is not None and yaml.safe_load(text)["name"] == "dklb-redis"
    before = world.pool("dklb-redis")
    prefix = f'admission webhook "{webhook.webhook_name}" denied the request: '

    role = 'role: the role of the target edgelb pool cannot be changed (from "slave_public" to "*")'
    network = 'network: the virtual network of the target edgelb pool cannot be changed (from "" to "dcos")'
    refusals = [
        (
            text.replace("name: dklb-redis", "name: other"),
            ['name: the name of the target edgelb pool cannot be changed (from "dklb-redis" to "other")'],
        ),
        # Off the public role means onto a virtual network: both changes, both refused.
        (
            text.replace("role: slave_public", "role: '*'").replace("network: ''", "network: dcos"),
            [role, network],
        ),
        (None, [f"the {ANNOTATION} annotation cannot be removed"]),
    ]
    for change, messages in refusals:
        with pytest.raises(kubernetes.client.ApiException) as refused:
            patch_config(world, "redis", change)
        status, said = error(refused.value)
        assert 400 <= status < 500 and said == prefix + "; ".join(messages), (status, said)
        assert annotation(world.service("redis")) == text, "nothing stored"

    # A replace (kubectl replace / apply of the whole object) is refused the same way.
    with pytest.raises(kubernetes.client.ApiException) as refused:
        replace_config(world, "redis", text.replace("name: dklb-redis", "name: other"))
    assert error(refused.value) == (403, prefix + refusals[0][1][0])

    # On a Service of a private role (on a virtual network), the role alone or the network alone.
    private_port = free_port()
    world.create_service(
        "private",
        config=f"name: dklb-private\nrole: '*'\nnetwork: dcos\nfrontends:\n- {{port: {private_port}, "
        "servicePort: 6379}\n",
    )
    private = annotation(world.service("private")) or ""
    for change, message in [
        (
            private.replace("role: '*'", "role: other"),
            'role: the role of the target edgelb pool cannot be changed (from "*" to "other")',
        ),
        (
            private.replace("network: dcos", "network: other"),
            "network: the virtual network of the target edgelb pool cannot be changed "
            '(from "dcos" to "other")',
        ),
    ]:
        assert change != private
        with pytest.raises(kubernetes.client.ApiException) as refused:
            patch_config(world, "private", change)
        assert error(refused.value) == (403, prefix + message)
    assert annotation(world.service("private")) == private

    assert world.pool("dklb-redis") == before, "the pool never saw any of it"
    assert not [e for e in world.events("redis", type="Warning") if "cannot be changed" in e["message"]]

    # cpus and the frontend port may change: stored as sent, and the pool follows each.
    more_cpus = text.replace("cpus: 0.1", "cpus: 0.3")
    assert more_cpus != text
    assert annotation(replace_config(world, "redis", more_cpus)) == more_cpus
    wait_for(lambda: (world.pool("dklb-redis") or {}).get("cpus") == 0.3, what="cpus updated")

    new_port = free_port()
    moved = more_cpus.replace(f"port: {port}", f"port: {new_port}")
    assert moved != more_cpus
    assert annotation(patch_config(world, "redis", moved)) == moved
    wait_for(lambda: frontend_ports(world.pool("dklb-redis")) == [new_port], what="frontend port updated")
    wait_for(lambda: redis_command(new_port, "PING") == b"+PONG\r\n", what="traffic on the new port")
    assert annotation(world.service("redis")) == moved
    assert not [e for e in world.events("redis", type="Warning") if e["reason"] == "InvalidConfiguration"]


def test_a_service_that_is_not_a_load_balancer_passes_untouched(world: World, webhook: Webhook) -> None:
    plain = create(world, probe_body("plain", type="ClusterIP"))
    assert annotation(plain) is None, "no configuration added"
    # Not even an invalid annotation matters on a Service dklb does not serve.
    odd = probe_body("odd", type="ClusterIP")
    odd["metadata"]["annotations"] = {ANNOTATION: 'name: "__foo__"\n'}
    assert annotation(create(world, odd)) == 'name: "__foo__"\n'
    assert world.service("plain") is not None and world.service("odd") is not None


def test_without_the_webhook_the_controller_refuses_a_forbidden_change_itself(
    world: World, webhook: Webhook
) -> None:
    port = free_port()
    created = world.create_service("redis", config=REDIS.format(port=port))
    world.redis_on_node_port(created)
    wait_for(lambda: world.ingress("redis"), what="the Service ready")
    text = annotation(world.service("redis")) or ""
    renamed = text.replace("name: dklb-redis", "name: other")
    with pytest.raises(kubernetes.client.ApiException) as refused:
        patch_config(world, "redis", renamed)
    webhook_said = error(refused.value)[1]
    before = world.pool("dklb-redis")

    # The webhook goes with its process; registered with Fail, the API server refuses writes.
    world.controller.stop()
    with pytest.raises(kubernetes.client.ApiException) as failed:
        patch_config(world, "redis", renamed)
    status, message = error(failed.value)
    assert status == 500 and f'failed calling webhook "{webhook.webhook_name}"' in message, message

    # Registered again with Ignore (what `dklb run` registers by default), the API server stores
    # the change unchecked once its webhook cache has the new policy.
    register(
        webhook.api,
        name=webhook.name,
        ca_bundle=webhook.ca_bundle(),
        url=webhook.url,
        failure_policy="Ignore",
        namespace_selector=webhook.selector,
    )
    assert webhook.configuration("validating")["webhooks"][0]["failurePolicy"] == "Ignore"

    def accepted() -> bool:
        try:
            patch_config(world, "redis", renamed)
        except kubernetes.client.ApiException as exc:
            assert exc.status == 500, error(exc)
            return False
        return True

    wait_for(accepted, timeout=30, interval=0.2, what="the change accepted with failurePolicy Ignore")
    assert annotation(world.service("redis")) == renamed
    assert not world.events("redis", type="Warning")

    # The controller again, without the webhook: it refuses the change itself.
    world.controller.args = list(webhook.base_args)
    world.controller.start()
    event = world.wait_event(
        "redis", type="Warning", reason="InvalidConfiguration", contains="cannot be changed"
    )
    # The same words as the webhook's refusal, without the API server's prefix.
    prefix = f'admission webhook "{webhook.webhook_name}" denied the request: '
    assert webhook_said == prefix + event["message"]
    assert world.pool_names() == ["dklb-redis"] and world.pool("dklb-redis") == before
    assert redis_command(port, "PING") == b"+PONG\r\n", "the pool keeps serving"


# Verbatim: what the Go dklb's webhook wrote into every LoadBalancer Service it admitted.
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
- port: {port}
  servicePort: 6379
"""


def test_go_written_annotations_and_udp_only_services_are_let_in(world: World, webhook: Webhook) -> None:
    port = free_port()
    go_text = GO_DEFAULTED.format(port=port)
    body = probe_body("go")
    body["metadata"]["annotations"] = {ANNOTATION: go_text}
    stored, warnings = create_with_warnings(world, body)
    assert warnings == []
    # Rewritten in dklb's own form by the mutating webhook: the same configuration.
    assert yaml.safe_load(annotation(stored) or "") == {
        "name": "dev--kubernetes01--x7k2p",
        "role": "slave_public",
        "network": "",
        "cpus": 0.1,
        "memory": 128,
        "size": 1,
        "frontends": [{"port": port, "servicePort": 6379}],
        "strategies": {"creation": "IfNotPresent"},
    }
    wait_for(lambda: world.ingress("go"), what="the Go-era Service served")
    assert frontend_ports(world.pool("dev--kubernetes01--x7k2p")) == [port]

    # UDP only: nothing for dklb, but another load-balancer controller may want it.
    dns = probe_body("dns")
    dns["spec"]["ports"] = [{"port": 53, "protocol": "UDP"}]
    stored, warnings = create_with_warnings(world, dns)
    assert annotation(stored) is None, "nothing written into a Service dklb does not serve"
    assert warnings == [
        "port 53/UDP is not exposed: dklb supports TCP only",
        f"{NO_TCP_PORT}: dklb makes no load balancer for it (allowed: another controller may)",
    ]
    world.wait_event("dns", type="Warning", reason="InvalidConfiguration", contains=NO_TCP_PORT)
    assert world.pool_names() == ["dev--kubernetes01--x7k2p"]


def cloud_text(namespace: str, **elb: Any) -> str:
    listener = {"port": 6379, "linkFrontend": f"{CLUSTER}:{namespace}:redis:6379"}
    value = {
        "aws": {"elbs": [{"name": "redis", "type": "NLB", "internal": False, "listeners": [listener], **elb}]}
    }
    return json.dumps(value, separators=(",", ":"))


def test_the_go_cloud_switch_goes_through_and_a_misspelt_cloud_configuration_does_not(
    world: World, webhook: Webhook
) -> None:
    """Go's cloud e2e test: name -> cloud--<name>, role "*", size 2 and the cloud configuration
    in one update (on a paused Service, as Go's own transition test: no pool is made)."""
    body = probe_body("redis")
    body["metadata"]["annotations"] = {
        ANNOTATION: go_spec(
            name="ns1", role="slave_public", frontends="\n- port: 16379\n  servicePort: 6379"
        ),
        PAUSED_ANNOTATION: "true",
    }
    created = create(world, body)
    defaulted = yaml.safe_load(annotation(created) or "")
    assert defaulted["name"] == "ns1"

    misspelt = yaml.safe_dump(
        {**defaulted, "cloudProviderConfiguration": cloud_text(world.namespace).replace('"elbs"', '"elb"')}
    )
    with pytest.raises(kubernetes.client.ApiException) as refused:
        replace_config(world, "redis", misspelt)
    status, message = error(refused.value)
    assert status == 403 and 'cloudProviderConfiguration.aws: unknown field "elb"' in message, message

    switched = yaml.safe_dump(
        {
            **defaulted,
            "name": "cloud--ns1",
            "role": "*",
            "size": 2,
            "cloudProviderConfiguration": cloud_text(world.namespace),
        }
    )
    stored = yaml.safe_load(annotation(replace_config(world, "redis", switched)) or "")
    assert (stored["name"], stored["role"], stored["network"], stored["size"]) == ("cloud--ns1", "*", "", 2)
    assert json.loads(stored["cloudProviderConfiguration"]) == json.loads(cloud_text(world.namespace))
    assert world.pool_names() == []
