"""The storage interface behind shared state (prefix index, loads, limits, budgets).

Every operation is a *script*: a Lua file under ``state/lua/`` for Redis, and a Python function
with the same semantics for the in-process store. Operations that must happen before the upstream
call are collected in a :class:`RoundTrip` and executed together: one network round trip on Redis
(a non-transactional pipeline of EVALSHA calls), plain function calls in process. One test suite
runs every script against both stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

LUA_DIR = Path(__file__).parent / "lua"

# A script's in-process twin: (store, keys, args, now_ms) -> result, with Redis-like results
# (ints, bytes/str, lists of them).
PyScript = Callable[["MemoryData", Sequence[str], Sequence[Any], int], Any]


class MemoryData(Protocol):
    """The in-process data a Python script twin works on (see ``memory.MemoryState``)."""

    def hash(self, key: str) -> dict[str, Any]: ...
    def zset(self, key: str) -> dict[str, float]: ...
    def value(self, key: str) -> dict[str, Any]: ...
    def expire(self, key: str, at_ms: int) -> None: ...
    def delete(self, key: str) -> None: ...


@dataclass(frozen=True)
class Script:
    name: str
    lua: str
    python: PyScript

    @classmethod
    def load(cls, name: str, python: PyScript, fragments: Sequence[str] = ()) -> Script:
        """The script ``lua/NAME.lua``, after the shared fragments ``lua/FRAGMENT.lua`` it uses (local
        functions defined once for several scripts), in the order given."""
        parts = [(LUA_DIR / f"{part}.lua").read_text() for part in (*fragments, name)]
        return cls(name, "\n".join(parts), python)


class StoreUnavailable(Exception):
    """The shared store could not be reached; callers fall back or fail closed as they choose."""


class RoundTrip(Protocol):
    def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> int:
        """Queue a script call; returns the index of its result in ``execute()``'s list."""
        ...

    async def execute(self) -> list[Any]:
        """Run everything queued, in order, in one round trip. Raises StoreUnavailable."""
        ...


class StateStore(Protocol):
    shared: bool  # True when several replicas see the same data

    def round_trip(self) -> RoundTrip: ...
    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
