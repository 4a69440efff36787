"""Routing replay: the same workload through the gateway under each routing policy, side by side.

    python -m bench.replay [--workload agentic,mooncake] [--workers 4] [--quick] [--sglang]

Four simulated workers with finite KV caches (one child process, real timing model) sit behind one
gateway, or two replicas sharing Redis (requests alternate between them at random). Per policy it
prints: the share of prompt tokens served from cache as the workers reported it, the share a single
infinite cache would have served (the ceiling, replayed offline through the simulator's own prompt
template and block hashing), that share as a fraction of the ceiling, load imbalance (max / mean
prefill work, i.e. uncached prompt tokens, per worker), p50 / p99 time to first token, and the moves:
requests a conversation sent to another worker than its previous one, with the share of the uncached
prompt tokens they cost (a move recomputes the history on the new worker).

The harder workloads (``hard``, ``mooncake_pressure``) print, per workload: the session-pinning
client (a hash of the session id over the workers), prefix_aware with and without session hints
(``x-grok-conv-id``; Mooncake: ``prompt_cache_key`` = its conversation), rows with one setting changed
(``LEVER_ROWS``), and the one-worker unbounded-cache ceiling with the working set, caches at 30-50% of
it; then the fleet as ONE cache of its total size, with LRU eviction (a reference: what a balanced
spread lands about) and with Belady's optimal eviction (a bound no router beats), both replayed
offline from the first row's requests (``bench/cache_bounds.py``). ``--rows`` picks rows by label,
``--row`` adds a prefix_aware row with other gateway settings (the levers of docs/routing.md).

Workloads: ``agentic`` (synthetic coding agents: sessions of tens of turns, each turn appending the
answer and a tool result, sessions of a partner sharing a long system prompt and tool list; each
partner its own organisation, so its own cache salt) and ``mooncake`` (the Mooncake conversation
trace, first rows, blocks and clock scaled down), with caches smaller than the working set and with
caches large enough to hold it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.cache_bounds import Access, Bounds, accesses, bounds, unbounded
from bench.common import ROOT, Proc, free_port, pinned, wait_http
from bench.workloads import AgenticConfig, Session, agentic_sessions, hard_agentic, mooncake, tool_result
from workersim.sim_settings import SimConfig

MODEL = "grok-code-fast-1"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TUNING: dict[str, str] = {}  # GATEWAY_ROUTING_* overrides from --set
LOGS: list[str] = []  # gateway logs of this run, printed on request and removed at the end
RUN_PREFIX = "gwreplay-" + os.urandom(3).hex()  # every Redis key of this run starts with it


# --- simulated workers: one child process, one event loop ------------------------------------------
def _serve_sims(configs: list[SimConfig], ports: list[int], cpu: int | None, log: str) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    out = os.open(log, os.O_WRONLY | os.O_APPEND)  # to a file: other routers' probes make uvicorn warn
    os.dup2(out, 1)
    os.dup2(out, 2)
    from workersim.run import start_sim_server

    async def main() -> None:
        for config, port in zip(configs, ports, strict=True):
            await start_sim_server(config, port=port)
        await asyncio.Event().wait()

    asyncio.run(main())


class SimFarm:
    def __init__(self, configs: list[SimConfig], cpu: int | None) -> None:
        self.ports = [free_port() for _ in configs]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        log = tempfile.NamedTemporaryFile(prefix="sims-", suffix=".log", delete=False)  # noqa: SIM115
        LOGS.append(log.name)
        self.process = multiprocessing.get_context("spawn").Process(
            target=_serve_sims, args=(configs, self.ports, cpu, log.name), daemon=True)
        self.process.start()
        for url in self.urls:
            wait_http(url + "/health")

    def reset(self) -> None:
        for url in self.urls:
            req = urllib.request.Request(url + "/sim/reset", data=b"{}", method="POST")
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


# --- one request ------------------------------------------------------------------------------------
@dataclass
class Rec:
    sent: float
    worker: str
    prompt_tokens: int = 0
    cached_tokens: int = 0
    ttft: float = 0.0
    ok: bool = False
    answer: str = ""


async def send(http: aiohttp.ClientSession, url: str, path: str, key: str, body: dict[str, Any],
               headers: dict[str, str]) -> Rec:
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    rec = Rec(sent=t0, worker="?")
    parts: list[str] = []
    try:
        async with http.post(url + path, data=orjson.dumps(body),
                             headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                      **headers}) as resp:
            rec.worker = resp.headers.get("x-gateway-worker") or resp.headers.get("x-worker-id") or "?"
            fingerprint = rec.worker == "?"  # behind another router: the simulator names itself there
            if resp.status != 200:
                await resp.read()
                return rec
            buf = b""
            async for chunk in resp.content.iter_any():
                if not rec.ttft:
                    rec.ttft = time.perf_counter() - t0
                buf += chunk
                *lines, buf = buf.split(b"\n\n")
                for line in lines:
                    if not line.startswith(b"data: {"):
                        continue
                    event = orjson.loads(line[6:])
                    if fingerprint and event.get("system_fingerprint"):
                        rec.worker, fingerprint = event["system_fingerprint"], False
                    for choice in event.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            parts.append(delta["content"])
                        if choice.get("text"):
                            parts.append(choice["text"])
                    usage = event.get("usage")
                    if usage:
                        rec.prompt_tokens = usage["prompt_tokens"]
                        rec.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            rec.ok = rec.prompt_tokens > 0
    except aiohttp.ClientError as exc:
        print(f"  request failed: {exc!r}", file=sys.stderr)
    rec.answer = "".join(parts)
    return rec


@dataclass
class Sent:
    """What went out, for the offline ceiling: the body, the answer, the tenant."""

    rec: Rec
    body: dict[str, Any]
    tenant: int
    chat: bool
    session: str = ""  # the conversation it belongs to (for the moves figure), "" if unknown


@dataclass
class Run:
    sent: list[Sent] = field(default_factory=list)


def pick_url(urls: list[str], rng: random.Random) -> str:
    return urls[0] if len(urls) == 1 else urls[rng.randrange(len(urls))]


async def run_agentic(urls: list[str], keys: list[str], cfg: AgenticConfig, hints: bool,
                      hint_header: str = "x-session-id") -> Run:
    run = Run()
    rng = random.Random(1)
    sessions = agentic_sessions(cfg)

    async def one(http: aiohttp.ClientSession, s: Session) -> None:
        await asyncio.sleep(s.start_s)
        messages = list(s.messages)
        for turn in range(cfg.turns):
            body = {"model": MODEL, "messages": list(messages), "tools": s.tools, "max_tokens": cfg.answer_tokens}
            headers = {hint_header: s.session_id} if hints else {}
            rec = await send(http, pick_url(urls, rng), "/v1/chat/completions", keys[s.partner], body, headers)
            run.sent.append(Sent(rec, body, s.partner, True, s.session_id))
            if not rec.ok:
                return
            call_id = f"call_{turn}"
            messages.append({"role": "assistant", "content": rec.answer})
            messages.append({"role": "tool", "tool_call_id": call_id, "content": tool_result(s, turn)})
            await asyncio.sleep(rng.uniform(*cfg.think_s))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=300)) as http:
        await asyncio.gather(*(one(http, s) for s in sessions))
    return run


async def run_mooncake(urls: list[str], key: str, requests: list[Any], hints: bool = False) -> Run:
    run = Run()
    rng = random.Random(1)
    t0 = time.perf_counter()

    async def one(http: aiohttp.ClientSession, r: Any) -> None:
        delay = r.at_s - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        body = {"model": MODEL, "prompt": r.prompt, "max_tokens": r.max_tokens}
        if hints:
            body["prompt_cache_key"] = r.session
        rec = await send(http, pick_url(urls, rng), "/v1/completions", key, body, {})
        run.sent.append(Sent(rec, body, 0, False, r.session))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=300)) as http:
        await asyncio.gather(*(one(http, r) for r in requests))
    return run


# --- figures ----------------------------------------------------------------------------------------
def run_accesses(run: Run, block_size: int = 16) -> list[Access]:
    """The run's successful requests, in send order, as the simulator's caches saw them."""
    done = sorted((s for s in run.sent if s.rec.ok), key=lambda x: x.rec.sent)
    return accesses(((s.body, s.rec.answer, f"tenant-{s.tenant}", s.chat) for s in done), MODEL, block_size)


def ceiling(run: Run, block_size: int = 16) -> float:
    """Share of prompt tokens one infinitely large prefix cache would have served, in send order."""
    return unbounded(run_accesses(run, block_size), block_size)[0]


def fleet_bounds(run: Run, workers: int, kv_tokens: int, block_size: int = 16) -> Bounds:
    """The ceiling, the working set, and one pooled cache of the fleet's size (LRU and Belady)."""
    return bounds(run_accesses(run, block_size), workers * (kv_tokens // block_size), block_size)


@dataclass
class Row:
    name: str
    requests: int
    errors: int
    share: float
    ceiling: float
    imbalance: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    seconds: float
    moves: int = 0  # requests sent to another worker than their conversation's previous request
    moved_share: float = 0.0  # their uncached prompt tokens, as a share of all uncached prompt tokens


def figures(name: str, run: Run, workers: int, seconds: float, ceil: float) -> Row:
    recs = [s.rec for s in run.sent]
    ok = [r for r in recs if r.ok]
    prompt = sum(r.prompt_tokens for r in ok)
    cached = sum(r.cached_tokens for r in ok)
    work: dict[str, int] = {}
    for r in ok:
        work[r.worker] = work.get(r.worker, 0) + r.prompt_tokens - r.cached_tokens
    loads = list(work.values()) + [0] * max(0, workers - len(work))
    mean = sum(loads) / len(loads) if loads else 0
    ttfts = sorted(r.ttft for r in ok)
    moves, moved = conversation_moves(run)
    uncached = prompt - cached
    return Row(name, len(recs), len(recs) - len(ok), cached / prompt if prompt else 0.0, ceil,
               max(loads) / mean if mean else 0.0, 1000 * ttfts[len(ttfts) // 2] if ttfts else 0.0,
               1000 * ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.99))] if ttfts else 0.0, seconds,
               moves, moved / uncached if uncached else 0.0)


def conversation_moves(run: Run) -> tuple[int, int]:
    """Requests that went to another worker than their conversation's previous one, in send order, and
    their uncached prompt tokens (a move recomputes the history on the new worker; docs/routing.md,
    "Where the imbalance comes from")."""
    last: dict[str, str] = {}
    moves = moved = 0
    for s in sorted((s for s in run.sent if s.rec.ok and s.session), key=lambda s: s.rec.sent):
        before = last.get(s.session)
        if before is not None and before != s.rec.worker:
            moves += 1
            moved += s.rec.prompt_tokens - s.rec.cached_tokens
        last[s.session] = s.rec.worker
    return moves, moved


def print_header(title: str) -> None:
    print(f"\n{title}")
    print(f"{'policy':<30} {'reqs':>5} {'err':>4} {'cached':>7} {'ceiling':>8} {'of ceil':>8} {'imbal':>6} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'secs':>5} {'moves':>5} {'moved':>6}", flush=True)


def print_row(r: Row) -> None:
    of = r.share / r.ceiling if r.ceiling else 0.0
    print(f"{r.name:<30} {r.requests:5d} {r.errors:4d} {r.share:7.3f} {r.ceiling:8.3f} {of:8.3f} {r.imbalance:6.2f} "
          f"{r.ttft_p50_ms:8.1f} {r.ttft_p99_ms:8.1f} {r.seconds:5.1f} {r.moves:5d} {r.moved_share:6.1%}", flush=True)


def print_ceiling(ceil: float, working_set: int, workers: int, kv: int) -> None:
    print(f"{'ceiling (1 worker, unbounded cache)':<30} {'':>5} {'':>4} {ceil:7.3f} {ceil:8.3f} {1.0:8.3f} "
          f"{'':>6}  working set {working_set:,} tokens; caches {workers * kv / max(1, working_set):.0%} of it",
          flush=True)


def print_bounds(b: Bounds, workers: int, kv: int) -> None:
    """The ceiling row, then one pooled cache of the fleet's total size (bench/cache_bounds.py)."""
    print_ceiling(b.ceiling, b.working_set_tokens, workers, kv)
    for label, share, note in (("ref: fleet as 1 LRU cache", b.pooled_lru, "a balanced spread lands about here"),
                               ("bound: fleet as 1 Belady cache", b.belady, "optimal eviction: no router beats it")):
        of = share / b.ceiling if b.ceiling else 0.0
        print(f"{label:<30} {'':>5} {'':>4} {share:7.3f} {b.ceiling:8.3f} {of:8.3f} {'':>6}  "
              f"{workers} x {kv:,} KV tokens as one cache; {note}", flush=True)


# --- gateways -----------------------------------------------------------------------------------------
def make_keys(env: dict[str, str], orgs: list[str]) -> list[str]:
    out = []
    for org in orgs:
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--org", org], cwd=ROOT,
                              env={**os.environ, **env}, check=True, capture_output=True, text=True)
        out.append(done.stdout.strip().splitlines()[-1])
    return out


def start_gateways(policy: str, replicas: int, sims: SimFarm, base_env: dict[str, str], cpu: str | None,
                   extra: dict[str, str] | None = None) -> list[Proc]:
    env = {**base_env, **TUNING, "GATEWAY_ROUTING_POLICY": policy,
           "GATEWAY_REDIS_PREFIX": f"{RUN_PREFIX}-{os.urandom(3).hex()}",
           "GATEWAY_HEALTH_INTERVAL_S": "0.5", "GATEWAY_AUTO_MIGRATE": "false",
           "GATEWAY_WORKERS": ",".join(sims.urls), **(extra or {})}
    return [start_logged_gateway(cpu, env) for _ in range(replicas)]


def start_logged_gateway(cpu: str | None, env: dict[str, str]) -> Proc:
    """A gateway process whose log goes to a file (a pipe nobody reads would block it once full)."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="gw-replay-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = pinned([sys.executable, "-m", "gateway.cli", "serve"], cpu)
    popen = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env, "GATEWAY_PORT": str(port)},
                             stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/ready")
    except RuntimeError:
        popen.kill()
        raise RuntimeError("gateway failed: " + Path(log.name).read_text()[-2000:]) from None
    LOGS.append(log.name)
    return Proc(popen, url)


def stop_all(procs: list[Proc]) -> None:
    for p in procs:
        p.stop()


# --- sglang-router, the peer row ---------------------------------------------------------------------
def start_sglang_router(sims: SimFarm) -> Proc | None:
    """sglang-router (``pip install sglang-router``) with its cache_aware policy and default thresholds."""
    exe = shutil.which("sglang-router") or str(Path(sys.executable).parent / "sglang-router")
    if not os.path.exists(exe):
        print("  sglang-router is not installed (pip install sglang-router)", file=sys.stderr)
        return None
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="sglang-router-", suffix=".log", delete=False)  # noqa: SIM115
    LOGS.append(log.name)
    popen = subprocess.Popen([exe, "launch", "--worker-urls", *sims.urls, "--policy", "cache_aware",
                              "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
    except RuntimeError:
        popen.kill()
        print(f"  sglang-router did not start: {Path(log.name).read_text()[-400:]}", file=sys.stderr)
        return None
    time.sleep(2)  # it registers the workers (and loads their tokenizer) in the background
    return Proc(popen, f"http://127.0.0.1:{port}")


# --- the runs -------------------------------------------------------------------------------------------
POLICIES = ["round_robin", "least_loaded", "session_hash", "prefix_aware"]


def sim_configs(n: int, kv_tokens: int, prefill: float, decode: float) -> list[SimConfig]:
    return [SimConfig(model=MODEL, kv_capacity_tokens=kv_tokens, prefill_tokens_per_s=prefill,
                      decode_tokens_per_s=decode, max_running=64, time_scale=1.0, seed=i, worker_id=f"bench-{i}",
                      recent_requests_max=0, stream_interval_s=0.01,
                      tool_call_rate=0.0)  # the sessions append the answer's text as the assistant's turn
            for i in range(n)]


def agentic(args: argparse.Namespace, base_env: dict[str, str]) -> None:
    cfg = AgenticConfig(sessions=16 if args.quick else 32, turns=12 if args.quick else 20)
    kv = 128_000
    sims = SimFarm(sim_configs(args.workers, kv, 50_000.0, 1000.0), cpu=1 if args.pin else None)
    try:
        keys = make_keys(base_env, [f"partner-{p}" for p in range(cfg.partners)])
        print_header(f"agentic coding: {cfg.sessions} sessions x {cfg.turns} turns, {cfg.partners} partners, "
                     f"{args.workers} workers x {kv:,} KV tokens")
        ceil: float | None = None
        runs = [(p, 1, True) for p in args.policies] + [("prefix_aware", 2, True), ("prefix_aware", 1, False)]
        runs = [r for r in runs if r[0] in args.policies]
        for policy, replicas, hints in runs:
            sims.reset()
            gws = start_gateways(policy, replicas, sims, base_env, "0" if args.pin else None)
            try:
                t0 = time.perf_counter()
                run = asyncio.run(run_agentic([g.url for g in gws], keys, cfg, hints))
                seconds = time.perf_counter() - t0
            finally:
                stop_all(gws)
            if ceil is None:
                ceil = ceiling(run)
            name = f"{policy} x{replicas}" + ("" if hints else " (no hints)")
            print_row(figures(name, run, args.workers, seconds, ceil))
        if args.sglang:
            sglang_row(sims, lambda url: run_agentic([url], keys, cfg, True), args, ceil or 0.0)
    finally:
        sims.stop()


def sglang_row(sims: SimFarm, job: Any, args: argparse.Namespace, ceil: float) -> None:
    sims.reset()
    router = start_sglang_router(sims)
    if router is None:
        print("sglang-router cache_aware: skipped (it did not start here; see the message above)")
        return
    try:
        t0 = time.perf_counter()
        run = asyncio.run(job(router.url))
        print_row(figures("sglang-router cache_aware", run, args.workers, time.perf_counter() - t0, ceil))
    finally:
        router.stop()


def mooncake_runs(args: argparse.Namespace, base_env: dict[str, str]) -> None:
    n = 600 if args.quick else 1200
    block_tokens = 32
    requests = list(mooncake(n, block_tokens, duration_s=10.0 if args.quick else 20.0, offset=args.offset))
    key_env = base_env
    key = make_keys(key_env, ["mooncake"])[0]
    for label, kv, policies in (("small caches", 100_000, POLICIES), ("large caches", 1_000_000,
                                                                    ["round_robin", "prefix_aware"])):
        sims = SimFarm(sim_configs(args.workers, kv, 40_000.0, 1000.0), cpu=1 if args.pin else None)
        try:
            print_header(f"mooncake conversation trace: {n} requests, blocks of 512 -> {block_tokens} tokens, "
                         f"{args.workers} workers x {kv:,} KV tokens ({label})")
            ceil: float | None = None
            runs = [(p, 1) for p in policies if p in args.policies]
            runs += [("prefix_aware", 2)] if "prefix_aware" in args.policies else []
            for policy, replicas in runs:
                sims.reset()
                gws = start_gateways(policy, replicas, sims, base_env, "0" if args.pin else None)
                try:
                    t0 = time.perf_counter()
                    run = asyncio.run(run_mooncake([g.url for g in gws], key, requests))
                    seconds = time.perf_counter() - t0
                finally:
                    stop_all(gws)
                if ceil is None:
                    ceil = ceiling(run)
                print_row(figures(f"{policy} x{replicas}", run, args.workers, seconds, ceil))
            if args.sglang:
                sglang_row(sims, lambda url: run_mooncake([url], key, requests), args, ceil or 0.0)
        finally:
            sims.stop()


# --- the harder workloads: rows against the session-pinning client and the ceiling ------------------
# (label, policy, session hints). The pinning client is the gateway's session_hash policy fed the
# session id: a rendezvous hash of the id over the workers, what a client hashing its session id mod
# the workers does, through the same gateway hop (so TTFT compares like with like).
HARD_ROWS: list[tuple[str, str, bool, dict[str, str]]] = [
    ("pinning client (session hash)", "session_hash", True, {}),
    ("prefix_aware, hints", "prefix_aware", True, {}),
    ("prefix_aware, no hints", "prefix_aware", False, {}),
    # the same without the session inference lever (on by default; docs/routing.md), for comparison
    ("  no hints, no inference", "prefix_aware", False, {"GATEWAY_ROUTING_INFER_SESSIONS": "false"}),
]
# the levers of docs/routing.md, each row the default with one setting changed, for comparison
LEVER_ROWS: list[tuple[str, str, bool, dict[str, str]]] = [
    ("  no hints, measured bytes/token", "prefix_aware", False, {"GATEWAY_ROUTING_BYTES_PER_TOKEN": "0"}),
]


def parse_row(spec: str) -> tuple[str, str, bool, dict[str, str]]:
    """``--row "label|hints|NAME=VALUE,..."``: one more prefix_aware row with these gateway settings."""
    label, hints, settings = [*spec.split("|"), "", ""][:3]
    env = {}
    for item in filter(None, settings.split(",")):
        name, _, value = item.partition("=")
        env["GATEWAY_" + name.upper()] = value
    return "  " + label, "prefix_aware", hints in ("1", "hints", "true", "yes"), env


def selected_rows(args: argparse.Namespace, workload: str) -> list[tuple[str, str, bool, dict[str, str]]]:
    rows = HARD_ROWS + LEVER_ROWS + [parse_row(spec) for spec in args.row]
    if workload == "mooncake_pressure":  # completions: there is no conversation opening to infer from
        rows = [r for r in rows if "GATEWAY_ROUTING_INFER_SESSIONS" not in r[3]]
    if args.rows:
        rows = [r for r in rows if any(part.strip() == r[0].strip() for part in args.rows.split(";"))]
    return rows


def run_row(sims: SimFarm, base_env: dict[str, str], policy: str, extra: dict[str, str], job: Any,
            hints: bool, pin: bool) -> tuple[Run, float]:
    """One row of a harder workload: the workers reset, one gateway with these settings, the workload
    (``job(urls, hints)``) through it; the run and its seconds."""
    sims.reset()
    gws = start_gateways(policy, 1, sims, base_env, "0" if pin else None, extra)
    try:
        t0 = time.perf_counter()
        run = asyncio.run(job([g.url for g in gws], hints))
        return run, time.perf_counter() - t0
    finally:
        stop_all(gws)


def hard_rows(title: str, sims: SimFarm, base_env: dict[str, str], args: argparse.Namespace, kv: int,
              job: Any, workload: str) -> list[Row]:
    """Every selected row (``selected_rows``) on one workload (``job(urls, hints)``), then the ceiling
    row and the pooled-cache bounds."""
    print_header(title)
    out: list[Row] = []
    ceil: float | None = None
    ref: Bounds | None = None
    for label, policy, hints, extra in selected_rows(args, workload):
        if policy not in args.policies:
            continue
        run, seconds = run_row(sims, base_env, policy, extra, job, hints, args.pin)
        if ref is None:
            ref = fleet_bounds(run, args.workers, kv)
            ceil = ref.ceiling
        row = figures(label, run, args.workers, seconds, ceil or 0.0)
        print_row(row)
        out.append(row)
    if ref is not None:
        print_bounds(ref, args.workers, kv)
    return out


def hard_agentic_runs(args: argparse.Namespace, base_env: dict[str, str]) -> None:
    cfg = hard_agentic(args.quick)
    kv = 20_000 if args.quick else 52_000  # all four caches together: 30-50% of the working set
    sims = SimFarm(sim_configs(args.workers, kv, 50_000.0, 1000.0), cpu=1 if args.pin else None)
    try:
        keys = make_keys(base_env, [f"hard-partner-{p}" for p in range(cfg.partners)])
        hard_rows(f"hard agentic: {cfg.sessions} sessions x {cfg.turns} turns in {cfg.bursts} bursts, "
                  f"{cfg.partners} partners, think {cfg.think_s[0]}-{cfg.think_s[1]} s, "
                  f"{args.workers} workers x {kv:,} KV tokens", sims, base_env, args, kv,
                  lambda urls, hints: run_agentic(urls, keys, cfg, hints, "x-grok-conv-id"), "hard")
    finally:
        sims.stop()


def mooncake_pressure(args: argparse.Namespace, base_env: dict[str, str]) -> None:
    n = 600 if args.quick else 1200
    block_tokens = 32
    requests = list(mooncake(n, block_tokens, duration_s=30.0 if args.quick else 60.0, offset=args.offset))
    key = make_keys(base_env, ["mooncake-pressure"])[0]
    kv = 40_000 if args.quick else 80_000
    sims = SimFarm(sim_configs(args.workers, kv, 40_000.0, 1000.0), cpu=1 if args.pin else None)
    try:
        hard_rows(f"mooncake under cache pressure: {n} requests, blocks of 512 -> {block_tokens} tokens, "
                  f"{args.workers} workers x {kv:,} KV tokens (hint: prompt_cache_key = the conversation)",
                  sims, base_env, args, kv, lambda urls, hints: run_mooncake(urls, key, requests, hints),
                  "mooncake_pressure")
    finally:
        sims.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="agentic,mooncake,hard,mooncake_pressure",
                    help="comma-separated: agentic, mooncake, hard, mooncake_pressure")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="a smaller run")
    ap.add_argument("--offset", type=int, default=0, help="first Mooncake row")
    ap.add_argument("--sglang", action="store_true", help="add sglang-router's cache_aware policy as a peer row")
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated subset")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a gateway setting for every run, e.g. routing_load_factor=1.5")
    ap.add_argument("--rows", default="", help="harder workloads: only the rows of these labels, separated by "
                    "';' (e.g. 'prefix_aware, no hints;no hints, 4 bytes/token')")
    ap.add_argument("--row", action="append", default=[], metavar="LABEL|HINTS|NAME=VALUE,...",
                    help="harder workloads: one more prefix_aware row with these gateway settings, e.g. "
                    "'index x1.5|0|routing_bytes_per_token=6'")
    ap.add_argument("--logs", action="store_true", help="print the tail of every gateway log at the end")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to cores")
    args = ap.parse_args()
    args.pin = args.pin and (os.cpu_count() or 1) > 1
    args.policies = args.policies.split(",")
    for item in args.set:
        name, _, value = item.partition("=")
        TUNING["GATEWAY_" + name.upper()] = value
    data = tempfile.mkdtemp(prefix="gw-replay-")
    base_env = {"GATEWAY_DATA_DIR": data, "GATEWAY_REDIS_URL": REDIS_URL, "GATEWAY_DATABASE_URL": "",
                "GATEWAY_LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "-m", "gateway.cli", "db", "upgrade"], cwd=ROOT, env={**os.environ, **base_env},
                   check=True, capture_output=True)
    try:
        for workload in args.workload.split(","):
            if workload == "agentic":
                agentic(args, base_env)
            elif workload == "mooncake":
                mooncake_runs(args, base_env)
            elif workload == "hard":
                hard_agentic_runs(args, base_env)
            elif workload == "mooncake_pressure":
                mooncake_pressure(args, base_env)
            else:
                raise SystemExit(f"unknown workload {workload!r}")
    finally:
        shutil.rmtree(data, ignore_errors=True)
        cleanup_redis()
        for name in LOGS:
            if args.logs:
                print(f"--- {name}\n" + Path(name).read_text()[-3000:])
            os.unlink(name)


def cleanup_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{RUN_PREFIX}-*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


if __name__ == "__main__":
    main()
