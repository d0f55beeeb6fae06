"""The validating webhook applies the tenancy rule (S1 of the security review) against the facts
handed in: what the database knows of the pool the Service names. Refusals carry the
controller's own message (``states.tenancy.refusal``); what the webhook cannot know, or could not
read, is let in for the controller to judge. Also the bounded read of those facts
(``engine.admission.tenancy``), on records that block, fail or say nothing.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from engine.admission.review import TenancyUnknown, review
from engine.admission.tenancy import StoreTenancy, known
from engine.model import tenancy as model_tenancy
from engine.model.services import SHARED_POOL_KEY_ANNOTATION, shared_pool_key
from engine.model.settings import Settings
from engine.model.tenancy import LEAVING, Member, PoolTenancy, Tenant
from engine.runtime import lifecycle
from states.tenancy import refusal
from tests.checks import present
from tests.processes import wait_for
from tests.unit.test_admission import admission_review, service

SETTINGS = Settings()
POOL = "shop"
CONFIG = f"name: {POOL}\nfrontends:\n- {{port: 8080, servicePort: 80}}\n"
CLOUD = (
    f"name: cloud--{POOL}\n"
    "cloudProviderConfiguration: "
    '\'{"aws": {"elbs": [{"name": "elb", "type": "NLB", "listeners": [{"port": 80}]}]}}\'\n'
)
# Another namespace and its Service: neither may ever appear in what the Service is told.
OTHER_NS, OTHER_SVC = "team-private", "secret-billing"
K1, K2 = "team-shop", "other-key"


def digest(value: str | None) -> str | None:
    return (
        None if value is None else shared_pool_key(service(annotations={SHARED_POOL_KEY_ANNOTATION: value}))
    )


def svc(key: str | None = None, *, config: str = CONFIG, deleting: bool = False) -> dict[str, Any]:
    annotations = {SHARED_POOL_KEY_ANNOTATION: key} if key is not None else {}
    return service(config, annotations=annotations, deleting=deleting)


def theirs(key: str | None = None, *, cloud: bool = False) -> Member:
    return Member(OTHER_NS, OTHER_SVC, digest(key), cloud=cloud)


def owned_by_them(key: str | None = None, *members: Member) -> PoolTenancy:
    return PoolTenancy(owner=Tenant(OTHER_NS, digest(key)), pre_existing=False, members=members)


@dataclass
class Lookup:
    """The facts of one pool; records what was asked."""

    facts: PoolTenancy | None = None
    error: str | None = None
    asked: list[str] = field(default_factory=list)

    def __call__(self, pool: str) -> PoolTenancy | None:
        self.asked.append(pool)
        if self.error is not None:
            raise TenancyUnknown(self.error)
        return self.facts


def judged(
    operation: str,
    new: dict[str, Any],
    old: dict[str, Any] | None = None,
    *,
    lookup: Lookup,
    settings: Settings = SETTINGS,
    mutate: bool = False,
    refusals: list[tuple[str, str, str]] | None = None,
) -> dict[str, Any]:
    def heard(key: str, pool: str, details: str) -> None:
        if refusals is not None:
            refusals.append((key, pool, details))

    result = review(
        admission_review(operation, new, old),
        settings=settings,
        mutate=mutate,
        rng=random.Random(0),
        pool_tenancy=lookup,
        on_tenancy_refusal=heard,
    )
    response: dict[str, Any] = result["response"]
    return response


def controller_says(
    facts: PoolTenancy, key: str | None, *, cloud: bool = False, settings: Settings = SETTINGS
) -> str | None:
    """The controller's message for Service default/web against the same record (the guard's
    call of ``states.tenancy.refusal``)."""
    others = [m for m in facts.members if (m.namespace, m.name) != ("default", "web")]
    refused = refusal(
        POOL,
        Tenant("default", digest(key)),
        others=[Tenant(m.namespace, m.key) for m in others],
        owner=facts.owner,
        pre_existing=facts.pre_existing,
        cloud=cloud or any(m.cloud for m in others),
        settings=settings,
    )
    return None if refused is None else refused[0]


CROSS = Settings(allow_cross_namespace_pools=True)
OPS_ONLY = Settings(pre_existing_pool_namespaces=frozenset({"ops"}))
DEFAULT_TOO = Settings(pre_existing_pool_namespaces=frozenset({"ops", "default"}))
PRE_EXISTING = PoolTenancy(owner=None, pre_existing=True)

# (case, facts, this Service's key, settings, refused)
CASES: list[tuple[str, PoolTenancy | None, str | None, Settings, bool]] = [
    ("a pool the database does not know", None, None, SETTINGS, False),
    ("another namespace's pool, no Service on it, no key", owned_by_them(), None, SETTINGS, True),
    ("another namespace's pool and Service, no key", owned_by_them(None, theirs()), None, SETTINGS, True),
    ("their key, not ours", owned_by_them(K1, theirs(K1)), None, SETTINGS, True),
    ("our key, not theirs", owned_by_them(None, theirs()), K1, SETTINGS, True),
    ("both keys, different", owned_by_them(K1, theirs(K1)), K2, SETTINGS, True),
    ("both keys, equal", owned_by_them(K1, theirs(K1)), K1, SETTINGS, False),
    ("the owner left: its creation key speaks, equal", owned_by_them(K1), K1, SETTINGS, False),
    ("the owner left: its creation key speaks, different", owned_by_them(K2), K1, SETTINGS, True),
    (
        "our own namespace's pool and Services",
        PoolTenancy(Tenant("default"), False, (Member("default", "other"), Member("default", "web"))),
        None,
        SETTINGS,
        False,
    ),
    (
        "the Service itself, already on the pool",
        PoolTenancy(Tenant("default"), False, (Member("default", "web", cloud=True),)),
        None,
        SETTINGS,
        False,
    ),
    ("open sharing by the operator", owned_by_them(None, theirs()), None, CROSS, False),
    ("a cloud pool, even with open sharing", owned_by_them(None, theirs(cloud=True)), None, CROSS, True),
    ("a cloud pool, even with equal keys", owned_by_them(K1, theirs(K1, cloud=True)), K1, SETTINGS, True),
    ("pre-existing, no restriction", PRE_EXISTING, None, SETTINGS, False),
    ("pre-existing, namespace not allowed", PRE_EXISTING, None, OPS_ONLY, True),
    ("pre-existing, namespace allowed", PRE_EXISTING, None, DEFAULT_TOO, False),
]


@pytest.mark.parametrize(("case", "facts", "key", "settings", "refused"), CASES, ids=[c[0] for c in CASES])
def test_a_create_is_judged_by_the_controllers_rule_with_its_message(
    case: str, facts: PoolTenancy | None, key: str | None, settings: Settings, refused: bool
) -> None:
    lookup = Lookup(facts)
    response = judged("CREATE", svc(key), lookup=lookup, settings=settings)
    assert lookup.asked == [POOL]
    assert response["allowed"] is not refused
    expected = None if facts is None else controller_says(facts, key, settings=settings)
    if not refused:
        assert expected is None and "status" not in response
        return
    message = response["status"]["message"]
    assert response["status"]["code"] == 403
    assert message == expected, "the controller's own words"
    assert OTHER_NS not in message and OTHER_SVC not in message


def test_a_cloud_service_never_joins_another_namespaces_pool() -> None:
    name = f"cloud--{POOL}"
    lookup = Lookup(owned_by_them(K1, theirs(K1)))
    response = judged("CREATE", svc(K1, config=CLOUD), lookup=lookup, settings=CROSS)
    assert lookup.asked == [name]
    assert not response["allowed"]
    assert "never shared across namespaces" in response["status"]["message"]
    assert f'EdgeLB pool "{name}"' in response["status"]["message"]


def test_the_details_go_to_the_operator_only() -> None:
    heard: list[tuple[str, str, str]] = []
    response = judged("CREATE", svc(), lookup=Lookup(owned_by_them(None, theirs())), refusals=heard)
    assert not response["allowed"]
    assert heard == [
        (
            "default/web",
            POOL,
            f"pool {POOL} is used by namespace(s) ['{OTHER_NS}'], and this Service carries no sharing key",
        )
    ]


def test_the_mutating_webhook_never_asks_nor_refuses() -> None:
    lookup = Lookup(owned_by_them(None, theirs()))
    response = judged("CREATE", svc(), lookup=lookup, mutate=True)
    assert response["allowed"] and lookup.asked == []


def test_an_update_leaving_configuration_and_key_as_they_were_is_not_judged() -> None:
    """The controller's own writes (finalizer, status), labels, ports: never refused by the rule,
    and the database is not even read."""
    lookup = Lookup(owned_by_them(None, theirs()))
    old = svc(K1)
    new = replace_ports(svc(K1))
    new["metadata"]["labels"] = {"app": "web"}
    response = judged("UPDATE", new, old, lookup=lookup)
    assert response["allowed"] and lookup.asked == []


def replace_ports(obj: dict[str, Any]) -> dict[str, Any]:
    obj["spec"]["ports"] = [*obj["spec"]["ports"], {"port": 8443, "protocol": "TCP", "targetPort": 8443}]
    return obj


@pytest.mark.parametrize(
    ("old_key", "new_key", "refused"),
    [(K1, K2, True), (K1, None, True), (None, K1, False), (K2, K1, False)],
)
def test_a_changed_sharing_key_is_judged_anew(
    old_key: str | None, new_key: str | None, refused: bool
) -> None:
    lookup = Lookup(owned_by_them(K1, theirs(K1)))
    response = judged("UPDATE", svc(new_key), svc(old_key), lookup=lookup)
    assert lookup.asked == [POOL]
    assert response["allowed"] is not refused


def test_an_update_of_the_configuration_is_judged() -> None:
    lookup = Lookup(owned_by_them(None, theirs()))
    response = judged("UPDATE", svc(config=CONFIG + "cpus: 0.5\n"), svc(), lookup=lookup)
    assert lookup.asked == [POOL] and not response["allowed"]


def test_a_cluster_ip_becoming_a_load_balancer_is_judged() -> None:
    lookup = Lookup(owned_by_them(None, theirs()))
    old = service(CONFIG, type="ClusterIP")
    response = judged("UPDATE", svc(), old, lookup=lookup)
    assert lookup.asked == [POOL] and not response["allowed"]


def test_a_service_being_deleted_is_never_judged() -> None:
    lookup = Lookup(owned_by_them(None, theirs()))
    response = judged("UPDATE", svc(K2, deleting=True), svc(K1), lookup=lookup)
    assert response["allowed"] and lookup.asked == []


@pytest.mark.parametrize(
    ("new", "what"),
    [
        (svc(config="name: shop\ncpus: -1\n"), "an invalid configuration: its own message"),
        (service(CONFIG, ports=((53, "UDP"),)), "no TCP port: not dklb's"),
        (service(None), "no name yet: nobody uses a pool just drawn"),
    ],
)
def test_nothing_is_asked_when_the_configuration_names_no_usable_pool(new: dict[str, Any], what: str) -> None:
    lookup = Lookup(owned_by_them(None, theirs()))
    response = judged("CREATE", new, lookup=lookup)
    assert lookup.asked == [], what
    assert not response["allowed"] or "used by another namespace" not in str(response.get("status"))


def test_facts_that_could_not_be_read_let_the_service_in_with_a_warning() -> None:
    response = judged("CREATE", svc(), lookup=Lookup(error="the database did not answer within 2 s"))
    assert response["allowed"]
    assert response["warnings"] == [
        f'dklb could not check who may use EdgeLB pool "{POOL}" (the database did not answer within 2 s); '
        "allowed: the controller checks it and rejects the Service if it may not"
    ]


def test_without_facts_the_rule_is_left_to_the_controller() -> None:
    result = review(admission_review("CREATE", svc()), settings=SETTINGS, mutate=False)
    assert result["response"]["allowed"]


def test_the_namespace_is_the_requests() -> None:
    """A CREATE's object often has no namespace of its own: the request's is judged."""
    new = svc()
    del new["metadata"]["namespace"]
    response = judged(
        "CREATE", new, lookup=Lookup(PoolTenancy(Tenant("default"), False, (Member("default", "x"),)))
    )
    assert response["allowed"]


# --- what the database knows: ``known`` ----------------------------------------------------------


@dataclass(frozen=True)
class Row:
    namespace: str | None = None
    shared_pool_key: str | None = None
    created_by_dklb: bool = False
    pre_existing: bool = False


@dataclass(frozen=True)
class Bound:
    namespace: str
    name: str
    state: str = "Ready"
    config: dict[str, Any] | None = field(default_factory=lambda: {"name": POOL})
    shared_pool_key: str | None = None


@dataclass
class Records:
    row: Row | None = None
    bound: tuple[Bound, ...] = ()
    block: threading.Event | None = None
    fail: Exception | None = None

    def pool(self, name: str) -> Row | None:
        if self.block is not None:
            self.block.wait(30)
        if self.fail is not None:
            raise self.fail
        return self.row if name == POOL else None

    def bindings(self, *, pool: str) -> list[Bound]:
        return [b for b in self.bound if pool == POOL]


CLOUD_CONFIG = {"name": POOL, "cloudProviderConfiguration": {"aws": {}}}
KNOWN: list[tuple[str, Records, PoolTenancy | None]] = [
    ("nothing recorded", Records(), None),
    ("a row that says not whose (EdgeLB's marks would)", Records(Row()), None),
    (
        "created for a namespace",
        Records(Row("a", "k", created_by_dklb=True)),
        PoolTenancy(Tenant("a", "k"), False),
    ),
    ("created before owners were recorded", Records(Row(created_by_dklb=True)), PoolTenancy(None, False)),
    ("pre-existing", Records(Row(pre_existing=True)), PoolTenancy(None, True)),
    (
        "Services on it, leaving and unaccepted ones left out",
        Records(
            None,
            (
                Bound("a", "web", shared_pool_key="k"),
                Bound("a", "db", config=CLOUD_CONFIG),
                Bound("b", "gone", state="Deleting"),
                Bound("b", "moved", state="Moving"),
                Bound("c", "new", config=None),
            ),
        ),
        PoolTenancy(None, False, (Member("a", "web", "k"), Member("a", "db", cloud=True))),
    ),
    ("only leaving Services", Records(None, (Bound("b", "gone", state="Deleting"),)), None),
]


@pytest.mark.parametrize(("case", "records", "facts"), KNOWN, ids=[k[0] for k in KNOWN])
def test_known_reads_what_the_guard_reads(case: str, records: Records, facts: PoolTenancy | None) -> None:
    assert known(records, POOL) == facts


def test_the_leaving_states_are_the_lifecycles() -> None:
    machine = lifecycle.load()
    assert {name for name, spec in machine.states.items() if not spec.wants_objects} == LEAVING


# --- bounded: ``StoreTenancy`` --------------------------------------------------------------------


def test_a_database_that_does_not_answer_is_waited_for_a_bounded_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = threading.Event()
    lookup = StoreTenancy(Records(Row("a", created_by_dklb=True), block=gate), deadline=0.05, slots=1)
    try:
        with caplog.at_level(logging.WARNING, logger="dklb.admission"):
            with pytest.raises(TenancyUnknown, match=r"did not answer within 0\.05 s"):
                lookup(POOL)
            # The stuck read keeps its slot: the next review does not wait at all.
            with pytest.raises(TenancyUnknown, match="has not answered earlier reads yet"):
                lookup(POOL)
        assert sum("not checked by the webhook" in r.getMessage() for r in caplog.records) == 2
    finally:
        gate.set()
    # Once the database answers, so does the lookup.
    facts = wait_for(lambda: _answer(lookup), timeout=10, what="the slot given back")
    assert facts == PoolTenancy(Tenant("a"), False)


def _answer(lookup: StoreTenancy) -> PoolTenancy | None:
    try:
        return lookup(POOL)
    except TenancyUnknown:
        return None


def test_a_failing_read_is_told_not_raised() -> None:
    lookup = StoreTenancy(Records(fail=RuntimeError("database is locked")))
    with pytest.raises(TenancyUnknown, match="reading the database failed: RuntimeError: database is locked"):
        lookup(POOL)
    ok = StoreTenancy(Records(Row("a", created_by_dklb=True)))
    assert present(ok(POOL)).owner == Tenant("a")
    assert ok("other") is None


def test_the_rule_is_one_function() -> None:
    """The controller's modules name the rule the webhook applies: one message, one place."""
    assert refusal is model_tenancy.refusal


def test_recorded_refusal_leaves_the_service_itself_out() -> None:
    facts = PoolTenancy(Tenant("b"), False, (Member("a", "web", cloud=True), Member("b", "x", "k")))
    assert (
        model_tenancy.recorded_refusal(
            POOL, namespace="a", name="web", key="k", cloud=False, facts=facts, settings=SETTINGS
        )
        is None
    )
    assert (
        model_tenancy.recorded_refusal(
            POOL, namespace="a", name="other", key="k", cloud=False, facts=facts, settings=SETTINGS
        )
        is not None
    ), "a cloud Service of its namespace on it: never shared"
