"""authenticated workers (key reference, headers, models), model allow-lists of keys and organisations,
the calling app of each usage row

Revision ID: 0006_upstream
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_upstream"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as t:
        t.add_column(sa.Column("api_key_ref", sa.String(200), nullable=True))
        t.add_column(sa.Column("headers", sa.JSON, nullable=True))
        t.add_column(sa.Column("models", sa.JSON, nullable=True))
    with op.batch_alter_table("api_keys") as t:
        t.add_column(sa.Column("models", sa.JSON, nullable=True))
    with op.batch_alter_table("organizations") as t:
        t.add_column(sa.Column("models", sa.JSON, nullable=True))
    with op.batch_alter_table("usage_ledger") as t:
        t.add_column(sa.Column("app", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_ledger") as t:
        t.drop_column("app")
    with op.batch_alter_table("organizations") as t:
        t.drop_column("models")
    with op.batch_alter_table("api_keys") as t:
        t.drop_column("models")
    with op.batch_alter_table("workers") as t:
        for name in ("models", "headers", "api_key_ref"):
            t.drop_column(name)
