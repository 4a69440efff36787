"""Billing configuration in SQL: the queries for price plans, budgets, Stripe customers and month-to-date spend.

Read by the admin API and the CLI, by the periodic plan refresh and by key verification (budgets).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.ledger.ledger_tables import BudgetRow, PlanRow, StripeCustomer, UsageHourly
from billing.money import PlanBook, PriceBook, PricePlan, Rates


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def month_start(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def plan_of(row: PlanRow) -> PricePlan:
    rates = None
    if row.input_ticks is not None and row.cached_ticks is not None and row.output_ticks is not None:
        rates = Rates(row.input_ticks, row.cached_ticks, row.output_ticks)
    return PricePlan(row.name, row.org_id, aware(row.starts_at), aware(row.ends_at) if row.ends_at else None, rates,
                     row.model)


async def load_plan_book(session: AsyncSession, prices: PriceBook | None = None) -> PlanBook:
    rows = (await session.execute(select(PlanRow))).scalars()
    return PlanBook(prices, [plan_of(r) for r in rows])


@dataclass(frozen=True, slots=True)
class StoredPlan:
    id: str
    plan: PricePlan
    created_at: datetime


async def add_plan(session: AsyncSession, plan: PricePlan) -> StoredPlan:
    rates = plan.rates
    row = PlanRow(id="plan_" + uuid.uuid4().hex[:24], org_id=plan.org_id, name=plan.name, model=plan.model,
                  input_ticks=rates.input if rates else None, cached_ticks=rates.cached if rates else None,
                  output_ticks=rates.output if rates else None, starts_at=plan.starts_at, ends_at=plan.ends_at,
                  created_at=utcnow())
    session.add(row)
    await session.commit()
    return StoredPlan(row.id, plan, row.created_at)


async def list_plans(session: AsyncSession, org_id: str) -> list[StoredPlan]:
    rows = (await session.execute(select(PlanRow).where(PlanRow.org_id == org_id)
                                  .order_by(PlanRow.starts_at))).scalars()
    return [StoredPlan(r.id, plan_of(r), aware(r.created_at)) for r in rows]


async def delete_plan(session: AsyncSession, plan_id: str) -> bool:
    result = await session.execute(delete(PlanRow).where(PlanRow.id == plan_id))
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_budget(session: AsyncSession, org_id: str, key_id: str, limit_ticks: int | None) -> None:
    """Set (or with None remove) the monthly cap of an organisation (``key_id`` "") or of one key."""
    row = await session.get(BudgetRow, (org_id, key_id))
    if limit_ticks is None:
        if row is not None:
            await session.delete(row)
    elif row is None:
        session.add(BudgetRow(org_id=org_id, key_id=key_id, monthly_limit_ticks=limit_ticks, updated_at=utcnow()))
    else:
        row.monthly_limit_ticks = limit_ticks
        row.updated_at = utcnow()
    await session.commit()


async def budgets_of(session: AsyncSession, org_id: str) -> dict[str, int]:
    """Caps of an organisation: ``{"": org cap, key_id: key cap, ...}``."""
    rows = (await session.execute(select(BudgetRow).where(BudgetRow.org_id == org_id))).scalars()
    return {r.key_id: r.monthly_limit_ticks for r in rows}


async def month_spend(session: AsyncSession, org_id: str, key_ids: Sequence[str], at: datetime) -> dict[str, int]:
    """Billed ticks since the start of ``at``'s month, from the hourly rollups: ``{"": org, key_id: ...}``."""
    start = month_start(at)
    query = (select(UsageHourly.key_id, func.sum(UsageHourly.billed_ticks))
             .where(UsageHourly.org_id == org_id, UsageHourly.hour >= start).group_by(UsageHourly.key_id))
    per_key = {k: int(v or 0) for k, v in (await session.execute(query)).all()}
    spend = {"": sum(per_key.values())}
    for key_id in key_ids:
        spend[key_id] = per_key.get(key_id, 0)
    return spend


async def set_customer(session: AsyncSession, org_id: str, customer_id: str | None) -> None:
    row = await session.get(StripeCustomer, org_id)
    if customer_id is None:
        if row is not None:
            await session.delete(row)
    elif row is None:
        session.add(StripeCustomer(org_id=org_id, customer_id=customer_id, created_at=utcnow()))
    else:
        row.customer_id = customer_id
    await session.commit()


async def customers(session: AsyncSession) -> dict[str, str]:
    """``{org_id: stripe customer id}``."""
    rows = (await session.execute(select(StripeCustomer))).scalars()
    return {r.org_id: r.customer_id for r in rows}
