"""The admin API for rate limits: plans, an organisation's plan, a key's own limits, key rotation, and
this replica's limiter counters. Guarded by the admin key; changes reach every replica within the key
cache TTL (``GATEWAY_KEY_CACHE_TTL_S``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from gateway import errors
from gateway.api.admin_models import (
    CreatedKeyOut,
    KeyOut,
    KeyPatch,
    LimitStatsOut,
    OrgOut,
    OrgPlanIn,
    PlanIn,
    PlanList,
    PlanOut,
    PlanPatch,
    RotateIn,
)
from gateway.api.deps import get_runtime, require_admin
from gateway.runtime import Runtime
from gateway.services.keys import Conflict, NotFound
from gateway.services.plans import PlanConflict, PlanNotFound, PlanService

router = APIRouter(prefix="/admin", tags=["admin: limits"], dependencies=[Depends(require_admin)])


def _plans(rt: Runtime) -> PlanService:
    assert rt.plans is not None
    return rt.plans


def service_error(exc: Exception) -> errors.GatewayError:
    """The HTTP error for a service exception (shared with the partner API)."""
    if isinstance(exc, NotFound | PlanNotFound):
        return errors.not_found(str(exc))
    if isinstance(exc, Conflict | PlanConflict):
        return errors.GatewayError(409, str(exc), code="conflict")
    return errors.invalid_request(str(exc), param=getattr(exc, "param", None))


_SERVICE_ERRORS = (NotFound, PlanNotFound, Conflict, PlanConflict, ValueError)


@router.post("/plans", status_code=201, response_model=PlanOut)
async def create_plan(body: PlanIn, rt: Runtime = Depends(get_runtime)) -> PlanOut:
    try:
        return PlanOut.of(await _plans(rt).create(**body.model_dump()))
    except _SERVICE_ERRORS as exc:
        raise service_error(exc) from None


@router.get("/plans", response_model=PlanList)
async def list_plans(rt: Runtime = Depends(get_runtime)) -> PlanList:
    return PlanList(data=[PlanOut.of(p) for p in await _plans(rt).list()])


@router.get("/plans/{plan_id}", response_model=PlanOut)
async def get_plan(plan_id: str, rt: Runtime = Depends(get_runtime)) -> PlanOut:
    try:
        return PlanOut.of(await _plans(rt).get(plan_id))
    except _SERVICE_ERRORS as exc:
        raise service_error(exc) from None


@router.patch("/plans/{plan_id}", response_model=PlanOut)
async def update_plan(plan_id: str, body: PlanPatch, rt: Runtime = Depends(get_runtime)) -> PlanOut:
    changes = body.model_dump(exclude_unset=True)
    if changes.get("fail_open", True) is None or ("name" in changes and changes["name"] is None):
        raise errors.invalid_request("name and fail_open cannot be null")
    try:
        return PlanOut.of(await _plans(rt).update(plan_id, changes))
    except _SERVICE_ERRORS as exc:
        raise service_error(exc) from None


@router.delete("/plans/{plan_id}")
async def delete_plan(plan_id: str, rt: Runtime = Depends(get_runtime)) -> dict[str, object]:
    try:
        await _plans(rt).delete(plan_id)
    except _SERVICE_ERRORS as exc:
        raise service_error(exc) from None
    return {"id": plan_id, "object": "plan", "deleted": True}


@router.put("/orgs/{org_id}/plan", response_model=OrgOut)
async def set_org_plan(org_id: str, body: OrgPlanIn, rt: Runtime = Depends(get_runtime)) -> OrgOut:
    try:
        await _plans(rt).assign(org_id, body.plan_id)
        return OrgOut.of(await rt.keys.get_org(org_id))
    except _SERVICE_ERRORS as exc:
        raise service_error(exc) from None


@router.get("/orgs/{org_id}", response_model=OrgOut)
async def get_org(org_id: str, rt: Runtime = Depends(get_runtime)) -> OrgOut:
    try:
        return OrgOut.of(await rt.keys.get_org(org_id))
    except _SERVICE_ERRORS as exc:
        raise service_error(exc) from None


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: str, rt: Runtime = Depends(get_runtime)) -> KeyOut:
    try:
        return KeyOut.of(await rt.keys.get_key(key_id))
    except _SERVICE_ERRORS as exc:
        raise service_error(exc) from None


@router.patch("/keys/{key_id}", response_model=KeyOut)
async def update_key(key_id: str, body: KeyPatch, rt: Runtime = Depends(get_runtime)) -> KeyOut:
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        raise errors.invalid_request("name cannot be null", param="name")
    try:
        view = await rt.keys.update_key(key_id, changes)
    except _SERVICE_ERRORS as exc:
        raise service_error(exc) from None
    rt.key_cache.forget(key_id)
    return KeyOut.of(view)


@router.post("/keys/{key_id}/rotate", status_code=201, response_model=CreatedKeyOut)
async def rotate_key(key_id: str, body: RotateIn | None = None, rt: Runtime = Depends(get_runtime)) -> CreatedKeyOut:
    """A new secret for the same key (name, organisation, limits); the old one stays valid for ``overlap_s``."""
    try:
        created = await rt.keys.rotate_key(key_id, (body or RotateIn()).overlap_s)
    except _SERVICE_ERRORS as exc:
        raise service_error(exc) from None
    rt.key_cache.forget(key_id)
    return CreatedKeyOut(**KeyOut.of(created.view).model_dump(), key=created.key)


@router.get("/limits/stats", response_model=LimitStatsOut)
async def limit_stats(rt: Runtime = Depends(get_runtime)) -> LimitStatsOut:
    assert rt.limiter is not None
    s = rt.limiter.stats
    return LimitStatsOut(checked=s.checked, admitted=s.admitted, refused_requests=s.refused_requests,
                         refused_tokens=s.refused_tokens, refused_concurrency=s.refused_concurrency,
                         local_fallbacks=s.local_fallbacks, refused_unavailable=s.refused_unavailable)
