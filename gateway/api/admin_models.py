"""Request and response models of the admin and partner APIs (they document the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from gateway.pipeline.principal import RateLimits
from gateway.services.keys import KeyView, OrgView
from gateway.services.plans import PlanView


class LimitFields(BaseModel):
    rpm: int | None = Field(default=None, ge=1, description="requests per minute; null: no limit")
    tpm: int | None = Field(default=None, ge=1, description="input + output tokens per minute; null: no limit")
    tpd: int | None = Field(default=None, ge=1, description="input + output tokens per day; null: no limit")
    concurrency: int | None = Field(default=None, ge=1, description="requests in flight at once; null: no limit")


class PlanIn(LimitFields):
    name: str = Field(min_length=1, max_length=200)
    key_rpm: int | None = Field(default=None, ge=1, description="default cap on each key")
    key_tpm: int | None = Field(default=None, ge=1, description="default cap on each key")
    key_tpd: int | None = Field(default=None, ge=1, description="default cap on each key")
    key_concurrency: int | None = Field(default=None, ge=1, description="default cap on each key")
    fail_open: bool = Field(default=True, description="while Redis is down: serve with each replica's share of "
                                                      "the limits (true) or answer 503 (false)")


class PlanPatch(BaseModel):
    """Only the fields present change; a null clears a limit."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    tpd: int | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1)
    key_rpm: int | None = Field(default=None, ge=1)
    key_tpm: int | None = Field(default=None, ge=1)
    key_tpd: int | None = Field(default=None, ge=1)
    key_concurrency: int | None = Field(default=None, ge=1)
    fail_open: bool | None = None


class PlanOut(PlanIn):
    id: str
    object: Literal["plan"] = "plan"
    created_at: datetime

    @classmethod
    def of(cls, p: PlanView) -> PlanOut:
        return cls(id=p.id, name=p.name, rpm=p.rpm, tpm=p.tpm, tpd=p.tpd, concurrency=p.concurrency,
                   key_rpm=p.key_rpm, key_tpm=p.key_tpm, key_tpd=p.key_tpd, key_concurrency=p.key_concurrency,
                   fail_open=p.fail_open, created_at=p.created_at)


class PlanList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PlanOut]


class OrgPlanIn(BaseModel):
    plan_id: str | None = Field(description="plan id or name; null: unlimited")


class OrgOut(BaseModel):
    id: str
    object: Literal["organization"] = "organization"
    name: str
    cache_isolation: bool
    plan_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, o: OrgView) -> OrgOut:
        return cls(id=o.id, name=o.name, cache_isolation=o.cache_isolation, plan_id=o.plan_id,
                   created_at=o.created_at)


class OrgList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OrgOut]


class KeyPatch(BaseModel):
    """Only the fields present change; a null clears a limit (the plan's per-key default applies)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    expires_at: datetime | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    tpd: int | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1)


class OwnKeyIn(LimitFields):
    """A key for one's own organisation (a team, an end user); its limits can only tighten the plan's."""

    name: str = Field(default="default", min_length=1, max_length=200)
    expires_at: datetime | None = None


class RotateIn(BaseModel):
    overlap_s: float = Field(default=3600.0, ge=0, le=30 * 86400,
                             description="seconds the old secret stays valid after the rotation")


class KeyOut(LimitFields):
    id: str
    object: Literal["api_key"] = "api_key"
    org_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    manage_keys: bool
    replaced_by: str | None

    @classmethod
    def of(cls, k: KeyView) -> KeyOut:
        return cls(id=k.id, org_id=k.org_id, name=k.name, prefix=k.prefix, created_at=k.created_at,
                   expires_at=k.expires_at, revoked_at=k.revoked_at, rpm=k.limits.rpm, tpm=k.limits.tpm,
                   tpd=k.limits.tpd, concurrency=k.limits.concurrency, manage_keys=k.manage_keys,
                   replaced_by=k.replaced_by)


class CreatedKeyOut(KeyOut):
    key: str = Field(description="the secret, shown only this once")


class RevokedKeyOut(KeyOut):
    deleted: bool = True


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]


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


class LimitStatsOut(BaseModel):
    """This replica's rate-limit counters since it started."""

    checked: int
    admitted: int
    refused_requests: int
    refused_tokens: int
    refused_concurrency: int
    local_fallbacks: int
    refused_unavailable: int
