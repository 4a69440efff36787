"""Coalesced round trips: concurrent trips share a pipeline, each gets its own results, nothing runs twice."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway.state.base import Script, StoreUnavailable
from gateway.state.coalesce import CoalescingRedisState
from tests.conftest import REDIS_URL


def _none(*_: Any) -> Any:
    raise AssertionError("the in-process twin is not used here")


INCR = Script("test_incr", "return redis.call('INCRBY', KEYS[1], ARGV[1])", _none)
FAIL = Script("test_fail", "return redis.error_reply('boom')", _none)


@pytest.fixture
async def coalescing() -> AsyncIterator[tuple[CoalescingRedisState, str]]:
    client = aioredis.Redis.from_url(REDIS_URL)
    key = f"gwtest-coalesce-{secrets.token_hex(4)}:{{c}}"
    state = CoalescingRedisState(client)
    yield state, key
    await client.delete(key)
    await state.close()


async def test_concurrent_trips_share_pipelines_and_get_their_own_results(
        coalescing: tuple[CoalescingRedisState, str]) -> None:
    state, key = coalescing
    sent: list[int] = []
    real = state._pipeline

    async def counting(calls: Any, use_sha: Any) -> list[Any]:
        sent.append(len(calls))
        return await real(calls, use_sha)

    state._pipeline = counting  # type: ignore[method-assign]

    async def trip(i: int) -> list[Any]:
        t = state.round_trip()
        t.call(INCR, [key], [i])
        t.call(INCR, [key], [0])
        return await t.execute()

    results = await asyncio.gather(*(trip(i) for i in range(1, 41)))
    assert all(second == first for first, second in results)  # each trip's two calls ran back to back
    assert sorted(first for first, _ in results)[-1] == sum(range(1, 41))
    assert sum(sent) == 80 and len(sent) < 40  # fewer pipelines than trips


async def test_a_flushed_script_cache_reruns_nothing(coalescing: tuple[CoalescingRedisState, str]) -> None:
    state, key = coalescing
    trip = state.round_trip()
    trip.call(INCR, [key], [1])
    assert await trip.execute() == [1]
    await state.client.script_flush()
    trip = state.round_trip()
    trip.call(INCR, [key], [1])
    trip.call(INCR, [key], [1])
    assert await trip.execute() == [2, 3]


async def test_an_error_fails_only_its_own_trip(coalescing: tuple[CoalescingRedisState, str]) -> None:
    state, key = coalescing
    good, bad = state.round_trip(), state.round_trip()
    good.call(INCR, [key], [5])
    bad.call(FAIL, [key], [])
    outcome = await asyncio.gather(good.execute(), bad.execute(), return_exceptions=True)
    assert outcome[0] == [5]
    assert isinstance(outcome[1], ResponseError)


async def test_a_cancelled_caller_s_trip_still_runs(coalescing: tuple[CoalescingRedisState, str]) -> None:
    state, key = coalescing
    trip = state.round_trip()
    trip.call(INCR, [key], [7])
    task = asyncio.ensure_future(trip.execute())
    await asyncio.sleep(0)
    task.cancel()
    follow = state.round_trip()
    follow.call(INCR, [key], [0])
    assert await follow.execute() == [7]


async def test_unreachable_redis_raises_store_unavailable() -> None:
    state = CoalescingRedisState(aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5))
    trip = state.round_trip()
    trip.call(INCR, ["k"], [1])
    with pytest.raises(StoreUnavailable):
        await trip.execute()
    await state.close()
