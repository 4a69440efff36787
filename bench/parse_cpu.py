"""CPU of a chat body's request-path walks, the separate walks against the one pass, side by side.

    python -m bench.parse_cpu [--sizes 32,128] [--rounds 15] [--cpu 1]

The bodies are bench.compare's (``bench.agent_bodies.bodies``: the last turns of a growing coding-agent
conversation, cycled through as wrk does). Per body size it prints microseconds per request of each
step, measured in this one process, the steps interleaved round by round (the minimum over the rounds:
the machine is shared):

- ``loads``: orjson's parse of the body (both ways);
- old steps: the nesting check (``json_depth.too_deep``), the messages' checks (``chat._check``),
  routing's canonical bytes (``prefix.chat_canonical``), the prompt estimate
  (``estimate_prompt_tokens``, made by the budget stage; the usage stage makes it again when no usage
  comes);
- new: the one pass (``chat_scan.scan``: nesting, checks, canonical bytes, estimate);
- ``nesting check, tuples``: ``json_depth.too_deep`` as the other adapters still use it (the encoder's
  wrapper built once, where the old check built 126 lists per call);
- ``hashes``: the chained block hashes of the canonical bytes, blocks cut by a memoryview slice each
  (old) and by ``struct.iter_unpack`` (new, ``prefix.block_hashes``); ``hashes, chains``: through the
  router's ``HashChains`` (``chains.py``), the turns in order as wrk sends them (each turn reuses the
  previous one's hashes, the first after the last hashes in full);
- ``old total`` / ``new total``: the body's parse, nesting check, messages' checks, canonical bytes,
  hashes (new: through the chains) and estimate as the request path makes them before and after (the shared checks
  of model, stream and numbers, the same both ways, left out).
"""

from __future__ import annotations

import argparse
import os
import time
from array import array
from collections.abc import Callable
from typing import Any

import orjson
from xxhash import xxh3_64_intdigest

from bench.agent_bodies import MODEL, bodies
from billing.usage_record import estimate_prompt_tokens
from gateway.front import chat_scan, json_depth
from gateway.front.chat import _check
from gateway.routing.chains import HashChains
from gateway.routing.prefix import COARSE, FINE_BLOCKS, block_hashes, blocks_in_bytes, chat_canonical, root_hash

BLOCK_BYTES = 512  # the defaults (routing_block_bytes, routing_max_blocks)
MAX_BLOCKS = 1024


def listwrap_too_deep(body: Any, size: int, limit: int = json_depth.MAX_DEPTH) -> bool:
    """The nesting check as it was: the walk below 16 KB, else the body wrapped in 126 lists per call
    and encoded."""
    if size < json_depth.WALK_BELOW_BYTES:
        return json_depth.exceeds(body, limit)
    wrapped = body
    for _ in range(json_depth.ORJSON_MAX_DEPTH - limit):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return True
    return False


def memoryview_block_hashes(data: bytes, root: int, block_bytes: int, max_blocks: int) -> bytes:
    """The chained block hashes as they were cut: a memoryview slice per block."""
    n = min(blocks_in_bytes(len(data), block_bytes), max_blocks)
    out = array("Q", bytes(8 * n))
    view = memoryview(data)
    h = root
    pos = 0
    size = block_bytes
    for i in range(n):
        if i == FINE_BLOCKS:
            size = block_bytes * COARSE
        h = xxh3_64_intdigest(view[pos:pos + size], h)
        out[i] = h
        pos += size
    return out.tobytes()


def steps(raws: list[bytes]) -> dict[str, Callable[[], object]]:
    """Each step as a function over all of ``raws`` (one call: every body once)."""
    parsed = [orjson.loads(raw) for raw in raws]
    canonical = [chat_canonical(body)[0] for body in parsed]
    openings = [chat_canonical(body) for body in parsed]
    root = root_hash(MODEL, "")
    chains = HashChains()

    def old_request(raw: bytes) -> int:
        body = orjson.loads(raw)
        if listwrap_too_deep(body, len(raw)):
            raise AssertionError
        _check(body)
        data, _ = chat_canonical(body)
        return len(memoryview_block_hashes(data, root, BLOCK_BYTES, MAX_BLOCKS)) + estimate_prompt_tokens(body)

    def new_request(raw: bytes) -> int:
        prompt = chat_scan.scan(orjson.loads(raw))
        assert prompt is not None
        return len(chains.hashes(prompt.canonical, prompt.opening, root, BLOCK_BYTES, MAX_BLOCKS)) + prompt.tokens

    def each(fn: Callable[[Any], object], items: list[Any]) -> Callable[[], object]:
        return lambda: [fn(item) for item in items]

    pairs = list(zip(parsed, raws, strict=True))
    return {
        "loads": each(orjson.loads, raws),
        "old: nesting check": each(lambda p: listwrap_too_deep(p[0], len(p[1])), pairs),
        "old: messages' checks": each(_check, parsed),
        "old: canonical bytes": each(chat_canonical, parsed),
        "old: prompt estimate": each(estimate_prompt_tokens, parsed),
        "new: one pass": each(chat_scan.scan, parsed),
        "nesting check, tuples": each(lambda p: json_depth.too_deep(p[0], len(p[1])), pairs),
        "old: hashes": each(lambda data: memoryview_block_hashes(data, root, BLOCK_BYTES, MAX_BLOCKS), canonical),
        "new: hashes": each(lambda data: block_hashes(data, root, BLOCK_BYTES, MAX_BLOCKS), canonical),
        "new: hashes, chains": each(lambda d: chains.hashes(d[0], d[1], root, BLOCK_BYTES, MAX_BLOCKS), openings),
        "old total": each(old_request, raws),
        "new total": each(new_request, raws),
    }


def check_equal(raws: list[bytes]) -> None:
    """The one pass gives what the separate walks give, on these bodies, and the hashes are the same."""
    root = root_hash(MODEL, "")
    for raw in raws:
        body = orjson.loads(raw)
        prompt = chat_scan.scan(body)
        assert prompt is not None and (prompt.canonical, prompt.opening) == chat_canonical(body)
        assert prompt.tokens == estimate_prompt_tokens(body)
        assert block_hashes(prompt.canonical, root, BLOCK_BYTES, MAX_BLOCKS) == memoryview_block_hashes(
            prompt.canonical, root, BLOCK_BYTES, MAX_BLOCKS)


def measure(fns: dict[str, Callable[[], object]], per_call: int, rounds: int, loops: int) -> dict[str, float]:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.process_time()
            for _ in range(loops):
                fn()
            best[name] = min(best[name], (time.process_time() - start) / loops / per_call * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32,128", help="body sizes in KB")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--loops", type=int, default=20, help="calls of each step per round (each over every body)")
    ap.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    for kb in (int(s) for s in args.sizes.split(",")):
        raws = bodies(kb * 1024, False)
        check_equal(raws)
        body = orjson.loads(raws[-1])
        print(f"{kb} KB bodies: {len(raws)} turns, {min(map(len, raws)):,}-{max(map(len, raws)):,} bytes, "
              f"up to {len(body['messages'])} messages; us per request (min of {args.rounds} rounds)")
        best = measure(steps(raws), len(raws), args.rounds, args.loops)
        old = sum(best[k] for k in best if k.startswith("old:") and k != "old: hashes")
        for name, us in best.items():
            print(f"  {name:24s} {us:8.1f}")
        print(f"  {'old: the four walks':24s} {old:8.1f}   one pass / four walks {best['new: one pass'] / old:.2f}x")
        print(f"  {'new total / old total':24s} {best['new total'] / best['old total']:8.2f}x "
              f"({best['old total'] - best['new total']:.1f} us saved per request)")


if __name__ == "__main__":
    main()
