"""The admin API for rate-limit plans: create, list, read, change, delete; put an organisation on a plan;
this replica's limiter counters. Guarded by the admin key; changes reach every replica within the key
cache TTL (``GATEWAY_KEY_CACHE_TTL_S``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from gateway import errors
from gateway.api.deps import get_runtime, require_admin
from gateway.api.input_types import ConcurrencyLimit, Limit, Name, PathId
from gateway.api.schemas_keys import LimitFields, OrgOut
from gateway.runtime import Runtime
from gateway.services.plans import PlanView

router = APIRouter(prefix="/admin", tags=["admin: limits"], dependencies=[Depends(require_admin)])


class PlanIn(LimitFields):
    name: Name
    key_rpm: Limit | None = Field(default=None, description="default cap on each key")
    key_tpm: Limit | None = Field(default=None, description="default cap on each key")
    key_tpd: Limit | None = Field(default=None, description="default cap on each key")
    key_concurrency: ConcurrencyLimit | None = Field(default=None, description="default cap on each key")
    fail_open: bool = Field(default=True, description="while Redis is down: serve with each replica's share of "
                                                      "the limits (true) or answer 503 (false)")
    cache_slo: float | None = Field(default=None, ge=0.0, le=1.0,
                                    description="cache SLO: the cached share of prompt tokens each organisation on "
                                                "the plan should reach (0..1, e.g. 0.85); null: none")


class PlanPatch(BaseModel):
    """Only the fields present change; a null clears a limit."""

    name: Name | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    tpd: Limit | None = None
    concurrency: ConcurrencyLimit | None = None
    key_rpm: Limit | None = None
    key_tpm: Limit | None = None
    key_tpd: Limit | None = None
    key_concurrency: ConcurrencyLimit | None = None
    fail_open: bool | None = None
    cache_slo: float | None = Field(default=None, ge=0.0, le=1.0)


class PlanOut(PlanIn):
    id: str
    object: Literal["plan"] = "plan"
    created_at: datetime

    @classmethod
    def of(cls, p: PlanView) -> PlanOut:
        return cls(id=p.id, name=p.name, rpm=p.rpm, tpm=p.tpm, tpd=p.tpd, concurrency=p.concurrency,
                   key_rpm=p.key_rpm, key_tpm=p.key_tpm, key_tpd=p.key_tpd, key_concurrency=p.key_concurrency,
                   fail_open=p.fail_open, cache_slo=p.cache_slo, created_at=p.created_at)


class PlanList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PlanOut]


class OrgPlanIn(BaseModel):
    plan_id: Name | None = Field(description="plan id or name; null: unlimited")


class LimitStatsOut(BaseModel):
    """This replica's rate-limit counters since it started."""

    checked: int
    admitted: int
    refused_requests: int
    refused_tokens: int
    refused_concurrency: int
    local_fallbacks: int
    refused_unavailable: int


@router.post("/plans", status_code=201, response_model=PlanOut)
async def create_plan(body: PlanIn, rt: Runtime = Depends(get_runtime)) -> PlanOut:
    return PlanOut.of(await rt.plans.create(**body.model_dump()))


@router.get("/plans", response_model=PlanList)
async def list_plans(rt: Runtime = Depends(get_runtime)) -> PlanList:
    return PlanList(data=[PlanOut.of(p) for p in await rt.plans.list()])


@router.get("/plans/{plan_id}", response_model=PlanOut)
async def get_plan(plan_id: PathId, rt: Runtime = Depends(get_runtime)) -> PlanOut:
    return PlanOut.of(await rt.plans.get(plan_id))


@router.patch("/plans/{plan_id}", response_model=PlanOut)
async def update_plan(plan_id: PathId, body: PlanPatch, rt: Runtime = Depends(get_runtime)) -> PlanOut:
    changes = body.model_dump(exclude_unset=True)
    if changes.get("fail_open", True) is None or ("name" in changes and changes["name"] is None):
        raise errors.invalid_request("name and fail_open cannot be null")
    return PlanOut.of(await rt.plans.update(plan_id, changes))


@router.delete("/plans/{plan_id}")
async def delete_plan(plan_id: PathId, rt: Runtime = Depends(get_runtime)) -> dict[str, object]:
    await rt.plans.delete(plan_id)
    return {"id": plan_id, "object": "plan", "deleted": True}


@router.put("/orgs/{org_id}/plan", response_model=OrgOut)
async def set_org_plan(org_id: PathId, body: OrgPlanIn, rt: Runtime = Depends(get_runtime)) -> OrgOut:
    await rt.plans.assign(org_id, body.plan_id)
    return OrgOut.of(await rt.keys.get_org(org_id))


@router.get("/limits/stats", response_model=LimitStatsOut)
async def limit_stats(rt: Runtime = Depends(get_runtime)) -> LimitStatsOut:
    s = rt.limiter.stats
    return LimitStatsOut(checked=s.checked, admitted=s.admitted, refused_requests=s.refused_requests,
                         refused_tokens=s.refused_tokens, refused_concurrency=s.refused_concurrency,
                         local_fallbacks=s.local_fallbacks, refused_unavailable=s.refused_unavailable)
