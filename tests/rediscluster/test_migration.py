"""A slot migrating while requests come: served (ASK with ASKING, TRYAGAIN waited out, then MOVED), and the
limit still lets exactly its number through, across two replicas, with each answered request in the
ledger once. And ASK itself, on the lean client: a key already on the importing node is found there."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
from redis.asyncio import Redis
from sqlalchemy import func, select

from billing.ledger.ledger_tables import UsageRow
from gateway.state.redis import RedisState
from gateway.state.resp import encode
from gateway.state.resp_cluster import ClusterResp
from gateway.state.slots import key_slot
from tests.conftest import Backend, ServedGateway, gateway_settings, serve_gateway
from tests.limits.helpers import complete, new_key, org_with_plan
from tests.private_cluster import ClusterNode, PrivateCluster
from workersim.run import RunningSim


async def _node_id(cluster: PrivateCluster, node: ClusterNode) -> str:
    client = Redis.from_url(cluster.node_url(node))
    try:
        return str((await client.execute_command("CLUSTER", "MYID")).decode())
    finally:
        await client.aclose()


async def _start_migration(cluster: PrivateCluster, slot: int, source: ClusterNode, target: ClusterNode) -> None:
    """IMPORTING on the target, MIGRATING on the source, then every key of the slot MIGRATEd: the source
    answers ASK for each of them from now on."""
    src, dst = Redis.from_url(cluster.node_url(source)), Redis.from_url(cluster.node_url(target))
    try:
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", await _node_id(cluster, source))
        await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", await _node_id(cluster, target))
        while keys := await src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            await src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    finally:
        await src.aclose()
        await dst.aclose()


async def _finish_migration(cluster: PrivateCluster, slot: int, target: ClusterNode) -> None:
    target_id = await _node_id(cluster, target)
    for node in await cluster.masters():
        client = Redis.from_url(cluster.node_url(node))
        try:
            await client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        finally:
            await client.aclose()


async def _ledger_count(replicas: list[ServedGateway], org: str, expected: int) -> int:
    count = 0
    for _ in range(200):
        async with replicas[0].app.runtime.sessions() as s:
            count = int((await s.execute(select(func.count()).where(UsageRow.org_id == org))).scalar_one())
        if count >= expected:
            break
        await asyncio.sleep(0.05)
    return count


async def test_a_slot_migrating_mid_load_is_served_and_counted_once(
        redis_cluster: PrivateCluster, backend: Backend, sims: list[RunningSim]) -> None:
    replicas = [await serve_gateway(gateway_settings(backend, [s.url for s in sims])) for _ in range(2)]
    try:
        rt = replicas[0].app.runtime
        async with aiohttp.ClientSession() as http:
            org, _ = await org_with_plan(http, replicas[0].url, "mig-" + secrets.token_hex(3), rpm=10)
            key = (await new_key(http, replicas[0].url, org))["key"]
            before = [await complete(http, replicas[i % 2].url, key) for i in range(4)]
            assert [r[0] for r in before] == [200] * 4

            slot = key_slot(rt.keyspace.limit_buckets(org))
            source = await redis_cluster.master_of(rt.keyspace.limit_buckets(org))
            target = next(n for n in await redis_cluster.masters() if n.port != source.port)


            async def migrate() -> None:  # what a resharding does, while the requests below are in flight
                await asyncio.sleep(0.01)
                await _start_migration(redis_cluster, slot, source, target)
                await _finish_migration(redis_cluster, slot, target)

            *during, _ = await asyncio.gather(*(complete(http, replicas[i % 2].url, key) for i in range(16)),
                                              migrate())
            after = await asyncio.gather(*(complete(http, replicas[i % 2].url, key) for i in range(10)))

        statuses = [r[0] for r in [*before, *during, *after]]
        assert statuses.count(200) == 10 and statuses.count(429) == 20
        assert [r[0] for r in during].count(200) == 6
        redirects = 0
        for rep in replicas:
            state = rep.app.runtime.state
            assert isinstance(state, RedisState) and isinstance(state.lean, ClusterResp)
            redirects += state.lean.redirects
            assert state.lean.owner(slot) == ("127.0.0.1", target.port)  # MOVED taught the new owner
            assert rep.app.runtime.limiter.stats.local_fallbacks == 0  # all of it on the cluster
        assert redirects > 0  # at least the MOVED of the slot's new owner
        assert await _ledger_count(replicas, org, 10) == 10
    finally:
        for rep in replicas:
            await rep.stop()


async def test_ask_sends_the_command_to_the_importing_node(redis_cluster: PrivateCluster) -> None:
    key = "gwtest-ask:{ask-" + secrets.token_hex(3) + "}"
    slot = key_slot(key)
    lean = ClusterResp(redis_cluster.url)
    try:
        assert await lean.execute([(slot, encode(["INCR", key]))]) == [1]
        source = await redis_cluster.master_of(key)
        target = next(n for n in await redis_cluster.masters() if n.port != source.port)
        await _start_migration(redis_cluster, slot, source, target)  # the key is on the target now
        assert lean.owner(slot) == ("127.0.0.1", source.port)
        assert await lean.execute([(slot, encode(["INCR", key]))]) == [2]  # ASK, then ASKING + INCR there
        assert lean.redirects == 1 and lean.owner(slot) == ("127.0.0.1", source.port)  # ASK changes no map
        await _finish_migration(redis_cluster, slot, target)
        assert await lean.execute([(slot, encode(["INCR", key]))]) == [3]  # MOVED: the map learns
        assert lean.owner(slot) == ("127.0.0.1", target.port)
    finally:
        await lean.close()
