"""API-key authentication for the hot path: an in-process TTL cache in front of SQL.

A verified key is trusted for ``ttl`` seconds, then checked against SQL again, so a revoked key
stops working on every replica within ``ttl`` seconds while the request path asks SQL at most once
per key per ``ttl`` per replica. Unknown keys are cached negatively for the same time.

While SQL is unreachable, an entry past its TTL is still used for ``stale_grace`` seconds more (a key
verified before keeps working, a key refused before stays refused); a key with no usable entry gets an
OpenAI-shaped 503. After a failed lookup SQL is not asked again for a moment (``retry_s``), so an outage
does not put every request behind another connect attempt. The outage is logged once, when it starts,
and once when SQL answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from gateway import errors
from gateway.db.engine import DB_ERRORS, describe, unreachable
from gateway.pipeline.principal import Principal
from gateway.services.keys import KeyService, split_key

log = logging.getLogger("gateway.auth")

_MAX_ENTRIES = 100_000


@dataclass
class AuthStats:
    """Counters of this replica (exported by the runtime's operational stats)."""

    stale_served: int = 0  # requests admitted on an entry past its TTL while SQL was unreachable
    unavailable: int = 0  # requests answered 503: SQL unreachable and nothing usable cached
    lookup_failures: int = 0  # SQL lookups that failed because the database was unreachable


class KeyCache:
    def __init__(self, keys: KeyService, ttl: float, stale_grace: float = 300.0, retry_s: float = 1.0) -> None:
        self._keys = keys
        self._ttl = ttl
        self._grace = stale_grace
        self._retry_s = min(retry_s, ttl) if ttl > 0 else retry_s
        # key -> (monotonic time it was verified, principal or None for a refused key)
        self._entries: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[Principal | None]] = {}
        self._sql_down_until = 0.0  # after a failed lookup: no other before this (monotonic)
        self._outage_since: float | None = None
        self.stats = AuthStats()

    async def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise errors.missing_key()
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and now < entry[0] + self._ttl:
            principal = entry[1]
        elif split_key(key) is None:  # malformed: refused without SQL, whatever its state
            principal = None
        elif now < self._sql_down_until:
            principal = self._stale(entry, now)
        else:
            try:
                principal = await self._refresh(key)
            except DB_ERRORS as exc:
                if not unreachable(exc):
                    raise
                self._lookup_failed(exc)
                principal = self._stale(entry, time.monotonic())
        if principal is None:
            raise errors.invalid_key()
        return principal

    def _stale(self, entry: tuple[float, Principal | None] | None, now: float) -> Principal | None:
        """The answer of an entry past its TTL while SQL is unreachable, within the grace; else 503."""
        if entry is None or now >= entry[0] + self._ttl + self._grace:
            self.stats.unavailable += 1
            raise errors.auth_unavailable()
        if entry[1] is not None:
            self.stats.stale_served += 1
        return entry[1]

    def _lookup_failed(self, exc: BaseException) -> None:
        self.stats.lookup_failures += 1
        now = time.monotonic()
        self._sql_down_until = now + self._retry_s
        if self._outage_since is None:
            self._outage_since = now
            log.warning("API keys cannot be verified: the database is unreachable (%s); keys verified in the last "
                        "%.0f s keep working from the cache, others get 503", describe(exc), self._ttl + self._grace)

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
        if self._outage_since is not None:
            log.warning("the database is reachable again: API keys are verified against it (it was unreachable for "
                        "%.1f s; so far %d requests served from the cache, %d refused)",
                        time.monotonic() - self._outage_since, self.stats.stale_served, self.stats.unavailable)
            self._outage_since = None
        self._entries[key] = (time.monotonic(), principal)
        self._entries.move_to_end(key)
        while len(self._entries) > _MAX_ENTRIES:
            self._entries.popitem(last=False)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop a revoked key on this replica at once (others follow within the TTL)."""
        for cached, (_, principal) in list(self._entries.items()):
            if principal is not None and principal.key_id == key_id:
                del self._entries[cached]
