"""The ledger writer's CPU per usage record, this checkout against other source trees, interleaved.

    python -m bench.writer_cpu [--tree before=DIR] [--records 20000] [--batch 250] [--rounds 3]

Each run is a fresh process of one tree (``NAME=DIR``: ``git archive COMMIT | tar -x -C DIR``; this
checkout is ``this``): it fills a stream on the shared Redis (a unique key, removed after) with
``--records`` realistic usage records (unique request ids, seven end users, one second of starts per
1,000), then drains it as a ledger consumer does (``StreamConsumer.step``: read a batch, check, insert
with the rollups into a fresh SQLite ledger, XACK + XDEL) and prints the process's CPU per record (all
threads: the SQLite thread too), the main thread's, and the wall time. ``--batch`` is the stream read's
size; a caught-up writer at a few thousand requests/s reads a few hundred a batch. The trees alternate
for ``--rounds`` rounds; the medians come last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT

_CHILD = """
import asyncio, secrets, sys, tempfile, time
from redis.asyncio import Redis
from billing.ledger.consumer import FIELD, StreamConsumer
from billing.ledger.dead_letters import DeadLetters
from billing.ledger.sink import LedgerSink
from billing.ledger.writer import LedgerWriter
from billing.usage_record import UsageRecord
from gateway.config import Settings
from gateway.db import engine as db

async def main(redis_url, n, batch):
    work = tempfile.mkdtemp(prefix="writer-cpu-")
    url = Settings(database_url=f"sqlite:///{work}/ledger.db").sqlalchemy_url
    await db.upgrade(url)
    engine = db.make_engine(url)
    redis = Redis.from_url(redis_url)
    stream = "writer-cpu:" + secrets.token_hex(4)
    start = int(time.time() * 1000)
    records = [UsageRecord("req_" + secrets.token_hex(12), "org_bench", "key_bench", "grok-code-fast-1",
                           "grok-code-fast-1", "sim-0", 5000 + i % 900, 4000, 300, 0, 1_000_000 + i, 1_000_000 + i,
                           "list", start + i, 40, 250, "ok", 200, True, i % 2 == 0, end_user=f"user{i % 7}")
               for i in range(n)]
    try:
        for s in range(0, n, 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for r in records[s:s + 1000]:
                    pipe.xadd(stream, {FIELD: r.encode()})
                await pipe.execute()
        sink = LedgerSink(LedgerWriter(engine), DeadLetters(engine))
        consumer = StreamConsumer(redis, stream, sink, epoch_key=stream + ":epoch", batch_size=batch, block_ms=10)
        await consumer.ensure_group()
        cpu, main_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
        done = 0
        while True:
            await consumer.step()
            if consumer.last_read == 0:
                break
            done += consumer.last_read
        cpu, main_cpu, wall = (time.process_time() - cpu, time.thread_time() - main_cpu,
                               time.perf_counter() - wall)
        assert done == n, (done, n)
        print("RESULT", cpu / n * 1e6, main_cpu / n * 1e6, wall / n * 1e6)
    finally:
        await redis.delete(stream, stream + ":epoch")
        await redis.aclose()
        await engine.dispose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def _run(root: Path, redis_url: str, records: int, batch: int) -> tuple[float, float, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, redis_url, str(records), str(batch)], cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, check=True)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    cpu, main_cpu, wall = (float(x) for x in line.split()[1:])
    return cpu, main_cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR", help="another source tree")
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()
    trees = {"this": ROOT}
    for spec in args.tree:
        name, _, path = spec.partition("=")
        trees[name] = Path(path).resolve()
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
    for i in range(args.rounds):
        order = list(trees.items())
        for name, root in order if i % 2 == 0 else reversed(order):
            runs[name].append(_run(root, args.redis_url, args.records, args.batch))
            cpu, main_cpu, wall = runs[name][-1]
            print(f"round {i + 1} {name:<10} CPU {cpu:6.1f} us/record (main thread {main_cpu:5.1f})  "
                  f"wall {wall:6.1f} us/record", flush=True)
    base = statistics.median(r[0] for r in runs["this"])
    print(f"\nmedians, {args.records} records in batches of {args.batch} into SQLite:")
    for name, results in runs.items():
        cpu = statistics.median(r[0] for r in results)
        print(f"  {name:<10} CPU {cpu:6.1f} us/record (main thread {statistics.median(r[1] for r in results):5.1f})"
              f"  wall {statistics.median(r[2] for r in results):6.1f}  CPU / this {cpu / base:.2f}")


if __name__ == "__main__":
    main()
