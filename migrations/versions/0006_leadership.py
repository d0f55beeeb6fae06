"""The leader fence in the database: one row holding the term of the replica that leads.

``Store.claim_leadership`` adds one to ``term`` when a replica starts leading; every write
transaction of a store that claimed first checks the term is still its own, so a deposed leader's
late commit is refused by the database (``engine.store.Fenced``) whatever the clocks say.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    leadership = op.create_table(
        "leadership",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("holder", sa.String(253), nullable=False, server_default=""),
        sa.Column("term", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claimed_at", sa.DateTime, nullable=True),
        sa.CheckConstraint("id = 1", name="ck_leadership_one_row"),
    )
    op.bulk_insert(leadership, [{"id": 1, "holder": "", "term": 0, "claimed_at": None}])


def downgrade() -> None:
    op.drop_table("leadership")
