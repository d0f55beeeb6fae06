"""Initial schema: bindings, pools, history.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("ref_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_by_dklb", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("served", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "bindings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("uid", sa.String(64), nullable=False, server_default=""),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("pool", sa.String(63), sa.ForeignKey("pools.name"), nullable=True),
        sa.Column("config", sa.Text, nullable=True),
        sa.Column("objects", sa.Text, nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_wakeup", sa.DateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("state_since", sa.DateTime, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("namespace", "name", name="uq_bindings_service"),
    )
    op.create_index("ix_bindings_state", "bindings", ["state"])
    op.create_index("ix_bindings_pool", "bindings", ["pool"])
    op.create_index("ix_bindings_next_wakeup", "bindings", ["next_wakeup"])
    op.create_table(
        "history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("binding_id", sa.Integer, nullable=True),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("pool", sa.String(63), nullable=True),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(128), nullable=False, server_default=""),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("duration", sa.Float, nullable=True),
    )
    op.create_index("ix_history_service_at", "history", ["namespace", "name", "at"])
    op.create_index("ix_history_pool_at", "history", ["pool", "at"])
    op.create_index("ix_history_state_at", "history", ["to_state", "at"])
    op.create_index("ix_history_at", "history", ["at"])


def downgrade() -> None:
    op.drop_table("history")
    op.drop_table("bindings")
    op.drop_table("pools")
