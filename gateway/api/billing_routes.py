"""The admin API for billing: price plans, spend caps, Stripe customers and hourly usage and cost.
Guarded by the admin key.

Money is exact: budgets as decimal dollar strings (``"100.00"``) or integer ticks (1 USD = 10^10
ticks); plan rates in ticks per token (the list price of the reference model is 2,000 / 200 /
15,000 for uncached input / cached input / output).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator

from billing.ledger.billing_queries import StoredPlan, month_start
from billing.money import FREE, PricePlan, Rates, format_usd, usd_to_ticks
from gateway import errors
from gateway.api.deps import get_runtime, require_admin
from gateway.api.input_types import KeyIdText, Moment, Name, PathId
from gateway.runtime import Runtime

router = APIRouter(prefix="/admin", tags=["billing"], dependencies=[Depends(require_admin)])

MAX_BUDGET_TICKS = 10**18  # $100,000,000 a month


class RatesIn(BaseModel):
    input: int = Field(ge=0, le=10**12)
    cached: int = Field(ge=0, le=10**12)
    output: int = Field(ge=0, le=10**12)


class PricePlanIn(BaseModel):
    name: Name
    starts_at: Moment
    ends_at: Moment | None = None
    model: Name | None = None
    # Exactly one of: free (meter every token, bill 0), rates (ticks per token), neither (list price).
    free: bool = False
    rates: RatesIn | None = None

    @model_validator(mode="after")
    def _check(self) -> PricePlanIn:
        if self.free and self.rates is not None:
            raise ValueError("give either free or rates, not both")
        for name in ("starts_at", "ends_at"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                setattr(self, name, moment.replace(tzinfo=UTC))
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


def _budget_usd(text: str) -> str:
    """A decimal dollar budget (``"250.00"``): exact, not negative, at most MAX_BUDGET_TICKS."""
    ticks = usd_to_ticks(text)  # ValueError: not an exact dollar amount
    if ticks < 0:
        raise ValueError("a budget cannot be negative")
    if ticks > MAX_BUDGET_TICKS:
        raise ValueError(f"a budget can be at most {format_usd(MAX_BUDGET_TICKS)} USD")
    return text


class BudgetIn(BaseModel):
    # A decimal dollar string ("250.00") or integer ticks; null removes the cap.
    monthly_limit_usd: Annotated[str, StringConstraints(max_length=30), AfterValidator(_budget_usd)] | None = None
    monthly_limit_ticks: int | None = Field(default=None, ge=0, le=MAX_BUDGET_TICKS)
    key_id: KeyIdText = ""  # empty: the organisation's cap

    def ticks(self) -> int | None:
        if self.monthly_limit_usd is not None:
            return usd_to_ticks(self.monthly_limit_usd)
        return self.monthly_limit_ticks


class CustomerIn(BaseModel):
    customer_id: str | None = Field(default=None, pattern=r"^cus_[A-Za-z0-9_]+$", max_length=100)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _plan(stored: StoredPlan) -> dict[str, Any]:
    p = stored.plan
    return {"id": stored.id, "object": "price_plan", "org_id": p.org_id, "name": p.name, "model": p.model,
            "starts_at": p.starts_at.isoformat(), "ends_at": p.ends_at.isoformat() if p.ends_at else None,
            "billing": "list" if p.rates is None else "free" if p.rates == FREE else "custom",
            "rates": None if p.rates is None else {"input": p.rates.input, "cached": p.rates.cached,
                                                   "output": p.rates.output}}


@router.post("/orgs/{org_id}/price-plans", status_code=201)
async def add_plan(org_id: PathId, body: PricePlanIn, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    await rt.keys.get_org(org_id)  # NotFound: 404
    rates = FREE if body.free else Rates(body.rates.input, body.rates.cached, body.rates.output) if body.rates \
        else None
    stored = await rt.billing.service.add_plan(PricePlan(body.name, org_id, body.starts_at, body.ends_at, rates,
                                                         body.model))
    await rt.billing.refresh_plans()  # this replica at once; the others within the refresh interval
    return _plan(stored)


@router.get("/orgs/{org_id}/price-plans")
async def list_plans(org_id: PathId, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return {"object": "list", "data": [_plan(p) for p in await rt.billing.service.list_plans(org_id)]}


@router.delete("/price-plans/{plan_id}")
async def delete_plan(plan_id: PathId, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    if not await rt.billing.service.delete_plan(plan_id):
        raise errors.not_found(f"price plan {plan_id!r} not found")
    await rt.billing.refresh_plans()
    return {"id": plan_id, "deleted": True}


async def _budget_view(rt: Runtime, org_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    caps, spend = await rt.billing.service.budgets(org_id, now)

    def one(key_id: str) -> dict[str, Any]:
        return {"key_id": key_id or None, "monthly_limit_ticks": caps[key_id],
                "monthly_limit_usd": format_usd(caps[key_id]), "month_to_date_ticks": spend.get(key_id, 0),
                "month_to_date_usd": format_usd(spend.get(key_id, 0))}

    return {"object": "budget", "org_id": org_id, "month": now.strftime("%Y-%m"),
            "organization": one("") if "" in caps else None,
            "keys": [one(k) for k in sorted(caps) if k]}


@router.put("/orgs/{org_id}/budget")
async def set_budget(org_id: PathId, body: BudgetIn, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    await rt.keys.get_org(org_id)
    if body.key_id and not any(k.id == body.key_id for k in await rt.keys.list_keys(org_id)):
        raise errors.not_found(f"key {body.key_id!r} not found in organisation {org_id!r}")
    await rt.billing.service.set_budget(org_id, body.key_id, body.ticks())
    return await _budget_view(rt, org_id)


@router.get("/orgs/{org_id}/budget")
async def get_budget(org_id: PathId, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return await _budget_view(rt, org_id)


@router.put("/orgs/{org_id}/stripe")
async def set_stripe_customer(org_id: PathId, body: CustomerIn, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    await rt.keys.get_org(org_id)
    await rt.billing.service.set_customer(org_id, body.customer_id)
    return {"object": "stripe_customer", "org_id": org_id, "customer_id": body.customer_id}


@router.get("/orgs/{org_id}/usage")
async def usage(org_id: PathId, start: Moment | None = None, end: Moment | None = None,
                rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Hourly usage and cost of an organisation (default: this month so far)."""
    now = datetime.now(UTC)
    start = _utc(start) if start else month_start(now)
    end = _utc(end) if end else now + timedelta(hours=1)
    rows = await rt.billing.service.usage(org_id, start, end)
    billed = sum(r.billed_ticks for r in rows)
    listed = sum(r.list_ticks for r in rows)
    return {"object": "usage", "org_id": org_id, "start": start.isoformat(), "end": end.isoformat(),
            "requests": sum(r.requests for r in rows), "list_ticks": listed, "billed_ticks": billed,
            "list_usd": format_usd(listed), "billed_usd": format_usd(billed),
            "data": [{"hour": r.hour.isoformat(), "key_id": r.key_id, "model": r.model, "requests": r.requests,
                      "prompt_tokens": r.prompt_tokens, "cached_tokens": r.cached_tokens,
                      "output_tokens": r.output_tokens, "reasoning_tokens": r.reasoning_tokens,
                      "list_ticks": r.list_ticks, "billed_ticks": r.billed_ticks,
                      "counted_requests": r.counted_requests} for r in rows]}
