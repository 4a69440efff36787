"""Small value types shared by several layers."""

from __future__ import annotations

from dataclasses import dataclass


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
    budget: Budget | None = None
