"""The admin API for API keys: create, list, read, change, rotate, revoke. Guarded by the admin key;
changes reach every replica within the key cache TTL (``GATEWAY_KEY_CACHE_TTL_S``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import Field

from gateway import errors
from gateway.api.deps import get_runtime, require_admin
from gateway.api.input_types import Moment, Name, PathId, QueryId
from gateway.api.schemas_keys import CreatedKeyOut, KeyFields, KeyList, KeyOut, KeyPatch, RevokedKeyOut, RotateIn
from gateway.runtime import Runtime
from gateway.services.keys import KeyLimits

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class KeyIn(KeyFields):
    org_id: Name
    name: Name = "default"
    expires_at: Moment | None = None
    manage_keys: bool = Field(default=False, description="may manage its organisation's keys via /v1/organization")


@router.post("/keys", status_code=201, response_model=CreatedKeyOut)
async def create_key(body: KeyIn, rt: Runtime = Depends(get_runtime)) -> CreatedKeyOut:
    created = await rt.keys.create_key(body.org_id, body.name, body.expires_at,
                                       limits=KeyLimits(body.rpm, body.tpm, body.tpd, body.concurrency),
                                       manage_keys=body.manage_keys, models=body.models)
    return CreatedKeyOut(**KeyOut.of(created.view).model_dump(), key=created.key)


@router.get("/keys", response_model=KeyList)
async def list_keys(org_id: QueryId = None, rt: Runtime = Depends(get_runtime)) -> KeyList:
    return KeyList(data=[KeyOut.of(k) for k in await rt.keys.list_keys(org_id)])


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: PathId, rt: Runtime = Depends(get_runtime)) -> KeyOut:
    return KeyOut.of(await rt.keys.get_key(key_id))


@router.patch("/keys/{key_id}", response_model=KeyOut)
async def update_key(key_id: PathId, body: KeyPatch, rt: Runtime = Depends(get_runtime)) -> KeyOut:
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        raise errors.invalid_request("name cannot be null", param="name")
    view = await rt.keys.update_key(key_id, changes)
    rt.key_cache.forget(key_id)
    return KeyOut.of(view)


@router.post("/keys/{key_id}/rotate", status_code=201, response_model=CreatedKeyOut)
async def rotate_key(key_id: PathId, body: RotateIn | None = None,
                     rt: Runtime = Depends(get_runtime)) -> CreatedKeyOut:
    """A new secret for the same key (name, organisation, limits); the old one stays valid for ``overlap_s``."""
    created = await rt.keys.rotate_key(key_id, (body or RotateIn()).overlap_s)
    rt.key_cache.forget(key_id)
    return CreatedKeyOut(**KeyOut.of(created.view).model_dump(), key=created.key)


@router.delete("/keys/{key_id}", response_model=RevokedKeyOut)
async def revoke_key(key_id: PathId, rt: Runtime = Depends(get_runtime)) -> RevokedKeyOut:
    view = await rt.keys.revoke_key(key_id)
    rt.key_cache.forget(key_id)
    return RevokedKeyOut(**KeyOut.of(view).model_dump())
