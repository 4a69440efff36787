"""The Redis store: scripts run with EVALSHA, a round trip is one pipelined batch.

Every key a script touches is passed in KEYS and carries a hash tag, so the scripts also work on
Redis Cluster as long as one call's keys share a tag (see ``state/keys.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.state.base import Script, StoreUnavailable

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError, ConnectionError, TimeoutError)


def _sha(script: Script) -> str:
    return hashlib.sha1(script.lua.encode()).hexdigest()


class RedisState:
    shared = True

    def __init__(self, client: Redis) -> None:
        self.client = client

    def round_trip(self) -> RedisRoundTrip:
        return RedisRoundTrip(self.client)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        trip = self.round_trip()
        trip.call(script, keys, args)
        return (await trip.execute())[0]

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except _UNAVAILABLE:
            return False

    async def close(self) -> None:
        await self.client.aclose()


class RedisRoundTrip:
    def __init__(self, client: Redis) -> None:
        self._client = client
        self._calls: list[tuple[Script, Sequence[str], Sequence[Any]]] = []

    def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> int:
        self._calls.append((script, keys, args))
        return len(self._calls) - 1

    async def execute(self) -> list[Any]:
        if not self._calls:
            return []
        results = await self._pipeline(self._calls, use_sha=True)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            # Only these scripts are unknown to the server (first use, SCRIPT FLUSH, failover): send their
            # sources once. The others already ran and must not run twice (a limit would count twice).
            again = await self._pipeline([self._calls[i] for i in missing], use_sha=False)
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, RedisError):
                raise result
        return results

    async def _pipeline(self, calls: list[tuple[Script, Sequence[str], Sequence[Any]]], use_sha: bool) -> list[Any]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    if use_sha:
                        pipe.evalsha(_sha(script), len(keys), *keys, *args)
                    else:
                        pipe.eval(script.lua, len(keys), *keys, *args)
                return list(await pipe.execute(raise_on_error=False))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
