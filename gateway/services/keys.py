"""Organisations and API keys: creation, listing, revocation and verification against SQL.

A key reads ``sk-gw-<lookup>_<secret>``. Only ``lookup`` (to find the row) and a SHA-256 hash of
the secret are stored; the secret is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.ledger import config as ledger_config
from gateway.db.models import ApiKey, Organization
from gateway.types import Budget, Principal

KEY_PREFIX = "sk-gw-"
_LOOKUP_HEX = 16


class Conflict(Exception):
    """A name that must be unique is taken."""


class NotFound(Exception):
    """No such row."""


@dataclass(frozen=True, slots=True)
class OrgView:
    id: str
    name: str
    cache_isolation: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KeyView:
    id: str
    org_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


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


def _org_view(org: Organization) -> OrgView:
    return OrgView(org.id, org.name, org.cache_isolation, org.created_at)


def _key_view(key: ApiKey) -> KeyView:
    return KeyView(key.id, key.org_id, key.name, f"{KEY_PREFIX}{key.lookup}", key.created_at,
                   key.expires_at, key.revoked_at)


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

    async def list_orgs(self) -> list[OrgView]:
        async with self._sessions() as s:
            rows = (await s.execute(select(Organization).order_by(Organization.created_at))).scalars()
            return [_org_view(o) for o in rows]

    async def create_key(self, org_id: str, name: str, expires_at: datetime | None = None) -> CreatedKey:
        lookup = secrets.token_hex(_LOOKUP_HEX // 2)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(id=new_id("key"), org_id=org_id, name=name, lookup=lookup,
                     secret_hash=hash_secret(secret), created_at=now(), expires_at=expires_at)
        async with self._sessions() as s:
            if await s.get(Organization, org_id) is None:
                raise NotFound(f"organisation {org_id!r} not found")
            s.add(key)
            await s.commit()
        return CreatedKey(f"{KEY_PREFIX}{lookup}_{secret}", _key_view(key))

    async def list_keys(self, org_id: str | None = None) -> list[KeyView]:
        query = select(ApiKey).order_by(ApiKey.created_at)
        if org_id is not None:
            query = query.where(ApiKey.org_id == org_id)
        async with self._sessions() as s:
            return [_key_view(k) for k in (await s.execute(query)).scalars()]

    async def revoke_key(self, key_id: str) -> KeyView:
        async with self._sessions() as s:
            result = await s.execute(
                update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=now())
            )
            await s.commit()
            key = await s.get(ApiKey, key_id)
            if key is None:
                raise NotFound(f"key {key_id!r} not found")
            del result
            return _key_view(key)

    async def verify(self, lookup: str, secret: str) -> Principal | None:
        """The principal of a live key whose secret matches, else None. One indexed SQL query."""
        query = (
            select(ApiKey, Organization)
            .join(Organization, Organization.id == ApiKey.org_id)
            .where(ApiKey.lookup == lookup)
        )
        async with self._sessions() as s:
            row = (await s.execute(query)).one_or_none()
            if row is None:
                return None
            key, org = row
            if not hmac.compare_digest(key.secret_hash, hash_secret(secret)):
                return None
            if key.revoked_at is not None:
                return None
            if key.expires_at is not None and _aware(key.expires_at) <= now():
                return None
            budget = await _budget(s, org.id, key.id)
        return Principal(key.id, org.id, org.name, org.cache_salt, org.cache_isolation, budget)


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
