"""Pools belong to someone: the tenancy rules, on the engine harness (S1 and S2 of the security review).

A pool dklb creates is recorded (pools table, and marks in EdgeLB) as created for a namespace.
Services of another namespace join it only with the same ``kubernetes.dcos.io/dklb-shared-pool-key``
(or under ``--allow-cross-namespace-pools``); a cloud pool never crosses namespaces; the settings
sharers must agree on include ``constraints`` and ``cloudProviderConfiguration``; a pre-existing
pool may be restricted to some namespaces and is never deleted; a Service that is not of type
LoadBalancer and has no binding is only released, whatever finalizer it carries. Each attack of
the review is reproduced and must do no harm.
"""

from __future__ import annotations

import json
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.cli import run as run_command
from engine.model.services import FINALIZER, SHARED_POOL_KEY_ANNOTATION
from engine.model.settings import Settings
from engine.model.translation import CREATED_BY_VARIABLE, NAMESPACE_VARIABLE, SHARED_POOL_KEY_VARIABLE
from states.tenancy import Tenant, refusal
from tests.checks import present
from tests.engine.harness import CLUSTER, World
from tests.engine.test_adoption import lose_database
from tests.fakes.kube import make_service
from tests.unit.test_go_compat import Recorder

KEY = SHARED_POOL_KEY_ANNOTATION


def service(
    namespace: str,
    name: str,
    port: int,
    config: str,
    *,
    key: str | None = None,
    type: str = "LoadBalancer",
) -> dict[str, Any]:
    return make_service(
        name,
        namespace=namespace,
        ports=[(port, 30000 + port % 2000)],
        config=config,
        type=type,
        shared_pool_key=key,
    )


def world_with(tmp_path: Path, **settings: Any) -> World:
    return World(tmp_path, settings=Settings(cluster_name=CLUSTER, **settings))


def warnings(world: World, key: str) -> list[str]:
    return [e["message"] for e in world.kube.events_for(key, type="Warning")]


def frontends(world: World, pool: str) -> list[str]:
    return sorted(fe["name"] for fe in present(world.edgelb.stored(pool))["haproxy"]["frontends"])


EMPTY = {"name": "ops-reserved", "haproxy": {"frontends": [], "backends": []}}


# ---- S1: joining another namespace's pool -------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "key_b", "key_a", "joins"),
    [
        ({}, None, None, False),  # the default: no open sharing across namespaces
        ({}, "k1", "k1", True),  # both consent with the same key
        ({}, "k1", "k2", False),  # different keys
        ({}, "k1", None, False),  # only the owner has a key
        ({}, None, "k1", False),  # only the joiner has one
        ({"allow_cross_namespace_pools": True}, None, None, True),  # the operator's Go-style flag
    ],
)
def test_s1_joining_another_namespaces_pool_needs_the_same_key_or_the_flag(
    tmp_path: Path, settings: dict[str, Any], key_b: str | None, key_a: str | None, joins: bool
) -> None:
    """S1 (security review): a Service of namespace A naming B's pool joins it only when both carry
    the same sharing key, or the operator allows open sharing; otherwise it is Rejected with zero
    EdgeLB writes and a message naming the annotation and the flag."""
    world = world_with(tmp_path, **settings)
    world.kube.apply(service("tenant-b", "web", 80, "name: shop\n", key=key_b))
    world.settle()
    before, writes = present(world.edgelb.stored("shop")), world.edgelb.writes()

    world.kube.apply(service("tenant-a", "evil", 81, "name: shop\n", key=key_a))
    world.settle()

    if joins:
        assert world.states() == {"tenant-a/evil": "Ready", "tenant-b/web": "Ready"}
        assert len(frontends(world, "shop")) == 2
        world.assert_invariants()
        return
    assert world.states() == {"tenant-a/evil": "Rejected", "tenant-b/web": "Ready"}
    assert world.edgelb.stored("shop") == before and world.edgelb.writes() == writes, "zero EdgeLB writes"
    message = world.binding("tenant-a/evil").last_error
    assert KEY in message and "--allow-cross-namespace-pools" in message
    assert "used by another namespace" in message
    assert "tenant-b" not in message and "web" not in message.replace("Service", "")
    world.assert_invariants()


def test_s1_the_review_reproduction_constraints_do_not_flip(tmp_path: Path) -> None:
    """S1 (security review): B's pool pinned to 10.0.1.*; A names it with 10.9.9.* constraints.
    Without a key A is Rejected; with B's key A is still Rejected, because constraints must be
    equal across sharers: the pool keeps B's constraints through every later edit and deletion."""
    world = World(tmp_path)

    def svc(ns: str, name: str, port: int, constraints: str) -> dict[str, Any]:
        return service(ns, name, port, f"name: shop\nconstraints: '{constraints}'\n", key="team-shop")

    world.kube.apply(svc("tenant-b", "web", 80, '[["hostname","LIKE","10.0.1.*"]]'))
    world.settle()
    world.kube.apply(svc("tenant-a", "evil", 81, '[["hostname","LIKE","10.9.9.*"]]'))
    world.settle()
    assert world.states() == {"tenant-a/evil": "Rejected", "tenant-b/web": "Ready"}
    assert present(world.edgelb.stored("shop"))["constraints"] == '[["hostname","LIKE","10.0.1.*"]]'
    message = world.binding("tenant-a/evil").last_error
    assert "constraints" in message and "10.0.1" not in message and "tenant-b" not in message

    world.kube.apply(svc("tenant-a", "evil", 82, '[["hostname","LIKE","10.9.9.*"]]'))  # A edits again
    world.settle()
    world.kube.delete("tenant-a/evil")
    world.settle()
    assert present(world.edgelb.stored("shop"))["constraints"] == '[["hostname","LIKE","10.0.1.*"]]'
    assert world.states() == {"tenant-b/web": "Ready"}
    world.assert_invariants()


@pytest.mark.parametrize("settings", [{}, {"allow_cross_namespace_pools": True}])
def test_s1_the_review_reproduction_a_cloud_pool_is_never_shared_across_namespaces(
    tmp_path: Path, settings: dict[str, Any]
) -> None:
    """S1 (security review): A names B's cloud pool with its own ELB definition, with B's key and
    even under --allow-cross-namespace-pools: Rejected, B's ELB stays, zero EdgeLB writes."""
    world = world_with(tmp_path, **settings)
    b = json.dumps({"aws": {"elbs": [{"name": "b-elb", "type": "NLB"}]}})
    a = json.dumps(
        {
            "aws": {
                "elbs": [
                    {
                        "name": "attacker-elb",
                        "type": "NLB",
                        "listeners": [{"port": 443}],
                    }
                ]
            }
        }
    )
    world.kube.apply(
        service("tenant-b", "web", 443, f"name: cloud--b\ncloudProviderConfiguration: '{b}'\n", key="k")
    )
    world.settle()
    writes = world.edgelb.writes()
    world.kube.apply(
        service("tenant-a", "evil", 9999, f"name: cloud--b\ncloudProviderConfiguration: '{a}'\n", key="k")
    )
    world.settle()
    assert world.states() == {"tenant-a/evil": "Rejected", "tenant-b/web": "Ready"}
    elbs = present(world.edgelb.stored("cloud--b"))["cloudProvider"]["aws"]["elbs"]
    assert [e["name"] for e in elbs] == ["b-elb"] and world.edgelb.writes() == writes
    message = world.binding("tenant-a/evil").last_error
    assert "cloud load balancer" in message and "b-elb" not in message and "tenant-b" not in message


def test_s1_the_review_reproduction_a_rejection_names_no_other_namespace(tmp_path: Path) -> None:
    """S1 (security review): probing B's pool from A tells A only that "the pool is used by another
    namespace": no Service name, no namespace, no settings of B's, in the status or the Events."""
    world = World(tmp_path)
    world.kube.apply(service("tenant-b", "payments-db", 5432, "name: shop\ncpus: 2\nmemory: 4096\n"))
    world.settle()
    world.kube.apply(service("tenant-a", "probe", 80, "name: shop\n"))
    world.settle()
    texts = [*warnings(world, "tenant-a/probe"), world.binding("tenant-a/probe").last_error]
    assert any("used by another namespace" in t for t in texts)
    for text in texts:
        for secret in ("payments-db", "tenant-b", "4096", "2.0"):
            assert secret not in text, (secret, text)


def test_sharers_with_a_key_who_differ_are_told_what_they_asked_not_what_the_other_has(
    tmp_path: Path,
) -> None:
    """S1 (security review): two namespaces share with a key; a settings or port conflict names
    neither the other Service nor its values, and the pool's settings do not flip."""
    world = World(tmp_path)
    world.kube.apply(service("tenant-b", "web", 80, "name: shop\ncpus: 2\n", key="k"))
    world.kube.apply(service("tenant-a", "api", 81, "name: shop\ncpus: 2\n", key="k"))
    world.settle()
    assert set(world.states().values()) == {"Ready"}

    world.kube.apply(service("tenant-a", "api", 81, "name: shop\ncpus: 3\n", key="k"))
    world.kube.apply(service("tenant-a", "other", 80, "name: shop\ncpus: 2\n", key="k"))
    world.settle()
    assert world.binding("tenant-a/api").state == "Rejected"
    assert world.binding("tenant-a/other").state == "Rejected"
    assert present(world.edgelb.stored("shop"))["cpus"] == 2.0, "the pool's settings never flip"
    for key in ("tenant-a/api", "tenant-a/other"):
        message = world.binding(key).last_error
        assert "another namespace" in message and "tenant-b" not in message and "web" not in message
    assert "cpus 3.0" in world.binding("tenant-a/api").last_error
    assert "2.0" not in world.binding("tenant-a/api").last_error
    assert len(frontends(world, "shop")) == 2, "api's objects stay as they were accepted"


def test_same_namespace_sharing_is_unchanged(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.kube.apply(service("team", "a", 80, "name: shop\n"))
    world.kube.apply(service("team", "b", 81, "name: shop\n"))
    world.settle()
    assert set(world.states().values()) == {"Ready"} and len(frontends(world, "shop")) == 2
    pool = present(world.edgelb.stored("shop"))
    assert pool["environmentVariables"] == {CREATED_BY_VARIABLE: CLUSTER, NAMESPACE_VARIABLE: "team"}
    world.assert_invariants()


def test_the_pool_records_and_marks_its_owner_and_its_key_digest_only(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.kube.apply(service("team", "a", 80, "name: shop\n", key="secret-value"))
    world.settle()
    record = present(world.store.pool("shop"))
    assert record.namespace == "team" and record.created_by_dklb and record.shared_pool_key
    marks = present(world.edgelb.stored("shop"))["environmentVariables"]
    assert marks[NAMESPACE_VARIABLE] == "team" and marks[SHARED_POOL_KEY_VARIABLE] == record.shared_pool_key
    assert "secret-value" not in json.dumps(marks), "only a digest of the key leaves the Service"


def test_a_service_that_drops_its_key_is_rejected_and_keeps_its_objects(tmp_path: Path) -> None:
    """Withdrawing consent: the Service is Rejected, but what it has in the pool keeps serving
    until it is deleted, and its deletion still removes it."""
    world = World(tmp_path)
    world.kube.apply(service("tenant-b", "web", 80, "name: shop\n", key="k"))
    world.kube.apply(service("tenant-a", "api", 81, "name: shop\n", key="k"))
    world.settle()
    before = frontends(world, "shop")
    world.kube.apply(service("tenant-a", "api", 81, "name: shop\n"))
    world.settle()
    assert world.binding("tenant-a/api").state == "Rejected"
    assert frontends(world, "shop") == before, "no traffic lost"
    world.kube.delete("tenant-a/api")
    world.settle()
    assert frontends(world, "shop") == ["kubernetes-cluster:tenant-b:web:80"]
    world.assert_invariants()


# ---- coming from the Go dklb: open sharing across namespaces ----------------------------------------


def go_shared_pool(tmp_path: Path) -> World:
    """A pool the Go dklb made (no mark) that Services of two namespaces share, and a new dklb
    starting on an empty database with the default settings."""
    world = world_with(tmp_path, allow_cross_namespace_pools=True)
    world.kube.apply(service("tenant-a", "web", 80, "name: shared\n"))
    world.kube.apply(service("tenant-b", "api", 81, "name: shared\n"))
    world.settle()
    pool = present(world.edgelb.stored("shared"))
    del pool["environmentVariables"]
    world.edgelb.seed(pool)
    world.settings = Settings(cluster_name=CLUSTER)
    lose_database(world, tmp_path)
    return world


def test_migrating_from_the_go_dklb_rejects_without_losing_traffic_until_keys_are_added(
    tmp_path: Path,
) -> None:
    """A cluster that shared pools across namespaces under the Go dklb: the second namespace is
    Rejected (the message names the annotation and the flag) and its objects stay in the pool;
    once both carry the same key, both are Ready, and nothing was written in between."""
    world = go_shared_pool(tmp_path)
    before, writes = frontends(world, "shared"), world.edgelb.writes()
    world.settle()
    assert world.states() == {"tenant-a/web": "Ready", "tenant-b/api": "Rejected"}
    assert frontends(world, "shared") == before and world.edgelb.writes() == writes
    message = world.binding("tenant-b/api").last_error
    assert KEY in message and "--allow-cross-namespace-pools" in message

    world.kube.apply(service("tenant-a", "web", 80, "name: shared\n", key="k"))
    world.kube.apply(service("tenant-b", "api", 81, "name: shared\n", key="k"))
    world.settle()
    assert set(world.states().values()) == {"Ready"} and frontends(world, "shared") == before
    world.assert_invariants()


def test_migrating_from_the_go_dklb_with_the_flag_keeps_open_sharing(tmp_path: Path) -> None:
    world = go_shared_pool(tmp_path)
    world.settings = replace(world.settings, allow_cross_namespace_pools=True)
    world.restart()
    writes = world.edgelb.writes()
    world.settle()
    assert set(world.states().values()) == {"Ready"} and world.edgelb.writes() == writes
    world.assert_invariants()


def test_the_operators_flag_takes_effect_at_the_next_start_without_touching_the_services(
    tmp_path: Path,
) -> None:
    """The issue: a Service Rejected for sharing across namespaces waits "until the user or
    operator acts". The operator acting (--allow-cross-namespace-pools, a restart) is enough: the
    operator's rules are part of every binding's fingerprint, so the Rejected Service is judged
    again, with zero EdgeLB writes, its objects having stayed in the pool."""
    world = go_shared_pool(tmp_path)
    world.settle()
    assert world.states() == {"tenant-a/web": "Ready", "tenant-b/api": "Rejected"}
    before, writes = frontends(world, "shared"), world.edgelb.writes()
    world.settings = replace(world.settings, allow_cross_namespace_pools=True)
    world.restart()
    world.settle()
    assert set(world.states().values()) == {"Ready"}
    assert frontends(world, "shared") == before and world.edgelb.writes() == writes
    world.assert_invariants()


def test_a_port_clash_with_another_namespaces_leftover_frontend_does_not_name_it(tmp_path: Path) -> None:
    """S1 (security review): the Rejected namespace's objects stay in the pool; a port clash with
    one of them, found by Provisioning, names no other namespace's frontend."""
    world = go_shared_pool(tmp_path)
    world.settle()
    world.kube.apply(service("tenant-a", "second", 81, "name: shared\n"))
    world.settle()
    binding = world.binding("tenant-a/second")
    assert binding.state == "Rejected"
    assert "frontend port 81 is already bound by a frontend of another namespace" in binding.last_error
    assert "tenant-b" not in binding.last_error and "api" not in binding.last_error


# ---- a lost database cannot widen access ------------------------------------------------------------


@pytest.mark.parametrize(("key", "joins"), [(None, False), ("k", True), ("other", False)])
def test_after_a_lost_database_the_pools_mark_still_says_whose_it_is(
    tmp_path: Path, key: str | None, joins: bool
) -> None:
    """S1 (security review): after a lost database, a Service of another namespace that reaches
    the pool before its owner's Services are re-adopted is judged by the pool's marks."""
    world = World(tmp_path)
    # "zeta" sorts after "alpha": the intruder is reconciled first on the new database.
    world.kube.apply(
        service("zeta", "web", 80, 'name: shop\nconstraints: \'[["hostname","UNIQUE"]]\'\n', key="k")
    )
    world.settle()
    lose_database(world, tmp_path)
    before, writes = present(world.edgelb.stored("shop")), world.edgelb.writes()
    world.kube.apply(
        service("alpha", "intruder", 81, 'name: shop\nconstraints: \'[["hostname","UNIQUE"]]\'\n', key=key)
    )
    world.step()
    world.step()
    if joins:
        world.settle()
        assert set(world.states().values()) == {"Ready"}
        return
    assert world.binding("alpha/intruder").state == "Rejected"
    assert world.edgelb.stored("shop") == before and world.edgelb.writes() == writes
    world.settle()
    assert world.states() == {"alpha/intruder": "Rejected", "zeta/web": "Ready"}
    assert world.binding("alpha/intruder").pool is None, "it owns nothing in the pool"
    world.assert_invariants()


def test_after_a_lost_database_a_sharer_alone_does_not_flip_the_owners_settings(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.kube.apply(service("zeta", "web", 80, "name: shop\ncpus: 2\n", key="k"))
    world.settle()
    world.kube.apply(service("alpha", "api", 81, "name: shop\ncpus: 2\n", key="k"))
    world.settle()
    assert present(world.edgelb.stored("shop"))["environmentVariables"][NAMESPACE_VARIABLE] == "zeta"
    world.kube.delete("zeta/web")  # the owner namespace leaves; the pool stays for alpha
    world.settle()
    lose_database(world, tmp_path)
    world.kube.apply(service("alpha", "api", 81, "name: shop\ncpus: 3\n", key="k"))
    world.settle()
    assert present(world.edgelb.stored("shop"))["cpus"] == 2.0
    assert world.binding("alpha/api").state == "Ready"
    assert any("is not applied" in w for w in warnings(world, "alpha/api"))


# ---- S2: deleting pools dklb did not create ---------------------------------------------------------


def test_s2_the_review_reproduction_a_pre_existing_pool_survives_its_last_user(tmp_path: Path) -> None:
    """S2 (security review): a tenant names the operator's empty pool, then deletes its Service:
    the pool stays (only the tenant's objects left it)."""
    world = World(tmp_path)
    world.seed_foreign_pool(dict(EMPTY))
    world.kube.apply(service("tenant-a", "x", 80, "name: ops-reserved\n"))
    world.settle()
    assert world.binding("tenant-a/x").state == "Ready"
    world.kube.delete("tenant-a/x")
    world.settle()
    assert world.edgelb.names() == ["ops-reserved"]
    assert present(world.edgelb.stored("ops-reserved"))["haproxy"]["frontends"] == []
    assert world.edgelb.calls["DELETE"] == 0


def test_s2_a_pre_existing_pool_survives_its_last_user_after_a_lost_database(tmp_path: Path) -> None:
    """S2 (security review): same, with the database lost while the tenant's Service was in the pool."""
    world = World(tmp_path)
    world.seed_foreign_pool(dict(EMPTY))
    world.kube.apply(service("tenant-a", "x", 80, "name: ops-reserved\n"))
    world.settle()
    lose_database(world, tmp_path)
    world.kube.delete("tenant-a/x")
    world.settle()
    assert world.edgelb.names() == ["ops-reserved"] and world.edgelb.calls["DELETE"] == 0


def test_s2_the_review_reproduction_a_forged_finalizer_on_a_cluster_ip_service_changes_nothing(
    tmp_path: Path,
) -> None:
    """S2 (security review): a ClusterIP Service carrying dklb's finalizer and an annotation naming
    the operator's empty pool: released at once, zero EdgeLB requests, the pool stays."""
    world = World(tmp_path)
    world.seed_foreign_pool(dict(EMPTY))
    forged = service("tenant-a", "innocent", 80, "name: ops-reserved\n", type="ClusterIP")
    forged["metadata"]["finalizers"] = [FINALIZER]
    world.kube.apply(forged)
    for _ in range(4):
        world.step()
    assert world.edgelb.names() == ["ops-reserved"]
    assert sum(world.edgelb.calls.values()) == 0, "not even a read"
    assert present(world.kube.get("tenant-a/innocent"))["metadata"]["finalizers"] == []
    assert world.states() == {}


@pytest.mark.parametrize("type_", ["ClusterIP", "NodePort"])
def test_a_service_that_was_a_load_balancer_is_still_cleaned_up_when_its_type_changes(
    tmp_path: Path, type_: str
) -> None:
    world = World(tmp_path)
    world.kube.apply(service("team", "a", 80, "name: mine\n"))
    world.settle()
    world.kube.apply(service("team", "a", 80, "name: mine\n", type=type_))
    world.settle()
    assert world.edgelb.names() == [] and world.states() == {}
    assert present(world.kube.get("team/a"))["metadata"]["finalizers"] == []


def test_a_lost_database_and_a_deleted_service_remove_its_objects_but_never_the_pool(tmp_path: Path) -> None:
    """The pool named only by the annotation (no binding recorded it): its objects go, the pool
    is not deleted by the Service (the orphan sweeper judges it later)."""
    world = World(tmp_path)
    world.kube.apply(service("team", "a", 80, "name: mine\n"))
    world.settle()
    lose_database(world, tmp_path)
    world.kube.delete("team/a")
    world.settle()
    assert world.edgelb.names() == ["mine"] and frontends(world, "mine") == []
    assert world.edgelb.calls["DELETE"] == 0


def test_a_dklb_pool_holding_a_foreign_object_is_not_deleted(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.kube.apply(service("team", "a", 80, "name: mine\n"))
    world.settle()
    pool = present(world.edgelb.stored("mine"))
    pool["haproxy"]["frontends"].append(
        {"name": "operator", "bindPort": 8443, "protocol": "TCP", "linkBackend": {"defaultBackend": "op"}}
    )
    pool["haproxy"]["backends"].append(
        {
            "name": "op",
            "protocol": "TCP",
            "services": [{"endpoint": {"type": "ADDRESS", "address": "10.0.0.9", "port": 8443}}],
        }
    )
    world.edgelb.seed(pool)
    world.kube.delete("team/a")
    world.settle()
    assert world.edgelb.names() == ["mine"] and world.edgelb.calls["DELETE"] == 0


# ---- pre-existing pools: who may use them -----------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "state"),
    [(None, "Ready"), (frozenset({"tenant-a"}), "Ready"), (frozenset({"ops"}), "Rejected")],
)
def test_pre_existing_pool_namespaces_restricts_who_uses_a_pool_dklb_did_not_create(
    tmp_path: Path, allowed: frozenset[str] | None, state: str
) -> None:
    world = world_with(tmp_path, pre_existing_pool_namespaces=allowed)
    world.seed_foreign_pool({**EMPTY, "cpus": 2.0})
    world.kube.apply(service("tenant-a", "x", 80, "name: ops-reserved\ncpus: 0.5\n"))
    world.settle()
    assert world.binding("tenant-a/x").state == state
    pool = present(world.edgelb.stored("ops-reserved"))
    assert pool["cpus"] == 2.0, "a pre-existing pool's settings are never changed"
    if state == "Rejected":
        assert world.edgelb.writes() == 0 and pool["haproxy"]["frontends"] == []
        message = world.binding("tenant-a/x").last_error
        assert "--pre-existing-pool-namespaces" in message and '"tenant-a"' in message
    world.kube.delete("tenant-a/x")
    world.settle()
    assert world.edgelb.names() == ["ops-reserved"]


# ---- the rule itself, and the flags that set it ------------------------------------------------------

OPEN = Settings(allow_cross_namespace_pools=True)
ONLY_OPS = Settings(pre_existing_pool_namespaces=frozenset({"ops"}))


@pytest.mark.parametrize(
    ("me", "others", "owner", "pre_existing", "cloud", "settings", "refused"),
    [
        (Tenant("a"), [], None, False, False, Settings(), None),  # a new pool
        (Tenant("a"), [Tenant("a")], Tenant("a"), False, False, Settings(), None),  # same namespace
        (Tenant("a"), [Tenant("b")], None, False, False, Settings(), "dklb-shared-pool-key"),
        (Tenant("a", "k"), [Tenant("b", "k")], None, False, False, Settings(), None),
        (
            Tenant("a", "k"),
            [Tenant("b", "k"), Tenant("c", "j")],
            None,
            False,
            False,
            Settings(),
            "shared-pool-key",
        ),
        (Tenant("a"), [Tenant("b")], None, False, False, OPEN, None),
        (Tenant("a", "k"), [Tenant("b", "k")], None, False, True, OPEN, "never shared across namespaces"),
        (Tenant("a"), [Tenant("a")], None, False, True, Settings(), None),  # a cloud pool in one namespace
        # The owner speaks through its mark only while none of its Services is on the pool.
        (Tenant("a"), [], Tenant("b"), False, False, Settings(), "shared-pool-key"),
        (Tenant("a", "k"), [], Tenant("b", "k"), False, False, Settings(), None),
        (Tenant("a", "k"), [Tenant("b", "k")], Tenant("b", "old"), False, False, Settings(), None),
        (Tenant("a"), [], None, True, False, Settings(), None),  # pre-existing, anyone by default
        (Tenant("a"), [], None, True, False, ONLY_OPS, "--pre-existing-pool-namespaces"),
        (Tenant("ops"), [], None, True, False, ONLY_OPS, None),
        (Tenant("a"), [], None, False, False, ONLY_OPS, None),  # dklb's own pools are not restricted
    ],
)
def test_the_tenancy_rule(
    me: Tenant,
    others: list[Tenant],
    owner: Tenant | None,
    pre_existing: bool,
    cloud: bool,
    settings: Settings,
    refused: str | None,
) -> None:
    got = refusal(
        "p", me, others=others, owner=owner, pre_existing=pre_existing, cloud=cloud, settings=settings
    )
    if refused is None:
        assert got is None
        return
    assert got is not None
    message, details = got
    assert refused in message
    other_namespaces = {o.namespace for o in [*others, *([owner] if owner else [])]} - {me.namespace}
    for namespace in other_namespaces:
        assert f'"{namespace}"' not in message and f"'{namespace}'" in details


@pytest.mark.parametrize(
    ("flags", "allow", "namespaces"),
    [
        ([], False, None),
        (["--allow-cross-namespace-pools"], True, None),
        (["--pre-existing-pool-namespaces", "ops, infra"], False, frozenset({"ops", "infra"})),
    ],
)
def test_the_operator_flags_reach_the_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    allow: bool,
    namespaces: frozenset[str] | None,
) -> None:
    monkeypatch.setattr("engine.app.App", Recorder)
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    monkeypatch.setattr(run_command, "configure_logging", lambda level, fmt: None)
    Recorder.configs.clear()
    argv = ["run", "--edgelb-url", "http://127.0.0.1:1", "--database", str(tmp_path / "d.db"), *flags]
    assert cli.main(argv) == 0
    (config,) = Recorder.configs
    assert config.settings.allow_cross_namespace_pools is allow
    assert config.settings.pre_existing_pool_namespaces == namespaces


def test_a_bad_namespace_list_is_refused_naming_the_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(
            ["run", "--edgelb-url", "http://127.0.0.1:1", "--pre-existing-pool-namespaces", "ops,Bad_NS"]
        )
    assert "'Bad_NS' is not a namespace name" in capsys.readouterr().err


def test_s2_moving_out_of_a_pre_existing_pool_never_deletes_it(tmp_path: Path) -> None:
    """S2 (security review): a Service leaves the operators' pool for a cloud pool of its own
    (adding a cloud load balancer moves it): the operators' pool, empty again, stays."""
    world = World(tmp_path)
    world.seed_foreign_pool(dict(EMPTY))
    world.kube.apply(service("tenant-a", "x", 80, "name: ops-reserved\n"))
    world.settle()
    cloud = json.dumps({"aws": {"elbs": [{"name": "x-elb", "type": "NLB"}]}})
    world.kube.apply(
        service("tenant-a", "x", 80, f"name: cloud--x\nrole: '*'\ncloudProviderConfiguration: '{cloud}'\n")
    )
    world.settle()
    assert world.binding("tenant-a/x").pool == "cloud--x"
    assert sorted(world.edgelb.names()) == ["cloud--x", "ops-reserved"]
    assert present(world.edgelb.stored("ops-reserved"))["haproxy"]["frontends"] == []
    assert world.edgelb.calls["DELETE"] == 0
