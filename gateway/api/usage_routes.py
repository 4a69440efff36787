"""The usage API: ``GET /v1/usage`` (an API key: its own organisation only), ``GET /v1/usage/me`` and
``GET /admin/usage`` (the admin key: one organisation or all). Served from the hourly rollups by
:class:`gateway.services.usage.UsageService`.

Parameters: ``start`` and ``end`` (ISO 8601; naive means UTC; default the last 7 days; the range is
widened to whole hours), ``bucket`` (``hour`` or ``day``), ``group_by`` (``key``, ``model`` or
``end_user``). Money is given both as exact decimal dollar strings and as integer ticks (1 USD = 10^10).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from gateway.api.deps import get_runtime, require_admin, require_api_key
from gateway.api.input_types import Moment, QueryId
from gateway.pipeline.principal import Principal
from gateway.runtime import Runtime
from gateway.services.usage import Sums, UsageQuery, UsageReport, UsageService, normalise_range


class UsageFigures(BaseModel):
    input_tokens: int = Field(description="prompt tokens not served from the cache")
    cached_input_tokens: int
    output_tokens: int = Field(description="reasoning tokens included")
    reasoning_tokens: int
    requests: int = Field(description="requests that generated tokens (ledger rows)")
    errors: int = Field(description="of those, requests that did not end ok (cut, upstream error, client gone)")
    rate_limited: int = Field(description="requests refused with 429 by a rate limit or a spend cap")
    list_cost_usd: str
    billed_cost_usd: str
    list_cost_ticks: int
    billed_cost_ticks: int
    cached_share: float | None = Field(description="cached share of prompt tokens; null without prompt tokens")
    mean_output_tokens_per_second: float | None = Field(
        description="output tokens over decode time (streams: after the first byte), ok requests only")

    @classmethod
    def of(cls, sums: Sums) -> UsageFigures:
        return cls(**sums.view())


class UsageBucket(UsageFigures):
    start: datetime


class UsageGroup(UsageFigures):
    group: str = Field(description="the key id, model or end user ('' when none was given)")
    name: str = Field(description="the key's name, the model, or the end user ('(none)' when none)")


class UsageOut(BaseModel):
    object: Literal["usage"] = "usage"
    bucket: Literal["hour", "day"]
    group_by: Literal["key", "model", "end_user"]
    org_id: str | None
    start: datetime
    end: datetime
    data: list[UsageBucket]
    groups: list[UsageGroup]
    totals: UsageFigures
    cache_slo: float | None = Field(default=None, description="the cache SLO of the organisation's plan: the cached "
                                    "share of prompt tokens it should reach (null: none, or all organisations)")
    cache_slo_met: bool | None = Field(default=None, description="totals.cached_share >= cache_slo (null: no SLO or "
                                       "no prompt tokens)")

    @classmethod
    def of(cls, report: UsageReport, cache_slo: float | None = None) -> UsageOut:
        q = report.query
        totals = UsageFigures.of(report.totals)
        met = None if cache_slo is None or totals.cached_share is None else totals.cached_share >= cache_slo
        return cls(bucket=q.bucket, group_by=q.group_by, org_id=q.org_id, start=q.start, end=q.end,
                   data=[UsageBucket(start=start, **sums.view()) for start, sums in report.buckets],
                   groups=[UsageGroup(group=group, name=name, **sums.view()) for group, name, sums in report.groups],
                   totals=totals, cache_slo=cache_slo, cache_slo_met=met)


class UsageMe(BaseModel):
    object: Literal["usage.me"] = "usage.me"
    org_id: str
    org_name: str
    key_id: str


BucketParam = Query("day", pattern="^(hour|day)$")
GroupParam = Query("key", pattern="^(key|model|end_user)$")

router = APIRouter(tags=["usage"])


async def _report(rt: Runtime, org_id: str | None, start: datetime | None, end: datetime | None, bucket: str,
                  group_by: str) -> UsageOut:
    start_, end_ = normalise_range(start, end, "hour" if bucket == "hour" else "day")  # RangeError: 400
    query = UsageQuery(start_, end_, "hour" if bucket == "hour" else "day",
                       "model" if group_by == "model" else "end_user" if group_by == "end_user" else "key", org_id)
    slo = await rt.plans.org_cache_slo(org_id) if org_id else None
    return UsageOut.of(await UsageService(rt.usage_sessions).report(query), slo)


@router.get("/v1/usage", response_model=UsageOut)
async def own_usage(start: Moment | None = None, end: Moment | None = None, bucket: str = BucketParam,
                    group_by: str = GroupParam, p: Principal = Depends(require_api_key),
                    rt: Runtime = Depends(get_runtime)) -> UsageOut:
    """Usage of the caller's own organisation (never another's: the organisation comes from the key)."""
    return await _report(rt, p.org_id, start, end, bucket, group_by)


@router.get("/v1/usage/me", response_model=UsageMe)
async def usage_me(p: Principal = Depends(require_api_key)) -> UsageMe:
    """The organisation the presented key belongs to (the dashboard's sign-in check)."""
    return UsageMe(org_id=p.org_id, org_name=p.org_name, key_id=p.key_id)


@router.get("/admin/usage", response_model=UsageOut, dependencies=[Depends(require_admin)])
async def admin_usage(start: Moment | None = None, end: Moment | None = None, bucket: str = BucketParam,
                      group_by: str = GroupParam, org_id: QueryId = None,
                      rt: Runtime = Depends(get_runtime)) -> UsageOut:
    """Usage of one organisation (``org_id``) or of all of them."""
    return await _report(rt, org_id or None, start, end, bucket, group_by)
