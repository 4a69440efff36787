"""Per customer, meter and day: what the ledger holds, what the sync delivered, what Stripe has.

A day matches when all three agree. A difference between ledger and delivered is usage not yet
synced (or an event still failing); between delivered and Stripe, an event Stripe lost or counted
twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.ledger.billing_queries import customers
from billing.ledger.ledger_tables import MeterEventRow, UsageRow
from billing.stripe.sync import METERS, MeterNames, window_expr

if TYPE_CHECKING:  # imported where used (see billing/stripe/sync.py)
    import stripe

DAY_S = 86_400


async def _patient(call: Callable[[], Awaitable[Any]], attempts: int = 6, backoff_s: float = 0.25) -> Any:
    """A read from Stripe, retried with backoff on 429, 5xx and connection errors."""
    import stripe

    for attempt in range(attempts - 1):
        try:
            return await call()
        except (stripe.RateLimitError, stripe.APIError, stripe.APIConnectionError):
            await asyncio.sleep(backoff_s * 2**attempt)
    return await call()


@dataclass(frozen=True, slots=True)
class ReconRow:
    customer_id: str
    org_id: str
    meter: str
    day: date
    ledger: int
    sent: int
    stripe: int

    @property
    def matches(self) -> bool:
        return self.ledger == self.sent == self.stripe


def day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def _ledger(s: AsyncSession, start: datetime, end: datetime) -> dict[tuple[str, int, str], int]:
    day = window_expr(s.get_bind().dialect.name, UsageRow.started_at, DAY_S).label("day")
    rows = await s.execute(
        select(UsageRow.org_id, day, func.sum(UsageRow.prompt_tokens - UsageRow.cached_tokens),
               func.sum(UsageRow.cached_tokens), func.sum(UsageRow.output_tokens))
        .where(UsageRow.started_at >= start, UsageRow.started_at < end, UsageRow.billed_ticks > 0)
        .group_by(UsageRow.org_id, day))
    totals: dict[tuple[str, int, str], int] = {}
    for org_id, day_s, *values in rows.all():
        for meter, value in zip(METERS, values, strict=True):
            totals[(org_id, int(day_s), meter)] = int(value or 0)
    return totals


async def _sent(s: AsyncSession, start: datetime, end: datetime) -> dict[tuple[str, int, str], int]:
    day = window_expr(s.get_bind().dialect.name, MeterEventRow.window_start, DAY_S).label("day")
    rows = await s.execute(
        select(MeterEventRow.org_id, day, MeterEventRow.meter, func.sum(MeterEventRow.value))
        .where(MeterEventRow.window_start >= start, MeterEventRow.window_start < end,
               MeterEventRow.sent_at.is_not(None))
        .group_by(MeterEventRow.org_id, day, MeterEventRow.meter))
    return {(org, int(d), meter): int(v or 0) for org, d, meter, v in rows.all()}


async def _stripe(client: stripe.StripeClient, names: MeterNames, mapping: dict[str, str], start: datetime,
                  end: datetime) -> dict[tuple[str, int, str], int]:
    meters = await _patient(client.v1.billing.meters.list_async)
    ids = {m.event_name: m.id for m in meters.data}
    totals: dict[tuple[str, int, str], int] = {}
    for org_id, customer in mapping.items():
        for meter in METERS:
            meter_id = ids.get(names.of(meter))
            if meter_id is None:
                continue
            params: dict[str, Any] = {"customer": customer, "start_time": int(start.timestamp()),
                                      "end_time": int(end.timestamp()), "value_grouping_window": "day"}
            summaries = await _patient(lambda m=meter_id, p=params: client.v1.billing.meters.event_summaries
                                       .list_async(m, p))  # type: ignore[misc]
            for summary in summaries.data:
                if summary.aggregated_value:
                    totals[(org_id, int(summary.start_time), meter)] = int(summary.aggregated_value)
    return totals


async def reconcile(sessions: async_sessionmaker[AsyncSession], client: stripe.StripeClient,
                    names: MeterNames | None = None, start: datetime | None = None,
                    end: datetime | None = None) -> list[ReconRow]:
    """Compare the three sides over whole UTC days from ``start`` (default: 30 days ago) to ``end``."""
    names = names or MeterNames()
    now = datetime.now(UTC)
    start = day_start(start or now - timedelta(days=30))
    end = day_start(end or now) + timedelta(days=1) if end is None or end != day_start(end) else end
    async with sessions() as s:
        mapping = await customers(s)
        ledger = await _ledger(s, start, end)
        sent = await _sent(s, start, end)
    remote = await _stripe(client, names, mapping, start, end)
    keys = {k for k in (*ledger, *sent, *remote) if k[0] in mapping}
    rows = [ReconRow(mapping[org], org, meter, datetime.fromtimestamp(day_s, UTC).date(),
                     ledger.get((org, day_s, meter), 0), sent.get((org, day_s, meter), 0),
                     remote.get((org, day_s, meter), 0))
            for org, day_s, meter in keys]
    return sorted(rows, key=lambda r: (r.customer_id, r.day, METERS.index(r.meter)))
