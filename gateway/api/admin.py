"""The admin API: organisations, API keys and workers. Guarded by the admin key.

Plans, limits and key rotation are in ``admin_limits.py``; the models in ``admin_models.py``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from gateway import errors
from gateway.api.admin_models import CreatedKeyOut, KeyList, KeyOut, LimitFields, OrgList, OrgOut, RevokedKeyOut
from gateway.api.deps import get_runtime, require_admin
from gateway.runtime import Runtime
from gateway.services.keys import Conflict, KeyLimits, NotFound

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class OrgIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class KeyIn(LimitFields):
    org_id: str = Field(min_length=1)
    name: str = Field(default="default", min_length=1, max_length=200)
    expires_at: datetime | None = None
    manage_keys: bool = Field(default=False, description="may manage its organisation's keys via /v1/organization")


class WorkerIn(BaseModel):
    url: str = Field(pattern=r"^https?://", max_length=500)


@router.post("/orgs", status_code=201, response_model=OrgOut)
async def create_org(body: OrgIn, rt: Runtime = Depends(get_runtime)) -> OrgOut:
    try:
        return OrgOut.of(await rt.keys.create_org(body.name))
    except Conflict as exc:
        raise errors.GatewayError(409, str(exc), code="conflict") from None


@router.get("/orgs", response_model=OrgList)
async def list_orgs(rt: Runtime = Depends(get_runtime)) -> OrgList:
    return OrgList(data=[OrgOut.of(o) for o in await rt.keys.list_orgs()])


@router.post("/keys", status_code=201, response_model=CreatedKeyOut)
async def create_key(body: KeyIn, rt: Runtime = Depends(get_runtime)) -> CreatedKeyOut:
    try:
        created = await rt.keys.create_key(body.org_id, body.name, body.expires_at,
                                           limits=KeyLimits(body.rpm, body.tpm, body.tpd, body.concurrency),
                                           manage_keys=body.manage_keys)
    except NotFound as exc:
        raise errors.not_found(str(exc)) from None
    return CreatedKeyOut(**KeyOut.of(created.view).model_dump(), key=created.key)


@router.get("/keys", response_model=KeyList)
async def list_keys(org_id: str | None = None, rt: Runtime = Depends(get_runtime)) -> KeyList:
    return KeyList(data=[KeyOut.of(k) for k in await rt.keys.list_keys(org_id)])


@router.delete("/keys/{key_id}", response_model=RevokedKeyOut)
async def revoke_key(key_id: str, rt: Runtime = Depends(get_runtime)) -> RevokedKeyOut:
    try:
        view = await rt.keys.revoke_key(key_id)
    except NotFound as exc:
        raise errors.not_found(str(exc)) from None
    rt.key_cache.forget(key_id)
    return RevokedKeyOut(**KeyOut.of(view).model_dump())


@router.post("/workers", status_code=201)
async def add_worker(body: WorkerIn, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return (await rt.workers.add(body.url)).describe()


@router.get("/workers")
async def list_workers(rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return {"object": "list", "data": [w.describe() for w in rt.pool.all()]}


@router.delete("/workers/{worker_id}")
async def remove_worker(worker_id: str, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    try:
        await rt.workers.remove(worker_id)
    except NotFound as exc:
        raise errors.not_found(str(exc)) from None
    return {"id": worker_id, "deleted": True}
