"""The pool sweep's normal forms: content digest -> digest of its normalized form, kept across restarts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "normal_forms",
        sa.Column("content", sa.LargeBinary(16), primary_key=True),
        sa.Column("normal", sa.LargeBinary(16), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("normal_forms")
