"""rate-limit plans, per-key limits, key rotation

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_LIMITS = ("rpm", "tpm", "tpd")


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        *(sa.Column(name, sa.BigInteger, nullable=True) for name in _LIMITS),
        sa.Column("concurrency", sa.Integer, nullable=True),
        *(sa.Column(f"key_{name}", sa.BigInteger, nullable=True) for name in _LIMITS),
        sa.Column("key_concurrency", sa.Integer, nullable=True),
        sa.Column("fail_open", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Plain columns (no FK constraint): SQLite cannot add one without rebuilding the table; the
    # service checks that a plan exists and refuses to delete one in use.
    op.add_column("organizations", sa.Column("plan_id", sa.String(40), nullable=True))
    op.create_index("ix_organizations_plan_id", "organizations", ["plan_id"])
    for name in _LIMITS:
        op.add_column("api_keys", sa.Column(name, sa.BigInteger, nullable=True))
    op.add_column("api_keys", sa.Column("concurrency", sa.Integer, nullable=True))
    op.add_column("api_keys", sa.Column("manage_keys", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("api_keys", sa.Column("replaced_by", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for name in ("replaced_by", "manage_keys", "concurrency", *_LIMITS):
            batch.drop_column(name)
    op.drop_index("ix_organizations_plan_id", table_name="organizations")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("plan_id")
    op.drop_table("plans")
