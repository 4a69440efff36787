"""billing: usage ledger, hourly rollups, price plans, budgets, Stripe customers and meter events

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_ledger",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("end_user", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("requested_model", sa.String(200), nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
        sa.Column("list_ticks", sa.BigInteger, nullable=False),
        sa.Column("billed_ticks", sa.BigInteger, nullable=False),
        sa.Column("plan", sa.String(100), nullable=False),
        sa.Column("started_at", _TZ, nullable=False),
        sa.Column("ttfb_ms", sa.Integer, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=False),
        sa.Column("reported", sa.Boolean, nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("stripe_batch", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_usage_ledger_org_started", "usage_ledger", ["org_id", "started_at"])
    op.create_index("ix_usage_ledger_key_started", "usage_ledger", ["key_id", "started_at"])
    op.create_index("ix_usage_ledger_unsynced", "usage_ledger", ["org_id", "started_at"],
                    postgresql_where=sa.text("stripe_batch IS NULL"), sqlite_where=sa.text("stripe_batch IS NULL"))
    op.create_table(
        "usage_hourly",
        sa.Column("hour", _TZ, primary_key=True),
        sa.Column("org_id", sa.String(40), primary_key=True),
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in (
            "requests", "prompt_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "list_ticks",
            "billed_ticks", "counted_requests")),
    )
    op.create_index("ix_usage_hourly_org_hour", "usage_hourly", ["org_id", "hour"])
    op.create_table(
        "price_plans",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("input_ticks", sa.BigInteger, nullable=True),
        sa.Column("cached_ticks", sa.BigInteger, nullable=True),
        sa.Column("output_ticks", sa.BigInteger, nullable=True),
        sa.Column("starts_at", _TZ, nullable=False),
        sa.Column("ends_at", _TZ, nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
    )
    op.create_index("ix_price_plans_org", "price_plans", ["org_id", "starts_at"])
    op.create_table(
        "budgets",
        sa.Column("org_id", sa.String(40), primary_key=True),
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("monthly_limit_ticks", sa.BigInteger, nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
    )
    op.create_table(
        "stripe_customers",
        sa.Column("org_id", sa.String(40), primary_key=True),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
    )
    op.create_table(
        "stripe_meter_events",
        sa.Column("identifier", sa.String(100), primary_key=True),
        sa.Column("batch", sa.BigInteger, nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("meter", sa.String(20), nullable=False),
        sa.Column("event_name", sa.String(100), nullable=False),
        sa.Column("window_start", _TZ, nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("sent_at", _TZ, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(300), nullable=True),
    )
    op.create_index("ix_stripe_meter_events_unsent", "stripe_meter_events", ["sent_at", "batch"])
    op.create_index("ix_stripe_meter_events_customer", "stripe_meter_events", ["customer_id", "window_start"])


def downgrade() -> None:
    for table in ("stripe_meter_events", "stripe_customers", "budgets", "price_plans", "usage_hourly",
                  "usage_ledger"):
        op.drop_table(table)
