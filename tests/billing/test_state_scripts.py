"""The budget and usage scripts behave the same in Redis (Lua) and in process (Python twin)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.metering.budget import BUDGET_RESERVE, BUDGET_SETTLE
from gateway.metering.usage_stage import USAGE_APPEND, local_queue
from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from tests.conftest import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[StateStore, KeySpace]]:
    space = KeySpace("gwtest-scripts-" + secrets.token_hex(4))
    if request.param == "memory":
        yield MemoryState(), space
        return
    client = aioredis.Redis.from_url(REDIS_URL)
    yield RedisState(client), space
    keys = [k async for k in client.scan_iter(match=f"{space.prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def _reserve(store: StateStore, keys: list[str], rid: str, estimate: int, ttl_ms: int,
                   *limits: int) -> tuple[int, int, int, int]:
    result = await store.run(BUDGET_RESERVE, keys, [f"{rid}:{estimate}", estimate, ttl_ms, *limits])
    return tuple(int(x) for x in result)  # type: ignore[return-value]


async def _settle(store: StateStore, space: KeySpace, keys: list[str], rid: str, estimate: int, spent: int) -> int:
    marker = space.budget_settled("org", rid)
    return int(await store.run(BUDGET_SETTLE, [marker, *keys], [f"{rid}:{estimate}", estimate, spent, 60_000, 60_000]))


async def test_reserve_admits_under_the_limit_and_settle_replaces_the_estimate(
        store: tuple[StateStore, KeySpace]) -> None:
    state, space = store
    keys = list(space.budget("org", "2026-11"))
    assert await _reserve(state, keys, "a", 600, 60_000, 1000, 0) == (1, 0, 0, 1000)
    assert await _reserve(state, keys, "b", 600, 60_000, 1000, 0) == (1, 0, 600, 1000)
    assert (await _reserve(state, keys, "c", 600, 60_000, 1000, 0))[:3] == (0, 1, 1200)
    await _settle(state, space, keys, "a", 600, 100)
    await _settle(state, space, keys, "b", 600, 150)
    assert (await _reserve(state, keys, "d", 600, 60_000, 1000, 0))[:3] == (1, 0, 250)
    await _settle(state, space, keys, "d", 600, 800)
    assert (await _reserve(state, keys, "e", 1, 60_000, 1000, 0))[:3] == (0, 1, 1050)


async def test_a_replayed_settle_adds_the_cost_once(store: tuple[StateStore, KeySpace]) -> None:
    """A settling round trip sent again after a Redis stall (it may have run) adds the request's cost once."""
    state, space = store
    keys = [*space.budget("org", "2026-12"), *space.budget("org", "2026-12", "key_a")]
    assert (await _reserve(state, keys, "a", 600, 60_000, 1000, 0, 1000, 0))[0] == 1
    assert await _settle(state, space, keys, "a", 600, 100) == 1
    assert await _settle(state, space, keys, "a", 600, 100) == 0  # the replay
    assert await _reserve(state, keys, "b", 1, 60_000, 1000, 0, 1000, 0) == (1, 0, 100, 1000)
    assert await _settle(state, space, keys, "b", 1, 0) == 1  # another request settles as usual


async def test_org_and_key_budgets_are_checked_together(store: tuple[StateStore, KeySpace]) -> None:
    state, space = store
    keys = [*space.budget("org", "2026-11"), *space.budget("org", "2026-11", "key_a")]
    assert (await _reserve(state, keys, "a", 10, 60_000, 1000, 0, 15, 0))[0] == 1
    refused = await _reserve(state, keys, "b", 10, 60_000, 1000, 0, 15, 0)
    assert refused[:2] == (1, 0)  # 10 < 15 still
    assert (await _reserve(state, keys, "c", 10, 60_000, 1000, 0, 15, 0))[:2] == (0, 2)  # the key's cap


async def test_floor_restores_spend_and_expired_reservations_are_released(
        store: tuple[StateStore, KeySpace]) -> None:
    state, space = store
    keys = list(space.budget("org2", "2026-11"))
    # The store lost its counter (flush, restart): the ledger's month-to-date spend is the floor.
    assert (await _reserve(state, keys, "a", 10, 60_000, 1000, 995))[:3] == (1, 0, 995)
    assert (await _reserve(state, keys, "b", 10, 60_000, 1000, 0))[:3] == (0, 1, 1005)
    other = list(space.budget("org3", "2026-11"))
    assert (await _reserve(state, other, "dead", 900, 1, 1000, 0))[0] == 1  # its replica dies
    await asyncio.sleep(0.01)
    assert (await _reserve(state, other, "next", 900, 60_000, 1000, 0))[:3] == (1, 0, 0)


async def test_usage_append_goes_to_the_stream_or_the_local_queue(store: tuple[StateStore, KeySpace]) -> None:
    state, space = store
    stream = space.usage_stream()
    await state.run(USAGE_APPEND, [stream], [b"record-1"])
    if isinstance(state, MemoryState):
        assert list(local_queue(state)) == [b"record-1"]
    else:
        assert isinstance(state, RedisState)
        entries = await state.client.xrange(stream)
        assert [e[1] for e in entries] == [{b"r": b"record-1"}]
