"""How a Service's configuration is judged: by the Pending handler, the admission webhook and ``dklb plan``.

All call ``check_service`` with the Service, the configuration in force and the operator's
limits (``engine.model.policy``), so a change the webhook refuses at ``kubectl apply`` time is
refused with the same message by the controller when the webhook is not there (failure policy
Ignore, or no webhook at all), and ``dklb plan`` predicts both.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.model.config import ParseResult, PoolConfig, check_transition
from engine.model.parse import parse_config
from engine.model.policy import DEFAULT_LIMITS, Limits, check_pool
from engine.model.report import described
from engine.model.services import config_text, metadata
from engine.model.translation import ServicePort, exposed_ports

NO_TCP_PORT = "the Service has no TCP port to expose"


@dataclass(frozen=True)
class ConfigCheck:
    """The outcome of checking a Service's configuration exactly as the Pending handler does."""

    text: str | None  # the annotation's value, as given
    result: ParseResult
    ports: tuple[ServicePort, ...]  # the exposed (TCP) ports
    port_warnings: tuple[str, ...]  # ports that are not exposed (UDP, SCTP)
    errors: tuple[str, ...]  # in Pending's order: parse errors, the operator's limits, no TCP port,
    # forbidden transitions

    @property
    def config(self) -> PoolConfig | None:
        return self.result.config if not self.errors else None

    @property
    def message(self) -> str:
        return "; ".join(self.errors)

    @property
    def warnings(self) -> tuple[str, ...]:
        return (*self.result.warnings, *self.port_warnings)

    @property
    def no_tcp_port(self) -> bool:
        """Nothing for dklb to expose (UDP or SCTP only): the controller leaves it Rejected, the
        admission webhook lets it in (another load-balancer controller may serve it)."""
        return NO_TCP_PORT in self.errors


def check_service(
    service: Mapping[str, Any],
    *,
    previous: PoolConfig | None,
    cluster_name: str,
    default_size: int,
    pool_group: str,
    rng: random.Random | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ConfigCheck:
    """Parse, default and validate a LoadBalancer Service's configuration, as ``states.pending`` does.

    ``previous`` is the configuration in force (None for a new Service): the fields that cannot
    change are checked against it. ``pool_group`` is ``--edgelb-pool-group`` (the pool's name
    must fit a DC/OS service name with it). The admission webhook calls it too: one place
    decides, one set of messages. ``limits`` are the operator's bounds (``Settings.limits``):
    a configuration outside them is as invalid as a malformed one. Never raises: an unexpected
    failure is a rejection.
    """
    try:
        return _check_service(
            service,
            previous=previous,
            cluster_name=cluster_name,
            default_size=default_size,
            pool_group=pool_group,
            rng=rng,
            limits=limits,
        )
    except Exception as e:
        problem = described(e)
        error = f"the Service's configuration could not be checked ({problem}); this is a bug in dklb"
        result = ParseResult(None, (error,), (), defaulted_name=False)
        return ConfigCheck(None, result, (), (), (error,))


def _check_service(
    service: Mapping[str, Any],
    *,
    previous: PoolConfig | None,
    cluster_name: str,
    default_size: int,
    pool_group: str,
    rng: random.Random | None,
    limits: Limits,
) -> ConfigCheck:
    ports, port_warnings = exposed_ports(dict(service))
    text = config_text(service)
    meta = metadata(service)
    namespace, name = meta.get("namespace"), meta.get("name")
    # Without both (a CREATE with generateName) the frontends' names are not known yet.
    owner = (namespace, name) if isinstance(namespace, str) and isinstance(name, str) and name else None
    result = parse_config(
        text,
        service_ports=[p.port for p in ports],
        cluster_name=cluster_name,
        default_size=default_size,
        rng=rng,
        pool_group=pool_group,
        owner=owner,
    )
    errors = list(result.errors)
    if result.config is not None and not errors:
        errors += check_pool(result.config, limits)
    if not ports:
        errors.append(NO_TCP_PORT)
    if previous is not None:
        errors += check_transition(previous, result.config, annotation_present=bool(text))
    return ConfigCheck(text, result, tuple(ports), tuple(port_warnings), tuple(errors))
