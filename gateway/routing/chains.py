"""The block hashes of recent conversations, so that a new turn hashes only the blocks it adds.

A coding agent resends its whole conversation with every turn, and the canonical bytes only grow at the
end (``prefix.py``), so turn ``k + 1``'s blocks start with turn ``k``'s. ``HashChains`` keeps, per
conversation, the hashes of the last turn it saw and a 128-bit digest (xxh3_128) of the bytes they
cover: when a request's bytes begin with those same bytes (the digest of as many of its own bytes
matches), those hashes are its first ones and only the blocks after them are hashed. Anything else (a
shorter or a different request) hashes every block, as without it; the result is the same either way
(``tests/routing/test_chains.py``).

A conversation is known by the hash root (model and tenant salt) and its opening (through the first
answer, ``prefix.chat_canonical``); requests without an opening are hashed whole. At most ``capacity``
conversations are kept, the least recently used dropped first: each is its hashes (8 bytes a block, at
most ``max_blocks``) and two integers, ~1.2 KB for a 128 KB prompt (~1.2 MB for 1,024 of them), 8 KB at
the default cap of 1,024 blocks (~8.5 MB at most).

A digest that matched by accident (a 1 in 2^128 chance per lookup, and bytes hashed with the same root
and the same opening) would give a request wrong block hashes: a worse choice of worker for it, nothing
more (block hashes choose a worker; they are never shown or billed). The digest is seeded at random per
process, so that colliding bytes cannot be prepared offline either.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict

from xxhash import xxh3_64_intdigest, xxh3_128_intdigest

from gateway.routing.prefix import HASH_BYTES, block_hashes, blocks_in_bytes, bytes_in_blocks

CAPACITY = 1024


class HashChains:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        # (root, block size, opening digest) -> (blocks, digest of the bytes they cover, packed hashes)
        self._chains: OrderedDict[tuple[int, int, int], tuple[int, int, bytes]] = OrderedDict()
        self.reused_blocks = 0  # blocks whose hashes came from an earlier turn (tests, benchmarks)
        self._seed = int.from_bytes(os.urandom(8), "little")  # the digests' (see the module's notes)

    def __len__(self) -> int:
        return len(self._chains)

    def hashes(self, data: bytes, opening: int, root: int, block_bytes: int, max_blocks: int) -> bytes:
        """``prefix.block_hashes(data, root, block_bytes, max_blocks)``; ``opening``: the length of the
        conversation's opening in ``data`` (0: none, nothing kept)."""
        n = min(blocks_in_bytes(len(data), block_bytes), max_blocks)
        if not opening or not n:
            return block_hashes(data, root, block_bytes, max_blocks)
        view = memoryview(data)
        key = (root, block_bytes, xxh3_64_intdigest(view[:opening]))
        chains, seed = self._chains, self._seed
        known = chains.get(key)
        if known is not None:
            blocks, digest, hashes = known
            if blocks <= n and xxh3_128_intdigest(view[:bytes_in_blocks(blocks, block_bytes)], seed) == digest:
                chains.move_to_end(key)
                self.reused_blocks += blocks
                if blocks == n:
                    return hashes
                last = int.from_bytes(hashes[-HASH_BYTES:], sys.byteorder)  # packed in native order
                hashes += block_hashes(data, last, block_bytes, max_blocks, blocks)
                chains[key] = (n, xxh3_128_intdigest(view[:bytes_in_blocks(n, block_bytes)], seed), hashes)
                return hashes
        hashes = block_hashes(data, root, block_bytes, max_blocks)
        chains[key] = (n, xxh3_128_intdigest(view[:bytes_in_blocks(n, block_bytes)], seed), hashes)
        chains.move_to_end(key)
        if len(chains) > self.capacity:
            chains.popitem(last=False)
        return hashes
