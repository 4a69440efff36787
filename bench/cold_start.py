"""Cold start, side by side: spawn to the first 200 of a chat request, and the CPU it took, per source tree.

    python -m bench.cold_start [--runs 7] [--tree before=/path/to/old/checkout] [--cpu 0] [--load-cpu 1]

The gateway is started as ``bench/compare.py`` starts it (every stage on: an API key, prefix routing on a
private Redis, metering to the stream, the request log, one configured worker: the instant upstream) and
timed from spawn until ``POST /v1/chat/completions`` answers 200, its CPU (user + system, from /proc) read
at that moment, then until ``GET /ready`` answers 200 (polled from then on: the admin app it is part of is
built off the hot path's way), then stopped. Each ``--tree`` (``NAME=DIR``, a checkout of another commit: ``git archive
main | tar -x -C DIR``) gets its own data folder, migrated and given a key by its own CLI before the first
run; the runs alternate between the trees (so the machine's other load hits all alike) and the medians
come out at the end. This checkout is always one of them, named ``this``. Each tree's bytecode is
compiled first (``compile_bytecode``), as an install would have it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.common import ROOT, compile_bytecode, free_port, pinned
from bench.compare import Gateway, start_redis, start_upstream


class TreeGateway(Gateway):
    """compare.py's gateway, run from the source tree ``root``."""

    def __init__(self, name: str, root: Path, redis_url: str) -> None:
        super().__init__(redis_url)
        self.name = name
        self.root = root
        self.env["PYTHONPATH"] = str(root)
        self.ready_s = float("nan")

    def _cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=self.root,
                             env={**os.environ, **self.env}, check=True, capture_output=True, text=True)
        return out.stdout

    def prepare_key(self) -> None:
        self.key = self._cli("keys", "create", "--org", "bench").strip().splitlines()[-1]

    def spawn(self, cpu: str, upstream: str) -> float:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **self.env, "GATEWAY_WORKERS": upstream, "GATEWAY_PORT": str(port)}
        t0 = time.perf_counter()
        self.popen = subprocess.Popen(pinned([sys.executable, "-m", "gateway.cli", "serve"], cpu), cwd=self.root,
                                      env=env, stdout=self.log, stderr=subprocess.STDOUT)
        first = self._wait_first_200(t0)
        while True:
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.005)
        self.ready_s = time.perf_counter() - t0
        return first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="cold starts per tree")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR", help="another source tree")
    ap.add_argument("--cpu", default="0", help="the gateway's core (taskset)")
    ap.add_argument("--load-cpu", default="1", help="the upstream's and Redis's core")
    args = ap.parse_args()
    trees = {"this": ROOT}
    for spec in args.tree:
        name, _, path = spec.partition("=")
        trees[name] = Path(path).resolve()
    redis_proc, redis_url, _ = start_redis(args.load_cpu)
    upstream_proc, upstream = start_upstream(args.load_cpu)
    gateways = {name: TreeGateway(name, root, redis_url) for name, root in trees.items()}
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
    try:
        for gw in gateways.values():
            compile_bytecode(gw.root)  # the installed form: bytecode compiled, as pip and the image do
            gw.prepare_key()
        for i in range(args.runs):
            order = list(gateways.values())
            if i % 2:
                order.reverse()
            for gw in order:
                try:
                    wall = gw.spawn(args.cpu, upstream)
                    figures[gw.name].append((wall, gw.cold_cpu, gw.ready_s))
                    print(f"  run {i + 1} {gw.name:<8} first 200 after {wall:.3f} s ({gw.cold_cpu:.2f} s CPU), "
                          f"/ready 200 after {gw.ready_s:.3f} s", flush=True)
                finally:
                    gw.stop()
    finally:
        for gw in gateways.values():
            gw.stop()
        upstream_proc.terminate()
        redis_proc.terminate()
        upstream_proc.wait(10)
        redis_proc.wait(10)
    print(f"\nmedians over {args.runs} alternated cold starts (spawn to the first chat 200, its CPU seconds, "
          "spawn to /ready 200):")
    for name, runs in figures.items():
        if runs:
            print(f"  {name:<8} {statistics.median(w for w, _, _ in runs):.3f} s  "
                  f"{statistics.median(c for _, c, _ in runs):.2f} s CPU  "
                  f"/ready {statistics.median(r for _, _, r in runs):.3f} s  ({trees[name]})")


if __name__ == "__main__":
    main()
