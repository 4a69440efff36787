"""Organisations and API keys: creation, listing, revocation and verification against SQL.

A key reads ``sk-gw-<lookup>_<secret>``. Only ``lookup`` (to find the row) and a SHA-256 hash of
the secret are stored; the secret is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.ledger import billing_queries as ledger_config
from gateway.db.gateway_tables import ApiKey, Organization, Plan
from gateway.pipeline.principal import Budget, Principal, RateLimits
from gateway.services.plans import check_limit, resolve_limits
from gateway.services.service_errors import Conflict, InvalidInput, NotFound

KEY_PREFIX = "sk-gw-"
_LOOKUP_HEX = 16


def _refused(param: str, message: str) -> InvalidInput:
    """A field's value a key may not have (``param`` names the field)."""
    return InvalidInput(message, param=param)


@dataclass(frozen=True, slots=True)
class OrgView:
    id: str
    name: str
    cache_isolation: bool
    created_at: datetime
    plan_id: str | None = None
    models: tuple[str, ...] | None = None  # the allow-list; None: any model
    providers_allowed: bool | None = None  # None: the gateway's default


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """A key's own limits (None: the plan's per-key default applies)."""

    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class KeyView:
    id: str
    org_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    limits: KeyLimits = field(default_factory=KeyLimits)
    manage_keys: bool = False
    replaced_by: str | None = None
    models: tuple[str, ...] | None = None  # the allow-list; None: any model (within the organisation's)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: str  # shown once
    view: KeyView


def now() -> datetime:
    return datetime.now(UTC)


def new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex[:24]}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """``(lookup, secret)`` of a well-formed key, else None (no SQL for malformed keys)."""
    if not key.startswith(KEY_PREFIX):
        return None
    lookup, sep, secret = key[len(KEY_PREFIX):].partition("_")
    if not sep or len(lookup) != _LOOKUP_HEX or not secret or len(secret) > 128:
        return None
    return lookup, secret


_MAX_MODELS = 100


def check_models(models: Any, param: str = "models") -> list[str] | None:
    """A model allow-list as stored: None (any model) or distinct names of 1..200 characters."""
    if models is None:
        return None
    if not isinstance(models, list | tuple) or len(models) > _MAX_MODELS:
        raise _refused(param, f"{param} is a list of at most {_MAX_MODELS} model names, or null for any model")
    out: list[str] = []
    for name in models:
        if not isinstance(name, str) or not 0 < len(name.strip()) <= 200 or any(ord(c) < 32 for c in name):
            raise _refused(param, f"{param}: {str(name)[:40]!r} is not a model name")
        if name.strip() not in out:
            out.append(name.strip())
    return out


def _models(stored: Any) -> tuple[str, ...] | None:
    return tuple(stored) if isinstance(stored, list) else None


def _org_view(org: Organization) -> OrgView:
    return OrgView(org.id, org.name, org.cache_isolation, org.created_at, org.plan_id, _models(org.models),
                   org.providers_allowed)


def _key_view(key: ApiKey) -> KeyView:
    return KeyView(key.id, key.org_id, key.name, f"{KEY_PREFIX}{key.lookup}", key.created_at,
                   key.expires_at, key.revoked_at,
                   KeyLimits(key.rpm, key.tpm, key.tpd, key.concurrency), bool(key.manage_keys), key.replaced_by,
                   _models(key.models))


class KeyService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create_org(self, name: str) -> OrgView:
        org = Organization(id=new_id("org"), name=name, cache_salt=secrets.token_hex(16),
                           cache_isolation=True, created_at=now())
        async with self._sessions() as s:
            s.add(org)
            try:
                await s.commit()
            except IntegrityError as exc:
                raise Conflict(f"organisation {name!r} exists") from exc
        return _org_view(org)

    async def get_or_create_org(self, name: str) -> OrgView:
        async with self._sessions() as s:
            org = (await s.execute(select(Organization).where(Organization.name == name))).scalar_one_or_none()
        if org is not None:
            return _org_view(org)
        try:
            return await self.create_org(name)
        except Conflict:  # created concurrently
            return await self.get_or_create_org(name)

    async def get_org(self, org_id: str) -> OrgView:
        async with self._sessions() as s:
            org = await s.get(Organization, org_id)
        if org is None:
            raise NotFound(f"organisation {org_id!r} not found")
        return _org_view(org)

    async def set_org_models(self, org_id: str, models: list[str] | None) -> OrgView:
        """The organisation's model allow-list (None: any model); every replica applies it within the key
        cache TTL."""
        allowed = check_models(models)
        async with self._sessions() as s:
            org = await s.get(Organization, org_id)
            if org is None:
                raise NotFound(f"organisation {org_id!r} not found")
            org.models = allowed
            await s.commit()
            return _org_view(org)

    async def set_providers_allowed(self, org_id: str, allowed: bool | None) -> OrgView:
        """Whether the organisation's requests may go to hosted providers (None: the gateway's default). Every
        replica applies it within the key cache TTL."""
        async with self._sessions() as s:
            org = await s.get(Organization, org_id)
            if org is None:
                raise NotFound(f"organisation {org_id!r} not found")
            org.providers_allowed = allowed
            await s.commit()
            return _org_view(org)

    async def list_orgs(self) -> list[OrgView]:
        async with self._sessions() as s:
            rows = (await s.execute(select(Organization).order_by(Organization.created_at))).scalars()
            return [_org_view(o) for o in rows]

    async def create_key(self, org_id: str, name: str, expires_at: datetime | None = None, *,
                         limits: KeyLimits | None = None, manage_keys: bool = False,
                         parent_id: str | None = None, models: list[str] | None = None) -> CreatedKey:
        """A new key. With ``parent_id`` (the manager key minting it) the key never exceeds its parent: each
        limit at most the parent's effective one (unset: the parent's own), the expiry not later (unset: the
        parent's)."""
        lookup = secrets.token_hex(_LOOKUP_HEX // 2)
        secret = secrets.token_urlsafe(32)
        own = limits or KeyLimits()
        _check_key_limits(own)
        async with self._sessions() as s:
            if await s.get(Organization, org_id) is None:
                raise NotFound(f"organisation {org_id!r} not found")
            fields: dict[str, Any] = {**{n: getattr(own, n) for n in _KEY_LIMITS}, "expires_at": expires_at,
                                      "models": check_models(models)}
            if parent_id is not None:
                fields = (await _ceiling(s, parent_id)).bound(fields)
            key = ApiKey(id=new_id("key"), org_id=org_id, name=name, lookup=lookup,
                         secret_hash=hash_secret(secret), created_at=now(), manage_keys=manage_keys, **fields)
            s.add(key)
            await s.commit()
        return CreatedKey(f"{KEY_PREFIX}{lookup}_{secret}", _key_view(key))

    async def create_key_for_org_name(self, org_name: str, name: str = "default", expires_at: datetime | None = None,
                                      *, limits: KeyLimits | None = None, manage_keys: bool = False,
                                      models: list[str] | None = None) -> CreatedKey:
        """A key for the organisation called ``org_name``, which is created if it does not exist yet (the CLI
        and the demo name organisations; the API passes ids)."""
        org = await self.get_or_create_org(org_name)
        return await self.create_key(org.id, name, expires_at, limits=limits, manage_keys=manage_keys, models=models)

    async def get_key(self, key_id: str, org_id: str | None = None) -> KeyView:
        """One key; with ``org_id``, only a key of that organisation (another's reads as not found)."""
        async with self._sessions() as s:
            return _key_view(await _find_key(s, key_id, org_id))

    async def update_key(self, key_id: str, changes: dict[str, Any], org_id: str | None = None,
                         parent_id: str | None = None) -> KeyView:
        """Change a key's name, expiry or own limits (a null clears a limit). Every replica sees the change
        within the key cache TTL. With ``parent_id`` (the manager key making the change) the changed fields
        stay within the parent's, as in ``create_key``. A rotated key's expiry may only be shortened."""
        unknown = set(changes) - {"name", "expires_at", "models", *_KEY_LIMITS}
        if unknown:
            raise InvalidInput(f"unknown fields: {sorted(unknown)}")
        if "models" in changes:
            changes = {**changes, "models": check_models(changes["models"])}
        _check_key_limits(KeyLimits(**{k: v for k, v in changes.items() if k in _KEY_LIMITS}))
        async with self._sessions() as s:
            key = await _find_key(s, key_id, org_id)
            if parent_id is not None:
                changes = (await _ceiling(s, parent_id)).bound(changes)
            if key.replaced_by is not None and "expires_at" in changes:
                _only_sooner(key, changes["expires_at"])
            for name, value in changes.items():
                setattr(key, name, value)
            await s.commit()
            return _key_view(key)

    async def rotate_key(self, key_id: str, overlap_s: float, org_id: str | None = None) -> CreatedKey:
        """A new secret for the same key identity (organisation, name, limits, expiry); the old secret stays
        valid for ``overlap_s`` seconds more, then expires."""
        if overlap_s < 0:
            raise InvalidInput("overlap_s must be >= 0", param="overlap_s")
        lookup = secrets.token_hex(_LOOKUP_HEX // 2)
        secret = secrets.token_urlsafe(32)
        async with self._sessions() as s:
            old = await _find_key(s, key_id, org_id)
            moment = now()
            if old.revoked_at is not None or (old.expires_at is not None and _aware(old.expires_at) <= moment):
                raise Conflict(f"key {key_id!r} is revoked or expired")
            if old.replaced_by is not None:
                raise Conflict(f"key {key_id!r} was already rotated to {old.replaced_by!r}; rotate that one")
            new = ApiKey(id=new_id("key"), org_id=old.org_id, name=old.name, lookup=lookup,
                         secret_hash=hash_secret(secret), created_at=moment, expires_at=old.expires_at,
                         rpm=old.rpm, tpm=old.tpm, tpd=old.tpd, concurrency=old.concurrency,
                         manage_keys=old.manage_keys, models=old.models)
            s.add(new)
            await s.flush()
            ends = moment + timedelta(seconds=overlap_s)
            if old.expires_at is None or _aware(old.expires_at) > ends:
                old.expires_at = ends
            old.replaced_by = new.id
            await s.commit()
            return CreatedKey(f"{KEY_PREFIX}{lookup}_{secret}", _key_view(new))

    async def list_keys(self, org_id: str | None = None) -> list[KeyView]:
        query = select(ApiKey).order_by(ApiKey.created_at)
        if org_id is not None:
            query = query.where(ApiKey.org_id == org_id)
        async with self._sessions() as s:
            return [_key_view(k) for k in (await s.execute(query)).scalars()]

    async def revoke_key(self, key_id: str, org_id: str | None = None) -> KeyView:
        async with self._sessions() as s:
            key = await _find_key(s, key_id, org_id)
            if key.revoked_at is None:
                key.revoked_at = now()
                await s.commit()
            return _key_view(key)

    async def verify(self, lookup: str, secret: str) -> Principal | None:
        """The principal of a live key whose secret matches, with its rate limits, else None. One indexed
        SQL query (the plan comes along in an outer join)."""
        query = (
            select(ApiKey, Organization, Plan)
            .join(Organization, Organization.id == ApiKey.org_id)
            .outerjoin(Plan, Plan.id == Organization.plan_id)
            .where(ApiKey.lookup == lookup)
        )
        async with self._sessions() as s:
            row = (await s.execute(query)).one_or_none()
            if row is None:
                return None
            key, org, plan = row
            if not hmac.compare_digest(key.secret_hash, hash_secret(secret)):
                return None
            if key.revoked_at is not None:
                return None
            if key.expires_at is not None and _aware(key.expires_at) <= now():
                return None
            budget = await _budget(s, org.id, key.id)
        return Principal(key.id, org.id, org.name, org.cache_salt, org.cache_isolation,
                         limits=resolve_limits(plan, key), manage_keys=bool(key.manage_keys), budget=budget,
                         key_models=_models(key.models), org_models=_models(org.models),
                         providers_allowed=org.providers_allowed)


_KEY_LIMITS = ("rpm", "tpm", "tpd", "concurrency")


@dataclass(frozen=True, slots=True)
class _Ceiling:
    """What a manager key may hand on: per limit, its effective value (its own or its plan's per-key default,
    else the organisation's; None: unlimited) and the key-level one a child inherits; and its expiry."""

    effective: dict[str, int | None]
    inherited: dict[str, int | None]
    expires_at: datetime | None
    models: list[str] | None = None

    def bound(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` (limits and ``expires_at``, those present) within the ceiling: unset ones inherit, a
        looser one is refused."""
        out = dict(fields)
        for name in _KEY_LIMITS:
            if name not in fields:
                continue
            value, cap = fields[name], self.effective[name]
            if value is None:
                out[name] = self.inherited[name]
            elif cap is not None and value > cap:
                raise _refused(name, f"{name} {value} exceeds the calling key's own limit of {cap}; a key it "
                                         "creates or changes cannot have more than it has")
        if "models" in fields and self.models is not None:
            wanted = fields["models"]
            if wanted is None:
                out["models"] = list(self.models)
            else:
                outside = [m for m in wanted if m not in self.models]
                if outside:
                    raise _refused("models", f"the model {outside[0]!r} is not in the calling key's own allow-list; "
                                             "a key it creates or changes cannot use more models than it may")
        if "expires_at" in fields and self.expires_at is not None:
            value = fields["expires_at"]
            if value is None:
                out["expires_at"] = self.expires_at
            elif _aware(value) > self.expires_at:
                raise _refused("expires_at", f"expires_at {value.isoformat()} is later than the calling key's "
                                                 f"own expiry ({self.expires_at.isoformat()})")
        return out


async def _ceiling(s: AsyncSession, parent_id: str) -> _Ceiling:
    query = (select(ApiKey, Plan).join(Organization, Organization.id == ApiKey.org_id)
             .outerjoin(Plan, Plan.id == Organization.plan_id).where(ApiKey.id == parent_id))
    row = (await s.execute(query)).one_or_none()
    if row is None:
        raise NotFound(f"key {parent_id!r} not found")
    parent, plan = row
    limits = resolve_limits(plan, parent) or RateLimits()
    inherited = {n: getattr(limits, f"key_{n}") for n in _KEY_LIMITS}
    effective = {n: inherited[n] if inherited[n] is not None else getattr(limits, f"org_{n}") for n in _KEY_LIMITS}
    return _Ceiling(effective, inherited, _aware(parent.expires_at) if parent.expires_at is not None else None,
                    parent.models if isinstance(parent.models, list) else None)


def _only_sooner(key: ApiKey, expires_at: datetime | None) -> None:
    """A rotated key lives until the overlap ends: moving its expiry later would undo the rotation."""
    current = _aware(key.expires_at) if key.expires_at is not None else None
    if expires_at is None or (current is not None and _aware(expires_at) > current):
        raise _refused("expires_at", f"key {key.id!r} was rotated (replaced by {key.replaced_by!r}): its expiry "
                                         "may only be moved sooner")


def _check_key_limits(limits: KeyLimits) -> None:
    for name in _KEY_LIMITS:
        check_limit(name, getattr(limits, name))


async def _find_key(s: AsyncSession, key_id: str, org_id: str | None) -> ApiKey:
    key = await s.get(ApiKey, key_id)
    if key is None or (org_id is not None and key.org_id != org_id):
        raise NotFound(f"key {key_id!r} not found")
    return key


async def _budget(session: AsyncSession, org_id: str, key_id: str) -> Budget | None:
    """The spend caps that apply to a key, with the month-to-date spend the ledger knows."""
    caps = await ledger_config.budgets_of(session, org_id)
    org_cap, key_cap = caps.get(""), caps.get(key_id)
    if org_cap is None and key_cap is None:
        return None
    at = now()
    spend = await ledger_config.month_spend(session, org_id, [key_id], at)
    return Budget(month=at.strftime("%Y-%m"), org_limit_ticks=org_cap, key_limit_ticks=key_cap,
                  org_spent_ticks=spend[""], key_spent_ticks=spend[key_id])


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; everything we store is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def create_key_for_org_name(settings_url: str, org: str, name: str) -> str:
    """A new key for the organisation of that name (created if missing), on the database at
    ``settings_url`` (migrated first): what the CLI and the demo both need."""
    from gateway.db import engine as db

    await db.upgrade(settings_url)
    engine = db.make_engine(settings_url)
    try:
        svc = KeyService(db.sessionmaker(engine))
        org_view = await svc.get_or_create_org(org)
        return (await svc.create_key(org_view.id, name)).key
    finally:
        await engine.dispose()
