"""Small value types shared by several layers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a verified API key and its organisation."""

    key_id: str
    org_id: str
    org_name: str
    cache_salt: str
    cache_isolation: bool
