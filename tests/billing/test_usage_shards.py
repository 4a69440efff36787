"""The usage stream in shards (GATEWAY_USAGE_STREAM_SHARDS): records take turns over the shards, every
replica's consumers read every shard, and the ledger holds each request once, on both backends."""

from __future__ import annotations

import asyncio
import secrets

import openai

from gateway.metering.spool import Spool
from gateway.metering.usage_stage import USAGE_APPEND, local_queue
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.slots import key_slot
from tests.billing.test_metering import ledger_rows
from tests.conftest import MODEL, Backend, gateway_settings, serve_gateway
from workersim.run import RunningSim

SHARDS = 3


async def test_a_sharded_stream_meters_every_request_once(backend: Backend, sims: list[RunningSim]) -> None:
    backend = Backend(backend.name, backend.database_url, backend.redis_url,
                      backend.redis_prefix + "-shards-" + secrets.token_hex(2))
    settings = gateway_settings(backend, [s.url for s in sims], usage_stream_shards=SHARDS)
    replicas = [await serve_gateway(settings) for _ in range(2 if backend.redis_url else 1)]
    try:
        rt = replicas[0].app.runtime
        org = await rt.keys.create_org("shards-" + secrets.token_hex(3))
        key = (await rt.keys.create_key(org.id, "k")).key
        clients = [openai.AsyncOpenAI(base_url=r.url + "/v1", api_key=key, max_retries=0) for r in replicas]
        await asyncio.gather(*(clients[i % len(clients)].chat.completions.create(
            model=MODEL, max_tokens=4, messages=[{"role": "user", "content": f"count {i}"}]) for i in range(12)))
        for c in clients:
            await c.close()
        rows = await ledger_rows(replicas[0], org.id, 12)
        assert len(rows) == 12 and len({r.request_id for r in rows}) == 12
        consumers = rt.billing.stream_consumers
        if rt.redis is None:
            assert consumers == []
            return
        # Every shard was written to (turns per replica: 6 records each over 3 shards) and is read by
        # consumers of every replica.
        assert sorted({c.stream for c in consumers}) == sorted(rt.keyspace.usage_streams(SHARDS))
        added = []
        for stream in rt.keyspace.usage_streams(SHARDS):
            info = await rt.redis.xinfo_stream(stream)
            added.append(int(info["entries-added"]))
            assert await rt.redis.xlen(stream) == 0  # all written and deleted
        assert added == [4, 4, 4]
    finally:
        for rep in replicas:
            await rep.stop()


async def test_shards_hash_apart_and_fall_back_to_the_one_local_queue() -> None:
    space = KeySpace("gw")
    streams = space.usage_streams(4)
    assert streams[0] == "gw:{usage}"  # shard 0 keeps the unsharded name: an upgrade loses no entry
    assert len({key_slot(s) for s in streams}) == 4
    assert space.usage_epoch(2) == "gw:{usage:2}:epoch"
    state = MemoryState()
    for i, stream in enumerate(streams):
        await state.run(USAGE_APPEND, [stream], [b"record-%d" % i])
    assert list(local_queue(state)) == [b"record-0", b"record-1", b"record-2", b"record-3"]


def test_the_spool_replays_the_shard_that_lost_its_data_only() -> None:
    spool = Spool(300.0, 100)
    spool.add(b"a", 0)
    spool.add(b"b", 1)
    spool.add(b"c", 1)
    assert not spool.epoch_changed(b"e1", 0) and not spool.epoch_changed(b"e1", 1)
    assert not spool.epoch_changed(b"e1", 0)
    assert spool.epoch_changed(b"e2", 1)
    assert spool.recent(1) == [b"b", b"c"] and spool.recent(0) == [b"a"]

