"""a cache SLO per plan: the cached share of prompt tokens its organisations should reach

Revision ID: 0009_cache_slo
Revises: 0008_providers
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_cache_slo"
down_revision = "0008_providers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("cache_slo", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("cache_slo")
