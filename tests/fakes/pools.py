"""Pools as dklb builds them (through ``engine.model.translation``), for the tests of EdgeLB stand-ins."""

from __future__ import annotations

import json
from typing import Any

from engine.model.config import PoolConfig
from engine.model.translation import ServicePort, new_pool, service_objects

#: The frontend (and backend) name of the Service default/redis's port 6379 in such a pool.
REDIS = "kubernetes-cluster:default:redis:6379"


def translated_pool(
    name: str = "dklb-redis", *, bind_port: int = 16379, cloud: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The pool of the Service default/redis (port 6379, nodePort 32213); with ``cloud`` (EdgeLB's
    ``cloudProvider``), a cloud pool: dynamic frontend ports, listeners linked by the caller."""
    frontends, backends = service_objects(
        cluster="kubernetes-cluster",
        namespace="default",
        service="redis",
        ports=[ServicePort(6379, 32213)],
        bind_ports={6379: bind_port},
        dynamic_ports=cloud is not None,
    )
    config = PoolConfig(
        name=name,
        role="slave_public",
        network="",
        cpus=0.1,
        memory=128,
        size=1,
        cloud_provider_configuration=None if cloud is None else json.dumps(cloud),
    )
    return new_pool(settings=config, pool_group="dcos-edgelb/pools", frontends=frontends, backends=backends)
