"""The Responses target: a 20-turn conversation continued by ``previous_response_id`` reaches the same
cached share as the same conversation resent as chat messages, within 1 point (bench/responses_cache.py)."""

from __future__ import annotations

import secrets

from bench.responses_cache import compare
from tests.conftest import ServedGateway


async def test_a_chained_conversation_caches_like_a_resent_one(gateway: ServedGateway) -> None:
    rt = gateway.app.runtime
    keys = []
    for _ in range(2):  # two organisations: each conversation starts with a cold (salted) cache
        org = await rt.keys.get_or_create_org("share-" + secrets.token_hex(3))
        keys.append((await rt.keys.create_key(org.id, "k")).key)
    shares = await compare(gateway.url + "/v1", (keys[0], keys[1]), turns=20)
    assert shares.chat > 0.8, shares  # a resent conversation is mostly cached
    assert shares.gap_points <= 1.0, shares
