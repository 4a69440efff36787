"""Memory under a long, heavy load: the gateway's RSS growth after warm-up and the prefix index's size.

    python -m bench.soak [--minutes 10] [--warmup-s 60] [--connections 32] [--conversations 400]

The gateway as in ``bench.compare`` (every stage on, alone on ``--server-cpu``) in front of the
instant upstream, with a private redis-server; wrk sends streaming and non-streaming requests from
``--conversations`` distinct agent conversations (about 32 KB each, every one with its own system
prompt), so the prefix index keeps meeting new blocks and has to hold its bound. RSS is sampled every
``--sample-s``; growth is measured from the end of the warm-up to the end. The prefix index's size is
read from Redis (entries and ``MEMORY USAGE`` of every index key) against its bound: per model and
worker, ``GATEWAY_ROUTING_KV_TOKENS x GATEWAY_ROUTING_BYTES_PER_TOKEN / GATEWAY_ROUTING_BLOCK_BYTES``
block hashes (3,906 by default), plus a sixteenth of slack before eviction.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import orjson
import redis

from bench.agent_bodies import MODEL, conversation_turns
from bench.common import pinned
from bench.compare import Gateway, start_redis, start_upstream, tree_cpu_s, tree_rss_mib

_SCRIPT = """
local reqs = {}
local n = 0
init = function(args)
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %s"}
  local i = 0
  for line in io.lines("%s") do
    i = i + 1
    reqs[i] = wrk.format("POST", "/v1/chat/completions", headers, line)
  end
end
request = function()
  n = math.random(#reqs)
  return reqs[n]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def _bodies(conversations: int, path: Path) -> int:
    """One line per request body: the last turn of each conversation (~32 KB), half of them streamed."""
    rng = random.Random(11)
    with path.open("wb") as f:
        for i in range(conversations):
            turns = conversation_turns(32 * 1024, seed=1000 + i)
            body = {**turns[-1], "stream": bool(i % 2), "user": f"soak-{rng.getrandbits(32):x}"}
            f.write(orjson.dumps(body) + b"\n")
    return conversations


def _index_size(redis_url: str, prefix: str) -> tuple[int, int, int]:
    """(index keys, block hashes in them, bytes Redis reports for them)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [k for k in client.scan_iter(match=f"{prefix}:*", count=1000) if b":idx:" in k]
        entries = sum(int(client.zcard(k)) for k in keys)
        memory = sum(int(client.memory_usage(k) or 0) for k in keys)
        return len(keys), entries, memory
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--warmup-s", type=float, default=60)
    ap.add_argument("--sample-s", type=float, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--conversations", type=int, default=400)
    ap.add_argument("--kv-tokens", type=int, default=500_000, help="GATEWAY_ROUTING_KV_TOKENS (sets the index bound)")
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    args = ap.parse_args()

    redis_proc, redis_url, _ = start_redis(args.load_cpu)
    upstream_proc, upstream = start_upstream(args.load_cpu)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    gw = Gateway(redis_url)
    gw.env["GATEWAY_ROUTING_KV_TOKENS"] = str(args.kv_tokens)
    gw.env["GATEWAY_ROUTING_BYTES_PER_TOKEN"] = "4"  # the fixed index bound it checks against
    samples: list[tuple[float, float]] = []
    try:
        gw.prepare(args.load_cpu)
        gw.spawn(args.server_cpu, upstream)
        n = _bodies(args.conversations, workdir / "bodies.jsonl")
        script = workdir / "soak.lua"
        script.write_text(_SCRIPT % (gw.key, workdir / "bodies.jsonl"))
        seconds = int(args.minutes * 60)
        print(f"soak: {seconds} s, {n} conversations, wrk -c{args.connections}; model {MODEL}", flush=True)
        cpu0 = tree_cpu_s(gw.pid())
        t0 = time.monotonic()
        done = threading.Event()

        def sample() -> None:
            while not done.wait(args.sample_s):
                samples.append((time.monotonic() - t0, tree_rss_mib(gw.pid())))
                print(f"  {samples[-1][0]:6.0f} s  RSS {samples[-1][1]:7.1f} MiB", flush=True)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out = subprocess.run(pinned(["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s",
                                     "-s", str(script), gw.url], args.load_cpu),
                             capture_output=True, text=True).stdout
        done.set()
        sampler.join()
        line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), "RESULT 0 1 0 0")
        requests, duration_us, socket_errors, status_errors = (int(x) for x in line.split()[1:])
        cpu_us = (tree_cpu_s(gw.pid()) - cpu0) / max(requests, 1) * 1e6
        rss_end = tree_rss_mib(gw.pid())
        keys, entries, memory = _index_size(redis_url, gw.env["GATEWAY_REDIS_PREFIX"])
    finally:
        gw.stop()
        upstream_proc.terminate()
        redis_proc.terminate()
    after_warmup = [rss for t, rss in samples if t >= args.warmup_s]
    base = after_warmup[0] if after_warmup else float("nan")
    bound = max(16, int(args.kv_tokens * 4.0 / 512))
    print(f"\nrequests {requests:,} ({requests / (duration_us / 1e6):,.0f} req/s), errors {socket_errors} socket, "
          f"{status_errors} non-2xx; gateway CPU {cpu_us:.0f} us/request")
    print(f"RSS after warm-up ({args.warmup_s:.0f} s) {base:.1f} MiB, at the end {rss_end:.1f} MiB: growth "
          f"{(rss_end - base) / base * 100:+.1f}%  (max {max(after_warmup, default=float('nan')):.1f} MiB)")
    print(f"prefix index: {keys} key(s), {entries:,} block hashes (bound {bound:,} per model and worker, "
          f"+1/16 slack), {memory / 1024:,.0f} KiB in Redis ({memory / max(entries, 1):.0f} B per hash)")


if __name__ == "__main__":
    main()
