"""The stored-response scripts on both stores (Redis and the in-process twin): a chain read in one call,
oldest first; a missing link is a 400 naming previous_response_id; the twin stays within its bytes."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway import errors
from gateway.front.responses_store import ResponseStore, StoredResponse
from gateway.state.base import StateStore
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from tests.conftest import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield MemoryState()
        return
    client = Redis.from_url(REDIS_URL)
    yield RedisState(client)
    await client.aclose()


def _record(rid: str, prev: str | None, text: str) -> StoredResponse:
    output = [{"type": "message", "id": "msg_" + rid, "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": "re: " + text, "annotations": []}]}]
    return StoredResponse(rid, prev, [{"type": "message", "role": "user", "content": text}], output,
                          {"id": rid, "output": output})


async def _put(store: ResponseStore, state: StateStore, org: str, *records: StoredResponse) -> None:
    trip = state.round_trip()
    for record in records:
        store.put(trip, org, record)
    await trip.execute()


async def test_a_chain_is_read_in_one_call_oldest_first(state: StateStore) -> None:
    keys = KeySpace("gwtest-" + secrets.token_hex(4))
    store = ResponseStore(state, MemoryState(), keys, 60, 1 << 20, max_chain=5)
    await _put(store, state, "org1", _record("resp_a", None, "one"), _record("resp_b", "resp_a", "two"),
               _record("resp_c", "resp_b", "three"))
    items = await store.history("org1", "resp_c")
    assert [i.get("content") if i["role"] == "user" else i["content"][0]["text"] for i in items] == [
        "one", "re: one", "two", "re: two", "three", "re: three"]
    assert (await store.get("org1", "resp_b"))[0]["id"] == "resp_b"
    with pytest.raises(errors.GatewayError) as other:  # another organisation's id
        await store.history("org2", "resp_c")
    assert other.value.status == 400 and other.value.param == "previous_response_id"
    await store.delete("org1", "resp_a")
    with pytest.raises(errors.GatewayError) as broken:  # a link gone: named
        await store.history("org1", "resp_c")
    assert "resp_a" in broken.value.message
    with pytest.raises(errors.GatewayError) as gone:
        await store.get("org1", "resp_a")
    assert gone.value.status == 404
    short = ResponseStore(state, MemoryState(), keys, 60, 1 << 20, max_chain=2)
    with pytest.raises(errors.GatewayError, match="longer than 2"):
        await short.history("org1", "resp_c")


async def test_the_in_process_store_keeps_within_its_bytes() -> None:
    state = MemoryState()
    store = ResponseStore(state, state, KeySpace("gw"), 60, local_max_bytes=2000, max_chain=100)
    await _put(store, state, "org", *[_record(f"resp_{i}", None, "x" * 100) for i in range(40)])
    box = state.value(KeySpace("gw").responses_local())
    assert 0 < box["bytes"] <= 2000 and len(box["lru"]) < 40
    assert (await store.get("org", "resp_39"))[0]["id"] == "resp_39"  # the newest are kept
    with pytest.raises(errors.GatewayError):
        await store.get("org", "resp_0")
