"""Bad input end to end: invalid annotations on real Services, and an invalid edit of a serving one.

Where it sits: the e2e ``world`` (real kube-apiserver, ``dklb edgelb-local`` with real HAProxy,
``dklb run``), its controller restarted with ``--http-listen 127.0.0.1:0`` so that /metrics
shows every EdgeLB request it made (``dklb_edgelb_requests_total{method}``). The engine-level
twin, ``tests/engine/test_bad_input.py``, fuzzes thousands of cases through the Reconciler;
here a table of them (distinct from ``test_controller.INVALID``) goes through the API server.

* Invalid annotations (wrong types, unknown and duplicate keys, unicode and overlong names,
  huge and zero ports, YAML bombs and tags, values over the operator's limits, a Service with
  no TCP port): each Service gets an InvalidConfiguration Warning naming the field, its
  binding is Rejected, its annotation is not rewritten, it gets no finalizer and no address,
  and EdgeLB saw no write at all (while a valid Service created next to them is provisioned,
  and its one POST is counted).
* ``test_controller`` covers an immutable change (name, role) of a serving Service; here a
  serving Service is edited to annotations that fail validation (a YAML error, a negative
  cpus, an unknown field, an out-of-range port, a size over ``--max-pool-size``): the pool is
  untouched, redis traffic keeps flowing through HAProxy, and restoring the annotation makes
  it Ready again without a write.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from engine.model.checks import NO_TCP_PORT
from engine.model.services import ANNOTATION, FINALIZER
from engine.store import Store, database_url
from tests.checks import present
from tests.e2e.conftest import World
from tests.e2e.invariants import settled, violations
from tests.integration.conftest import free_port
from tests.integration.conftest import redis_ping as ping
from tests.processes import scrape, total, wait_for

LISTENING = re.compile(r"http listening on (http://\S+)")
WRITES = ("POST", "PUT", "DELETE")
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
)

# (Service name, annotation, what the Warning must say). Each names the field it is about.
INVALID = [
    ("cpus-a-string", 'cpus: "a lot"', 'cpus: "a lot" is not a number'),
    ("size-a-float", "size: 1.5", "size: 1.5 is not an integer"),
    ("unknown-field", "name: fine\nreplicas: 3", 'unknown field "replicas"'),
    (
        "unknown-nested",
        "frontends:\n- {port: 16000, servicePort: 6379, proto: tcp}",
        'frontends[0]: unknown field "proto"',
    ),
    ("duplicate-key", "name: a\ncpus: 0.2\nname: b", 'found duplicate key "name"'),
    ("unicode-name", "name: pöol", 'name: "pöol" is not a valid edgelb pool name'),
    ("overlong-name", "name: " + "a" * 64, f'name: "{"a" * 64}" is not a valid edgelb pool name'),
    (
        "huge-port",
        "frontends:\n- {port: 99999999999999999999, servicePort: 6379}",
        "frontends[0].port: 99999999999999999999 is not a valid port number",
    ),
    (
        "zero-service-port",
        "frontends:\n- {port: 16000, servicePort: 0}",
        "frontends[0].servicePort: 0 is not a valid port number",
    ),
    ("number-frontends", "frontends: 5", "frontends: 5 is not a list"),
    ("not-a-mapping", "- name: a", "the configuration object must be a mapping, got a list"),
    ("deeply-nested", "name: " + "[" * 2000 + "]" * 2000, "exceeded maximum nesting depth"),
    # S5 (security review): these made the parser raise; the Service looped in Pending.
    (
        "nested-360-deep",
        "frontends: " + "[" * 360 + "]" * 360,
        "the value is nested more than 32 levels deep",
    ),
    ("digits-5000", "size: " + "1" * 5000, "size: an integer of 5,000 digits is out of range"),
    ("set-as-a-key", "? !!set {a, b}\n: 1", "found unhashable key"),
    (
        "hex-port",
        "frontends:\n- {port: 0x" + "f" * 4000 + ", servicePort: 6379}",
        "frontends[0].port: an integer",
    ),
    ("yaml-bomb", LAUGHS + "name: *h", 'unknown field "a"'),
    ("python-tag", "name: !!python/object/apply:os.system ['true']", "failed to parse the value"),
    ("empty-role", "role: ''", 'role: "" is not a valid role'),
    # S8 (security review): pool-level values beyond the operator's limits (default flags).
    (
        "s8-numbers",
        "size: 1000000000000\ncpus: 100000.0\nmemory: 999999999999",
        "size: 1000000000000 is over this cluster's limit of 32 (--max-pool-size)",
    ),
    (
        "s8-role-and-constraints",
        'role: "tenant-b-reserved\\u001b[2J\\r\\n"\nnetwork: ops-admin-overlay\n'
        'constraints: "hostname:CLUSTER:10.0.0.5\\nx"',
        "role: ",
    ),
    (
        "cloud-not-json",
        "cloudProviderConfiguration: '{aws'",
        "cloudProviderConfiguration: the cloud-provider configuration is not valid JSON",
    ),
    (
        "cloud-elb-typo",
        """cloudProviderConfiguration: '{"aws": {"elb": [{"name": "lb"}]}}'""",
        'cloudProviderConfiguration.aws: unknown field "elb" (did you mean "elbs"?)',
    ),
    (
        "cloud-foreign-frontend",
        """cloudProviderConfiguration: '{"aws": {"elbs": [{"name": "lb", "listeners": """
        """[{"port": 6379, "linkFrontend": "someone-else"}]}]}}'""",
        'listeners[0].linkFrontend: "someone-else" is not a frontend of this Service',
    ),
    (
        "both-constraints",
        "constraints: a\ncontraints: b",
        '"contraints" and "constraints" cannot both be given',
    ),
    (
        "frontend-port-twice",
        "frontends:\n- {port: 16000, servicePort: 6379}\n- {port: 16000, servicePort: 6380}",
        "frontends[1].port: frontend port 16000 has been specified twice",
    ),
]


def metrics_url(world: World, offset: int) -> str:
    """Restart the controller with /metrics on a free port; its URL, read from the log."""
    world.restart_controller("--http-listen", "127.0.0.1:0")

    def found() -> str | None:
        text = world.controller.log_path.read_bytes()[offset:].decode(errors="replace")
        match = LISTENING.search(text)
        return match.group(1) if match else None

    return wait_for(found, what="the http listening line in the log")


def edgelb_requests(url: str) -> dict[str, float]:
    """dklb_edgelb_requests_total summed by method, every route and code."""
    metrics = scrape(url + "/metrics")
    methods = {s.labels["method"] for s in metrics.get("dklb_edgelb_requests_total", [])}
    return {m: total(metrics, "dklb_edgelb_requests_total", method=m) for m in methods}


def edgelb_writes(url: str) -> float:
    counts = edgelb_requests(url)
    return sum(counts.get(method, 0.0) for method in WRITES)


def states(world: World) -> dict[str, tuple[str, str | None]]:
    store = Store(database_url(str(world.directory / "dklb.db")), read_only=True)
    try:
        return {b.name: (b.state, b.last_error) for b in store.bindings() if b.namespace == world.namespace}
    finally:
        store.close()


def no_violations(world: World) -> None:
    database = world.directory / "dklb.db"
    wait_for(lambda: settled(core=world.core, namespace=world.namespace, database=database), what="settled")
    found = violations(core=world.core, namespace=world.namespace, edgelb=world.client, database=database)
    assert found == []


def test_invalid_annotations_get_a_warning_naming_the_field_and_never_reach_edgelb(world: World) -> None:
    url = metrics_url(world, world.controller.log_path.stat().st_size)
    names = [name for name, _, _ in INVALID]
    for name, config, _ in INVALID:
        world.create_service(name, config=config + "\n")
    world.create_service("sctp-only", ports=[(9899, "SCTP")], config="name: sctp\n")

    for name, _, message in [*INVALID, ("sctp-only", "", NO_TCP_PORT)]:
        event = world.wait_event(name, type="Warning", contains=message)
        assert event["reason"] == "InvalidConfiguration", event
    wait_for(
        lambda: (
            {n: s for n, (s, _) in states(world).items()} == dict.fromkeys([*names, "sctp-only"], "Rejected")
        ),
        what="every binding Rejected",
    )

    assert world.pool_names() == []
    assert edgelb_writes(url) == 0, f"EdgeLB requests: {edgelb_requests(url)}"
    for name, config, _ in INVALID:
        service: dict[str, Any] = world.service(name) or {}
        assert service["metadata"]["annotations"][ANNOTATION] == config + "\n", (
            "an invalid annotation is left as is"
        )
        assert FINALIZER not in (service["metadata"].get("finalizers") or [])
        assert world.ingress(name) == []
    no_violations(world)

    # The control: a valid Service beside them is provisioned, and its one write is counted.
    world.create_service("control", ports=[(free_port(), "TCP")], config="name: control\n")
    wait_for(lambda: world.ingress("control"), what="the control Service Ready")
    assert world.pool_names() == ["control"] and edgelb_writes(url) == 1


REDIS = "name: dklb-redis\nfrontends:\n- port: {port}\n  servicePort: 6379\n"


def edited(written: str, **fields: Any) -> str:
    """The written-back configuration object with ``fields`` set."""
    return yaml.safe_dump({**yaml.safe_load(written), **fields}, sort_keys=False)


INVALID_EDITS: list[tuple[Callable[[str], str], str]] = [
    (lambda written: "name: dklb-redis\nfrontends: [unclosed\n", "failed to parse the value"),
    (lambda written: edited(written, cpus=-1), "cpus: -1.000000 is not a valid cpu request"),
    (lambda written: edited(written, replicas=2), 'unknown field "replicas"'),
    (
        lambda written: edited(written, frontends=[{"port": 70000, "servicePort": 6379}]),
        "frontends[0].port: 70000 is not a valid port number",
    ),
    # S8 (security review): a serving pool's size raised past --max-pool-size (default 32).
    (lambda written: edited(written, size=100000), "size: 100000 is over this cluster's limit of 32"),
]


def test_a_serving_service_edited_to_an_invalid_annotation_keeps_serving(world: World) -> None:
    url = metrics_url(world, world.controller.log_path.stat().st_size)
    port = free_port()
    service = world.create_service("redis", config=REDIS.format(port=port))
    world.redis_on_node_port(service)
    wait_for(lambda: world.ingress("redis"), what="ready")
    wait_for(lambda: states(world).get("redis", ("",))[0] == "Ready", what="the binding Ready")
    assert ping(port)
    written = present(world.service("redis"))["metadata"]["annotations"][ANNOTATION]
    pool, address = world.pool("dklb-redis"), world.ingress("redis")
    writes = edgelb_writes(url)
    assert writes == 1, "one POST created the pool"

    for edit, message in INVALID_EDITS:
        world.set_config("redis", edit(written))
        world.wait_event("redis", type="Warning", contains=message)
        wait_for(lambda: states(world)["redis"][0] == "Rejected", what="the binding Rejected")
        assert world.pool("dklb-redis") == pool, "the pool is untouched"
        assert world.ingress("redis") == address, "the Service keeps its address"
        assert ping(port), "traffic still flows through the pool"
        assert edgelb_writes(url) == writes

        world.set_config("redis", written)
        wait_for(lambda: states(world)["redis"][0] == "Ready", what="Ready again once fixed")
        assert world.pool("dklb-redis") == pool and edgelb_writes(url) == writes, "fixing it writes nothing"
        assert ping(port)
    no_violations(world)
