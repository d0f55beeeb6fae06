"""Pools belong to someone: the namespace dklb created a pool for and the sharing keys.

``pools.namespace`` and ``pools.shared_pool_key``: whom dklb created the pool for (NULL for a
pool dklb did not create, or created before this revision); ``bindings.shared_pool_key``: the
digest of the Service's ``kubernetes.dcos.io/dklb-shared-pool-key`` when it was accepted. The
sharing guard (``states.tenancy``) reads them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.add_column(sa.Column("namespace", sa.String(253), nullable=True))
        batch.add_column(sa.Column("shared_pool_key", sa.String(64), nullable=True))
    with op.batch_alter_table("bindings") as batch:
        batch.add_column(sa.Column("shared_pool_key", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bindings") as batch:
        batch.drop_column("shared_pool_key")
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("shared_pool_key")
        batch.drop_column("namespace")
