"""Small value types shared by several layers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The limits one request is checked against, resolved when the key is verified (no SQL later).

    ``org_*`` come from the organisation's plan and cap the whole organisation; ``key_*`` cap this key
    alone (the key's own override, else the plan's per-key default; kept only when tighter than the
    organisation's). ``None`` means no limit. ``fail_open``: while Redis is unreachable, each replica
    keeps serving with its share of the limits (True) or refuses with 503 (False).
    """

    org_rpm: int | None = None
    org_tpm: int | None = None
    org_tpd: int | None = None
    org_concurrency: int | None = None
    key_rpm: int | None = None
    key_tpm: int | None = None
    key_tpd: int | None = None
    key_concurrency: int | None = None
    fail_open: bool = True
    plan: str | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.org_rpm, self.org_tpm, self.org_tpd, self.org_concurrency,
                                       self.key_rpm, self.key_tpm, self.key_tpd, self.key_concurrency))


@dataclass(frozen=True, slots=True)
class Budget:
    """Monthly spend caps in ticks (None: no cap at that level) and the month-to-date spend SQL knew
    when the key was verified (a floor for the state store's counter, e.g. after a Redis flush)."""

    month: str  # "YYYY-MM", UTC
    org_limit_ticks: int | None = None
    key_limit_ticks: int | None = None
    org_spent_ticks: int = 0
    key_spent_ticks: int = 0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a verified API key and its organisation."""

    key_id: str
    org_id: str
    org_name: str
    cache_salt: str
    cache_isolation: bool
    # Rate limits of the key and its organisation (None: unlimited).
    limits: RateLimits | None = None
    # May this key manage its own organisation's keys through /v1/organization/keys?
    manage_keys: bool = False
    budget: Budget | None = None
    # Model allow-lists (served names or aliases) of the key and of its organisation; None: any model.
    key_models: tuple[str, ...] | None = None
    org_models: tuple[str, ...] | None = None
    # May this organisation's requests go to hosted providers (fallback, overflow)? None: the gateway's
    # default (GATEWAY_PROVIDERS_DEFAULT_ALLOWED). Read with the key, so no SQL on the request path.
    providers_allowed: bool | None = None
