"""SQL tables of the gateway: organisations, API keys and workers added at runtime."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Root of this tenant's KV-cache hash chain (vLLM cache_salt): tenants never share cached blocks.
    cache_salt: Mapped[str] = mapped_column(String(64))
    cache_isolation: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The rate-limit plan (plans.id); NULL: unlimited. Checked by the service, no FK (SQLite ALTER).
    plan_id: Mapped[str | None] = mapped_column(String(40), nullable=True, default=None)
    # The models (served names or aliases) its keys may use; NULL: any.
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=None)
    # May its requests leave the fleet for a hosted provider? NULL: GATEWAY_PROVIDERS_DEFAULT_ALLOWED.
    providers_allowed: Mapped[bool | None] = mapped_column(Boolean, nullable=True, default=None)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # Public part of the key, used to find the row; the secret is stored only as a SHA-256 hash.
    lookup: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # This key's own limits (tighter than the plan's); NULL: the plan's per-key default.
    rpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)
    tpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)
    tpd: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    # May manage its own organisation's keys through /v1/organization/keys.
    manage_keys: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set on a rotated key: the key that replaces it (the old one lives until expires_at).
    replaced_by: Mapped[str | None] = mapped_column(String(40), nullable=True, default=None)
    # The models (served names or aliases) this key may use, within its organisation's; NULL: any.
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=None)

    __table_args__ = (Index("ix_api_keys_org_id", "org_id"),)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(500), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The worker's key, only as a reference "os.environ/NAME" (read on every replica); never the key itself.
    api_key_ref: Mapped[str | None] = mapped_column(String(200), nullable=True, default=None)
    headers: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True, default=None)
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=None)


class Plan(Base):
    """A named tier of rate limits, assigned to organisations. NULL limits mean unlimited."""

    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Caps on the whole organisation.
    rpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tpd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Default caps on each key of the organisation (a key's own override wins).
    key_rpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    key_tpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    key_tpd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    key_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # While Redis is unreachable: serve with each replica's share of the limits (True) or answer 503.
    fail_open: Mapped[bool] = mapped_column(Boolean, default=True)
    # Cache SLO: the cached share of prompt tokens (0..1) each organisation on the plan should reach; NULL: none.
    cache_slo: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
