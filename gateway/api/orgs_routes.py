"""The admin API for organisations: create, list, read. Guarded by the admin key.

An organisation's rate-limit plan is set in ``plans_routes.py``, its price plans, budget and Stripe
customer in ``billing_routes.py``."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import get_runtime, require_admin
from gateway.api.input_types import Name, PathId
from gateway.api.schemas_keys import MODELS_DOC, ModelList, OrgList, OrgOut
from gateway.runtime import Runtime

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class OrgIn(BaseModel):
    name: Name


@router.post("/orgs", status_code=201, response_model=OrgOut)
async def create_org(body: OrgIn, rt: Runtime = Depends(get_runtime)) -> OrgOut:
    return OrgOut.of(await rt.keys.create_org(body.name))


@router.get("/orgs", response_model=OrgList)
async def list_orgs(rt: Runtime = Depends(get_runtime)) -> OrgList:
    return OrgList(data=[OrgOut.of(o) for o in await rt.keys.list_orgs()])


@router.get("/orgs/{org_id}", response_model=OrgOut)
async def get_org(org_id: PathId, rt: Runtime = Depends(get_runtime)) -> OrgOut:
    return OrgOut.of(await rt.keys.get_org(org_id))


class OrgPatch(BaseModel):
    """Only the fields given change. ``providers_allowed``: may the organisation's requests go to hosted
    providers (fallback, overflow)? null: the gateway's default (GATEWAY_PROVIDERS_DEFAULT_ALLOWED)."""

    model_config = ConfigDict(extra="forbid")
    models: ModelList = Field(default=None, max_length=100, description=MODELS_DOC)
    providers_allowed: bool | None = None


@router.patch("/orgs/{org_id}", response_model=OrgOut)
async def update_org(org_id: PathId, body: OrgPatch, rt: Runtime = Depends(get_runtime)) -> OrgOut:
    """Set the organisation's model allow-list and provider policy (every replica applies them within the key
    cache TTL)."""
    view = None
    if "models" in body.model_fields_set:
        view = await rt.keys.set_org_models(org_id, body.models)
    if "providers_allowed" in body.model_fields_set:
        view = await rt.keys.set_providers_allowed(org_id, body.providers_allowed)
    return OrgOut.of(view if view is not None else await rt.keys.get_org(org_id))
