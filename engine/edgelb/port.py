"""The EdgeLB port: the calls state handlers make, whatever implements them.

Implemented by the HTTP client (production, the local EdgeLB) and by in-memory fakes (tests).
Every method raises only ``engine.edgelb.errors`` classes.
"""

from __future__ import annotations

from typing import Any, Protocol

Pool = dict[str, Any]


class EdgeLB(Protocol):
    def list_pools(self) -> list[Pool]: ...

    def get_pool(self, name: str) -> Pool:
        """Raises NotFound when the pool does not exist."""
        ...

    def create_pool(self, pool: Pool) -> Pool:
        """Raises Conflict when a pool of that name exists, Invalid when the body is refused."""
        ...

    def update_pool(self, pool: Pool) -> Pool:
        """Replaces the whole pool named ``pool["name"]``; raises NotFound, Invalid."""
        ...

    def delete_pool(self, name: str) -> None:
        """Raises NotFound when the pool does not exist."""
        ...

    def get_metadata(self, name: str) -> dict[str, Any]:
        """Raises NotFound for an unknown pool, Unavailable (status 504) while not yet available."""
        ...
