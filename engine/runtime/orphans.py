"""The orphan-pool sweeper: delete the EdgeLB pools dklb created that nothing uses any more.

Where it sits in the data flow: beside the reconciler, not inside it. Bindings delete their pool
when the last of them leaves it (``states/deleting.py``), but a pool can appear after that: a
POST whose answer was lost lands once the Service is gone, Deleting having seen 404. Nothing
refers to such a pool, so no binding will ever look at it again. ``dklb run`` runs
``OrphanSweeper.run`` right after each periodic pool sweep (``engine.runtime.poolsweep``), with
that sweep's listing, so a resync period lists the pools once; it reads EdgeLB (the fenced
client), the store and the controller's Service cache, and deletes what is provably orphaned,
the way a controller garbage-collects the objects it owns.

A pool is deleted only when every one of these holds (``judge`` says why not otherwise):

* it carries this cluster's mark (``engine.model.translation.created_by_dklb``): a pool dklb did not
  create is never deleted, whatever it holds;
* no binding refers to it, and no binding's recorded configuration names it;
* every frontend and backend in it is this cluster's (``engine.model.translation.owner_of``): nothing
  foreign, and none of their owners is a Service in the cache that dklb handles (type
  LoadBalancer, or still carrying dklb's finalizer);
* no such Service's configuration annotation names it (a Service still in Pending);
* it was a candidate already at the previous sweep (a grace period of one sweep interval);
* re-read under the pool's lock (``PoolLocks``, which every pool-writing state and every
  commit that sets a binding's pool hold), it still passes all of the above and the store still
  has no binding on it: a Service accepted into the pool in the meantime wins.

The sweeper runs only while ``may_sweep()`` (``dklb run``: this replica leads AND the start-up
verification is done, so a controller that lost its database has re-adopted every Service
first). A replica that stops leading forgets its candidates: after a takeover every orphan is
seen twice again before it goes. The decision (``decide``/``judge``) is pure; ``sweep`` does the
I/O. It reads the bindings and the cached Services one at a time, and keeps of each only what
the decision needs (``Store.summaries``, ``Uses``): thousands of whole ``Binding`` objects (with their
decoded EdgeLB objects) or decoded Services at once would be tens of MB, every resync period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import yaml

from engine.edgelb import stream
from engine.edgelb.errors import EdgeLBError, NotFound
from engine.edgelb.port import EdgeLB, Pool
from engine.model.parse import MAX_ANNOTATION_BYTES
from engine.model.services import ANY_CLASS, config_text, handled, key, metadata
from engine.model.strict_yaml import load_strict
from engine.model.translation import Owner, created_by_dklb, owner_of, pool_outline
from engine.runtime.cache import PoolLocks, ServiceCache
from engine.runtime.fence import NotLeader
from engine.store import Store

log = logging.getLogger("dklb.orphans")


class BindingView(Protocol):
    """What the decision reads of a binding (``engine.store.Binding`` has it)."""

    @property
    def key(self) -> str: ...

    @property
    def pool(self) -> str | None: ...

    @property
    def config(self) -> dict[str, Any] | None: ...


def _annotated_pool(service: Mapping[str, Any]) -> str | None:
    """The pool name the Service's configuration annotation asks for, if it names one."""
    return _pool_named(config_text(service))


def _pool_named(text: str | None) -> str | None:
    """The pool name a configuration annotation's text asks for, if it names one."""
    if not text or len(text) > MAX_ANNOTATION_BYTES:
        # Longer than the parser reads: the Service is Rejected, it names no pool.
        return None
    try:
        # The parser's own loader (libyaml, bounded depth, no pure-Python re-parse): every
        # handled Service's annotation may be read here at every sweep.
        parsed = load_strict(text)
    except yaml.YAMLError:
        # The user's text, whatever it is: an annotation that does not parse names no pool.
        return None
    name = parsed.get("name") if isinstance(parsed, dict) else None
    return name if isinstance(name, str) else None


class Uses:
    """Who uses which pool, from the stored bindings and the observed Services (built per sweep)."""

    def __init__(self, bindings: Iterable[BindingView], services: Iterable[Mapping[str, Any]]) -> None:
        self.bound: dict[str, str] = {}  # pool -> a binding that refers to it
        self.configured: dict[str, str] = {}  # pool -> a binding whose recorded config names it
        for b in bindings:
            if b.pool is not None:
                self.bound.setdefault(b.pool, b.key)
            name = (b.config or {}).get("name")
            if isinstance(name, str):
                self.configured.setdefault(name, b.key)
        self.live: set[Owner] = set()
        # (key, configuration annotation) of each handled Service: all ``annotated`` needs, and
        # ``services`` is read once, so the Services themselves are not all held at once.
        self._annotations: list[tuple[str, str | None]] = []
        for service in services:
            # Of any class: a pool that any LoadBalancer Service could still claim is not deleted.
            if not handled(service, ANY_CLASS):
                continue
            meta = metadata(service)
            self.live.add((str(meta.get("namespace")), str(meta.get("name"))))
            self._annotations.append((key(service), config_text(service)))

    @cached_property
    def annotated(self) -> dict[str, str]:
        """pool -> a handled Service whose annotation names it. Parsed only when a pool got this far
        (orphans are rare; thousands of annotations are not parsed on every sweep for nothing)."""
        found: dict[str, str] = {}
        for service_key, text in self._annotations:
            name = _pool_named(text)
            if name is not None:
                found.setdefault(name, service_key)
        return found


def _objects(pool: Pool) -> list[Any]:
    haproxy = pool.get("haproxy") or {}
    return [*(haproxy.get("frontends") or []), *(haproxy.get("backends") or [])]


def judge(pool: Pool, *, cluster: str, uses: Uses) -> str | None:
    """Why ``pool`` must be kept, or None when nothing uses it (an orphan)."""
    name = pool.get("name")
    if not created_by_dklb(pool, cluster=cluster):
        return "not created by dklb for this cluster"
    if name in uses.bound:
        return f"binding {uses.bound[name]} refers to it"
    if name in uses.configured:
        return f"the configuration of binding {uses.configured[name]} names it"
    for obj in _objects(pool):
        object_name = obj.get("name") if isinstance(obj, dict) else None
        owner = owner_of(object_name, cluster=cluster) if isinstance(object_name, str) else None
        if owner is None:
            return f"it holds {object_name!r}, which is not this cluster's"
        if owner[0] in uses.live:
            return f"it holds objects of Service {owner[0][0]}/{owner[0][1]}, which dklb still handles"
    if name in uses.annotated:
        return f"the configuration annotation of Service {uses.annotated[name]} names it"
    return None


@dataclass(frozen=True)
class Decision:
    candidates: frozenset[str]  # orphans now: deleted at this sweep or, if new, at the next one
    delete: tuple[str, ...]  # candidates already at the previous sweep: delete now (re-checked)
    kept: dict[str, str] = field(default_factory=dict)  # pool -> why it is kept


def decide(
    pools: Iterable[Pool],
    *,
    cluster: str,
    bindings: Iterable[BindingView],
    services: Iterable[Mapping[str, Any]],
    seen: AbstractSet[str],
) -> Decision:
    """The pure part of a sweep: which pools are orphans, and which of them go now."""
    uses = Uses(bindings, services)
    candidates: set[str] = set()
    kept: dict[str, str] = {}
    for pool in pools:
        name = pool.get("name")
        if not isinstance(name, str):
            continue
        reason = judge(pool, cluster=cluster, uses=uses)
        if reason is None:
            candidates.add(name)
        else:
            kept[name] = reason
    return Decision(candidates=frozenset(candidates), delete=tuple(sorted(candidates & set(seen))), kept=kept)


@dataclass(frozen=True)
class Sweep:
    deleted: list[str]
    candidates: frozenset[str]  # to remember until the next sweep


def _services(cache: ServiceCache) -> Iterator[dict[str, Any]]:
    """The cached Services, decoded one at a time (``ServiceCache.get`` returns fresh copies)."""
    for cached in cache.keys():
        service = cache.get(cached)
        if service is not None:
            yield service


def sweep(
    *,
    edgelb: EdgeLB,
    store: Store,
    cache: ServiceCache,
    locks: PoolLocks,
    cluster: str,
    seen: AbstractSet[str],
    on_deleted: Callable[[str], None] | None = None,
    pools: list[Pool] | None = None,
) -> Sweep:
    """One sweep: list the pools (unless ``pools`` is a listing just made, whole pools or their
    ``pool_outline``), decide, and delete (under each pool's lock) the orphans seen twice.

    Raises ``EdgeLBError`` when the pools cannot be listed and ``NotLeader`` when a DELETE is
    refused by the fence; a failure on one pool only keeps that pool for the next sweep.
    """
    if pools is None:
        # Streamed: what the decision reads of each pool, not the whole listing at once.
        pools = [pool_outline(pool) for pool in stream.pools(edgelb) if isinstance(pool, dict)]
    decision = decide(
        pools, cluster=cluster, bindings=store.summaries(), services=_services(cache), seen=seen
    )
    for name in sorted(decision.candidates - set(decision.delete)):
        log.info(
            'EdgeLB pool "%s" was created by dklb and nothing uses it: deleted at the next sweep if still so',
            name,
        )
    candidates = set(decision.candidates)
    deleted: list[str] = []
    for name in decision.delete:
        with locks.hold(name):
            try:
                fresh = edgelb.get_pool(name)
            except NotFound:
                candidates.discard(name)
                continue
            except EdgeLBError as exc:
                log.warning('orphan check of EdgeLB pool "%s" postponed: reading it failed: %s', name, exc)
                continue
            # Under the lock no binding can join this pool: re-read everything the decision used.
            if store.bindings(pool=name):
                candidates.discard(name)
                continue
            reason = judge(fresh, cluster=cluster, uses=Uses(store.summaries(), _services(cache)))
            if reason is not None:
                log.info('EdgeLB pool "%s" is no orphan after all: %s', name, reason)
                candidates.discard(name)
                continue
            try:
                edgelb.delete_pool(name)
            except NotFound:
                candidates.discard(name)
                continue
            except EdgeLBError as exc:
                log.warning('deleting orphaned EdgeLB pool "%s" failed (next sweep retries): %s', name, exc)
                continue
        candidates.discard(name)
        deleted.append(name)
        log.warning(
            'EdgeLB pool "%s" was created by dklb and no Service uses it any more (orphan): deleted', name
        )
        if on_deleted is not None:
            try:
                on_deleted(name)
            except Exception:
                log.warning("on_deleted hook failed for pool %s", name, exc_info=True)
    return Sweep(deleted=deleted, candidates=frozenset(candidates))


class OrphanSweeper:
    """``sweep`` with memory: the candidates of the previous sweep, forgotten whenever sweeping stops.

    ``run`` is what the scheduler calls; it never raises.
    """

    def __init__(
        self,
        *,
        edgelb: EdgeLB,
        store: Store,
        cache: ServiceCache,
        locks: PoolLocks,
        cluster: str,
        may_sweep: Callable[[], bool],
        on_deleted: Callable[[str], None] | None = None,
    ) -> None:
        self._edgelb = edgelb
        self._store = store
        self._cache = cache
        self._locks = locks
        self._cluster = cluster
        self._may_sweep = may_sweep
        self._on_deleted = on_deleted
        self.seen: frozenset[str] = frozenset()

    def run(self, pools: list[Pool] | None = None) -> list[str]:
        """One sweep, if allowed now; the pools deleted. ``pools``: the pool sweep's listing of
        this period (``dklb run`` chains the two), so that one resync lists the pools once;
        without it the sweeper lists them itself."""
        if not self._may_sweep():
            # Not leading, or not verified yet: whoever sweeps next sees every orphan twice itself.
            self.seen = frozenset()
            return []
        try:
            result = sweep(
                edgelb=self._edgelb,
                store=self._store,
                cache=self._cache,
                locks=self._locks,
                cluster=self._cluster,
                seen=self.seen,
                on_deleted=self._on_deleted,
                pools=pools,
            )
        except NotLeader:
            self.seen = frozenset()
            return []
        except EdgeLBError as exc:
            # The candidates stay: the next successful sweep is still at least one interval later.
            log.warning("orphan-pool sweep skipped: listing the EdgeLB pools failed: %s", exc)
            return []
        except Exception:
            self.seen = frozenset()
            log.exception("orphan-pool sweep failed")
            return []
        self.seen = result.candidates
        return result.deleted
