"""Where the gateway's added p99 at one connection comes from: the `bench.compare` set-up with the
ledger writer running at its default CPU priority (``GATEWAY_LEDGER_WRITER_NICE``, 10), running at
nice 0, paused (SIGSTOP: records wait in the stream), and the upstream directly.

    python -m bench.latency_tail [--rounds 3] [--seconds 4]

The gateway (every stage on) on core 0; Redis, the instant upstream, the ledger writers and wrk
(1 connection, 1 KB json) on core 1, as in ``bench.compare``. Two standalone writers consume the
stream, one at the default nice and one at nice 0; the one a case does not use is stopped (SIGSTOP),
so the cases alternate in one run. The four cases alternate for ``--rounds`` rounds; printed per
case: median p50 and every round's p99 (ms), then the gateway's own request-log phases of one more
run with the default writer (its duration, the part before the upstream call, the wait on the
upstream, the rest after its first byte; p50 / p99), which tell the gateway's own tail from the waits on core 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, pinned
from bench.compare import Gateway, Wrk, start_redis, start_upstream

CASES = ("writer, default nice", "writer, nice 0", "writer paused", "upstream directly")
# Which writers each case stops: "default" (the Gateway's own) and "nice 0" (started here).
STOPPED = {"writer, default nice": ("nice 0",), "writer, nice 0": ("default",),
           "writer paused": ("default", "nice 0"), "upstream directly": ("nice 0",)}


def _phases(log_path: str, start: int) -> dict[str, list[float]]:
    with open(log_path) as f:
        f.seek(start)
        lines = f.read().splitlines()
    out: dict[str, list[float]] = {"duration": [], "before upstream": [], "upstream wait": [], "after first byte": []}
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
        out["after first byte"].append(rec["duration_ms"] - rec["ttft_ms"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4)
    args = ap.parse_args()
    redis, redis_url, _ = start_redis("1")
    upstream, upstream_url = start_upstream("1")
    gw = Gateway(redis_url)
    plain: subprocess.Popen[bytes] | None = None
    try:
        gw.prepare("1")
        gw.spawn("0", upstream_url)
        assert gw.writer is not None
        plain = subprocess.Popen(pinned([sys.executable, "-m", "gateway.cli", "billing", "writer"], "1"), cwd=ROOT,
                                 env={**os.environ, **gw.env, "GATEWAY_LEDGER_WRITER_NICE": "0"},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        writers = {"default": gw.writer.pid, "nice 0": plain.pid}
        wrk = Wrk("1", Path(tempfile.mkdtemp(prefix="bench-latency-")))
        wrk.run(gw.url, "/v1/chat/completions", gw.key, 1, "json", 3, 1)
        cases: dict[str, list[tuple[float, float]]] = {case: [] for case in CASES}
        for _ in range(args.rounds):
            for case in cases:
                url, key = (upstream_url, None) if case == "upstream directly" else (gw.url, gw.key)
                for name in STOPPED[case]:
                    os.kill(writers[name], signal.SIGSTOP)
                try:
                    load = wrk.run(url, "/v1/chat/completions", key, 1, "json", args.seconds, 1)
                finally:
                    for name in STOPPED[case]:
                        os.kill(writers[name], signal.SIGCONT)
                cases[case].append((load.p50_ms, load.p99_ms))
        for case, runs in cases.items():
            print(f"{case:<22} p50 {statistics.median(r[0] for r in runs):.2f} ms  "
                  f"p99 {', '.join(f'{r[1]:.2f}' for r in runs)} ms", flush=True)
        os.kill(plain.pid, signal.SIGSTOP)
        start = os.path.getsize(gw.log.name)
        wrk.run(gw.url, "/v1/chat/completions", gw.key, 1, "json", args.seconds, 1)
        time.sleep(0.3)  # the request log's batch is written within 50 ms
        for name, values in _phases(gw.log.name, start).items():
            values.sort()
            if values:
                print(f"gateway log: {name:<16} p50 {values[len(values) // 2]:.2f} ms  "
                      f"p99 {values[int(len(values) * 0.99)]:.2f} ms  ({len(values)} requests)")
    finally:
        if plain is not None:
            os.kill(plain.pid, signal.SIGCONT)
            plain.terminate()
            plain.wait(10)
        gw.stop()
        upstream.terminate()
        redis.terminate()


if __name__ == "__main__":
    main()
