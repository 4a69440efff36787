"""A vLLM-like prefix KV cache: fixed-size blocks, chained block hashes, LRU eviction.

- Block i's hash is xxh3_64(token ids of block i, seed = hash of block i-1); the chain's root is the hash
  of the model namespace and the request's ``cache_salt``, so requests with different salts share nothing.
- Only full blocks are cached. A lookup matches the longest run of leading cached blocks; like vLLM a fully
  cached prompt still recomputes its last block, so a 640-token repeat reports 624 cached tokens.
- The cache and the running sequences share ``num_blocks`` of KV: blocks of running sequences are pinned
  (never evicted), and the rest of a running sequence (its uncached tail and its output) is reserved as
  private blocks that also take room from the cache. Unpinned blocks go least-recently-used first; a
  finished sequence's blocks are touched last-block-first so that its prefix is evicted last (vLLM frees
  blocks in reverse order for the same reason).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Sequence

from xxhash import xxh3_64_intdigest


class Allocation:
    """KV held by one running sequence."""

    __slots__ = ("cached_tokens", "hashes", "pinned", "private")

    def __init__(self, hashes: list[int], pinned: int, private: int, cached_tokens: int) -> None:
        self.hashes = hashes  # chained hashes of the prompt's full blocks
        self.pinned = pinned  # leading blocks of ``hashes`` pinned in the cache
        self.private = private  # blocks reserved outside the cache
        self.cached_tokens = cached_tokens


class PrefixCache:
    def __init__(self, num_blocks: int, block_size: int, namespace: str = "") -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._namespace = namespace
        self._roots: dict[str, int] = {}
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self._pins: dict[int, int] = {}
        self._private = 0
        self.queries_total = 0
        self.hits_total = 0
        self.evictions_total = 0

    # -- hashing ---------------------------------------------------------------------------------------
    def root_hash(self, salt: str = "") -> int:
        root = self._roots.get(salt)
        if root is None:
            root = xxh3_64_intdigest(f"{self._namespace}\x00{salt}".encode())
            if len(self._roots) >= 10_000:
                self._roots.clear()
            self._roots[salt] = root
        return root

    def block_hashes(self, tokens: Sequence[int], salt: str = "", known: Sequence[int] = ()) -> list[int]:
        """Chained hashes of every full block of ``tokens``.

        ``known`` are hashes already computed for its leading blocks (a prompt's, when hashing prompt +
        output); hashing continues after them.
        """
        bs = self.block_size
        n_full = len(tokens) // bs
        out = list(known[:n_full])
        start = len(out)
        if start >= n_full:
            return out
        h = out[-1] if out else self.root_hash(salt)
        view = memoryview(array("I", tokens[start * bs : n_full * bs]))
        for i in range(0, (n_full - start) * bs, bs):
            h = xxh3_64_intdigest(view[i : i + bs], h)
            out.append(h)
        return out

    # -- a sequence's life -----------------------------------------------------------------------------
    def admit(self, hashes: list[int], prompt_tokens: int, total_tokens: int) -> Allocation:
        """Look the prompt up, pin its cached prefix and reserve KV for the rest of the sequence."""
        bs = self.block_size
        blocks = self._blocks
        matched = 0
        for h in hashes:
            if h not in blocks:
                break
            matched += 1
        cached = min(matched * bs, ((prompt_tokens - 1) // bs) * bs) if prompt_tokens > 0 else 0
        self.queries_total += prompt_tokens
        self.hits_total += cached
        hit_blocks = cached // bs
        pins = self._pins
        for i in range(hit_blocks):
            h = hashes[i]
            pins[h] = pins.get(h, 0) + 1
        private = max(0, -(-total_tokens // bs) - hit_blocks)
        self._private += private
        self._evict()
        return Allocation(hashes, hit_blocks, private, cached)

    def prefill_done(self, alloc: Allocation) -> None:
        """The prompt's blocks are computed: they enter the cache, pinned while the sequence runs.

        Pinned blocks are never evicted, so their LRU order only matters from ``finish`` on."""
        hashes = alloc.hashes
        new = len(hashes) - alloc.pinned
        if new <= 0:
            return
        pins = self._pins
        blocks = self._blocks
        for i in range(alloc.pinned, len(hashes)):
            h = hashes[i]
            pins[h] = pins.get(h, 0) + 1
            blocks[h] = None
        alloc.pinned = len(hashes)
        moved = min(new, alloc.private)
        alloc.private -= moved
        self._private -= moved
        self._evict()

    def finish(self, alloc: Allocation, sequence_hashes: Sequence[int] = ()) -> None:
        """The sequence ends: unpin and free its KV. ``sequence_hashes`` (its full blocks, prompt and
        output) stay cached, touched last block first so that its prefix is the last to go."""
        pins = self._pins
        hashes = alloc.hashes
        for i in range(alloc.pinned):
            h = hashes[i]
            count = pins.get(h)
            if count is None:
                continue
            if count <= 1:
                del pins[h]
            else:
                pins[h] = count - 1
        alloc.pinned = 0
        self._private -= alloc.private
        alloc.private = 0
        blocks = self._blocks
        move = blocks.move_to_end
        for i in range(len(sequence_hashes) - 1, -1, -1):
            h = sequence_hashes[i]
            if h in blocks:
                move(h)
            else:
                blocks[h] = None
        self._evict()

    def _evict(self) -> None:
        blocks = self._blocks
        excess = len(blocks) + self._private - self.num_blocks
        if excess <= 0:
            return
        pins = self._pins
        skipped = 0
        while excess > 0 and blocks and skipped < len(blocks):
            h, _ = blocks.popitem(last=False)
            if h in pins:
                blocks[h] = None
                skipped += 1
                continue
            excess -= 1
            self.evictions_total += 1

    # -- state -----------------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every cached block and the hit counters (a restart). Running sequences keep their KV."""
        self._blocks.clear()
        self._pins.clear()
        self.queries_total = 0
        self.hits_total = 0

    @property
    def cached_blocks(self) -> int:
        return len(self._blocks)

    @property
    def used_blocks(self) -> int:
        """Blocks held by running sequences (shared prefix blocks counted once)."""
        return len(self._pins) + self._private

    @property
    def usage(self) -> float:
        """Fraction of KV used by running sequences, vLLM's ``kv_cache_usage_perc`` (0..1)."""
        return min(1.0, self.used_blocks / self.num_blocks)

    def contains(self, block_hash: int) -> bool:
        return block_hash in self._blocks
