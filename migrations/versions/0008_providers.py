"""hosted providers: an organisation's permission to leave the fleet, and each request's provider cost

Revision ID: 0008_providers
Revises: 0007_partitions
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_providers"
down_revision = "0007_partitions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the gateway's default (GATEWAY_PROVIDERS_DEFAULT_ALLOWED).
    op.add_column("organizations", sa.Column("providers_allowed", sa.Boolean, nullable=True))
    # What the hosted provider charged us for the request (ticks); NULL: served by our fleet, or unknown.
    op.add_column("usage_ledger", sa.Column("provider_cost_ticks", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_ledger") as batch:
        batch.drop_column("provider_cost_ticks")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("providers_allowed")
