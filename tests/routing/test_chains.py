"""A conversation's next turn hashes only the blocks it adds, and every request's hashes are what
``block_hashes`` gives for it, whatever came before."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.agent_bodies import conversation_turns
from gateway.routing.chains import HashChains
from gateway.routing.prefix import block_hashes, blocks_in_bytes, chat_canonical, root_hash

ROOT = root_hash("m", "")


def _turns() -> list[tuple[bytes, int]]:
    return [chat_canonical(body) for body in conversation_turns(128 * 1024)]


def test_each_turn_hashes_only_what_it_adds() -> None:
    chains = HashChains()
    turns = _turns()
    assert len(turns) > 10
    before = 0
    for i, (data, opening) in enumerate(turns):
        assert chains.hashes(data, opening, ROOT, 512, 1024) == block_hashes(data, ROOT, 512, 1024)
        reused = chains.reused_blocks - before
        before = chains.reused_blocks
        if i >= 2:  # every block of the previous turn came from the chain (turn 0 has no answer: another opening)
            previous, _ = turns[i - 1]
            assert reused == blocks_in_bytes(len(previous), 512) > 0
    data, opening = turns[-1]
    assert chains.hashes(data, opening, ROOT, 512, 1024) == block_hashes(data, ROOT, 512, 1024)  # the same again
    assert chains.reused_blocks - before == blocks_in_bytes(len(data), 512)
    assert len(chains) == 2  # turn 0 kept its own opening


def test_a_changed_turn_an_earlier_turn_and_other_roots_hash_in_full() -> None:
    chains = HashChains()
    turns = _turns()
    data, opening = turns[5]
    chains.hashes(data, opening, ROOT, 512, 1024)
    for other, at in ((bytearray(turns[6][0]), opening + 10), (bytearray(turns[6][0]), len(data) - 600)):
        other[at] ^= 1  # the same opening, different bytes later: the digest differs
        changed = bytes(other)
        before = chains.reused_blocks
        assert chains.hashes(changed, opening, ROOT, 512, 1024) == block_hashes(changed, ROOT, 512, 1024)
        assert chains.reused_blocks == before
        chains.hashes(data, opening, ROOT, 512, 1024)  # back to turn 5's chain
    for data_, opening_ in (turns[2], turns[9]):
        assert chains.hashes(data_, opening_, ROOT, 512, 1024) == block_hashes(data_, ROOT, 512, 1024)
    salted = root_hash("m", "org-a")
    assert chains.hashes(data, opening, salted, 512, 1024) == block_hashes(data, salted, 512, 1024)
    assert chains.hashes(data, opening, ROOT, 64, 1024) == block_hashes(data, ROOT, 64, 1024)
    capped = chains.hashes(turns[12][0], opening, ROOT, 512, 16)
    assert capped == block_hashes(turns[12][0], ROOT, 512, 16) and len(capped) == 16 * 8


def test_the_chains_are_bounded() -> None:
    chains = HashChains(capacity=8)
    rng = random.Random(1)
    for i in range(50):
        data = rng.randbytes(3000 + i)
        chains.hashes(data, 600, ROOT, 512, 1024)
        assert len(chains) <= 8
    assert len(chains) == 8
    data = rng.randbytes(3000)
    assert chains.hashes(data, 0, ROOT, 512, 1024) == block_hashes(data, ROOT, 512, 1024)  # no opening: not kept
    assert len(chains) == 8


@settings(max_examples=200, deadline=None)
@given(seq=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40_000), st.sampled_from([16, 512])), max_size=12),
       seed=st.integers(0, 3))
def test_any_sequence_of_requests_hashes_as_block_hashes(seq: list[tuple[int, int, int]], seed: int) -> None:
    base = random.Random(seed).randbytes(80_000)
    chains = HashChains(capacity=3)
    for opening, length, max_blocks in seq:
        data = base[:length]
        opening = min(opening * 100, length)
        assert chains.hashes(data, opening, ROOT, 64, max_blocks) == block_hashes(data, ROOT, 64, max_blocks)
