"""Who may use a pool: the tenancy rule the ``accept`` guard and Provisioning both apply (pure).

The rule itself lives in ``engine.model.tenancy``, where the admission webhook applies it too
(at ``kubectl apply``, with the same message); it is named here for the lifecycle's modules.
"""

from __future__ import annotations

from engine.model.tenancy import Tenant, refusal

__all__ = ["Tenant", "refusal"]
