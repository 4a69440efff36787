"""The gateway's overhead: the same load straight to a simulated worker and through the gateway.

    python -m bench.overhead [--seconds 8] [--connections 32] [--state embedded|redis|both]
                             [--only all|overhead|limits]

Prints requests/s and p50/p99 latency for the direct path and for the gateway (auth on), streaming
and not, the gateway/direct ratio, and the gateway process's CPU time per request (user + system,
from /proc: the figure least disturbed by other load on a shared machine). The worker runs with no
simulated delays, so the figures are the cost of HTTP, JSON and the gateway's own work. On two cores
the gateway gets core 0 and the worker and the load generator share core 1.

The limits run compares the same gateway with rate limits off (an organisation without a plan) and on
(a plan so generous nothing is refused, with organisation and per-key limits of every kind, so each
request runs the reserve script before the upstream call and the settle script after it), and with
a requests-per-minute limit only (the reserve script alone: nothing to settle), alternating the three
twice and reporting the mean of each, and the ratio to limits off.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import orjson

from bench.common import ROOT, LoadResult, Proc, make_key, run_load, start_gateway, start_sim, temp_env

CHAT = {"model": "grok-code-fast-1", "max_tokens": 16,
        "messages": [{"role": "system", "content": "You are a careful coding assistant. " * 20},
                     {"role": "user", "content": "Write a function that reverses a linked list in Python."}]}


def _row(name: str, r: LoadResult, base: LoadResult | None, cpu_us: float | None = None) -> str:
    ratio = f"{r.requests_per_s / base.requests_per_s:6.2f}" if base else "     -"
    cpu = f"{cpu_us:9.0f}" if cpu_us is not None else "        -"
    return f"{name:<38} {r.requests_per_s:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {ratio} {cpu} {r.errors:6d}"


GENEROUS = ["--rpm", "1000000000", "--tpm", "1000000000000", "--tpd", "1000000000000", "--concurrency", "100000",
            "--key-rpm", "500000000", "--key-tpm", "500000000000", "--key-concurrency", "50000"]


def _cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, env={**os.environ, **env}, check=True,
                   capture_output=True)


def _measure(gw: Proc, body: bytes, key: str, seconds: int, connections: int) -> tuple[LoadResult, float]:
    run_load(gw.url + "/v1/chat/completions", body, key, 2, connections, "1")  # warm-up
    cpu0 = gw.cpu_seconds()
    result = run_load(gw.url + "/v1/chat/completions", body, key, seconds, connections, "1")
    return result, (gw.cpu_seconds() - cpu0) / max(result.requests_per_s * seconds, 1) * 1e6


def _mean(results: list[tuple[LoadResult, float]]) -> tuple[LoadResult, float]:
    n = len(results)
    r = LoadResult(sum(x.requests_per_s for x, _ in results) / n, sum(x.p50_ms for x, _ in results) / n,
                   sum(x.p99_ms for x, _ in results) / n, sum(x.errors for x, _ in results), results[0][0].tool)
    return r, sum(c for _, c in results) / n


def limits_rows(sim: Proc, states: list[str], args: argparse.Namespace) -> list[str]:
    """Limits off versus on, same gateway build, same load, interleaved."""
    rows: list[str] = []
    body = orjson.dumps({**CHAT, "stream": False})
    for state in states:
        envs = {name: temp_env(args.redis_url if state == "redis" else "", args.database_url)
                for name in ("off", "on", "rpm")}
        keys = {name: make_key(env) for name, env in envs.items()}
        _cli(envs["on"], "plans", "create", "bench-generous", *GENEROUS)
        _cli(envs["on"], "orgs", "set-plan", "bench", "bench-generous")
        _cli(envs["rpm"], "plans", "create", "bench-rpm", "--rpm", "1000000000")
        _cli(envs["rpm"], "orgs", "set-plan", "bench", "bench-rpm")
        runs: dict[str, list[tuple[LoadResult, float]]] = {"off": [], "on": [], "rpm": []}
        for name in ("off", "on", "rpm", "off", "on", "rpm"):
            gw = start_gateway("0", [sim.url], envs[name])
            try:
                runs[name].append(_measure(gw, body, keys[name], args.seconds, args.connections))
            finally:
                gw.stop()
        off, on, rpm = _mean(runs["off"]), _mean(runs["on"]), _mean(runs["rpm"])
        rows.append(_row(f"gateway, {state}, limits off (json)", off[0], None, off[1]))
        rows.append(_row(f"gateway, {state}, limits on (json)", on[0], off[0], on[1]))
        rows.append(_row(f"gateway, {state}, rpm only (json)", rpm[0], off[0], rpm[1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--state", choices=["embedded", "redis", "both"], default="both")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--database-url", default="")
    ap.add_argument("--only", choices=["all", "overhead", "limits"], default="all")
    args = ap.parse_args()

    states = ["embedded", "redis"] if args.state == "both" else [args.state]
    sim = start_sim("1")
    rows: list[str] = []
    try:
        for stream in (False, True) if args.only != "limits" else ():
            body = orjson.dumps({**CHAT, "stream": stream})
            label = "stream" if stream else "json"
            direct = run_load(sim.url + "/v1/chat/completions", body, None, args.seconds, args.connections, "1")
            rows.append(_row(f"direct to worker ({label})", direct, None))
            for state in states:
                env = temp_env(args.redis_url if state == "redis" else "", args.database_url)
                key = make_key(env)
                gw = start_gateway("0", [sim.url], env)
                try:
                    run_load(gw.url + "/v1/chat/completions", body, key, 2, args.connections, "1")  # warm-up
                    cpu0 = gw.cpu_seconds()
                    through = run_load(gw.url + "/v1/chat/completions", body, key, args.seconds, args.connections,
                                       "1")
                    cpu_us = (gw.cpu_seconds() - cpu0) / (through.requests_per_s * args.seconds) * 1e6
                finally:
                    gw.stop()
                rows.append(_row(f"gateway, {state} state ({label})", through, direct, cpu_us))
        if args.only != "overhead":
            rows.append("limits on / off (ratio column: on relative to off)")
            rows.extend(limits_rows(sim, states, args))
    finally:
        sim.stop()
    print(f"{'path':<38} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6} {'cpu us/req':>9} {'errors':>6}")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
