"""Provisioning: make the EdgeLB pool hold exactly what the bindings on it want.

Runs under the pool's lock. Reads the pool; when it is missing, creates it (unless the
creation strategy forbids it); when it exists, composes the desired pool (every binding's
objects, every foreign object kept) and PUTs it only if it differs after normalization. The
pool-level settings (cpus, memory, size...) are applied only to a pool dklb made: the pools
table says so, or the pool carries the mark dklb puts into the pools it creates, or it holds
only objects named by a dklb of this cluster (the Go dklb marked nothing)
(``engine.model.translation.made_by_a_dklb``), which is then recorded. A pool found to be
someone else's is recorded as such and never adopted; a settings edit it ignores is a Warning.
Every step is safe to repeat after a crash: a re-run reads the pool again and writes only what
is still missing (the run right after a claim, in the same process, POSTs without reading again).
Fires ``provisioned``, or ``reject`` when the pool itself refuses this Service
(a frontend or stats port already bound) or EdgeLB refuses the body (400/422: sending it again
cannot help); EdgeLB failures are retried with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from engine.contract import Context, Fire, Outcome, Retry, warning
from engine.edgelb.errors import Conflict, EdgeLBError, Invalid, NotFound
from engine.model.config import PoolConfig
from engine.model.translation import made_by_a_dklb, new_pool, owned_part, pool_owner, same_pool
from engine.store import Binding, Pool
from states.pool import LEAVING, desired_pool, frontend_port_clash, ignored_settings
from states.tenancy import Tenant, refusal

log = logging.getLogger("dklb.tenancy")

# The reason of a rejection by the tenancy rule (also the guard's, through lifecycle.yaml's else).
POOL_NOT_SHARED = "PoolNotShared"


# Pools this process found missing and fired ``claim_pool`` for, by pool name: the run after the
# claim creates the pool without reading it again, while the pools table still says dklb claimed
# it (a POST answers 409 when it exists after all: a retry then reads and merges; a pool found
# there after the claim is the claimer's either way). Taken by that next run; lost with the
# process (the run after a restart reads first).
_claimed: set[str] = set()
MAX_CLAIMED = 10_000
_claimed_lock = threading.Lock()

# Pools the accept guard (``states.guards``) found missing (404) under the pool's lock, by pool
# name: (the binding judged, when). That binding's first Provisioning run claims the pool without a
# second GET. The gap is the same kind as the claim's own, between its GET and the POST after it:
# one trip through the work queue, which in a burst of 1,000 Services takes tens of seconds (a
# pool made in it is met by the POST's 409 and merged). Bounded by ABSENT_FOR, and only for the
# binding whose guard read it: a memo left by a Service rejected or deleted since is never another
# Service's reason not to read. Lost with the process (a restart reads first).
_absent: dict[str, tuple[tuple[int, str], float]] = {}
ABSENT_FOR = 60.0


def note_absent(pool: str, binding: Binding, now: float | None = None) -> None:
    """The accept guard of ``binding`` found ``pool`` missing in EdgeLB (a 404) just now."""
    at = time.monotonic() if now is None else now
    with _claimed_lock:
        if len(_absent) >= MAX_CLAIMED:
            _absent.clear()  # forgetting only costs a GET
        _absent[pool] = (_identity(binding), at)


def known_absent(pool: str, binding: Binding, now: float | None = None) -> bool:
    """Whether ``binding``'s own accept guard found ``pool`` missing at most ``ABSENT_FOR`` seconds
    ago; the note is taken either way (one use)."""
    at_now = time.monotonic() if now is None else now
    with _claimed_lock:
        noted = _absent.pop(pool, None)
    return noted is not None and noted[0] == _identity(binding) and 0 <= at_now - noted[1] <= ABSENT_FOR


def _identity(binding: Binding) -> tuple[int, str]:
    # The row id and the Service's uid: a row id freed by a deleted binding can be given again.
    return binding.id, binding.uid


def enter(ctx: Context) -> Outcome:
    binding = ctx.binding
    assert binding.pool is not None and binding.config is not None and binding.objects is not None
    config = PoolConfig.from_dict(binding.config)
    name = binding.pool
    with _claimed_lock:
        claimed = name in _claimed
        _claimed.discard(name)
    if claimed:
        record = ctx.store.pool(name)
        # Only while the claim stands: a memo left by a Service deleted before its next run must
        # not let another Service claim a pool someone made since without reading it first.
        if record is not None and record.created_by_dklb:
            return _create(ctx, config, record)
    if known_absent(name, binding):
        record = ctx.store.pool(name)
        # Unless another binding of the pool claimed it since: that one may have made it already.
        if record is None or not record.created_by_dklb:
            return _create(ctx, config, record)
    try:
        actual = ctx.edgelb.get_pool(name)
    except NotFound:
        actual = None
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'reading EdgeLB pool "{name}" failed: {exc}')

    if actual is None:
        return _create(ctx, config)

    record = ctx.store.pool(name)
    # One reading of the pool's bindings for the tenancy rule, the settings' owner and the
    # composition (each read decodes every binding's configuration and objects).
    on_pool = ctx.store.bindings(pool=name)
    recorded = bool(record and record.created_by_dklb)
    known_foreign = bool(record and record.pre_existing)
    # Not recorded, yet marked as dklb's for this cluster (the database was lost, or never saw the
    # creation commit), or holding only objects named by a dklb of this cluster (the Go dklb made
    # it, and marked nothing): the pool is dklb's, and the provisioned commit says so. A pool
    # found to be someone else's once stays theirs, even when it later holds only dklb's objects.
    adopted = not recorded and not known_foreign and made_by_a_dklb(actual, cluster=ctx.settings.cluster_name)
    owned = recorded or adopted
    mark = pool_owner(actual, cluster=ctx.settings.cluster_name)
    owner = _owner(record, mark)
    refused = _tenancy(ctx, config, actual, on_pool, owner=owner, pre_existing=not owned)
    if refused is not None:
        return refused
    marks: dict[str, Any] = {"pool_created_by_dklb": True} if adopted else {}
    if adopted and mark is not None:
        marks.update(pool_namespace=mark[0], pool_shared_pool_key=mark[1])
    if not owned and not known_foreign:
        marks["pool_pre_existing"] = True
    # A pool made for another namespace takes its settings from that namespace's Services (equal
    # to this one's, the guard saw to it), never from a sharer alone: after a lost database the
    # sharer could otherwise flip them.
    settles = owned and (
        owner is None or owner.namespace == ctx.binding.namespace or _present(owner, on_pool)
    )
    desired = desired_pool(ctx, actual, pool=name, apply_settings=settles, bindings=on_pool)
    clash = frontend_port_clash(
        desired,
        owned={fe["name"] for fe in binding.objects["frontends"]},
        namespace=binding.namespace,
        cluster=ctx.settings.cluster_name,
    )
    if clash:
        return Fire(
            "reject", reason="FrontendPortInUse", message=clash, events=(warning("FrontendPortInUse", clash),)
        )
    events = (
        () if settles else tuple(warning("PoolSettingsIgnored", m) for m in ignored_settings(config, actual))
    )
    if same_pool(actual, desired):
        return Fire(
            "provisioned",
            reason="PoolUpToDate",
            message=f'EdgeLB pool "{name}" already up to date',
            events=events,
            **marks,
        )
    try:
        ctx.edgelb.update_pool(desired)
    except NotFound:
        return Retry(
            "PoolVanished", f'EdgeLB pool "{name}" disappeared while updating it; it will be re-created'
        )
    except Invalid as exc:
        return _refused(f'EdgeLB refused the update of pool "{name}": {exc.message}')
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'updating EdgeLB pool "{name}" failed: {exc}')
    message = f'EdgeLB pool "{name}" updated'
    return Fire("provisioned", reason="PoolUpdated", message=message, events=events, **marks)


def _owner(record: Pool | None, mark: tuple[str, str | None] | None) -> Tenant | None:
    # The database's record first; the pool's own marks when it has none (a lost database, or
    # a pool whose record went with its last binding).
    if record is not None and record.namespace:
        return Tenant(record.namespace, record.shared_pool_key)
    return Tenant(*mark) if mark is not None else None


def _present(owner: Tenant, on_pool: Sequence[Binding]) -> bool:
    return any(b.namespace == owner.namespace and b.state not in LEAVING for b in on_pool)


def _tenancy(
    ctx: Context,
    config: PoolConfig,
    actual: dict[str, Any],
    on_pool: Sequence[Binding],
    *,
    owner: Tenant | None,
    pre_existing: bool,
) -> Fire | None:
    """The tenancy rule (``states.tenancy``) against the pool as EdgeLB has it: the ``accept``
    guard judged by the database alone, which a lost database leaves blank. A refusal writes
    nothing: the objects this Service already has in the pool stay there (recorded, so that its
    deletion still removes them), nothing else of it goes in."""
    name = config.name
    others = [
        b for b in on_pool if b.id != ctx.binding.id and b.state not in LEAVING and b.config is not None
    ]
    cloud = (
        config.cloud_provider_configuration is not None
        or bool(actual.get("cloudProvider"))
        or any((b.config or {}).get("cloudProviderConfiguration") is not None for b in others)
    )
    refused = refusal(
        name,
        Tenant(ctx.binding.namespace, ctx.binding.shared_pool_key),
        others=[Tenant(b.namespace, b.shared_pool_key) for b in others],
        owner=owner,
        pre_existing=pre_existing,
        cloud=cloud,
        settings=ctx.settings,
    )
    if refused is None:
        return None
    message, details = refused
    log.warning("Service %s may not use EdgeLB pool %s: %s", ctx.binding.key, name, details)
    frontends, backends = owned_part(
        actual, cluster=ctx.settings.cluster_name, owner=(ctx.binding.namespace, ctx.binding.name)
    )
    kept: dict[str, Any] = (
        {"objects": {"frontends": frontends, "backends": backends}}
        if frontends or backends
        else {"pool": None, "objects": None}
    )
    return Fire(
        "reject",
        reason=POOL_NOT_SHARED,
        message=message,
        events=(warning(POOL_NOT_SHARED, message),),
        updates=kept,
    )


def _refused(message: str) -> Fire:
    # EdgeLB judged the body (400/422): sending it again cannot help; the user must change the Service.
    return Fire(
        "reject",
        reason="EdgeLBRejectedPool",
        message=message,
        events=(warning("EdgeLBRejectedPool", message),),
    )


def _create(ctx: Context, config: PoolConfig, record: Pool | None = None) -> Outcome:
    name = config.name
    record = record or ctx.store.pool(name)
    if config.creation_strategy == "Never":
        return Retry(
            "PoolNotFound",
            f'EdgeLB pool "{name}" does not exist and strategies.creation is "Never": '
            "create the pool in EdgeLB, or change the strategy",
        )
    if config.creation_strategy == "Once" and record is not None and record.served:
        return Retry(
            "PoolDeleted",
            f'EdgeLB pool "{name}" was deleted after it served and strategies.creation is "Once": '
            "it is not re-created; re-create it in EdgeLB or change the strategy",
        )
    if record is None or not record.created_by_dklb:
        with _claimed_lock:
            if len(_claimed) >= MAX_CLAIMED:
                _claimed.clear()  # of Services deleted before their next run: forgetting is safe
            _claimed.add(name)
        return Fire(
            "claim_pool",
            reason="CreatingPool",
            message=f'EdgeLB pool "{name}" does not exist: dklb creates it and owns its settings',
            pool_created_by_dklb=True,
            pool_namespace=ctx.binding.namespace,
            pool_shared_pool_key=ctx.binding.shared_pool_key,
        )
    empty = {"name": name, "haproxy": {"frontends": [], "backends": []}}
    composed = desired_pool(ctx, empty, pool=name, apply_settings=True)
    haproxy = composed.get("haproxy") or {}
    body = new_pool(
        settings=config,
        pool_group=ctx.settings.pool_group,
        frontends=haproxy.get("frontends") or [],
        backends=haproxy.get("backends") or [],
        created_by=ctx.settings.cluster_name,
        owner_namespace=record.namespace or ctx.binding.namespace,
        shared_pool_key=record.shared_pool_key if record.namespace else ctx.binding.shared_pool_key,
    )
    try:
        ctx.edgelb.create_pool(body)
    except Conflict:
        # Made by someone between the claim and this POST: the claim is withdrawn, and the next
        # run reads the pool and judges whose it is. dklb's own mark (a POST whose answer was
        # lost) makes it dklb's again; anyone else's pool stays theirs, and is never deleted.
        return Fire(
            "claim_withdrawn",
            reason="PoolExists",
            message=f'EdgeLB pool "{name}" appeared while creating it; merging into it next',
            pool_created_by_dklb=False,
            pool_namespace="",
        )
    except Invalid as exc:
        return _refused(f'EdgeLB refused to create pool "{name}": {exc.message}')
    except EdgeLBError as exc:
        return Retry("EdgeLBUnavailable", f'creating EdgeLB pool "{name}" failed: {exc}')
    return Fire("provisioned", reason="PoolCreated", message=f'EdgeLB pool "{name}" created')
