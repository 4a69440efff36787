"""API-key authentication for the hot path: an in-process TTL cache in front of SQL.

A verified key is trusted for ``ttl`` seconds, then checked against SQL again, so a revoked key
stops working on every replica within ``ttl`` seconds while the request path asks SQL at most once
per key per ``ttl`` per replica. Unknown keys are cached negatively for the same time.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from gateway import errors
from gateway.pipeline.principal import Principal
from gateway.services.keys import KeyService, split_key

_MAX_ENTRIES = 100_000


class KeyCache:
    def __init__(self, keys: KeyService, ttl: float) -> None:
        self._keys = keys
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[Principal | None]] = {}

    async def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise errors.missing_key()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            principal = entry[1]
        else:
            principal = await self._refresh(key)
        if principal is None:
            raise errors.invalid_key()
        return principal

    async def _refresh(self, key: str) -> Principal | None:
        parts = split_key(key)
        if parts is None:
            return None
        pending = self._pending.get(key)
        if pending is not None:  # one SQL lookup per key, however many requests wait on it
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            principal = await self._keys.verify(*parts)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(principal)
        self._entries[key] = (time.monotonic() + self._ttl, principal)
        self._entries.move_to_end(key)
        while len(self._entries) > _MAX_ENTRIES:
            self._entries.popitem(last=False)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop a revoked key on this replica at once (others follow within the TTL)."""
        for cached, (_, principal) in list(self._entries.items()):
            if principal is not None and principal.key_id == key_id:
                del self._entries[cached]

