"""The operator's settings for one controller: cluster name, pool group, default pool size, backends.

Where it sits: ``engine.cli.options.settings`` builds them from the flags; the reconciler hands
them to the state handlers (``engine.contract.Context``) and the admission webhook judges with
the same object, so the two can never default a Service differently.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import cached_property

from engine.model.policy import DEFAULT_LIMITS, Limits

#: How often the pool sweep compares every Ready binding with one pool listing, the watch
#: re-delivers every Service and the orphan sweep runs, unless ``--resync-period`` says otherwise.
DEFAULT_RESYNC_PERIOD = 300.0


@dataclass(frozen=True)
class Settings:
    """What the operator configured for this controller (flags of ``dklb run``): what every
    decision of the Pending handler, the admission webhook and ``dklb plan`` depends on."""

    cluster_name: str = "kubernetes-cluster"
    pool_group: str = "dcos-edgelb/pools"
    default_pool_size: int = 1
    # "mesos": backends select the cluster's kube-node tasks; "address": Node IPs + nodePort.
    backend_mode: str = "mesos"
    # --resync-period: the pool sweep's period (engine.runtime.poolsweep); a state's own
    # declared resync (Ready's day-long backstop) is not overridden by it.
    resync_period: float | None = None
    # spec.loadBalancerClass of the Services this controller takes (None: those without one);
    # engine.model.services.claims is the rule.
    load_balancer_class: str | None = None
    # Go-dklb-style open sharing: Services of different namespaces may share a pool without a
    # common kubernetes.dcos.io/dklb-shared-pool-key (--allow-cross-namespace-pools).
    allow_cross_namespace_pools: bool = False
    # The namespaces whose Services may use a pool dklb did not create (None: any namespace;
    # --pre-existing-pool-namespaces).
    pre_existing_pool_namespaces: frozenset[str] | None = None
    # The operator's bounds on pool size, CPUs, memory, roles and networks (--max-pool-*,
    # --allowed-pool-*); engine.model.policy judges a configuration against them.
    limits: Limits = DEFAULT_LIMITS
    # --node-address-cidr: the networks ("10.0.0.0/16") Node InternalIPs must lie in to become
    # backends in the "address" mode (empty: any unicast address); engine.kube.watch checks them.
    node_address_cidrs: tuple[str, ...] = ()

    @cached_property
    def policy_digest(self) -> str | None:
        """A digest of the operator's rules a Service is judged by (sharing, pre-existing pools,
        limits); None while they are all the defaults. It joins every binding's fingerprint, so
        when the operator changes a rule (e.g. sets --allow-cross-namespace-pools), every
        Service is judged again at start, a Rejected one included, without anyone touching it.
        Cached: the reconciler asks for it at every reconcile, and Settings never change."""
        rules = (self.allow_cross_namespace_pools, self.pre_existing_pool_namespaces, self.limits)
        if rules == (False, None, DEFAULT_LIMITS):
            return None
        text = repr((rules[0], sorted(rules[1] or ()) if rules[1] is not None else None, asdict(self.limits)))
        return hashlib.sha256(text.encode()).hexdigest()[:16]
