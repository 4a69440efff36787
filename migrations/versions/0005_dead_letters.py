"""usage records the ledger could never store, kept with the reason (dead letters)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
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
        "usage_dead_letters",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_usage_dead_letters_created_at", "usage_dead_letters", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_dead_letters_created_at", table_name="usage_dead_letters")
    op.drop_table("usage_dead_letters")
