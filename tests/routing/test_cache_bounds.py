"""The replay's offline references (bench/cache_bounds.py): the unbounded ceiling, the fleet as one LRU
cache and as one Belady cache, on request sequences small enough to count by hand."""

from __future__ import annotations

from bench.cache_bounds import Access, accesses, belady, bounds, pooled_lru, unbounded


def req(*blocks: int) -> Access:
    """A prompt of these blocks (16 tokens each) plus one token, so every full block can hit."""
    return Access(list(blocks), 16 * len(blocks) + 1, list(blocks))


def test_lru_loses_what_belady_keeps_and_neither_beats_the_ceiling() -> None:
    # conversation A (blocks 1, 2) returns after B and C, each of two blocks; the cache holds four blocks
    seq = [req(1, 2), req(3, 4), req(5, 6), req(1, 2)]
    ceiling, working_set = unbounded(seq)
    assert working_set == 6 * 16
    assert ceiling == 32 / sum(a.tokens for a in seq)  # the last request's two blocks
    assert pooled_lru(seq, 4) == 0.0  # B and C pushed A out
    assert belady(seq, 4) == ceiling  # evicting B (never used again) instead keeps A
    assert pooled_lru(seq, 6) == belady(seq, 6) == ceiling  # room for everything: all three agree


def test_a_chain_is_evicted_from_its_end_and_a_prefix_still_hits() -> None:
    seq = [req(1, 2, 3), req(7, 8), req(1, 2, 9)]
    total = sum(a.tokens for a in seq)
    # a chain is touched last block first, so its head is the last to go: room for four blocks evicts 3,
    # room for three evicts 3 then 2, and the third request still finds block 1
    assert pooled_lru(seq, 4) == 32 / total
    b = bounds(seq, 3)
    assert b.pooled_lru == 16 / total
    assert b.belady == b.ceiling == 32 / total  # Belady evicts 3 and one of 7, 8 (never used again)


def test_requests_are_hashed_as_the_simulator_hashes_them() -> None:
    body = {"prompt": " word" * 40, "max_tokens": 1}
    first, again = accesses([(body, "", "tenant-0", False), (body, "", "tenant-0", False)], "m")
    assert first.prompt == again.prompt and len(first.prompt) == first.tokens // 16
    other = accesses([(body, "", "tenant-1", False)], "m")[0]
    assert not set(other.prompt) & set(first.prompt)  # another tenant's salt shares nothing
