"""The pool sweep: one pool listing per resync period instead of one GET per settled binding.

Where it sits in the data flow: beside the reconciler, like the orphan sweeper, on the
controller's scheduler (``Controller`` runs it while this replica leads and the Service cache
is synced). A Ready binding has nothing scheduled (its declared resync is a day-long backstop);
what notices an out-of-band change is this sweep:

    every --resync-period:  Store.expectations (one query: key, pool, objects of every binding
                            in a settled state with a handler)  +  GET /v2/pools (one request)
                            -> ``to_wake``: compared in memory (normalized, per owner)
                            -> the keys whose pool is missing or whose owned part differs
    every few seconds:      the pools whose metadata is due (``MetadataSchedule``: each pool at
                            its own jittered time, once per --metadata-resync-period, once per
                            POOL whatever the number of bindings on it)  ->  GET metadata
                            -> ``stale_statuses``: the keys whose Service status (the observed
                            cache) differs from the addresses the metadata gives
    at start-up (once):     the same listing, plus every settled binding whose Service has no
                            address at all (a status cleared while dklb was down)
    after each periodic sweep: its listing is handed to the orphan sweep (``take_listing``), so
                            one period lists the pools once

Comparing normalizes each distinct set of objects once (``Digests``); the normal forms are kept in
the store (``Store.keep_normal_forms``, written only when new ones appear), so the first sweep
after a restart normalizes only what changed while dklb was down.

and the controller wakes those keys (``Reconciler.verify`` + enqueue): their handler
(``states/ready.py``) re-reads the pool, fires ``drift`` or writes the status, as before. The
sweep itself fires nothing and writes nothing: a listing that fails wakes nobody (the next
period lists again; ``engine.runtime.recovery`` watches the outage), and one that is partial or
stale can only wake too many bindings, each of which confirms with its own GET before anything
is repaired. A settled binding whose pool is as recorded costs no reconcile, no store commit
and no EdgeLB request of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from typing import Any

from engine.edgelb import stream
from engine.edgelb.errors import EdgeLBError
from engine.edgelb.port import EdgeLB, Pool
from engine.edgelb.schema import MODEL
from engine.model.services import split_key
from engine.model.translation import (
    Object,
    Owner,
    ingress_from_metadata,
    normalized_objects,
    owner_of,
    pool_outline,
)
from engine.runtime.cache import ServiceCache
from engine.store import Store

log = logging.getLogger("dklb.poolsweep")

#: --metadata-resync-period: how often each Ready pool's metadata is read again.
DEFAULT_METADATA_RESYNC_PERIOD = 300.0

# (key, pool, recorded objects: a dict, or the JSON text the store holds) of one settled binding.
Expectation = tuple[str, str, Any]
# Per listed pool, per owner: the digest (``Digests.of``) of its (frontends, backends) as listed.
Owned = dict[str, dict[Owner, bytes]]
# (key, pool, digest of the recorded objects) of one settled binding.
Expected = tuple[str, str, bytes]


# ---- the pure comparisons ------------------------------------------------------------------------


def index_pools(
    pools: Iterable[Any],
    *,
    cluster: str,
    digests: Digests | None = None,
    wanted: Container[tuple[str, Owner]] | None = None,
) -> Owned:
    """The listed pools by name, each pool's objects of this cluster grouped by owner and digested
    (``Digests``: normalized, memoized). With ``wanted``, only the (pool, owner) pairs in it (the
    settled bindings') are digested. ``pools`` is consumed one pool at a time (a streamed
    listing) and nothing of a pool but those digests is kept."""
    digests = digests if digests is not None else Digests()
    index: Owned = {}
    for pool in pools:
        if not isinstance(pool, dict) or not isinstance(pool.get("name"), str):
            continue
        name = pool["name"]
        found_haproxy = pool.get("haproxy")
        haproxy: dict[str, Any] = found_haproxy if isinstance(found_haproxy, dict) else {}
        owners: dict[Owner, tuple[list[Object], list[Object]]] = {}
        for position, kind in enumerate(("frontends", "backends")):
            found = haproxy.get(kind)
            for obj in found if isinstance(found, list) else []:
                if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
                    continue
                parsed = owner_of(obj["name"], cluster=cluster)
                if parsed is not None and (wanted is None or (name, parsed[0]) in wanted):
                    owners.setdefault(parsed[0], ([], []))[position].append(obj)
        index[name] = {
            owner: digests.of({"frontends": fe, "backends": be}) for owner, (fe, be) in owners.items()
        }
    return index


# In the key of every content digest: a normal form kept (``Store.keep_normal_forms``) by a dklb
# whose model of EdgeLB's defaults, or whose normalization, differed is never used. Bump the
# version with any change to ``normalize_pool`` that ``MODEL`` does not show.
_NORMAL_FORM_KEY = hashlib.blake2b(
    f"normal-form-1 {sorted(MODEL.items())!r}".encode(), digest_size=16
).digest()


class Digests:
    """Content digest of a ``{"frontends", "backends"}`` set -> digest of its normalized form.

    Normalizing (``normalized_objects``: defaults filled, sorted) costs a few hundred microseconds
    per set: thousands per sweep would be most of a core. Recorded objects and listed ones change
    rarely, so each distinct content is normalized once; what is kept is two short digests per
    content, not the objects (bounded: cleared when it outgrows ``limit``). ``new`` (computed since
    last taken) and ``used`` (looked up since last cleared) let the sweep keep them in the store,
    so that a restart starts from them (``load``) instead of normalizing every set again.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._memo: dict[bytes, bytes] = {}
        self.new: dict[bytes, bytes] = {}
        self.used: set[bytes] = set()

    def load(self, known: dict[bytes, bytes]) -> None:
        self._memo.update(known)

    def known(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        """The normal forms of ``keys`` that are known."""
        return {key: self._memo[key] for key in keys if key in self._memo}

    def of(self, objects: Any) -> bytes:
        """``objects`` as a dict, or as the JSON text the store holds."""
        text = objects if isinstance(objects, str) else _canonical(objects)
        key = hashlib.blake2b(text.encode(), digest_size=16, key=_NORMAL_FORM_KEY).digest()
        self.used.add(key)
        found = self._memo.get(key)
        if found is None:
            parsed = json.loads(text) if isinstance(objects, str) else objects
            try:
                normalized: Any = normalized_objects(parsed)
            except (KeyError, TypeError, AttributeError):
                normalized = ["unreadable", text]  # never equal to a readable set's form
            found = hashlib.blake2b(_canonical(normalized).encode(), digest_size=16).digest()
            if len(self._memo) >= self.limit:
                self._memo.clear()
            self._memo[key] = found
            self.new[key] = found
        return found


# Built once (``json.dumps`` with options builds an encoder per call, a tenth of digesting a set);
# decoded JSON has no cycles to check for (a quarter of the encoding).
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False).encode


def _canonical(value: Any) -> str:
    return _ENCODE(value)


def to_wake(expectations: Iterable[Expectation], listed: Owned, digests: Digests | None = None) -> list[str]:
    """The keys whose pool is missing from ``listed`` or holds other objects for them than recorded
    (compared normalized: server-filled defaults are no difference)."""
    digests = digests if digests is not None else Digests()
    return differing(
        [(key, pool, digests.of(objects)) for key, pool, objects in expectations], listed, digests
    )


def differing(expected: Iterable[Expected], listed: Owned, digests: Digests) -> list[str]:
    """``to_wake`` of expectations already digested."""
    woken: list[str] = []
    empty: bytes | None = None
    for key, pool, digest in expected:
        owners = listed.get(pool)
        if owners is None:
            woken.append(key)
            continue
        found = owners.get(split_key(key))
        if found is None:
            empty = empty or digests.of({"frontends": [], "backends": []})
            found = empty
        if digest != found:
            woken.append(key)
    return woken


def _outlined(pools: Iterable[Any], outlines: list[Pool]) -> Iterator[Any]:
    """``pools`` as they come, each one's outline appended to ``outlines`` on the way."""
    for pool in pools:
        if isinstance(pool, dict):
            outlines.append(pool_outline(pool))
        yield pool


def current_ingress(service: Mapping[str, Any] | None) -> list[Any]:
    """``status.loadBalancer.ingress`` of a Service as observed (empty when it has none)."""
    if service is None:
        return []
    return ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


def stale_statuses(
    expectations: Iterable[Expectation],
    metadata: Mapping[str, dict[str, Any]],
    statuses: Callable[[str], list[Any] | None],
) -> list[str]:
    """The keys whose Service status differs from the addresses ``metadata`` (by pool) gives its
    frontends; a pool without metadata here, or metadata without addresses for a Service, is no
    reason (the same rule as ``states/ready.py``: never write an empty status). ``statuses(key)``
    is the observed status, None when the Service is not observed (the reconciler judges that)."""
    woken: list[str] = []
    for key, pool, objects in expectations:
        found = metadata.get(pool)
        if found is None:
            continue
        try:
            parsed = json.loads(objects) if isinstance(objects, str) else objects
            names = [fe["name"] for fe in parsed["frontends"]]
        except (KeyError, TypeError, ValueError):
            continue
        ingress = ingress_from_metadata(found, frontend_names=names)
        status = statuses(key)
        if ingress and status is not None and ingress != status:
            woken.append(key)
    return woken


# ---- the metadata schedule -----------------------------------------------------------------------


class MetadataSchedule:
    """When each pool's metadata is read next: once per ``period``, each pool at its own time.

    A pool first seen is due at a random point of the coming period, then every period
    (+/- 10 %), so thousands of pools that became Ready together are not read together.
    ``clock`` is in seconds (monotonic in production, the fake clock in tests).
    """

    def __init__(
        self, period: float, *, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.period = period
        self.rng = rng or random.Random()
        self.clock = clock
        self._due: dict[str, float] = {}

    def track(self, pools: Iterable[str]) -> None:
        """The pools that have settled bindings now: new ones get a due time, gone ones are dropped."""
        now = self.clock()
        wanted = set(pools)
        for name in list(self._due):
            if name not in wanted:
                del self._due[name]
        for name in wanted:
            if name not in self._due:
                self._due[name] = now + self.rng.uniform(0.0, self.period)

    def due(self) -> list[str]:
        """The pools due now; each is rescheduled one period (+/- 10 %) later."""
        now = self.clock()
        found = sorted(name for name, at in self._due.items() if at <= now)
        for name in found:
            self._due[name] = now + self.period * self.rng.uniform(0.9, 1.1)
        return found

    def __len__(self) -> int:
        return len(self._due)


# ---- the I/O ---------------------------------------------------------------------------------------


class PoolSweep:
    """Reads the listing, the store and the cache; returns the keys to wake (never wakes itself)."""

    def __init__(
        self,
        *,
        edgelb: EdgeLB,
        store: Store,
        cache: ServiceCache,
        states: Iterable[str],
        cluster: str,
        metadata: MetadataSchedule,
    ) -> None:
        self.edgelb = edgelb
        self.store = store
        self.cache = cache
        # The settled states with a handler (Ready): the lifecycle's roles, no state named here.
        self.states = sorted(states)
        self.cluster = cluster
        self.metadata = metadata
        self.digests = Digests()
        self._loaded = False
        self._kept = 0  # normal forms in the store, as far as this process knows
        # The outline of the last sweep's listing, until ``take_listing`` (the orphan sweep's
        # input): the whole decoded pools are never kept.
        self._listing: list[Pool] | None = None
        # Counters, read by tests and logs.
        self.sweeps = 0
        self.failures = 0

    def sweep(self, *, startup: bool = False) -> list[str]:
        """One listing compared with every settled binding: the keys to wake.

        Raises ``EdgeLBError`` when the pools cannot be listed: nothing is woken for it (the
        caller logs it, and at start-up falls back to verifying every binding one by one).
        With ``startup``, a binding whose Service shows no address at all is woken too.
        """
        # The store first: a binding that turns Ready after this read waits for the next sweep,
        # rather than being compared with a listing older than its own write.
        self._listing = None
        self._load_normal_forms()
        self.digests.used.clear()
        # Digested as read: 20,000 recorded objects' texts are not all held at once.
        expected = [
            (key, pool, self.digests.of(objects))
            for key, pool, objects in self.store.expectations(self.states)
        ]
        if not expected:
            # Nothing settled to compare: no request at all.
            self.metadata.track(())
            return []
        outlines: list[Pool] = []
        listed = index_pools(
            _outlined(stream.pools(self.edgelb), outlines),
            cluster=self.cluster,
            digests=self.digests,
            wanted={(pool, split_key(key)) for key, pool, _ in expected},
        )
        # Only now that the whole listing was read without error (a failed one wakes nobody).
        self._listing = outlines
        woken = differing(expected, listed, self.digests)
        self._keep_normal_forms()
        if startup:
            seen = set(woken)
            for key, _, _ in expected:
                if key not in seen and not current_ingress(self.cache.get(key)):
                    woken.append(key)
        self.metadata.track(pool for _, pool, _ in expected)
        self.sweeps += 1
        if woken:
            log.info(
                "pool sweep: %d of %d settled bindings differ from the listing of %d pools; verifying them",
                len(woken),
                len(expected),
                len(listed),
            )
        return woken

    def _load_normal_forms(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            known = self.store.normal_forms()
        except Exception as exc:
            # Only a cost: every set is normalized once more.
            log.warning("pool sweep: the kept normal forms could not be read (%s); normalizing anew", exc)
            return
        self.digests.load(known)
        self._kept = len(known)

    def _keep_normal_forms(self) -> None:
        """Store the normal forms this sweep computed (none once nothing changes: no write at
        rest); rewrite them all when most of those stored are no longer used."""
        new, self.digests.new = self.digests.new, {}
        replace = self._kept > 2 * len(self.digests.used) + 1000
        if not new and not replace:
            return
        found = self.digests.known(self.digests.used) if replace else new
        try:
            self.store.keep_normal_forms(found, replace=replace)
        except Exception as exc:
            log.warning(
                "pool sweep: the normal forms could not be kept (%s); a restart normalizes them again", exc
            )
            return
        self._kept = len(found) if replace else self._kept + len(new)

    def take_listing(self) -> list[Pool] | None:
        """The outlines (``pool_outline``) of the pools the last sweep listed (None when it listed
        nothing), handed over once."""
        listing, self._listing = self._listing, None
        return listing

    def refresh_metadata(self) -> list[str]:
        """Read the metadata of the pools due (once each), compare statuses: the keys to wake."""
        due = self.metadata.due()
        if not due:
            return []
        found: dict[str, dict[str, Any]] = {}
        for name in due:
            try:
                found[name] = self.edgelb.get_metadata(name)
            except EdgeLBError as exc:
                # Addresses are refreshed opportunistically: the pool is read again next period.
                log.debug('metadata of EdgeLB pool "%s" not refreshed: %s', name, exc)
        if not found:
            return []
        expectations = self.store.expectations(self.states, pools=sorted(found))
        return stale_statuses(expectations, found, self._status)

    def _status(self, key: str) -> list[Any] | None:
        service = self.cache.get(key)
        return None if service is None else current_ingress(service)
