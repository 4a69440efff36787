"""The chaos scenarios of tests/chaos, longer: more clients, longer faults, each repeated.

    python -m bench.chaos [--repeat 3] [--clients 8] [--before 3] [--after 8] [--only redis_stall,pg_down]
                          [--stall 6] [--pg-down 10] [--cut 6] [--replica-down 3] [--out table.txt]

Same set-up as the test (two ``gateway serve`` replicas, three simulated workers, a private Redis and a
private PostgreSQL, everything on loopback and stopped at the end) and the same checks
(tests/chaos/verify.py). Prints one table row per run of each fault, then the problems found, and
exits 1 if any run failed. A scenario that left damage behind gets fresh replicas for the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from tests.chaos.cluster import ClusterConfig, chaos_cluster
from tests.chaos.faults import FAULTS, FaultTimes
from tests.chaos.load import LoadProfile
from tests.chaos.scenario import run_scenario
from tests.chaos.verify import ScenarioResult, table


async def run(args: argparse.Namespace) -> list[ScenarioResult]:
    names = args.only.split(",") if args.only else list(FAULTS)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    profile = LoadProfile(clients=args.clients, limited_clients=args.limited_clients, before_s=args.before,
                          after_s=args.after, settle_timeout_s=args.settle)
    times = FaultTimes(redis_stall_s=args.stall, pg_down_s=args.pg_down, cut_s=args.cut,
                       replica_down_s=args.replica_down, terminations=args.terminations)
    results: list[ScenarioResult] = []
    started = time.monotonic()
    async with chaos_cluster(ClusterConfig()) as cluster:
        print(f"cluster up in {time.monotonic() - started:.0f}s (logs in {cluster.run_dir})", flush=True)
        for round_ in range(args.repeat):
            for name in names:
                result = await run_scenario(cluster, FAULTS[name], profile, times, seed=len(results))
                result.fault = f"{name}#{round_ + 1}" if args.repeat > 1 else name
                results.append(result)
                print(table([result]), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each fault")
    ap.add_argument("--only", default="", help="comma-separated faults (default: all)")
    ap.add_argument("--clients", type=int, default=8, help="clients of the main key")
    ap.add_argument("--limited-clients", type=int, default=2, help="clients of the rate-limited key")
    ap.add_argument("--before", type=float, default=3.0, help="seconds of load before the fault")
    ap.add_argument("--after", type=float, default=8.0, help="seconds of load after the fault")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds the ledger may take to settle")
    ap.add_argument("--stall", type=float, default=6.0, help="seconds Redis is stopped (SIGSTOP)")
    ap.add_argument("--pg-down", type=float, default=10.0, help="seconds PostgreSQL is down")
    ap.add_argument("--cut", type=float, default=6.0, help="seconds clients abandon requests")
    ap.add_argument("--replica-down", type=float, default=3.0, help="seconds the killed replica stays down")
    ap.add_argument("--terminations", type=int, default=50, help="rounds of pg_terminate_backend (0.1 s apart)")
    ap.add_argument("--out", default="", help="also write the table to this file")
    args = ap.parse_args()
    results = asyncio.run(run(args))
    text = table(results)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    sys.exit(0 if all(r.ok for r in results) else 1)


if __name__ == "__main__":
    main()
