"""The webhook's tenancy check on a real database, of both dialects: ``StoreTenancy`` over the
controller's ``Store`` (what ``engine.app`` wires), judged by ``review``.

The database is filled as the controller fills it (``Store.create``, then the ``accept`` and
``provisioned`` commits recording the pool's owner and the sharing-key digests), and the
webhook's answer for a Service of another namespace is compared with the controller's message.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.admission.review import review
from engine.admission.tenancy import StoreTenancy
from engine.model.services import SHARED_POOL_KEY_ANNOTATION, shared_pool_key
from engine.model.settings import Settings
from engine.store import Change, Store
from states.tenancy import Tenant, refusal
from tests.unit.test_admission import admission_review, service

POOL = "shop"
DEFAULTS = Settings()
CONFIG = f"name: {POOL}\nfrontends:\n- {{port: 8080, servicePort: 80}}\n"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def record(store: Store, namespace: str, name: str, *, key: str | None, state: str = "Ready") -> None:
    """A Service accepted on ``POOL`` and provisioned, as the controller records it (the first
    one creates the pool, for its namespace)."""
    digest = (
        shared_pool_key({"metadata": {"annotations": {SHARED_POOL_KEY_ANNOTATION: key}}}) if key else None
    )
    binding = store.create(
        namespace=namespace, name=name, uid=f"uid-{name}", state="Pending", trigger="observed"
    )
    first = store.pool(POOL) is None
    store.commit(
        Change(
            binding.id,
            "Pending",
            "Provisioning",
            "accept",
            pool=POOL,
            config={"name": POOL},
            shared_pool_key=digest,
        )
    )
    marks: dict[str, Any] = (
        {"pool_created_by_dklb": True, "pool_namespace": namespace, "pool_shared_pool_key": digest}
        if first
        else {}
    )
    store.commit(Change(binding.id, "Provisioning", "Ready", "provisioned", **marks))
    if state != "Ready":
        store.commit(Change(binding.id, "Ready", state, "deleted"))


def answer(store: Store, namespace: str, key: str | None, settings: Settings = DEFAULTS) -> dict[str, Any]:
    obj = service(CONFIG, annotations={SHARED_POOL_KEY_ANNOTATION: key} if key else {})
    obj["metadata"]["namespace"] = namespace
    document = admission_review("CREATE", obj)
    document["request"]["namespace"] = namespace
    result = review(
        document, settings=settings, mutate=False, rng=random.Random(0), pool_tenancy=StoreTenancy(store)
    )
    response: dict[str, Any] = result["response"]
    return response


def controller_message(namespace: str, key: str | None) -> str:
    refused = refusal(
        POOL,
        Tenant(namespace, key),
        others=[Tenant("team-a", None)],
        owner=Tenant("team-a", None),
        pre_existing=False,
        cloud=False,
        settings=Settings(),
    )
    assert refused is not None
    return refused[0]


def test_another_namespace_naming_a_recorded_pool_is_refused_with_the_controllers_message(
    store: Store,
) -> None:
    record(store, "team-a", "web", key=None)
    response = answer(store, "team-b", None)
    assert not response["allowed"]
    assert response["status"] == {"code": 403, "message": controller_message("team-b", None)}
    assert "team-a" not in response["status"]["message"] and "web" not in response["status"]["message"]


def test_the_same_key_on_both_sides_is_admitted(store: Store) -> None:
    record(store, "team-a", "web", key="team-shop")
    assert answer(store, "team-b", "team-shop")["allowed"]
    assert not answer(store, "team-b", "another")["allowed"]
    assert not answer(store, "team-b", None)["allowed"]


def test_the_owners_namespace_and_open_sharing_are_admitted(store: Store) -> None:
    record(store, "team-a", "web", key=None)
    assert answer(store, "team-a", None)["allowed"]
    assert answer(store, "team-b", None, Settings(allow_cross_namespace_pools=True))["allowed"]


def test_a_pool_the_database_does_not_know_is_left_to_the_controller(store: Store) -> None:
    record(store, "team-a", "web", key=None)
    store.commit(Change(present_id(store, "team-a/web"), "Ready", "Deleting", "deleted"))
    store.commit(Change(present_id(store, "team-a/web"), "Deleting", "Removed", "deleted", remove=True))
    # The pool's row goes with its last binding: only EdgeLB knows the pool now.
    assert store.pool(POOL) is None
    response = answer(store, "team-b", None)
    assert response["allowed"] and "warnings" not in response


def present_id(store: Store, key: str) -> int:
    binding = store.get(key)
    assert binding is not None
    return binding.id


def test_an_unreadable_database_lets_the_service_in_with_a_warning(tmp_path: Path) -> None:
    # A database file without dklb's tables: every read fails at once.
    broken = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        response = answer(broken, "team-b", None)
    finally:
        broken.close()
    assert response["allowed"]
    (warning,) = response["warnings"]
    assert warning.startswith(
        f'dklb could not check who may use EdgeLB pool "{POOL}" (reading the database failed: '
    )
    assert warning.endswith("allowed: the controller checks it and rejects the Service if it may not")
