"""The ``accept`` guards (``states.guards``) judge one reading of the pool's bindings."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.contract import Context, Fire
from engine.model.config import Frontend, PoolConfig
from engine.model.settings import Settings
from engine.store import Binding, Pool
from states import provisioning
from states.guards import may_use_pool, no_frontend_port_clash, shares_pool_settings
from tests.fakes.edgelb import FakeEdgeLB

NOW = datetime(2026, 1, 1, tzinfo=UTC)
GUARDS = (may_use_pool, shares_pool_settings, no_frontend_port_clash)


def config(port: int, *, cpus: float = 0.1) -> dict[str, Any]:
    return PoolConfig(
        name="shared", role="slave_public", network="", cpus=cpus, memory=128, size=1,
        frontends=(Frontend(port, 80),),
    ).to_dict()  # fmt: skip


def binding(id: int, namespace: str, name: str, cfg: dict[str, Any] | None, state: str = "Ready") -> Binding:
    return Binding(
        id=id, namespace=namespace, name=name, uid=f"u{id}", state=state, pool="shared", config=cfg,
        objects=None, fingerprint=None, attempts=0, next_wakeup=None, last_error=None,
        state_since=NOW, created_at=NOW, updated_at=NOW,
    )  # fmt: skip


class CountingStore:
    """The guards' reads, counted."""

    def __init__(self, on_pool: list[Binding]) -> None:
        self.on_pool = on_pool
        self.reads = 0

    def bindings(self, *, pool: str | None = None, states: Any = None) -> list[Binding]:
        self.reads += 1
        return [b for b in self.on_pool if b.pool == pool]

    def pool(self, name: str) -> Pool | None:
        return Pool(name=name, ref_count=len(self.on_pool), created_by_dklb=True, served=True,
                    pre_existing=False, namespace="default", shared_pool_key=None,
                    created_at=NOW, updated_at=NOW)  # fmt: skip


def judge(store: CountingStore, cfg: dict[str, Any]) -> list[str | None]:
    me = binding(99, "default", "me", None, state="Pending")
    ctx = Context(
        binding=me, service=None, edgelb=FakeEdgeLB(), kube=None,  # type: ignore[arg-type]
        store=store, settings=Settings(), rng=random.Random(0), now=NOW,
    )  # fmt: skip
    fire = Fire("accept", reason="Accepted", updates={"config": cfg, "pool": "shared"})
    return [guard(ctx, fire) for guard in GUARDS]


@pytest.mark.parametrize(
    ("others", "mine", "objections"),
    [
        ([], config(8080), [None, None, None]),
        ([binding(1, "default", "a", config(8081))], config(8080), [None, None, None]),
        ([binding(1, "default", "a", config(8080))], config(8080), [None, None, "frontend port 8080"]),
        ([binding(1, "default", "a", config(8081, cpus=1.0))], config(8080), [None, "cpus", None]),
        # Leaving, or not accepted yet: not judged against.
        ([binding(1, "default", "a", config(8080), state="Deleting")], config(8080), [None, None, None]),
        ([binding(1, "default", "a", None)], config(8080), [None, None, None]),
    ],
)
def test_the_guards_judge_one_reading_of_the_pool(
    others: list[Binding], mine: dict[str, Any], objections: list[str | None]
) -> None:
    store = CountingStore(others)
    found = judge(store, mine)
    for objection, expected in zip(found, objections, strict=True):
        assert (objection is None) is (expected is None)
        assert expected is None or (objection is not None and expected in objection)
    assert store.reads == 1


def test_each_transition_reads_again() -> None:
    store = CountingStore([binding(1, "default", "a", config(8081))])
    assert judge(store, config(8080)) == [None, None, None]
    # Another Service took the port since: the next transition's guards see it.
    store.on_pool.append(binding(2, "default", "b", config(8080)))
    assert judge(store, config(8080))[2] is not None
    assert store.reads == 2


A = binding(1, "default", "a", None)


@pytest.mark.parametrize(
    ("noted_by", "noted_at", "asked_by", "asked_at", "known"),
    [
        (A, 100.0, A, 100.0, True),
        (A, 100.0, A, 160.0, True),
        # Too long ago: the pool may have been made since.
        (A, 100.0, A, 160.1, False),
        # Another binding's reading, or a freed row id given to another Service (another uid).
        (A, 100.0, binding(2, "default", "b", None), 100.0, False),
        (A, 100.0, replace(A, uid="new"), 100.0, False),
        # Nothing noted.
        (None, 0.0, A, 100.0, False),
    ],
)
def test_a_pool_found_missing_by_the_guard_is_known_absent_to_that_binding_only(
    noted_by: Binding | None, noted_at: float, asked_by: Binding, asked_at: float, known: bool
) -> None:
    provisioning._absent.clear()
    if noted_by is not None:
        provisioning.note_absent("p", noted_by, now=noted_at)
    assert provisioning.known_absent("p", asked_by, now=asked_at) is known
    # One use: the next run reads the pool.
    assert provisioning.known_absent("p", asked_by, now=asked_at) is False


def test_the_guard_notes_a_missing_pool_and_nothing_else() -> None:
    provisioning._absent.clear()
    me = binding(99, "default", "me", None, state="Pending")
    edgelb = FakeEdgeLB()
    ctx = Context(
        binding=me, service=None, edgelb=edgelb, kube=None,  # type: ignore[arg-type]
        store=EmptyStore(), settings=Settings(), rng=random.Random(0), now=NOW,
    )  # fmt: skip
    fire = Fire("accept", reason="Accepted", updates={"config": config(80), "pool": "shared"})
    assert may_use_pool(ctx, fire) is None
    assert provisioning.known_absent("shared", me)
    edgelb.create_pool({"name": "shared", "haproxy": {"frontends": [], "backends": []}})
    assert may_use_pool(ctx, fire) is None
    assert not provisioning.known_absent("shared", me)


class EmptyStore:
    """No binding on the pool and no record of it: a new pool, whose marks the guard reads."""

    def bindings(self, *, pool: str | None = None, states: Any = None) -> list[Binding]:
        return []

    def pool(self, name: str) -> Pool | None:
        return None
