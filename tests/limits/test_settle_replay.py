"""The Forwarder sends the settling round trip again when its answer was lost (a Redis stall, a dropped
connection), although Redis may have run it: the rate-limit and budget stages settle once per request id,
on Redis and in process alike."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.front.chat import ChatCompletions
from gateway.limits.limit_stage import NOTE, RateLimitStage
from gateway.metering.budget import Budgets, month_of
from gateway.metering.usage_stage import PriceCatalog, usage_record
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.principal import Budget, Principal, RateLimits
from gateway.routing.worker import Worker
from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from gateway.state.resp import RespClient
from tests.conftest import MODEL, REDIS_URL


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[StateStore, KeySpace]]:
    space = KeySpace("gwtest-replay-" + secrets.token_hex(4))
    if request.param == "memory":
        yield MemoryState(), space
        return
    state = RedisState(Redis.from_url(REDIS_URL), RespClient(REDIS_URL))
    yield state, space
    keys = [k async for k in state.client.scan_iter(match=f"{space.prefix}:*")]
    if keys:
        await state.client.delete(*keys)
    await state.close()


def _exchange(request_id: str) -> Exchange:
    principal = Principal("key_a", "org_a", "org a", "salt", True,
                          limits=RateLimits(org_tpd=1_000_000, org_concurrency=5),
                          budget=Budget(month=month_of(time.time()), org_limit_ticks=10**15))
    raw = b'{"model": "%s", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}' % MODEL.encode()
    ex = Exchange(request_id=request_id, principal=principal, request=ChatCompletions().parse(raw),
                  path="/v1/chat/completions", payload=raw)
    ex.worker = Worker(id="w", url="http://127.0.0.1:1", source="config")
    return ex


async def test_a_settling_sent_twice_moves_every_counter_once(store: tuple[StateStore, KeySpace]) -> None:
    state, space = store
    limiter, catalog = RateLimitStage(space), PriceCatalog()
    budgets = Budgets(space, catalog)
    ex = _exchange("req_" + secrets.token_hex(6))
    trip = state.round_trip()
    limiter.plan(ex, trip)
    budgets.plan(ex, trip)
    results = await trip.execute()
    for stage in (limiter, budgets):  # what the Forwarder does: every stage observes, then admits
        stage.observe(ex, results)
    limiter.admit(ex, results)
    budgets.admit(ex, results)
    ex.usage = {"prompt_tokens": 7000, "completion_tokens": 5000, "total_tokens": 12000}
    record = usage_record(ex, catalog)
    assert record is not None and record.billed_ticks > 0

    for _ in range(2):  # the first attempt ran in Redis, but its answer never came back
        settle = state.round_trip()
        limiter.finish(ex, settle)
        budgets.finish(ex, settle)
        await settle.execute()

    probe = _exchange("req_" + secrets.token_hex(6))
    trip = state.round_trip()
    limiter.plan(probe, trip)
    budgets.plan(probe, trip)
    results = await trip.execute()
    lim, budget = results
    org_tpd_remaining, conc_remaining = lim[7], lim[9]
    # 12000 tokens once, plus the probe's own reservation (its prompt estimate and 100 output tokens); the
    # day's bucket drains about a token in 90 ms meanwhile.
    assert 0 <= 1_000_000 - org_tpd_remaining - 12_000 - probe.notes[NOTE].estimate <= 1
    assert conc_remaining == 5 - 1  # only the probe in flight
    assert int(budget[2]) == record.billed_ticks  # spent + reserved before the probe: the cost, once
