"""What the gateway adds on the fallback path: the same request to a fake hosted provider, once with
litellm straight from this process and once through the gateway (whose fleet is down, so it falls back
through litellm to the same provider), side by side.

    python -m bench.provider_overhead [--requests 200] [--rounds 4]

One request at a time, the two paths alternating in blocks, so both see the same machine. Prints p50 and
p90 latency of each path and their difference (the gateway's overhead: the client's HTTP hop to the
gateway, auth, the state round trips and metering), the CPU time per request of litellm alone (this
process, direct path) and of the gateway process (fallback path), whose difference is the gateway's own
share (the figure least disturbed by a loaded machine), and the cost of importing litellm in a fresh
process. The fake provider runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import ROOT, free_port, make_key, start_gateway, temp_env, wait_http

MODEL = "grok-code-fast-1"
MESSAGES = [{"role": "system", "content": "You are a careful coding assistant. " * 20},
            {"role": "user", "content": "Write a function that reverses a linked list in Python."}]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def _import_seconds() -> float:
    code = ("import os, time; os.environ['LITELLM_LOCAL_MODEL_COST_MAP']='True'; t=time.perf_counter(); "
            "import litellm; print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _start_fake(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "providerfake", "--port", str(port), "--shape", "xai"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _run(requests: int, rounds: int, metering: bool) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    port = free_port()
    fake = _start_fake(port)
    base = f"http://127.0.0.1:{port}/v1"
    wait_http(base + "/models")
    config = Path(tempfile.mkdtemp(prefix="gw-bench-provider-")) / "gateway.yaml"
    config.write_text(f"models:\n  - name: {MODEL}\n    fallback:\n      - model: xai/{MODEL}\n"
                      f"        api_key: sk-fake\n        api_base: {base}\n")
    env = {**temp_env(), "GATEWAY_CONFIG": str(config), "GATEWAY_METERING_ENABLED": "true" if metering else "false"}
    key = make_key(env)
    gw = start_gateway(None, [], env, ready_timeout=180)  # a loaded shared machine starts slowly
    import litellm

    litellm.suppress_debug_info = True
    direct: list[float] = []
    through: list[float] = []
    cpu_before = 0.0
    try:
        async with aiohttp.ClientSession() as http:
            body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16}
            headers = {"Authorization": f"Bearer {key}"}

            async def via_gateway() -> None:
                async with http.post(gw.url + "/v1/chat/completions", json=body, headers=headers) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status

            async def via_litellm() -> None:
                await litellm.acompletion(model=f"xai/{MODEL}", api_key="sk-fake", api_base=base, messages=MESSAGES,
                                          max_tokens=16, num_retries=0)

            for _ in range(20):  # warm both paths (the gateway imports litellm on its first fallback)
                await via_gateway()
                await via_litellm()
            gateway_cpu = own_cpu = 0.0
            for _ in range(rounds):
                for path, out in ((via_litellm, direct), (via_gateway, through)):
                    cpu_before, own_before = gw.cpu_seconds(), time.process_time()
                    for _ in range(requests // rounds):
                        started = time.perf_counter()
                        await path()
                        out.append((time.perf_counter() - started) * 1000)
                    if path is via_gateway:
                        gateway_cpu += gw.cpu_seconds() - cpu_before
                    else:
                        own_cpu += time.process_time() - own_before
            cpu_ms = gateway_cpu * 1000 / len(through)
            litellm_cpu_ms = own_cpu * 1000 / len(direct)
    finally:
        gw.stop()
        fake.terminate()
    print(f"{'path':<34} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8}")
    for name, values in (("litellm -> fake provider", direct), ("client -> gateway -> litellm -> fake", through)):
        print(f"{name:<34} {_pct(values, 0.5):8.2f} {_pct(values, 0.9):8.2f} {statistics.fmean(values):8.2f}")
    print(f"gateway overhead at p50: {_pct(through, 0.5) - _pct(direct, 0.5):.2f} ms "
          "(target <= 2 ms)")
    print(f"CPU per request: litellm alone (this process) {litellm_cpu_ms:.2f} ms; the gateway process on the "
          f"fallback path {cpu_ms:.2f} ms; the gateway's own share {cpu_ms - litellm_cpu_ms:.2f} ms")
    print(f"import litellm in a fresh process: {_import_seconds():.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no-metering", action="store_true",
                        help="the gateway without usage records (to see what the ledger writer costs at this rate)")
    args = parser.parse_args()
    asyncio.run(_run(args.requests, args.rounds, not args.no_metering))


if __name__ == "__main__":
    main()
