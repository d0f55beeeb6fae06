"""Who may use a pool: the tenancy rule, pure, shared by the controller and the admission webhook.

Where it sits in the data flow: the controller applies it twice (``states.tenancy`` re-exports it):
the ``accept`` guard against the database's record of the pool, Provisioning against the pool as
EdgeLB has it. The validating admission webhook (``engine.admission.review``) applies it at
CREATE and UPDATE against what the database knows of the pool (``PoolTenancy``), so that the
refusal comes at ``kubectl apply`` with the very message the controller's Warning Event has.

A pool belongs to someone. dklb created it for a namespace (the pools table says so, and the
pool's marks in EdgeLB, ``engine.model.translation.pool_owner``, say it again after a lost
database), or someone else made it (pre-existing). The rule, judged for one Service against the
pool's owner and the other Services recorded on the pool:

* a pre-existing pool may be used only by the namespaces of ``--pre-existing-pool-namespaces``
  (any namespace without the flag);
* Services of different namespaces share a pool only when both carry the same
  ``kubernetes.dcos.io/dklb-shared-pool-key`` (or the operator allows open sharing with
  ``--allow-cross-namespace-pools``, the Go dklb's behaviour). The owner namespace speaks through
  its recorded Services; when none is on the pool (it left, or the database was lost), through the
  key the pool was created with;
* a pool with a cloud load balancer is never shared across namespaces.

Same-namespace sharing is not judged here (the shared settings and ports are, by the guards).
A refusal never names another namespace's Services or their settings: only that "the pool is
used by another namespace"; the caller logs the details for the operator.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.model.services import SHARED_POOL_KEY_ANNOTATION
from engine.model.settings import Settings


@dataclass(frozen=True)
class Tenant:
    """A namespace using a pool, with the digest of its sharing key (None: no key)."""

    namespace: str
    key: str | None = None


def refusal(
    pool: str,
    me: Tenant,
    *,
    others: Iterable[Tenant],
    owner: Tenant | None,
    pre_existing: bool,
    cloud: bool,
    settings: Settings,
) -> tuple[str, str] | None:
    """``(message for the Service, details for the controller log)`` when ``me`` may not use
    ``pool``; None when it may. ``others``: the Services recorded on the pool besides ``me``;
    ``owner``: whom dklb created the pool for (None: unknown or not dklb's); ``cloud``: the pool
    or this Service has a cloud load balancer."""
    allowed = settings.pre_existing_pool_namespaces
    if pre_existing and allowed is not None and me.namespace not in allowed:
        return (
            f'EdgeLB pool "{pool}" was not created by dklb, and the operator lets only some namespaces '
            f'use such pools (--pre-existing-pool-namespaces); namespace "{me.namespace}" is not one '
            "of them: name another pool, or ask the operator; the pool was not changed",
            f"namespace {me.namespace} is not in --pre-existing-pool-namespaces {sorted(allowed)}",
        )
    others = list(others)
    foreign = [o for o in others if o.namespace != me.namespace]
    if (
        owner is not None
        and owner.namespace != me.namespace
        and not any(o.namespace == owner.namespace for o in others)
    ):
        foreign.append(owner)
    if not foreign:
        return None
    namespaces = sorted({o.namespace for o in foreign})
    if cloud:
        return (
            f'EdgeLB pool "{pool}" is used by another namespace, and a pool with a cloud load balancer '
            "(cloudProviderConfiguration) is never shared across namespaces: name another pool; "
            "the pool was not changed",
            f"pool {pool} is a cloud pool used by namespace(s) {namespaces}",
        )
    if settings.allow_cross_namespace_pools:
        return None
    if me.key is not None and all(o.key == me.key for o in foreign):
        return None
    return (
        f'EdgeLB pool "{pool}" is used by another namespace: Services of different namespaces share a '
        f"pool only when both carry the same {SHARED_POOL_KEY_ANNOTATION} annotation (or when the "
        "operator runs dklb with --allow-cross-namespace-pools); the pool was not changed, and the "
        "objects this Service already has in it stay there",
        f"pool {pool} is used by namespace(s) {namespaces}, and "
        + ("this Service carries no sharing key" if me.key is None else "their sharing keys differ"),
    )


# --- the rule against the database's record (the admission webhook) ------------------------------

#: The states of a binding taking its objects out of its pool: it counts for nothing in the pool.
#: Here rather than in ``states`` because the webhook may not import the lifecycle; they are the
#: states ``states/lifecycle.yaml`` declares ``wants_objects: false`` (a test keeps them so).
LEAVING = frozenset({"Deleting", "Moving"})


@dataclass(frozen=True)
class Member:
    """A Service recorded on a pool, as the rule sees it: its namespace and name, the digest of
    its sharing key, and whether its configuration has a cloud load balancer."""

    namespace: str
    name: str
    key: str | None = None
    cloud: bool = False


@dataclass(frozen=True)
class PoolTenancy:
    """What the database knows of one pool: whom dklb created it for (None: not dklb, or not
    recorded), whether it is known to be pre-existing, and the Services recorded on it that
    count (those leaving it, and those never accepted, left out)."""

    owner: Tenant | None
    pre_existing: bool
    members: tuple[Member, ...] = ()


def recorded_refusal(
    pool: str,
    *,
    namespace: str,
    name: str,
    key: str | None,
    cloud: bool,
    facts: PoolTenancy,
    settings: Settings,
) -> tuple[str, str] | None:
    """``refusal`` for Service ``namespace/name`` (sharing-key digest ``key``; ``cloud``: its
    configuration has a cloud load balancer) against the database's record of ``pool``, judged
    as the ``accept`` guard judges it: the Service's own record is not one of the others."""
    others = [m for m in facts.members if (m.namespace, m.name) != (namespace, name)]
    return refusal(
        pool,
        Tenant(namespace, key),
        others=[Tenant(m.namespace, m.key) for m in others],
        owner=facts.owner,
        pre_existing=facts.pre_existing,
        cloud=cloud or any(m.cloud for m in others),
        settings=settings,
    )
