"""Rate-limit plans: named tiers assigned to organisations, and how a key's limits are resolved.

A plan caps the whole organisation (``rpm``, ``tpm``, ``tpd``, ``concurrency``) and may set a default
cap for each of its keys (``key_*``); a key's own limits can only tighten that. A key limit that is
not tighter than the organisation's is dropped: the organisation's bucket already enforces it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.gateway_tables import Organization, Plan
from gateway.pipeline.principal import RateLimits
from gateway.services.service_errors import Conflict, InvalidInput, NotFound

PLAN_LIMITS = ("rpm", "tpm", "tpd", "concurrency", "key_rpm", "key_tpm", "key_tpd", "key_concurrency")
# The largest limit a column holds: requests and tokens are BIGINT, requests in flight INTEGER.
LIMIT_MAX = 2**63 - 1
CONCURRENCY_MAX = 2**31 - 1


class PlanConflict(Conflict):
    """A plan name is taken, or a plan in use cannot be deleted."""


class PlanNotFound(NotFound):
    """No such plan or organisation."""


class _KeyLimitsRow(Protocol):
    rpm: int | None
    tpm: int | None
    tpd: int | None
    concurrency: int | None


@dataclass(frozen=True, slots=True)
class PlanView:
    id: str
    name: str
    rpm: int | None
    tpm: int | None
    tpd: int | None
    concurrency: int | None
    key_rpm: int | None
    key_tpm: int | None
    key_tpd: int | None
    key_concurrency: int | None
    fail_open: bool
    created_at: datetime
    cache_slo: float | None = None


def _tighter(key: int | None, org: int | None) -> int | None:
    if key is None or (org is not None and key >= org):
        return None
    return key


def resolve_limits(plan: Plan | None, key: _KeyLimitsRow) -> RateLimits | None:
    """The limits a request with this key is checked against; None when nothing is limited.

    A key's limit is the tightest of its own override and the plan's per-key default (an override can
    only tighten), kept only when tighter than the organisation's own limit.
    """
    def key_limit(name: str, org: int | None) -> int | None:
        candidates = [v for v in (getattr(key, name), getattr(plan, f"key_{name}", None)) if v is not None]
        return _tighter(min(candidates) if candidates else None, org)

    org_rpm = plan.rpm if plan else None
    org_tpm = plan.tpm if plan else None
    org_tpd = plan.tpd if plan else None
    org_conc = plan.concurrency if plan else None
    limits = RateLimits(
        org_rpm=org_rpm, org_tpm=org_tpm, org_tpd=org_tpd, org_concurrency=org_conc,
        key_rpm=key_limit("rpm", org_rpm), key_tpm=key_limit("tpm", org_tpm), key_tpd=key_limit("tpd", org_tpd),
        key_concurrency=key_limit("concurrency", org_conc),
        fail_open=bool(plan.fail_open) if plan is not None and plan.fail_open is not None else True,
        plan=plan.name if plan else None,
    )
    return None if limits.empty else limits


def _view(plan: Plan) -> PlanView:
    return PlanView(**{f.name: getattr(plan, f.name) for f in fields(PlanView)})


def check_limit(name: str, value: object) -> None:
    """``InvalidInput`` unless ``value`` is None or a positive integer its column can hold."""
    if value is None:
        return
    top = CONCURRENCY_MAX if name.endswith("concurrency") else LIMIT_MAX
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
        raise InvalidInput(f"{name} must be an integer from 1 to {top}, or null", param=name)


def _check_limits(values: dict[str, Any]) -> None:
    for name in PLAN_LIMITS:
        check_limit(name, values.get(name))
    slo = values.get("cache_slo")
    if slo is not None and (isinstance(slo, bool) or not isinstance(slo, int | float) or not 0.0 <= slo <= 1.0):
        raise InvalidInput("cache_slo must be a number from 0 to 1, or null", param="cache_slo")


class PlanService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, name: str, *, fail_open: bool = True, cache_slo: float | None = None,
                     **limits: int | None) -> PlanView:
        unknown = set(limits) - set(PLAN_LIMITS)
        if unknown:
            raise InvalidInput(f"unknown limits: {sorted(unknown)}")
        _check_limits({**limits, "cache_slo": cache_slo})
        plan = Plan(id=f"plan_{uuid.uuid4().hex[:24]}", name=name, fail_open=fail_open, created_at=datetime.now(UTC),
                    cache_slo=cache_slo, **limits)
        async with self._sessions() as s:
            s.add(plan)
            try:
                await s.commit()
            except IntegrityError as exc:
                raise PlanConflict(f"plan {name!r} exists") from exc
        return _view(plan)

    async def list(self) -> list[PlanView]:
        async with self._sessions() as s:
            return [_view(p) for p in (await s.execute(select(Plan).order_by(Plan.created_at))).scalars()]

    async def get(self, plan_id: str) -> PlanView:
        async with self._sessions() as s:
            plan = await self._find(s, plan_id)
            return _view(plan)

    async def update(self, plan_id: str, changes: dict[str, Any]) -> PlanView:
        """Change limits (a null clears one) or ``fail_open``; takes effect on every replica within the
        key cache TTL."""
        unknown = set(changes) - {*PLAN_LIMITS, "fail_open", "name", "cache_slo"}
        if unknown:
            raise InvalidInput(f"unknown fields: {sorted(unknown)}")
        _check_limits(changes)
        async with self._sessions() as s:
            plan = await self._find(s, plan_id)
            for name, value in changes.items():
                setattr(plan, name, value)
            try:
                await s.commit()
            except IntegrityError as exc:
                raise PlanConflict(f"plan {changes.get('name')!r} exists") from exc
            return _view(plan)

    async def delete(self, plan_id: str) -> None:
        async with self._sessions() as s:
            plan = await self._find(s, plan_id)
            in_use = (await s.execute(select(func.count()).select_from(Organization)
                                      .where(Organization.plan_id == plan.id))).scalar_one()
            if in_use:
                raise PlanConflict(f"plan {plan.name!r} is assigned to {in_use} organisation(s)")
            await s.delete(plan)
            await s.commit()

    async def assign(self, org_id: str, plan_id: str | None) -> str | None:
        """Put an organisation on a plan (None: unlimited); returns the plan id."""
        async with self._sessions() as s:
            org = await s.get(Organization, org_id)
            if org is None:
                raise PlanNotFound(f"organisation {org_id!r} not found")
            plan = await self._find(s, plan_id) if plan_id is not None else None
            org.plan_id = plan.id if plan is not None else None
            await s.commit()
            return org.plan_id

    async def cache_slos(self) -> dict[str, float]:
        """Every organisation whose plan sets a cache SLO: {org id: SLO}."""
        async with self._sessions() as s:
            rows = await s.execute(select(Organization.id, Plan.cache_slo).join(Plan, Organization.plan_id == Plan.id)
                                   .where(Plan.cache_slo.is_not(None)))
            return {org_id: float(slo) for org_id, slo in rows.all() if slo is not None}

    async def org_cache_slo(self, org_id: str) -> float | None:
        """The cache SLO of the organisation's plan (None: no plan, or the plan sets none)."""
        async with self._sessions() as s:
            slo = (await s.execute(select(Plan.cache_slo).join(Organization, Organization.plan_id == Plan.id)
                                   .where(Organization.id == org_id))).scalar_one_or_none()
            return None if slo is None else float(slo)

    @staticmethod
    async def _find(s: AsyncSession, plan_id: str) -> Plan:
        """By id, or by name (the CLI and humans use names)."""
        plan = await s.get(Plan, plan_id)
        if plan is None:
            plan = (await s.execute(select(Plan).where(Plan.name == plan_id))).scalar_one_or_none()
        if plan is None:
            raise PlanNotFound(f"plan {plan_id!r} not found")
        return plan
