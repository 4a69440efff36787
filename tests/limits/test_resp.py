"""The lean Redis client behind round trips: replies of every type, unknown scripts, lost connections."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from gateway.state.base import Script, StoreUnavailable
from gateway.state.redis import RedisState
from gateway.state.resp import RespClient, RespError, RespUnavailable, encode
from tests.private_redis import private_redis


def _echo(_: object, keys: object, args: object, now: int) -> object:
    return None


async def test_replies_of_every_type_in_one_round_trip() -> None:
    async with private_redis() as server:
        client = RespClient(server.url)
        try:
            replies = await client.execute([
                encode(["SET", "k", "v"]), encode(["GET", "k"]), encode(["GET", "missing"]),
                encode(["INCRBY", "n", 41]), encode(["EVAL", "return {1, 'two', {3}}", 0]),
                encode(["EVAL", "return redis.error_reply('boom')", 0]), encode(["PING"]),
            ])
            assert replies[:5] == [b"OK", b"v", None, 41, [1, b"two", [3]]]
            assert isinstance(replies[5], RespError) and "boom" in str(replies[5])
            assert replies[6] == b"PONG"
            # Many callers at once share the connection; each gets its own replies.
            got = await asyncio.gather(*(client.execute([encode(["INCR", f"c{i % 3}"])]) for i in range(90)))
            assert sorted(r[0] for r in got) == sorted(list(range(1, 31)) * 3)
            big = b"x" * 300_000  # arrives in many pieces
            assert (await client.execute([encode(["SET", "big", big]), encode(["GET", "big"])]))[1] == big
        finally:
            await client.close()


async def test_unknown_scripts_are_sent_once_and_nothing_runs_twice() -> None:
    async with private_redis() as server:
        count = Script("count_up", "return redis.call('INCR', KEYS[1])", _echo)
        state = RedisState(Redis.from_url(server.url), RespClient(server.url))
        try:
            trip = state.round_trip()
            trip.call(count, ["a"], [])
            assert await trip.execute() == [1]
            await state.lean.execute([encode(["SCRIPT", "FLUSH"])])  # type: ignore[union-attr]
            other = Script("count_other", "return redis.call('INCRBY', KEYS[1], 10)", _echo)
            trip = state.round_trip()
            trip.call(count, ["a"], [])
            trip.call(other, ["b"], [])
            assert await trip.execute() == [2, 10]
            # One known, one unknown: the known one must not run again.
            unknown = Script("count_third", "return redis.call('INCRBY', KEYS[1], 100)", _echo)
            trip = state.round_trip()
            trip.call(count, ["a"], [])
            trip.call(unknown, ["c"], [])
            assert await trip.execute() == [3, 100]
            bad = Script("bad", "return redis.error_reply('nope')", _echo)
            trip = state.round_trip()
            trip.call(bad, [], [])
            with pytest.raises(RespError):
                await trip.execute()
        finally:
            await state.close()


async def test_a_lost_connection_fails_the_round_trip_and_the_next_one_reconnects() -> None:
    async with private_redis() as server:
        client = RespClient(server.url)
        try:
            assert await client.execute([encode(["PING"])]) == [b"PONG"]
            server.kill()
            with pytest.raises(RespUnavailable):
                await client.execute([encode(["PING"])])
            with pytest.raises(RespUnavailable):
                await client.execute([encode(["PING"])])  # refused while down
            await server.start()
            assert await client.execute([encode(["PING"])]) == [b"PONG"]
            state = RedisState(Redis.from_url(server.url), client)
            server.kill()
            trip = state.round_trip()
            trip.call(Script("x", "return 1", _echo), [], [])
            with pytest.raises(StoreUnavailable):
                await trip.execute()
        finally:
            await client.close()


async def test_url_with_database_and_password() -> None:
    async with private_redis() as server:
        admin = RespClient(server.url)
        await admin.execute([encode(["CONFIG", "SET", "requirepass", "s3cret"])])
        await admin.close()
        url = server.url.replace("redis://", "redis://:s3cret@").rsplit("/", 1)[0] + "/3"
        client = RespClient(url)
        try:
            await client.execute([encode(["SET", "in-db-3", "yes"])])
            other = Redis.from_url(url)
            assert await other.get("in-db-3") == b"yes"
            assert await Redis.from_url(url.rsplit("/", 1)[0] + "/0").get("in-db-3") is None
            await other.aclose()
            with pytest.raises(RespUnavailable):
                await RespClient(server.url.replace("redis://", "redis://:wrong@")).execute([encode(["PING"])])
        finally:
            await client.close()
