"""The shared-state suites, run again on a 6-node Redis Cluster (3 masters, 3 replicas): limits exact
across two replicas, routing consistent across replicas, the ledger exactly once, revocation. The tests
are the very ones of the single-node suites; this package's conftest points their backend at the cluster."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from gateway.state.redis import RedisState
from gateway.state.resp_cluster import ClusterResp
from tests.billing.test_ledger import test_writer_killed_between_insert_and_ack_loses_and_doubles_nothing
from tests.billing.test_metering import test_every_request_is_metered_once_streaming_or_not
from tests.billing.test_usage_shards import test_a_sharded_stream_meters_every_request_once
from tests.conftest import ServedGateway
from tests.gateway.test_keys_admin import test_revocation_reaches_another_replica
from tests.limits.test_exactness import (
    test_concurrency_limit_never_exceeded_at_the_worker,
    test_two_replicas_let_exactly_the_limit_through,
)
from tests.private_cluster import PrivateCluster
from tests.routing.test_routing_gateway import (
    test_every_request_is_settled_and_releases_its_inflight_slot,
    test_same_prefix_lands_on_the_same_worker_through_either_replica,
)

__all__ = [
    "test_a_sharded_stream_meters_every_request_once",
    "test_concurrency_limit_never_exceeded_at_the_worker",
    "test_every_request_is_metered_once_streaming_or_not",
    "test_every_request_is_settled_and_releases_its_inflight_slot",
    "test_revocation_reaches_another_replica",
    "test_same_prefix_lands_on_the_same_worker_through_either_replica",
    "test_two_replicas_let_exactly_the_limit_through",
    "test_writer_killed_between_insert_and_ack_loses_and_doubles_nothing",
]


async def test_the_gateway_finds_the_cluster_from_one_node(gateway: ServedGateway, redis_cluster: PrivateCluster,
                                                           api_key: str, make_openai: Any) -> None:
    rt = gateway.app.runtime
    assert isinstance(rt.state, RedisState) and isinstance(rt.state.lean, ClusterResp)
    client = make_openai(api_key)
    for i in range(6):
        await client.chat.completions.create(model="grok-code-fast-1", max_tokens=4,
                                             messages=[{"role": "user", "content": f"hello {i} " * 30}])
    assert len(rt.state.lean.masters()) == 3
    # The keys the requests wrote (limits, routing, usage stream) live on more than one master.
    holders = 0
    for node in await redis_cluster.masters():
        direct = Redis.from_url(redis_cluster.node_url(node))
        try:
            holders += bool(await direct.keys(f"{rt.keyspace.prefix}:*"))
        finally:
            await direct.aclose()
    assert holders >= 2
