"""Partner self-service under ``/v1/organization``: an organisation's API key reads its own organisation,
its limits and its keys; a key created with ``manage_keys`` also creates, changes, rotates and revokes
them (per team, per end user). Every query is scoped to the caller's organisation: another
organisation's key reads as not found. Admin keys are never accepted here (they are not API keys)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from gateway import errors
from gateway.api.deps import get_runtime, require_api_key
from gateway.api.input_types import Moment, Name, PathId
from gateway.api.schemas_keys import CreatedKeyOut, KeyFields, KeyList, KeyOut, KeyPatch, RevokedKeyOut, RotateIn
from gateway.pipeline.principal import Principal, RateLimits
from gateway.runtime import Runtime
from gateway.services.keys import KeyLimits

router = APIRouter(prefix="/v1/organization", tags=["partner"])


class OwnKeyIn(KeyFields):
    """A key for one's own organisation (a team, an end user); its limits can only tighten the plan's."""

    name: Name = "default"
    expires_at: Moment | None = None


class EffectiveLimits(BaseModel):
    """What a request with the calling key is checked against (null: no limit)."""

    plan: str | None
    org_rpm: int | None
    org_tpm: int | None
    org_tpd: int | None
    org_concurrency: int | None
    key_rpm: int | None
    key_tpm: int | None
    key_tpd: int | None
    key_concurrency: int | None
    fail_open: bool

    @classmethod
    def of(cls, limits: RateLimits | None) -> EffectiveLimits:
        r = limits or RateLimits()
        return cls(plan=r.plan, org_rpm=r.org_rpm, org_tpm=r.org_tpm, org_tpd=r.org_tpd,
                   org_concurrency=r.org_concurrency, key_rpm=r.key_rpm, key_tpm=r.key_tpm, key_tpd=r.key_tpd,
                   key_concurrency=r.key_concurrency, fail_open=r.fail_open)


class OwnOrgOut(BaseModel):
    id: str
    object: Literal["organization"] = "organization"
    name: str
    key_id: str = Field(description="the calling key")
    limits: EffectiveLimits
    models: list[str] | None = Field(default=None, description="the models the organisation's keys may use; null: any")
    key_models: list[str] | None = Field(default=None, description="the models the calling key may use; null: any")


def _manager(principal: Principal) -> Principal:
    if not principal.manage_keys:
        raise errors.forbidden("This API key may not manage keys; use a key created with manage_keys.")
    return principal


async def require_manager(principal: Principal = Depends(require_api_key)) -> Principal:
    return _manager(principal)


@router.get("", response_model=OwnOrgOut)
async def own_org(p: Principal = Depends(require_api_key)) -> OwnOrgOut:
    return OwnOrgOut(id=p.org_id, name=p.org_name, key_id=p.key_id, limits=EffectiveLimits.of(p.limits),
                     models=list(p.org_models) if p.org_models is not None else None,
                     key_models=list(p.key_models) if p.key_models is not None else None)


@router.get("/keys", response_model=KeyList)
async def list_own_keys(p: Principal = Depends(require_api_key), rt: Runtime = Depends(get_runtime)) -> KeyList:
    return KeyList(data=[KeyOut.of(k) for k in await rt.keys.list_keys(p.org_id)])


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_own_key(key_id: PathId, p: Principal = Depends(require_api_key),
                      rt: Runtime = Depends(get_runtime)) -> KeyOut:
    return KeyOut.of(await rt.keys.get_key(key_id, org_id=p.org_id))


@router.post("/keys", status_code=201, response_model=CreatedKeyOut)
async def create_own_key(body: OwnKeyIn, p: Principal = Depends(require_manager),
                         rt: Runtime = Depends(get_runtime)) -> CreatedKeyOut:
    created = await rt.keys.create_key(p.org_id, body.name, body.expires_at,
                                       limits=KeyLimits(body.rpm, body.tpm, body.tpd, body.concurrency),
                                       parent_id=p.key_id, models=body.models)
    return CreatedKeyOut(**KeyOut.of(created.view).model_dump(), key=created.key)


@router.patch("/keys/{key_id}", response_model=KeyOut)
async def update_own_key(key_id: PathId, body: KeyPatch, p: Principal = Depends(require_manager),
                         rt: Runtime = Depends(get_runtime)) -> KeyOut:
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        raise errors.invalid_request("name cannot be null", param="name")
    view = await rt.keys.update_key(key_id, changes, org_id=p.org_id, parent_id=p.key_id)
    rt.key_cache.forget(key_id)
    return KeyOut.of(view)


@router.post("/keys/{key_id}/rotate", status_code=201, response_model=CreatedKeyOut)
async def rotate_own_key(key_id: PathId, body: RotateIn | None = None, p: Principal = Depends(require_manager),
                         rt: Runtime = Depends(get_runtime)) -> CreatedKeyOut:
    created = await rt.keys.rotate_key(key_id, (body or RotateIn()).overlap_s, org_id=p.org_id)
    rt.key_cache.forget(key_id)
    return CreatedKeyOut(**KeyOut.of(created.view).model_dump(), key=created.key)


@router.delete("/keys/{key_id}", response_model=RevokedKeyOut)
async def revoke_own_key(key_id: PathId, p: Principal = Depends(require_manager),
                         rt: Runtime = Depends(get_runtime)) -> RevokedKeyOut:
    view = await rt.keys.revoke_key(key_id, org_id=p.org_id)
    rt.key_cache.forget(key_id)
    return RevokedKeyOut(**KeyOut.of(view).model_dump())
