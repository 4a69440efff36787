"""usage rollups for the usage API: end user in the key, errors, rate-limited requests, decode time

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

The primary key of ``usage_hourly`` gains ``end_user`` (empty string when none), which neither
PostgreSQL nor SQLite can change in place portably: the table is rebuilt and its rows copied.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)
_OLD_SUMS = ("requests", "prompt_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "list_ticks",
             "billed_ticks", "counted_requests")
_NEW_SUMS = ("errors", "rate_limited", "decode_ms", "decode_tokens")


def _create(name: str, with_end_user: bool) -> None:
    keys = ["hour", "org_id", "key_id", "model", *(["end_user"] if with_end_user else [])]
    op.create_table(
        name,
        sa.Column("hour", _TZ, nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        *([sa.Column("end_user", sa.String(200), nullable=False, server_default="")] if with_end_user else []),
        *(sa.Column(c, sa.BigInteger, nullable=False) for c in _OLD_SUMS),
        *((sa.Column(c, sa.BigInteger, nullable=False, server_default="0") for c in _NEW_SUMS)
          if with_end_user else ()),
        sa.PrimaryKeyConstraint(*keys, name=f"pk_{name}"),
    )


def upgrade() -> None:
    _create("usage_hourly_v4", with_end_user=True)
    sums = ", ".join(_OLD_SUMS)
    op.execute(f"INSERT INTO usage_hourly_v4 (hour, org_id, key_id, model, end_user, {sums}) "
               f"SELECT hour, org_id, key_id, model, '', {sums} FROM usage_hourly")
    op.drop_index("ix_usage_hourly_org_hour", table_name="usage_hourly")
    op.drop_table("usage_hourly")
    op.rename_table("usage_hourly_v4", "usage_hourly")
    # The usage API's queries: one organisation's range (index range scan on org, hour); across
    # organisations, the primary key (hour first) serves the range.
    op.create_index("ix_usage_hourly_org_hour", "usage_hourly", ["org_id", "hour"])


def downgrade() -> None:
    _create("usage_hourly_v3", with_end_user=False)
    sums = ", ".join(_OLD_SUMS)
    op.execute(f"INSERT INTO usage_hourly_v3 (hour, org_id, key_id, model, {sums}) "
               f"SELECT hour, org_id, key_id, model, {', '.join(f'sum({c})' for c in _OLD_SUMS)} FROM usage_hourly "
               "GROUP BY hour, org_id, key_id, model")
    op.drop_index("ix_usage_hourly_org_hour", table_name="usage_hourly")
    op.drop_table("usage_hourly")
    op.rename_table("usage_hourly_v3", "usage_hourly")
    op.create_index("ix_usage_hourly_org_hour", "usage_hourly", ["org_id", "hour"])
