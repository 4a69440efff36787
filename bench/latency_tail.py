"""Where the gateway's added p99 at one connection comes from: the `bench.compare` set-up with the
ledger writer running, with it paused (SIGSTOP: records wait in the stream), and the upstream directly.

    python -m bench.latency_tail [--rounds 3] [--seconds 4]

The gateway (every stage on) on core 0; Redis, the instant upstream, the ledger writer and wrk
(1 connection, 1 KB json) on core 1, as in ``bench.compare``. The three cases alternate for
``--rounds`` rounds; printed per case: median p50 and every round's p99 (ms), then the gateway's own
request-log phases of one more run (its duration, the part before the upstream call, the wait on the
upstream; p50 / p99), which tell the gateway's own tail from the waits on core 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from bench.compare import Gateway, Wrk, start_redis, start_upstream

CASES = ("writer running", "writer paused", "upstream directly")


def _phases(log_path: str, start: int) -> dict[str, list[float]]:
    with open(log_path) as f:
        f.seek(start)
        lines = f.read().splitlines()
    out: dict[str, list[float]] = {"duration": [], "before upstream": [], "upstream wait": []}
    for line in lines:
        at = line.find("{")
        if at < 0:
            continue
        try:
            rec = json.loads(line[at:])
        except ValueError:
            continue
        if "duration_ms" not in rec or "overhead_ms" not in rec or "ttft_ms" not in rec:
            continue
        out["duration"].append(rec["duration_ms"])
        out["before upstream"].append(rec["overhead_ms"])
        out["upstream wait"].append(rec["ttft_ms"] - rec["overhead_ms"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4)
    args = ap.parse_args()
    redis, redis_url, _ = start_redis("1")
    upstream, upstream_url = start_upstream("1")
    gw = Gateway(redis_url)
    try:
        gw.prepare("1")
        gw.spawn("0", upstream_url)
        assert gw.writer is not None
        wrk = Wrk("1", Path(tempfile.mkdtemp(prefix="bench-latency-")))
        wrk.run(gw.url, "/v1/chat/completions", gw.key, 1, "json", 3, 1)
        cases: dict[str, list[tuple[float, float]]] = {case: [] for case in CASES}
        for _ in range(args.rounds):
            for case in cases:
                url, key = (upstream_url, None) if case == "upstream directly" else (gw.url, gw.key)
                if case == "writer paused":
                    os.kill(gw.writer.pid, signal.SIGSTOP)
                try:
                    load = wrk.run(url, "/v1/chat/completions", key, 1, "json", args.seconds, 1)
                finally:
                    if case == "writer paused":
                        os.kill(gw.writer.pid, signal.SIGCONT)
                cases[case].append((load.p50_ms, load.p99_ms))
        for case, runs in cases.items():
            print(f"{case:<18} p50 {statistics.median(r[0] for r in runs):.2f} ms  "
                  f"p99 {', '.join(f'{r[1]:.2f}' for r in runs)} ms", flush=True)
        start = os.path.getsize(gw.log.name)
        wrk.run(gw.url, "/v1/chat/completions", gw.key, 1, "json", args.seconds, 1)
        time.sleep(0.3)  # the request log's batch is written within 50 ms
        for name, values in _phases(gw.log.name, start).items():
            values.sort()
            if values:
                print(f"gateway log: {name:<16} p50 {values[len(values) // 2]:.2f} ms  "
                      f"p99 {values[int(len(values) * 0.99)]:.2f} ms  ({len(values)} requests)")
    finally:
        gw.stop()
        upstream.terminate()
        redis.terminate()


if __name__ == "__main__":
    main()
