"""The admin API: organisations, API keys and workers. Guarded by the admin key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from gateway import errors
from gateway.api.deps import get_runtime, require_admin
from gateway.runtime import Runtime
from gateway.services.keys import Conflict, KeyView, NotFound, OrgView

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class OrgIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class KeyIn(BaseModel):
    org_id: str = Field(min_length=1)
    name: str = Field(default="default", min_length=1, max_length=200)
    expires_at: datetime | None = None


class WorkerIn(BaseModel):
    url: str = Field(pattern=r"^https?://", max_length=500)


def _org(o: OrgView) -> dict[str, Any]:
    return {"id": o.id, "object": "organization", "name": o.name, "cache_isolation": o.cache_isolation,
            "created_at": o.created_at.isoformat()}


def _key(k: KeyView) -> dict[str, Any]:
    return {"id": k.id, "object": "api_key", "org_id": k.org_id, "name": k.name, "prefix": k.prefix,
            "created_at": k.created_at.isoformat(),
            "expires_at": k.expires_at.isoformat() if k.expires_at else None,
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None}


@router.post("/orgs", status_code=201)
async def create_org(body: OrgIn, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    try:
        return _org(await rt.keys.create_org(body.name))
    except Conflict as exc:
        raise errors.GatewayError(409, str(exc), code="conflict") from None


@router.get("/orgs")
async def list_orgs(rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return {"object": "list", "data": [_org(o) for o in await rt.keys.list_orgs()]}


@router.post("/keys", status_code=201)
async def create_key(body: KeyIn, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    try:
        created = await rt.keys.create_key(body.org_id, body.name, body.expires_at)
    except NotFound as exc:
        raise errors.not_found(str(exc)) from None
    return {**_key(created.view), "key": created.key}


@router.get("/keys")
async def list_keys(org_id: str | None = None, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    return {"object": "list", "data": [_key(k) for k in await rt.keys.list_keys(org_id)]}


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, rt: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    try:
        view = await rt.keys.revoke_key(key_id)
    except NotFound as exc:
        raise errors.not_found(str(exc)) from None
    rt.key_cache.forget(key_id)
    return {**_key(view), "deleted": True}


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
