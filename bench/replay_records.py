"""The hard agentic workload's rows with every request kept: where each conversation went, and why a row's
imbalance is what it is.

    python -m bench.replay_records TAG [--quick] [--out DIR] ROW [ROW ...]

Each ROW is ``pinning`` (the session-pinning client) or ``LABEL|HINTS|NAME=VALUE,...`` as for
``bench.replay --row`` (``default|0|`` is the default without hints). The rows run one after the other
through ``bench.replay``'s own functions (the same simulated workers, gateway and workload), and print the
same figures; then, per row, each worker's uncached prompt tokens (its share of the mean), the
conversations whose first turn it served, that work split by turn (first, second, later) and by partner,
and the first turns of each 5-second window as (worker, partner). The records go to
``DIR/TAG-LABEL.json`` (default ``/tmp/replay-records``): one object per request with its conversation,
partner, turn, send time, worker, prompt and cached tokens and TTFT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench import replay
from bench.workloads import hard_agentic


def records(run: replay.Run) -> list[dict[str, Any]]:
    return [{"session": s.session, "partner": s.tenant, "turn": (len(s.body["messages"]) - 2) // 2, "t": s.rec.sent,
             "worker": s.rec.worker, "prompt": s.rec.prompt_tokens, "cached": s.rec.cached_tokens, "ttft": s.rec.ttft,
             "ok": s.rec.ok} for s in run.sent]


def spread(recs: list[dict[str, Any]]) -> None:
    """Per worker: uncached work, conversations placed, work by turn and by partner; first turns per 5 s."""
    done = sorted((r for r in recs if r["ok"]), key=lambda r: r["t"])
    if not done:
        return
    t0 = done[0]["t"]
    workers = sorted({r["worker"] for r in done})
    index = {w: i for i, w in enumerate(workers)}
    work: Counter[str] = Counter()
    by_turn: dict[str, Counter[str]] = defaultdict(Counter)
    by_partner: dict[str, Counter[int]] = defaultdict(Counter)
    first: dict[int, list[tuple[int, int]]] = defaultdict(list)
    placed: Counter[str] = Counter()
    for r in done:
        uncached = r["prompt"] - r["cached"]
        work[r["worker"]] += uncached
        by_partner[r["worker"]][r["partner"]] += uncached
        by_turn[r["worker"]]["first" if r["turn"] == 0 else "second" if r["turn"] == 1 else "later"] += uncached
        if r["turn"] == 0:
            placed[r["worker"]] += 1
            first[int((r["t"] - t0) // 5)].append((index[r["worker"]], r["partner"]))
    mean = sum(work.values()) / len(workers)
    for w in workers:
        t = by_turn[w]
        print(f"    w{index[w]} {work[w]:8,} uncached ({work[w] / mean:.2f})  {placed[w]:2d} conversations  "
              f"first {t['first']:7,} second {t['second']:6,} later {t['later']:8,}  "
              f"by partner {dict(sorted(by_partner[w].items()))}")
    print("    first turns per 5 s, (worker, partner):", [sorted(v) for _, v in sorted(first.items())])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tag")
    ap.add_argument("rows", nargs="+")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="/tmp/replay-records")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = hard_agentic(args.quick)
    kv = 20_000 if args.quick else 52_000
    data = tempfile.mkdtemp(prefix="gw-records-")
    base = {"GATEWAY_DATA_DIR": data, "GATEWAY_REDIS_URL": replay.REDIS_URL, "GATEWAY_DATABASE_URL": "",
            "GATEWAY_LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "-m", "gateway.cli", "db", "upgrade"], cwd=replay.ROOT,
                   env={**os.environ, **base}, check=True, capture_output=True)
    sims = replay.SimFarm(replay.sim_configs(4, kv, 50_000.0, 1000.0), cpu=1)
    try:
        keys = replay.make_keys(base, [f"hard-partner-{p}" for p in range(cfg.partners)])
        replay.print_header(f"hard agentic{' (quick)' if args.quick else ''}, {args.tag}")
        ceiling: float | None = None
        kept = []
        for spec in args.rows:
            label, policy, hints, extra = (replay.parse_row(spec) if "|" in spec
                                           else ("pinning client", "session_hash", True, {}))
            run, seconds = replay.run_row(
                sims, base, policy, extra,
                lambda urls, hints: replay.run_agentic(urls, keys, cfg, hints, "x-grok-conv-id"), hints, True)
            if ceiling is None:
                ceiling = replay.fleet_bounds(run, 4, kv).ceiling
            replay.print_row(replay.figures(label, run, 4, seconds, ceiling))
            recs = records(run)
            name = label.strip().replace(" ", "_").replace("/", "")
            (out / f"{args.tag}-{name}.json").write_text(json.dumps(recs))
            kept.append((label.strip(), recs))
        for label, recs in kept:
            print(f"\n  {label}:")
            spread(recs)
    finally:
        sims.stop()
        replay.cleanup_redis()


if __name__ == "__main__":
    main()
