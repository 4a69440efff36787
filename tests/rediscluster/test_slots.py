"""The key-to-slot function agrees with Redis Cluster's (CRC16 XMODEM of the hash tag, mod 16384)."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.state.keyspace import KeySpace
from gateway.state.slots import SlotCache, crc16, hash_tag, key_slot
from tests.private_cluster import PrivateCluster


def test_crc16_and_hash_tags() -> None:
    assert crc16(b"123456789") == 0x31C3  # the XMODEM check value
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") == key_slot("user1000")
    assert hash_tag(b"foo{}{bar}") == b"foo{}{bar}"  # an empty tag: the whole key
    assert hash_tag(b"foo{{bar}}zap") == b"{bar"
    cache = SlotCache(size=2)
    assert [cache.slot(k) for k in ("a", "b", "c", "a")] == [key_slot(k) for k in ("a", "b", "c", "a")]


async def test_the_slots_of_every_key_family_match_the_cluster(redis_cluster: PrivateCluster) -> None:
    space = KeySpace("gw")
    keys = [space.limit_buckets("org1"), space.limit_leases("org1", "key1"), space.limit_settled("org1", "r"),
            *space.budget("org1", "2026-12", "key1"), space.budget_settled("org1", "r"), space.usage_stream(3),
            space.usage_epoch(3), space.billing_sync_lock(), space.prefix_index("m{x}", "w1"),
            space.inflight("m", "w1"), space.affinity("m", "h"), space.inflight("m", "w1", 3),
            space.affinity("m{x}", "h", 2), space.probe()]
    client = Redis.from_url(redis_cluster.url)
    try:
        for key in keys:
            assert await client.execute_command("CLUSTER", "KEYSLOT", key) == key_slot(key), key
    finally:
        await client.aclose()
    # One script's keys share one slot.
    assert len({key_slot(k) for k in (space.limit_buckets("o"), space.limit_buckets("o", "k"),
                                       space.limit_leases("o"), space.limit_settled("o", "r"))}) == 1
    assert len({key_slot(k) for k in (*space.budget("o", "2026-12"), *space.budget("o", "2026-12", "k"),
                                       space.budget_settled("o", "r"))}) == 1
    assert len({key_slot(k) for k in (space.prefix_index("m", "a"), space.inflight("m", "b"),
                                       space.affinity("m", "h"))}) == 1
