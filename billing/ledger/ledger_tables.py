"""The billing tables, on billing's own metadata (billing never imports the gateway).

- ``usage_ledger``: one row per billed request, unique by request id (the idempotency key).
- ``usage_hourly``: per (hour, organisation, key, model) sums for the usage API, the dashboard and
  budgets, updated in the same transaction as the rows they sum, from the rows actually inserted;
  refused (rate-limited) requests are counted here only, never in the ledger.
- ``usage_hourly_end_users``: the same per end user too (many more rows: only the views grouped by
  end user read it).
- ``price_plans``, ``budgets``, ``stripe_customers``: configuration.
- ``stripe_meter_events``: every meter event, stored with its identifier before it is sent.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, LargeBinary, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class LedgerBase(DeclarativeBase):
    metadata = MetaData()


class UsageRow(LedgerBase):
    __tablename__ = "usage_ledger"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(40))
    end_user: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The calling app (the client's X-Title, else its HTTP-Referer); NULL: not named.
    app: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model: Mapped[str] = mapped_column(String(200))
    requested_model: Mapped[str] = mapped_column(String(200))
    worker: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    list_ticks: Mapped[int] = mapped_column(BigInteger)
    billed_ticks: Mapped[int] = mapped_column(BigInteger)
    plan: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ttfb_ms: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int] = mapped_column(Integer)
    reported: Mapped[bool] = mapped_column(Boolean)
    stream: Mapped[bool] = mapped_column(Boolean)
    # What the hosted provider that served the request charged for it (its reported cost, else litellm's
    # price); NULL: our fleet served it, or the provider's cost is unknown. billed_ticks - this = margin.
    provider_cost_ticks: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The Stripe sync batch that carried this row (NULL: not yet handed to Stripe).
    stripe_batch: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        Index("ix_usage_ledger_org_started", "org_id", "started_at"),
        Index("ix_usage_ledger_key_started", "key_id", "started_at"),
        Index("ix_usage_ledger_unsynced", "org_id", "started_at",
              postgresql_where=text("stripe_batch IS NULL"), sqlite_where=text("stripe_batch IS NULL")),
    )


class UsageHourly(LedgerBase):
    __tablename__ = "usage_hourly"

    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    list_ticks: Mapped[int] = mapped_column(BigInteger)
    billed_ticks: Mapped[int] = mapped_column(BigInteger)
    counted_requests: Mapped[int] = mapped_column(BigInteger)  # usage never reported by the worker
    errors: Mapped[int] = mapped_column(BigInteger, default=0)  # ledger rows whose status is not ok
    rate_limited: Mapped[int] = mapped_column(BigInteger, default=0)  # 429s from rate limits or budgets
    # Output tokens per second: the output tokens of ok requests over their decode time (streams: after
    # the first byte; whole answers: the whole duration, a lower bound).
    decode_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    decode_tokens: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_usage_hourly_org_hour", "org_id", "hour"),)


class UsageHourlyEndUser(LedgerBase):
    """``usage_hourly`` per end user as well (``""``: the request named none)."""

    __tablename__ = "usage_hourly_end_users"

    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    end_user: Mapped[str] = mapped_column(String(200), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    list_ticks: Mapped[int] = mapped_column(BigInteger, default=0)
    billed_ticks: Mapped[int] = mapped_column(BigInteger, default=0)
    counted_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    rate_limited: Mapped[int] = mapped_column(BigInteger, default=0)
    decode_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    decode_tokens: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_usage_hourly_end_users_org_hour", "org_id", "hour"),)


class PlanRow(LedgerBase):
    __tablename__ = "price_plans"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Ticks per token; all three NULL: list price.
    input_ticks: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cached_ticks: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    output_ticks: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_price_plans_org", "org_id", "starts_at"),)


class BudgetRow(LedgerBase):
    """A monthly spend cap (billed ticks) for an organisation (``key_id`` empty) or one of its keys."""

    __tablename__ = "budgets"

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True, default="")
    monthly_limit_ticks: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StripeCustomer(LedgerBase):
    __tablename__ = "stripe_customers"

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MeterEventRow(LedgerBase):
    __tablename__ = "stripe_meter_events"

    identifier: Mapped[str] = mapped_column(String(100), primary_key=True)
    batch: Mapped[int] = mapped_column(BigInteger)
    org_id: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[str] = mapped_column(String(100))
    meter: Mapped[str] = mapped_column(String(20))  # input, cached, output
    event_name: Mapped[str] = mapped_column(String(100))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    value: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)

    __table_args__ = (
        Index("ix_stripe_meter_events_unsent", "sent_at", "batch"),
        Index("ix_stripe_meter_events_customer", "customer_id", "window_start"),
    )


class DeadLetterRow(LedgerBase):
    """A usage record the ledger could not store, with the reason (see billing/ledger/dead_letters.py)."""

    __tablename__ = "usage_dead_letters"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
