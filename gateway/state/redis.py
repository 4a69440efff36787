"""The Redis store: scripts run with EVALSHA, a round trip is one pipelined batch.

Every key a script touches is passed in KEYS and carries a hash tag, so the scripts also work on
Redis Cluster: one call's keys share a tag, hence a slot (see ``state/keyspace.py``).

Round trips go through the lean client (``state/resp.py``: one multiplexed connection, ~25 us of CPU
per round trip under load) when one is given, else through redis-py's pipeline (~150 us). On Redis
Cluster the lean client is ``resp_cluster.ClusterResp``: each call goes to its slot's master, one
batch per master, all masters in parallel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.state.base import Script, StoreUnavailable
from gateway.state.resp import RespClient, RespError, RespUnavailable, encode
from gateway.state.resp_cluster import ClusterResp
from gateway.state.slots import SlotCache

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError, ConnectionError, TimeoutError)


def _sha(script: Script) -> str:
    return hashlib.sha1(script.lua.encode()).hexdigest()


class RedisState:
    shared = True

    def __init__(self, client: Redis | RedisCluster, lean: RespClient | ClusterResp | None = None) -> None:
        self.client = client
        self.lean = lean
        self._shas: dict[str, str] = {}  # script name -> SHA-1 of its source, computed once
        self._slots = SlotCache()

    def round_trip(self) -> RedisRoundTrip | LeanRoundTrip | ClusterRoundTrip:
        lean = self.lean
        if isinstance(lean, ClusterResp):
            return ClusterRoundTrip(lean, self._shas, self._slots)
        if lean is not None:
            return LeanRoundTrip(lean, self._shas)
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
        if self.lean is not None:
            await self.lean.close()
        await self.client.aclose()


_Call = tuple[Script, Sequence[str], Sequence[Any]]


class _RoundTrip:
    """Queued script calls sent as EVALSHA in one round trip. Scripts the server does not know (first
    use, SCRIPT FLUSH, failover) are sent once more with their source, and only those: the others
    already ran and must not run twice (a limit would count twice)."""

    def __init__(self) -> None:
        self._calls: list[_Call] = []

    def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> int:
        self._calls.append((script, keys, args))
        return len(self._calls) - 1

    async def execute(self) -> list[Any]:
        if not self._calls:
            return []
        results = await self._send(self._calls, use_sha=True)
        missing = [i for i, result in enumerate(results) if self._unknown_script(result)]
        if missing:
            again = await self._send([self._calls[i] for i in missing], use_sha=False)
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, RedisError | RespError):
                raise result
        return results

    async def _send(self, calls: list[_Call], use_sha: bool) -> list[Any]:
        """One round trip; raises StoreUnavailable, returns error replies as values."""
        raise NotImplementedError

    @staticmethod
    def _unknown_script(result: Any) -> bool:
        raise NotImplementedError


class LeanRoundTrip(_RoundTrip):
    """A round trip on the lean client: every call written at once on the shared connection."""

    def __init__(self, client: RespClient, shas: dict[str, str]) -> None:
        super().__init__()
        self._client = client
        self._shas = shas

    async def _send(self, calls: list[_Call], use_sha: bool) -> list[Any]:
        try:
            return await self._client.execute(
                [encode(["EVALSHA", self._sha(s), len(k), *k, *a] if use_sha else ["EVAL", s.lua, len(k), *k, *a])
                 for s, k, a in calls])
        except RespUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc

    @staticmethod
    def _unknown_script(result: Any) -> bool:
        return isinstance(result, RespError) and result.noscript

    def _sha(self, script: Script) -> str:
        sha = self._shas.get(script.name)
        if sha is None:
            sha = self._shas[script.name] = _sha(script)
        return sha


class ClusterRoundTrip(LeanRoundTrip):
    """A round trip on Redis Cluster: each call goes to the master of its keys' slot (one slot per call:
    its keys share a hash tag), one batch per master, all in parallel."""

    def __init__(self, client: ClusterResp, shas: dict[str, str], slots: SlotCache) -> None:
        _RoundTrip.__init__(self)
        self._cluster = client
        self._shas = shas
        self._slot_of = slots.slot

    async def _send(self, calls: list[_Call], use_sha: bool) -> list[Any]:
        slot_of = self._slot_of
        try:
            return await self._cluster.execute(
                [(slot_of(k[0]) if k else 0,
                  encode(["EVALSHA", self._sha(s), len(k), *k, *a] if use_sha else ["EVAL", s.lua, len(k), *k, *a]))
                 for s, k, a in calls])
        except RespUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc


class RedisRoundTrip(_RoundTrip):
    """A round trip through redis-py's pipeline (for rediss:// and unix sockets, which the lean client
    does not speak)."""

    def __init__(self, client: Redis | RedisCluster) -> None:
        super().__init__()
        self._client = client

    async def _send(self, calls: list[_Call], use_sha: bool) -> list[Any]:
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

    @staticmethod
    def _unknown_script(result: Any) -> bool:
        return isinstance(result, NoScriptError)
