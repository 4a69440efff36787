"""The whole gateway, this checkout against other source trees, interleaved in one run: requests/s and
the gateway's CPU per request.

    python -m bench.tree_ab --tree before=DIR [--sizes 128] [--modes json] [--rounds 5] [--seconds 3]
    python -m bench.tree_ab --variant gc700=GATEWAY_GC_THRESHOLD=700 [...]

Each tree (``NAME=DIR``, another commit's files: ``git archive main | tar -x -C DIR``; this checkout is
``this``), and each variant (``NAME=VAR=VALUE``: this checkout with one environment setting changed),
runs a gateway as ``bench.compare`` runs it (every stage on: an API key, a plan whose limits never bind,
a monthly budget, prefix routing on a private Redis, metering to the stream with its own ledger writer,
the request log), all of them up at once and pinned to ``--server-cpu`` (only the one under load is
busy), the instant upstream, Redis, the writers and wrk (1 thread, ``--connections``) on ``--load-cpu``.
Every round runs each size and mode on each tree in turn, the order alternating from round to round (so
the machine's other load hits all alike): a warm-up, then the measured run, the gateway's CPU (user +
system of its process tree, from /proc) divided by the requests it answered.
Prints every run and then, per tree, the medians and their ratio to ``this``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.cold_start import TreeGateway
from bench.common import ROOT
from bench.compare import Wrk, start_redis, start_upstream, tree_cpu_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR", help="another source tree")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=VAR=VALUE",
                    help="this checkout with one setting changed")
    ap.add_argument("--sizes", default="128", help="body sizes in KB")
    ap.add_argument("--modes", default="json", help="json, stream, stream-new")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    args = ap.parse_args()
    trees = {"this": ROOT}
    overrides: dict[str, dict[str, str]] = {}
    for spec in args.tree:
        name, _, path = spec.partition("=")
        trees[name] = Path(path).resolve()
    for spec in args.variant:
        name, _, setting = spec.partition("=")
        var, _, value = setting.partition("=")
        if not name or not var or name in trees:
            raise SystemExit(f"--variant {spec!r}: NAME=VAR=VALUE, a name of its own")
        trees[name] = ROOT
        overrides[name] = {var: value}
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    redis_proc, redis_url, _ = start_redis(args.load_cpu)
    upstream_proc, upstream = start_upstream(args.load_cpu)
    gateways = {name: TreeGateway(name, root, redis_url) for name, root in trees.items()}
    for name, env in overrides.items():
        gateways[name].env.update(env)
    runs: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="tree-ab-") as work:
            wrk = Wrk(args.load_cpu, Path(work))
            for gw in gateways.values():
                gw.prepare(args.load_cpu)
                gw.spawn(args.server_cpu, upstream)
                gw._set_budget()
            for i in range(args.rounds):
                order = list(gateways.values())
                if i % 2:
                    order.reverse()
                for size in sizes:
                    for mode in modes:
                        for gw in order:
                            path = "/v1/chat/completions"
                            wrk.run(gw.url, path, gw.key, size, mode, args.warmup, args.connections)
                            cpu0 = tree_cpu_s(gw.pid())
                            load = wrk.run(gw.url, path, gw.key, size, mode, args.seconds, args.connections)
                            cpu_us = (tree_cpu_s(gw.pid()) - cpu0) / max(load.requests, 1) * 1e6
                            runs.setdefault((gw.name, size, mode), []).append((load.rps, cpu_us))
                            print(f"  round {i + 1} {gw.name:<8} {size:>4} KB {mode:<10} {load.rps:7.0f} req/s  "
                                  f"cpu {cpu_us:5.0f} us/req  errors {load.errors}", flush=True)
    finally:
        for gw in gateways.values():
            gw.stop()
        upstream_proc.terminate()
        redis_proc.terminate()
        upstream_proc.wait(10)
        redis_proc.wait(10)
    print(f"\nmedians over {args.rounds} alternated rounds (req/s, gateway CPU us per request; ratio to this):")
    for size in sizes:
        for mode in modes:
            base = runs.get(("this", size, mode))
            for name in trees:
                got = runs.get((name, size, mode))
                if not got or not base:
                    continue
                rps, cpu = statistics.median(r for r, _ in got), statistics.median(c for _, c in got)
                base_rps, base_cpu = statistics.median(r for r, _ in base), statistics.median(c for _, c in base)
                print(f"  {size:>4} KB {mode:<10} {name:<8} {rps:7.0f} req/s ({rps / base_rps:.2f}x)  "
                      f"cpu {cpu:5.0f} us/req ({cpu / base_cpu:.2f}x)  ({overrides.get(name) or trees[name]})")


if __name__ == "__main__":
    main()
