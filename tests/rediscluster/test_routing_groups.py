"""Worker groups on Redis Cluster: each group's routing keys in their own slot (its own hash tag), so a
model's routed requests spread over masters; every script call still touches one slot."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from gateway.routing.router import PrefixRouter, RouterConfig
from gateway.state.keyspace import KeySpace
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from gateway.state.resp_cluster import ClusterResp
from gateway.state.slots import key_slot
from tests.private_cluster import PrivateCluster
from tests.routing.test_groups import MODEL, _pool, conversation, route_one


async def test_each_worker_group_routes_in_its_own_slot(redis_cluster: PrivateCluster) -> None:
    ks = KeySpace("gwtest-clgrp-" + secrets.token_hex(3))
    state = RedisState(Redis.from_url(redis_cluster.url), ClusterResp(redis_cluster.url, reply_timeout=30.0))
    try:
        pool = await _pool(24)
        router = PrefixRouter(pool, ks, MemoryState(), state, RouterConfig(groups=4))
        used: set[int] = set()
        for i in range(32):
            worker, keys = await route_one(router, state, pool, conversation(i % 8, i // 8), f"r{i}")
            assert len({key_slot(k) for k in keys}) == 1  # one call, one slot
            assert key_slot(keys[1]) == key_slot(ks.route_tag(MODEL, router.groups.of(worker.id)))
            used.add(router.groups.of(worker.id))
        assert len(used) >= 3
        # the groups' tags are different slots, served by more than one master; and the keys are there
        slots = {g: key_slot(ks.route_tag(MODEL, g)) for g in range(4)}
        assert len(set(slots.values())) == 4
        owners = {g: (await redis_cluster.master_of(ks.route_tag(MODEL, g))).port for g in range(4)}
        assert len(set(owners.values())) >= 2
        for g in used:
            node = next(n for n in redis_cluster.nodes if n.port == owners[g])
            direct = Redis.from_url(redis_cluster.node_url(node))
            try:
                found = await direct.keys(ks.route_tag(MODEL, g) + ":idx:*")
            finally:
                await direct.aclose()
            assert found and all(router.groups.of(k.decode().rsplit(":", 1)[1]) == g for k in found)
        assert router.stats.prefix_hits >= 16
    finally:
        await state.close()
