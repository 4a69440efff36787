"""usage_ledger partitioned by month (PostgreSQL; SQLite keeps its plain table)

Revision ID: 0007_partitions
Revises: 0006_upstream
Create Date: 2026-12-01

On PostgreSQL ``usage_ledger`` becomes a table partitioned by range of ``started_at``, one partition per
calendar month (UTC) named ``usage_ledger_YYYY_MM``, plus ``usage_ledger_default`` that holds a row whose
month has no partition yet (so no write ever fails for want of one; ``gateway db partitions ensure`` and the
ledger writers move such rows into their month's partition when they create it). The primary key becomes
``(request_id, started_at)``: PostgreSQL requires a unique key on a partitioned table to include the
partition key. Exactly-once still holds: every copy of a usage record (the stream entry, a spool replay, a
dead-letter replay) carries the ``started_at`` the serving replica stamped, so the copies of one record
share one key and one partition, and ``ON CONFLICT (request_id, started_at) DO NOTHING`` drops them (see
docs/billing.md). The existing rows are copied into their months' partitions.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007_partitions"
down_revision = "0006_upstream"
branch_labels = None
depends_on = None

_COLUMNS = """
    request_id varchar(64) NOT NULL, org_id varchar(40) NOT NULL, key_id varchar(40) NOT NULL,
    end_user varchar(200), model varchar(200) NOT NULL, requested_model varchar(200) NOT NULL,
    worker varchar(200) NOT NULL, prompt_tokens bigint NOT NULL, cached_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL, reasoning_tokens bigint NOT NULL, list_ticks bigint NOT NULL,
    billed_ticks bigint NOT NULL, plan varchar(100) NOT NULL, started_at timestamptz NOT NULL,
    ttfb_ms integer NOT NULL, duration_ms integer NOT NULL, status varchar(32) NOT NULL,
    http_status integer NOT NULL, reported boolean NOT NULL, stream boolean NOT NULL, stripe_batch bigint,
    app varchar(200)
"""
_INDEXES = (("ix_usage_ledger_org_started", "(org_id, started_at)", ""),
            ("ix_usage_ledger_key_started", "(key_id, started_at)", ""),
            ("ix_usage_ledger_unsynced", "(org_id, started_at)", " WHERE stripe_batch IS NULL"))


def _months(first: datetime, last: datetime) -> list[datetime]:
    months, month = [], first.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while month <= last:
        months.append(month)
        month = _next(month)
    return months


def _next(month: datetime) -> datetime:
    return month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE usage_ledger RENAME TO usage_ledger_unpartitioned")
    op.execute("ALTER TABLE usage_ledger_unpartitioned RENAME CONSTRAINT usage_ledger_pkey "
               "TO usage_ledger_unpartitioned_pkey")
    for name, _, _ in _INDEXES:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_unpartitioned")
    op.execute(f"CREATE TABLE usage_ledger ({_COLUMNS}, CONSTRAINT usage_ledger_pkey PRIMARY KEY "
               "(request_id, started_at)) PARTITION BY RANGE (started_at)")
    for name, columns, where in _INDEXES:
        op.execute(f"CREATE INDEX {name} ON usage_ledger {columns}{where}")
    op.execute("CREATE TABLE usage_ledger_default PARTITION OF usage_ledger DEFAULT")
    now = datetime.now(UTC)
    span = bind.execute(sa.text("SELECT min(started_at), max(started_at) FROM usage_ledger_unpartitioned")).one()
    first = min(span[0], now) if span[0] is not None else now
    last = max(span[1], now) if span[1] is not None else now
    for month in _months(first.astimezone(UTC), last.astimezone(UTC)):
        op.execute(f"CREATE TABLE usage_ledger_{month:%Y_%m} PARTITION OF usage_ledger FOR VALUES FROM "
                   f"('{month.isoformat()}') TO ('{_next(month).isoformat()}')")
    op.execute("INSERT INTO usage_ledger SELECT request_id, org_id, key_id, end_user, model, requested_model, worker, "
               "prompt_tokens, cached_tokens, output_tokens, reasoning_tokens, list_ticks, billed_ticks, plan, "
               "started_at, ttfb_ms, duration_ms, status, http_status, reported, stream, stripe_batch, app "
               "FROM usage_ledger_unpartitioned")
    op.execute("DROP TABLE usage_ledger_unpartitioned")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE usage_ledger RENAME TO usage_ledger_partitioned")
    op.execute("ALTER TABLE usage_ledger_partitioned RENAME CONSTRAINT usage_ledger_pkey "
               "TO usage_ledger_partitioned_pkey")
    for name, _, _ in _INDEXES:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_partitioned")
    op.execute(f"CREATE TABLE usage_ledger ({_COLUMNS}, CONSTRAINT usage_ledger_pkey PRIMARY KEY (request_id))")
    for name, columns, where in _INDEXES:
        op.execute(f"CREATE INDEX {name} ON usage_ledger {columns}{where}")
    op.execute("INSERT INTO usage_ledger SELECT * FROM usage_ledger_partitioned ON CONFLICT (request_id) DO NOTHING")
    op.execute("DROP TABLE usage_ledger_partitioned")  # and every partition with it
