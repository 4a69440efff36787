"""Billing operations shared by the admin API, the CLI and the background tasks: price plans, budgets,
Stripe customers, usage summaries, the Stripe sync and reconciliation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.ledger import billing_queries as ledger_config
from billing.ledger.ledger_tables import UsageHourly
from billing.money import PlanBook, PriceBook, PricePlan, price_book_from
from billing.stripe.reconcile import ReconRow, reconcile
from billing.stripe.sync import MeterNames, MeterSync, SyncReport, connect
from gateway.config import Settings
from gateway.services.service_errors import NotConfigured


@dataclass(frozen=True, slots=True)
class UsageSummary:
    hour: datetime
    key_id: str
    model: str
    requests: int
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    list_ticks: int
    billed_ticks: int
    counted_requests: int


def meter_names(settings: Settings) -> MeterNames:
    return MeterNames(settings.stripe_meter_input, settings.stripe_meter_cached, settings.stripe_meter_output)


class StripeNotConfigured(NotConfigured):
    """GATEWAY_STRIPE_API_KEY is not set."""


def load_price_book(path: str) -> PriceBook | None:
    """The list prices of ``GATEWAY_PRICE_BOOK_FILE`` (read once, at start), or None for the built-in."""
    if not path:
        return None
    data = yaml.safe_load(Path(path).read_text()) or {}
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ValueError(f"{path}: expected a mapping 'models: {{NAME: {{input, cached, output}}}}'")
    return price_book_from(models)


class BillingService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._prices = load_price_book(settings.price_book_file)

    async def plan_book(self) -> PlanBook:
        async with self._sessions() as s:
            return await ledger_config.load_plan_book(s, self._prices)

    async def add_plan(self, plan: PricePlan) -> ledger_config.StoredPlan:
        async with self._sessions() as s:
            return await ledger_config.add_plan(s, plan)

    async def list_plans(self, org_id: str) -> list[ledger_config.StoredPlan]:
        async with self._sessions() as s:
            return await ledger_config.list_plans(s, org_id)

    async def delete_plan(self, plan_id: str) -> bool:
        async with self._sessions() as s:
            return await ledger_config.delete_plan(s, plan_id)

    async def set_budget(self, org_id: str, key_id: str, limit_ticks: int | None) -> None:
        async with self._sessions() as s:
            await ledger_config.set_budget(s, org_id, key_id, limit_ticks)

    async def budgets(self, org_id: str, at: datetime) -> tuple[dict[str, int], dict[str, int]]:
        """``(caps, month-to-date spend)``, each keyed ``""`` for the organisation and by key id."""
        async with self._sessions() as s:
            caps = await ledger_config.budgets_of(s, org_id)
            spend = await ledger_config.month_spend(s, org_id, [k for k in caps if k], at)
        return caps, spend

    async def set_customer(self, org_id: str, customer_id: str | None) -> None:
        async with self._sessions() as s:
            await ledger_config.set_customer(s, org_id, customer_id)

    async def customers(self) -> dict[str, str]:
        async with self._sessions() as s:
            return await ledger_config.customers(s)

    async def usage(self, org_id: str, start: datetime, end: datetime) -> list[UsageSummary]:
        """The hourly rollups of an organisation (the dashboard query: one index range scan)."""
        query = (select(UsageHourly).where(UsageHourly.org_id == org_id, UsageHourly.hour >= start,
                                           UsageHourly.hour < end)
                 .order_by(UsageHourly.hour, UsageHourly.key_id, UsageHourly.model))
        async with self._sessions() as s:
            rows = (await s.execute(query)).scalars()
            return [UsageSummary(ledger_config.aware(r.hour), r.key_id, r.model, r.requests, r.prompt_tokens,
                                 r.cached_tokens, r.output_tokens, r.reasoning_tokens, r.list_ticks, r.billed_ticks,
                                 r.counted_requests) for r in rows]

    async def org_totals(self, org_id: str, start: datetime, end: datetime) -> tuple[int, int, int]:
        """``(requests, list ticks, billed ticks)`` of an organisation between two moments (by hour)."""
        query = (select(func.coalesce(func.sum(UsageHourly.requests), 0),
                        func.coalesce(func.sum(UsageHourly.list_ticks), 0),
                        func.coalesce(func.sum(UsageHourly.billed_ticks), 0))
                 .where(UsageHourly.org_id == org_id, UsageHourly.hour >= start, UsageHourly.hour < end))
        async with self._sessions() as s:
            requests, listed, billed = (await s.execute(query)).one()
        return int(requests), int(listed), int(billed)

    def _require_stripe(self) -> None:
        if not self._settings.stripe_api_key:
            raise StripeNotConfigured("Stripe is not configured: set GATEWAY_STRIPE_API_KEY (and "
                                      "GATEWAY_STRIPE_API_BASE for the test server)")

    async def stripe_sync(self) -> SyncReport:
        self._require_stripe()
        st = self._settings
        conn = connect(st.stripe_api_key, st.stripe_api_base)
        try:
            sync = MeterSync(self._sessions, conn.client, meter_names(st), window_s=st.stripe_window_s,
                             settle_delay_s=st.stripe_settle_delay_s, max_calls_per_s=st.stripe_max_calls_per_s)
            return await sync.run()
        finally:
            await conn.aclose()

    async def stripe_reconcile(self, start: datetime | None = None, end: datetime | None = None) -> list[ReconRow]:
        self._require_stripe()
        conn = connect(self._settings.stripe_api_key, self._settings.stripe_api_base)
        try:
            return await reconcile(self._sessions, conn.client, meter_names(self._settings), start, end)
        finally:
            await conn.aclose()
