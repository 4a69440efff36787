"""Offline reference figures for the routing replay: what a prefix cache could have served, given the
requests a run sent, in send order, through the simulator's own prompt template and block hashing.

- ``ceiling``: one worker with an unbounded cache (every block seen before is a hit). The replay's
  targets are set as a share of this one.
- ``pooled LRU``: ONE cache of the whole fleet's size (every worker's KV blocks together), least recently
  used out first, as each simulated worker evicts: the fleet as if it were one cache of its total size.
  A reference, not a bound: routing with balanced load lands about here (``bench.cache_placement``
  replays placements offline), and an uneven spread of new prompts can beat it or fall below it by
  luck (partitioned LRU caches are not one LRU cache).
- ``Belady``: the same pooled cache with offline optimal eviction (Belady's MIN at block level: the
  block whose next use is farthest goes first, deeper blocks of a chain before shallower ones on ties).
  An upper bound for any router (the workers' caches together are one cache of that size, and a worker
  only hits what it holds); what is left between it and the LRU reference is eviction, which a router
  does not choose.

A request looks its prompt's full blocks up (the leading run present is its hit, capped like vLLM's at
the last full block before the prompt's end), then its prompt and answer blocks enter the cache, the
prompt's touched last-block-first as the simulator's ``finish`` does. Running sequences' KV is not
modelled (requests are replayed one after another), so the bounds are slightly optimistic for a live
run, whose running sequences take room from the caches.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from workersim.kvcache import PrefixCache
from workersim.prompt import PromptBuilder
from workersim.tokens import Tokenizer

_NEVER = 1 << 62


@dataclass(frozen=True, slots=True)
class Access:
    """One request as the cache sees it: its prompt's block hashes, its length, then every block it leaves."""

    prompt: list[int]
    tokens: int
    stored: list[int]  # prompt and answer blocks, in chain order


@dataclass(frozen=True, slots=True)
class Bounds:
    ceiling: float
    working_set_tokens: int
    pooled_lru: float
    belady: float


def accesses(sent: Iterable[tuple[dict[str, object], str, str, bool]], model: str,
             block_size: int = 16) -> list[Access]:
    """``sent`` = (body, answer, cache salt, chat?) in send order -> the cache's view of each request."""
    tok = Tokenizer()
    prompts = PromptBuilder(tok)
    hasher = PrefixCache(1, block_size, namespace=model)
    out = []
    for body, answer, salt, chat in sent:
        ids = prompts.chat(dict(body)) if chat else prompts.completion(dict(body))
        hashes = hasher.block_hashes(ids, salt)
        out.append(Access(hashes, len(ids), hasher.block_hashes(ids + tok.encode(answer), salt, hashes)))
    return out


def _hit(matched: int, tokens: int, block_size: int) -> int:
    return min(matched * block_size, ((tokens - 1) // block_size) * block_size) if tokens > 0 else 0


def _leading(hashes: Sequence[int], present: object) -> int:
    matched = 0
    for h in hashes:
        if h not in present:  # type: ignore[operator]
            break
        matched += 1
    return matched


def unbounded(reqs: Sequence[Access], block_size: int = 16) -> tuple[float, int]:
    """The ceiling's share of prompt tokens and the working set (distinct tokens in full blocks)."""
    seen: set[int] = set()
    total = hit = 0
    for a in reqs:
        total += a.tokens
        hit += _hit(_leading(a.prompt, seen), a.tokens, block_size)
        seen.update(a.stored)
    return (hit / total if total else 0.0), len(seen) * block_size


def pooled_lru(reqs: Sequence[Access], capacity_blocks: int, block_size: int = 16) -> float:
    cache: OrderedDict[int, None] = OrderedDict()
    total = hit = 0
    for a in reqs:
        total += a.tokens
        hit += _hit(_leading(a.prompt, cache), a.tokens, block_size)
        for h in reversed(a.stored):
            if h in cache:
                cache.move_to_end(h)
            else:
                cache[h] = None
        while len(cache) > capacity_blocks:
            cache.popitem(last=False)
    return hit / total if total else 0.0


def belady(reqs: Sequence[Access], capacity_blocks: int, block_size: int = 16) -> float:
    """Pooled cache, offline optimal eviction: the block needed again last (never: first) goes first."""
    uses: dict[int, list[int]] = {}
    for t, a in enumerate(reqs):
        for h in a.prompt:
            uses.setdefault(h, []).append(t)
    cursor: dict[int, int] = {}
    cache: dict[int, tuple[int, int]] = {}  # hash -> (next use, depth), the entry's live key in the heap
    heap: list[tuple[int, int, int]] = []  # (-next use, -depth, hash): farthest next use, deepest first
    total = hit = 0
    for t, a in enumerate(reqs):
        total += a.tokens
        hit += _hit(_leading(a.prompt, cache), a.tokens, block_size)
        for depth, h in enumerate(a.stored):
            times = uses.get(h, ())
            k = cursor.get(h, 0)
            while k < len(times) and times[k] <= t:
                k += 1
            cursor[h] = k
            entry = (times[k] if k < len(times) else _NEVER, depth)
            cache[h] = entry
            heapq.heappush(heap, (-entry[0], -depth, h))
        while len(cache) > capacity_blocks:
            neg_next, neg_depth, h = heapq.heappop(heap)
            if cache.get(h) == (-neg_next, -neg_depth):
                del cache[h]
    return hit / total if total else 0.0


def bounds(reqs: Sequence[Access], capacity_blocks: int, block_size: int = 16) -> Bounds:
    ceil, working_set = unbounded(reqs, block_size)
    return Bounds(ceil, working_set, pooled_lru(reqs, capacity_blocks, block_size),
                  belady(reqs, capacity_blocks, block_size))
