"""Offline placements on the Mooncake trace under cache pressure: how much could any router get?

    python -m bench.cache_placement [--quick] [--workers 4]

The trace of ``bench.replay --workload mooncake_pressure`` (same rows, same text, the simulator's
template and 16-token blocks), replayed one request after another into one LRU cache per worker of
the replay's size, under placements a router could make (each knows exactly what every worker holds,
which no real router does), beside the unbounded ceiling and the fleet as one cache
(``bench.cache_bounds``). Per row: cached share, share of the ceiling, imbalance (max / mean uncached
prompt tokens per worker). No timing model: it measures placement against eviction alone.

Placements:
- ``longest match, else least work``: the worker holding the longest prefix (more than the shared
  first trace block), else the one with the least uncached work so far (what prefix_aware does with an
  exact index and loads in tokens);
- the same with the index at 0.8 x the worker's cache (a 4-bytes-per-token guess on ~5-byte tokens);
- ``session hash``: the pinning client (a fixed hash of the conversation);
- ``skewed new prompts``: new conversations spread over the workers in shares 1.15 : 0.95 : 0.95 : 0.95
  (an uneven spread concentrates churn on one cache and protects the others);
- ``least cache pressure``: a new conversation goes to the worker whose least recently used block is
  the oldest (its eviction loses the least recently useful data);
- ``nursery``: admission control by routing (2Q / SLRU with workers as the segments). The first turn of
  a conversation never seen goes to a nursery of ``k`` workers (least work among them), so one-shot
  prompts churn only their caches; a conversation seen before goes to a main worker (longest match
  among them, else least work), whose cache then holds only conversations that returned. Variants:
  ``promote on turn 2`` (a returning conversation leaves the nursery at once: one recompute), ``stay
  while it matches`` (it stays on the worker holding its longest match, nursery or not, and moves to
  a main worker only when it would miss anyway), and ``adaptive`` (the nursery is the ``k`` of ``N``
  whose share of workers is closest to the share of first-turn tokens in the uncached work so far,
  so that loads stay balanced).
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from collections.abc import Callable, Sequence

from xxhash import xxh3_64_intdigest

from bench.cache_bounds import Access, accesses, bounds
from bench.workloads import mooncake

MODEL = "grok-code-fast-1"
BLOCK = 16
SHARED_BLOCKS = 2  # the trace's shared first block (32 tokens) is two simulator blocks
# (per-worker caches, their last use, uncached work per worker, the request, its session, matches) -> worker
Placer = Callable[[list["OrderedDict[int, int]"], list[int], Access, str, list[int]], int]


def _lead(hashes: Sequence[int], cache: OrderedDict[int, int]) -> int:
    m = 0
    for h in hashes:
        if h not in cache:
            break
        m += 1
    return m


def _hit(matched: int, tokens: int) -> int:
    return min(matched * BLOCK, ((tokens - 1) // BLOCK) * BLOCK)


def replay(reqs: Sequence[Access], sessions: Sequence[str], workers: int, blocks: int, place: Placer,
           index_share: float = 1.0) -> tuple[float, float]:
    """(cached share, imbalance) of one placement; ``index_share`` < 1: the placement sees an index that
    keeps only that share of each worker's cache (the most recently used part)."""
    caches: list[OrderedDict[int, int]] = [OrderedDict() for _ in range(workers)]
    index: list[OrderedDict[int, int]] = [OrderedDict() for _ in range(workers)] if index_share < 1 else caches
    work = [0] * workers
    total = hit = 0
    for t, (a, session) in enumerate(zip(reqs, sessions, strict=True)):
        seen = [_lead(a.prompt, c) for c in index]
        w = place(index, work, a, session, seen)
        got = _hit(_lead(a.prompt, caches[w]), a.tokens)
        total += a.tokens
        hit += got
        work[w] += a.tokens - got
        for store, cap in ((caches[w], blocks), (index[w], int(blocks * index_share))):
            for h in reversed(a.stored):
                store[h] = t
                store.move_to_end(h)
            while len(store) > cap:
                store.popitem(last=False)
            if index is caches:
                break
    mean = sum(work) / workers
    return hit / total, (max(work) / mean if mean else 0.0)


def longest_match(caches: list[OrderedDict[int, int]], work: list[int], a: Access, session: str,
                  seen: list[int]) -> int:
    best = max(seen)
    if best > SHARED_BLOCKS:
        return seen.index(best)
    return min(range(len(work)), key=work.__getitem__)


def session_hash(caches: list[OrderedDict[int, int]], work: list[int], a: Access, session: str,
                 seen: list[int]) -> int:
    return xxh3_64_intdigest(session.encode()) % len(work)


def skewed(shares: Sequence[float]) -> Placer:
    def place(caches: list[OrderedDict[int, int]], work: list[int], a: Access, session: str,
              seen: list[int]) -> int:
        best = max(seen)
        if best > SHARED_BLOCKS:
            return seen.index(best)
        return min(range(len(work)), key=lambda i: work[i] / shares[i % len(shares)])
    return place


def least_pressure(caches: list[OrderedDict[int, int]], work: list[int], a: Access, session: str,
                   seen: list[int]) -> int:
    best = max(seen)
    if best > SHARED_BLOCKS:
        return seen.index(best)
    return min(range(len(work)), key=lambda i: caches[i][next(iter(caches[i]))] if caches[i] else -1)


def nursery(k: int | None, stay: bool) -> Placer:
    """First turns to workers ``0..k-1`` (``None``: ``k`` adaptive), returning conversations to the rest."""
    known: set[str] = set()
    first = [0, 0]  # uncached tokens of first turns, of all turns (the adaptive split)

    def place(caches: list[OrderedDict[int, int]], work: list[int], a: Access, session: str,
              seen: list[int]) -> int:
        n = len(work)
        size = k if k is not None else min(n - 1, max(1, round(n * first[0] / first[1]) if first[1] else n - 1))
        nurse, main = range(size), range(size, n)
        new = session not in known
        known.add(session)
        best = max(seen)
        if stay and best > SHARED_BLOCKS:
            w = seen.index(best)
        elif new:
            w = min(nurse, key=work.__getitem__)
        else:
            w = max(main, key=lambda i: (seen[i] > SHARED_BLOCKS, seen[i], -work[i]))
        uncached = a.tokens - _hit(seen[w], a.tokens)
        first[0] += uncached if new else 0
        first[1] += uncached
        return w
    return place


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the replay's --quick sizes")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--offset", type=int, default=0, help="first Mooncake row")
    args = ap.parse_args()
    n, kv, span = (600, 40_000, 30.0) if args.quick else (1200, 80_000, 60.0)
    trace = list(mooncake(n, 32, duration_s=span, offset=args.offset))
    reqs = accesses((({"prompt": r.prompt, "max_tokens": 1}, "", "tenant-0", False) for r in trace), MODEL, BLOCK)
    sessions = [r.session for r in trace]
    blocks = kv // BLOCK
    ref = bounds(reqs, args.workers * blocks, BLOCK)
    print(f"mooncake, {n} rows, {args.workers} workers x {kv:,} KV tokens, offline (no timing); working set "
          f"{ref.working_set_tokens:,} tokens, caches {args.workers * kv / ref.working_set_tokens:.0%} of it")
    print(f"{'placement':<44} {'cached':>7} {'of ceil':>8} {'imbal':>6}")

    def row(label: str, share: float, imbalance: float | None = None) -> None:
        imb = f"{imbalance:6.2f}" if imbalance is not None else ""
        print(f"{label:<44} {share:7.3f} {share / ref.ceiling:8.3f} {imb:>6}", flush=True)

    for label, place, index_share in (
        ("longest match, else least work", longest_match, 1.0),
        ("  the same, index at 0.8 x the cache", longest_match, 0.8),
        ("session hash (pinning client)", session_hash, 1.0),
        ("skewed new prompts 1.15 : 0.95 : 0.95 : 0.95", skewed((1.15, 0.95, 0.95, 0.95)), 1.0),
        ("least cache pressure (oldest LRU tail)", least_pressure, 1.0),
        *((f"nursery {k}/{args.workers}, promote on turn 2", nursery(k, False), 1.0)
          for k in range(1, args.workers)),
        *((f"nursery {k}/{args.workers}, stay while it matches", nursery(k, True), 1.0)
          for k in range(1, args.workers)),
        ("nursery adaptive, promote on turn 2", nursery(None, False), 1.0),
        ("nursery adaptive, stay while it matches", nursery(None, True), 1.0),
    ):
        row(label, *replay(reqs, sessions, args.workers, blocks, place, index_share))
    row("ceiling (1 worker, unbounded cache)", ref.ceiling)
    row("ref: fleet as 1 LRU cache", ref.pooled_lru)
    row("bound: fleet as 1 Belady cache", ref.belady)


if __name__ == "__main__":
    main()
