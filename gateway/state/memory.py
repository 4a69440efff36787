"""The in-process store (embedded default, and the fallback while Redis is unreachable)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from gateway.state.base import Script


def now_ms() -> int:
    return int(time.time() * 1000)


class MemoryState:
    """Dicts keyed like the Redis keys, with expiry; scripts run atomically (no awaits inside)."""

    shared = False

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._expiry: dict[str, int] = {}

    # --- what the Python twins of the Lua scripts use ---------------------------------------
    def _get(self, key: str, factory: type) -> Any:
        at = self._expiry.get(key)
        if at is not None and at <= now_ms():
            self._data.pop(key, None)
            self._expiry.pop(key, None)
        found = self._data.get(key)
        if found is None:
            found = self._data[key] = factory()
        return found

    def hash(self, key: str) -> dict[str, Any]:
        return self._get(key, dict)  # type: ignore[no-any-return]

    def zset(self, key: str) -> dict[str, float]:
        return self._get(key, dict)  # type: ignore[no-any-return]

    def value(self, key: str) -> dict[str, Any]:
        """A one-slot holder for string keys: ``{"v": ...}``."""
        return self._get(key, dict)  # type: ignore[no-any-return]

    def expire(self, key: str, at_ms: int) -> None:
        self._expiry[key] = at_ms

    def delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._expiry.pop(key, None)

    def keys(self) -> list[str]:
        return list(self._data)

    # --- the StateStore interface -------------------------------------------------------------
    def round_trip(self) -> MemoryRoundTrip:
        return MemoryRoundTrip(self)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return script.python(self, keys, args, now_ms())

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()
        self._expiry.clear()


class MemoryRoundTrip:
    def __init__(self, state: MemoryState) -> None:
        self._state = state
        self._calls: list[tuple[Script, Sequence[str], Sequence[Any]]] = []

    def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> int:
        self._calls.append((script, keys, args))
        return len(self._calls) - 1

    async def execute(self) -> list[Any]:
        now = now_ms()
        return [script.python(self._state, keys, args, now) for script, keys, args in self._calls]
