"""Request and response models of organisations and API keys, shared by the admin routers (orgs, keys,
plans) and the partner API; they document the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from gateway.api.input_types import ConcurrencyLimit, Limit, ModelName, Moment, Name
from gateway.services.keys import KeyView, OrgView

ModelList = list[ModelName] | None
MODELS_DOC = "the models (served names or aliases) its keys may use; null: any model"


class LimitFields(BaseModel):
    rpm: Limit | None = Field(default=None, description="requests per minute; null: no limit")
    tpm: Limit | None = Field(default=None, description="input + output tokens per minute; null: no limit")
    tpd: Limit | None = Field(default=None, description="input + output tokens per day; null: no limit")
    concurrency: ConcurrencyLimit | None = Field(default=None, description="requests in flight at once; null: no limit")


class KeyFields(LimitFields):
    """A new key's own limits and model allow-list."""

    models: ModelList = Field(default=None, max_length=100,
                              description="the models this key may use, within its organisation's; null: any")


class OrgOut(BaseModel):
    id: str
    object: Literal["organization"] = "organization"
    name: str
    cache_isolation: bool
    plan_id: str | None
    # May its requests go to hosted providers? null: the gateway's default (GATEWAY_PROVIDERS_DEFAULT_ALLOWED).
    providers_allowed: bool | None = None
    created_at: datetime
    models: list[str] | None = Field(default=None, description=MODELS_DOC)

    @classmethod
    def of(cls, o: OrgView) -> OrgOut:
        return cls(id=o.id, name=o.name, cache_isolation=o.cache_isolation, plan_id=o.plan_id,
                   providers_allowed=o.providers_allowed, created_at=o.created_at,
                   models=list(o.models) if o.models is not None else None)


class OrgList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OrgOut]


class KeyPatch(BaseModel):
    """Only the fields present change; a null clears a limit (the plan's per-key default applies)."""

    name: Name | None = None
    expires_at: Moment | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    tpd: Limit | None = None
    concurrency: ConcurrencyLimit | None = None
    models: ModelList = Field(default=None, max_length=100,
                              description="the models this key may use, within its organisation's; null: any")


class RotateIn(BaseModel):
    overlap_s: float = Field(default=3600.0, ge=0, le=30 * 86400,
                             description="seconds the old secret stays valid after the rotation")


class KeyOut(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    org_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rpm: int | None = Field(description="requests per minute; null: no limit")
    tpm: int | None = Field(description="input + output tokens per minute; null: no limit")
    tpd: int | None = Field(description="input + output tokens per day; null: no limit")
    concurrency: int | None = Field(description="requests in flight at once; null: no limit")
    manage_keys: bool
    replaced_by: str | None
    models: list[str] | None = Field(default=None, description="the models this key may use; null: any")

    @classmethod
    def of(cls, k: KeyView) -> KeyOut:
        return cls(id=k.id, org_id=k.org_id, name=k.name, prefix=k.prefix, created_at=k.created_at,
                   expires_at=k.expires_at, revoked_at=k.revoked_at, rpm=k.limits.rpm, tpm=k.limits.tpm,
                   tpd=k.limits.tpd, concurrency=k.limits.concurrency, manage_keys=k.manage_keys,
                   replaced_by=k.replaced_by, models=list(k.models) if k.models is not None else None)


class CreatedKeyOut(KeyOut):
    key: str = Field(description="the secret, shown only this once")


class RevokedKeyOut(KeyOut):
    deleted: bool = True


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]
