"""The limiter scripts against both stores: Lua on real Redis and the Python twins in process.

Time is passed explicitly (the scripts' ``now`` argument), so refills are exact and nothing sleeps.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.limits.scripts import RENEW, RESERVE, SETTLE
from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from gateway.state.resp import RespClient
from tests.conftest import REDIS_URL

T0 = 1_900_000_000_000  # a fixed "now" in ms
LEASE = 600_000


@pytest.fixture(params=["memory", "redis", "redis-lean"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    """In process, on Redis through redis-py's pipeline, and on Redis through the lean client."""
    if request.param == "memory":
        yield MemoryState()
        return
    lean = RespClient(REDIS_URL) if request.param == "redis-lean" else None
    state = RedisState(Redis.from_url(REDIS_URL), lean)
    yield state
    await state.close()


@pytest.fixture
def space() -> KeySpace:
    return KeySpace("gwtest-lim-" + secrets.token_hex(4))


@pytest.fixture(autouse=True)
async def _cleanup(space: KeySpace) -> AsyncIterator[None]:
    yield
    client = Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{space.prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _keys(space: KeySpace, org: str = "org_a", key: str = "key_a") -> list[str]:
    return [space.limit_buckets(org), space.limit_leases(org), space.limit_buckets(org, key),
            space.limit_leases(org, key)]


def limits(org: tuple[int, int, int, int] = (0, 0, 0, 0), key: tuple[int, int, int, int] = (0, 0, 0, 0)) -> list[int]:
    return [*org, *key]


SETTLED_MS = 60_000


class Limiter:
    def __init__(self, store: StateStore, space: KeySpace, org: str = "org_a", key: str = "key_a") -> None:
        self.store, self.keys = store, _keys(space, org, key)
        self.space, self.org = space, org

    async def reserve(self, vector: list[int], now: int = T0, tokens: int = 0, rid: str = "r",
                      lease: int = LEASE) -> list[int]:
        return [int(v) for v in await self.store.run(RESERVE, self.keys, [now, rid, lease, tokens, *vector])]

    async def settle(self, vector: list[int], delta: int, now: int = T0, rid: str = "r") -> int:
        return int(await self.store.run(SETTLE, [*self.keys, self.space.limit_settled(self.org, rid)],
                                        [now, rid, delta, *vector, SETTLED_MS]))


async def test_requests_per_minute_exact_then_refill(store: StateStore, space: KeySpace) -> None:
    lim = Limiter(store, space)
    rpm = limits(org=(10, 0, 0, 0))
    answers = [await lim.reserve(rpm, rid=f"r{i}") for i in range(12)]
    assert [a[0] for a in answers] == [1] * 10 + [0, 0]
    assert answers[0][3:5] == [9, 6000]  # remaining 9, full again in 6 s
    assert answers[9][3:5] == [0, 60000]
    refused = answers[10]
    assert refused[1] == 1 and refused[2] == 6000  # org RPM; one request frees up in 6 s
    assert (await lim.reserve(rpm, now=T0 + 5999))[0] == 0
    assert (await lim.reserve(rpm, now=T0 + 6000))[0] == 1
    assert (await lim.reserve(rpm, now=T0 + 6001))[0] == 0


async def test_tokens_reserve_then_settle_to_real_usage(store: StateStore, space: KeySpace) -> None:
    lim = Limiter(store, space)
    tpm = limits(org=(0, 1000, 0, 0))
    first = await lim.reserve(tpm, tokens=600, rid="a")
    assert first[0] == 1 and first[5:7] == [400, 36000]
    second = await lim.reserve(tpm, tokens=600, rid="b")
    assert second[:3] == [0, 2, 12000]  # org TPM; 200 tokens short at 1000/min
    await lim.settle(tpm, delta=200 - 600, rid="a")  # the first used only 200
    third = await lim.reserve(tpm, tokens=600, rid="b")
    assert third[0] == 1 and third[5] == 200
    # A long answer settles above its reservation: the debt blocks the next request.
    await lim.settle(tpm, delta=400, rid="b")
    assert (await lim.reserve(tpm, tokens=1, rid="c"))[:2] == [0, 2]


async def test_request_larger_than_the_limit_can_never_fit(store: StateStore, space: KeySpace) -> None:
    lim = Limiter(store, space)
    answer = await lim.reserve(limits(org=(100, 1000, 0, 0)), tokens=1001)
    assert answer[:3] == [0, 2, -1]
    assert answer[3] == 100  # nothing was reserved, not even the request


async def test_tokens_per_day(store: StateStore, space: KeySpace) -> None:
    lim = Limiter(store, space)
    tpd = limits(org=(0, 0, 86_400, 0))
    assert (await lim.reserve(tpd, tokens=86_000))[0] == 1
    refused = await lim.reserve(tpd, tokens=1000)
    assert refused[:3] == [0, 3, 600_000]  # 600 tokens short at one token per second
    assert (await lim.reserve(tpd, tokens=1000, now=T0 + 600_000))[0] == 1


async def test_concurrency_leases(store: StateStore, space: KeySpace) -> None:
    lim = Limiter(store, space)
    conc = limits(org=(0, 0, 0, 2))
    assert (await lim.reserve(conc, rid="a"))[0] == 1
    b = await lim.reserve(conc, rid="b")
    assert b[0] == 1 and b[9] == 0  # no slot left
    assert (await lim.reserve(conc, rid="c"))[:2] == [0, 4]
    assert await lim.settle(conc, 0, rid="a") == 1
    assert await lim.settle(conc, 0, rid="a") == 0  # releasing twice is harmless
    assert (await lim.reserve(conc, rid="c"))[0] == 1
    # A replica that died never releases: its lease runs out instead.
    assert (await lim.reserve(conc, rid="d", now=T0 + LEASE - 1))[0] == 0
    assert (await lim.reserve(conc, rid="d", now=T0 + LEASE))[0] == 1


async def test_renewal_extends_only_leases_still_held(store: StateStore, space: KeySpace) -> None:
    lim = Limiter(store, space)
    conc = limits(org=(0, 0, 0, 2))
    assert (await lim.reserve(conc, rid="a"))[0] == 1
    assert (await lim.reserve(conc, rid="b"))[0] == 1
    assert await lim.settle(conc, 0, rid="a") == 1
    org_leases = lim.keys[1]
    # a settled, c never held: only b is extended (and nothing comes back to life)
    assert await store.run(RENEW, [org_leases], [T0 + LEASE - 1, LEASE, "a", "b", "c"]) == 1
    assert (await lim.reserve(conc, rid="d", now=T0 + LEASE))[0] == 1  # b's first lease would be over now
    refused = await lim.reserve(conc, rid="e", now=T0 + LEASE)
    assert refused[:2] == [0, 4]  # b (renewed) and d hold both slots
    assert (await lim.reserve(conc, rid="e", now=T0 + 2 * LEASE - 2))[:2] == [0, 4]
    assert (await lim.reserve(conc, rid="e", now=T0 + 2 * LEASE))[0] == 1  # d's lease ran out, b's too
    assert await store.run(RENEW, [org_leases], [T0 + 2 * LEASE, LEASE, "b"]) == 0  # purged: stays gone


async def test_key_limit_is_checked_with_the_org_and_refusal_reserves_nothing(store: StateStore,
                                                                              space: KeySpace) -> None:
    key_a = Limiter(store, space, key="key_a")
    key_b = Limiter(store, space, key="key_b")
    vector = limits(org=(5, 0, 0, 0), key=(2, 0, 0, 0))
    assert [(await key_a.reserve(vector))[0] for _ in range(3)] == [1, 1, 0]
    refused = await key_a.reserve(vector)
    assert refused[1] == 5  # the key's RPM
    assert refused[3] == 3  # the org still has 3: the refusals took nothing
    org_only = limits(org=(5, 0, 0, 0))  # key_b has no limit of its own
    assert [(await key_b.reserve(org_only))[0] for _ in range(4)] == [1, 1, 1, 0]
    assert (await key_b.reserve(org_only))[1] == 1  # now the org's RPM binds


async def test_settle_moves_org_and_key_buckets(store: StateStore, space: KeySpace) -> None:
    lim = Limiter(store, space)
    vector = limits(org=(0, 10_000, 100_000, 1), key=(0, 1000, 0, 1))
    assert (await lim.reserve(vector, tokens=900))[0] == 1
    assert await lim.settle(vector, delta=-800) == 2  # both leases released
    after = await lim.reserve(vector, tokens=900, rid="s")
    assert after[0] == 1
    assert after[5] == 10_000 - 1000  # org TPM: 100 settled + 900 reserved
    assert after[7] == 100_000 - 1000
    assert after[13] == 1000 - 1000


async def test_a_replayed_settle_moves_the_buckets_once(store: StateStore, space: KeySpace) -> None:
    """The Forwarder sends a settling round trip again when its answer was lost (Redis stalled, the
    connection dropped), although Redis may have run it: the replay of one request id changes nothing."""
    lim = Limiter(store, space)
    vector = limits(org=(0, 10_000, 0, 2), key=(0, 5000, 0, 0))
    assert (await lim.reserve(vector, tokens=900, rid="a"))[0] == 1
    assert (await lim.reserve(vector, tokens=100, rid="b"))[0] == 1
    assert await lim.settle(vector, delta=300, rid="a") == 1
    assert await lim.settle(vector, delta=300, rid="a") == 0  # the replay
    after = await lim.reserve(vector, tokens=0, rid="c")
    assert after[0] == 1
    assert after[5] == 10_000 - 900 - 300 - 100  # org TPM: the real usage of a, once, and b's reservation
    assert after[13] == 5000 - 900 - 300 - 100  # the key's TPM likewise
    assert after[9] == 0  # b and c in flight: a's lease was released once


async def test_both_stores_answer_alike(space: KeySpace) -> None:
    """A random sequence of reservations and settlements gives identical answers on both stores."""
    memory = Limiter(MemoryState(), space)
    redis_state = RedisState(Redis.from_url(REDIS_URL), RespClient(REDIS_URL))
    redis_lim = Limiter(redis_state, space)
    rng = random.Random(7)
    vector = limits(org=(20, 5000, 50_000, 3), key=(8, 2000, 0, 2))
    now = T0
    open_ids: list[str] = []
    try:
        for i in range(200):
            now += rng.randint(0, 3000)
            if open_ids and rng.random() < 0.5:
                rid = open_ids.pop(rng.randrange(len(open_ids)))
                delta = rng.randint(-400, 400)
                got: list[Any] = [await memory.settle(vector, delta, now, rid),
                                  await redis_lim.settle(vector, delta, now, rid)]
            else:
                rid, tokens = f"r{i}", rng.randint(1, 900)
                got = [await memory.reserve(vector, now, tokens, rid),
                       await redis_lim.reserve(vector, now, tokens, rid)]
                if got[0][0]:
                    open_ids.append(rid)
            assert got[0] == got[1], f"step {i}: {got}"
    finally:
        await redis_state.close()
