"""usage rollups for the usage API: errors, rate-limited requests and decode time; per end user

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

``usage_hourly`` (hour, organisation, key, model) gains the counters the usage API reports. The end
user dimension gets its own table, ``usage_hourly_end_users`` (the same grain plus ``end_user``, empty
string when none): it multiplies the rows by the end users active in each hour, so only the views
grouped by end user read it, and budgets and every other view keep reading the narrow table. It is
backfilled from the ledger.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_NEW = ("errors", "rate_limited", "decode_ms", "decode_tokens")
_SUMS = ("prompt_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "list_ticks", "billed_ticks")
# UsageRecord.decode_ms, in SQL both databases speak.
_DECODE_MS = ("CASE WHEN status = 'ok' AND output_tokens > 0 THEN (CASE WHEN stream THEN "
              "(CASE WHEN duration_ms > ttfb_ms THEN duration_ms - ttfb_ms ELSE 0 END) ELSE duration_ms END) "
              "ELSE 0 END")


def upgrade() -> None:
    for name in _NEW:
        op.add_column("usage_hourly", sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))
    op.create_table(
        "usage_hourly_end_users",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("org_id", sa.String(40), primary_key=True),
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("end_user", sa.String(200), primary_key=True),
        *(sa.Column(c, sa.BigInteger, nullable=False, server_default="0")
          for c in ("requests", *_SUMS, "counted_requests", *_NEW)),
    )
    op.create_index("ix_usage_hourly_end_users_org_hour", "usage_hourly_end_users", ["org_id", "hour"])
    if op.get_bind().dialect.name == "postgresql":
        hour = "date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    else:  # the text SQLAlchemy stores for a DateTime on SQLite
        hour = "strftime('%Y-%m-%d %H:00:00.000000', started_at)"
    op.execute(
        f"INSERT INTO usage_hourly_end_users (hour, org_id, key_id, model, end_user, requests, {', '.join(_SUMS)}, "
        f"counted_requests, errors, decode_ms, decode_tokens) "
        f"SELECT {hour}, org_id, key_id, model, coalesce(end_user, ''), count(*), "
        f"{', '.join(f'sum({c})' for c in _SUMS)}, sum(CASE WHEN reported THEN 0 ELSE 1 END), "
        f"sum(CASE WHEN status = 'ok' THEN 0 ELSE 1 END), sum({_DECODE_MS}), "
        f"sum(CASE WHEN {_DECODE_MS} > 0 THEN output_tokens ELSE 0 END) "
        f"FROM usage_ledger GROUP BY 1, 2, 3, 4, 5")


def downgrade() -> None:
    op.drop_index("ix_usage_hourly_end_users_org_hour", table_name="usage_hourly_end_users")
    op.drop_table("usage_hourly_end_users")
    with op.batch_alter_table("usage_hourly") as batch:
        for name in _NEW:
            batch.drop_column(name)
