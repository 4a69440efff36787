"""The workers' HTTP client alone: aiohttp's against the gateway's lean HTTP/1.1 client, side by side.

    python -m bench.upstream_client [--rounds 6] [--requests 3000] [--concurrency 16] [--sizes 1,128]

One process sends the same requests to the instant upstream (``bench/instant_upstream.py``, pinned to
``--upstream-cpu``) through each client in turn, alternating rounds so the machine's other load hits
both alike: ``aiohttp.ClientSession.post`` as ``openai_worker`` used it (and its reply read whole, or
iterated chunk by chunk for streams), and ``http1.Http1Pool.post``. It prints this process's CPU per
request (``time.process_time``: user + system) per client, body size and mode, medians over the rounds,
and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop

from bench.agent_bodies import bodies
from bench.common import ROOT, free_port, pinned, wait_http
from gateway.upstream.http1 import Http1Pool

HEADERS = {"Content-Type": "application/json", "x-request-id": "req_bench", "user-agent": "bench"}
Send = Callable[[bytes, bool], Awaitable[int]]


def aiohttp_sender(session: aiohttp.ClientSession, url: str) -> Send:
    timeout = aiohttp.ClientTimeout(total=600, connect=3, sock_read=600)

    async def send(body: bytes, stream: bool) -> int:
        resp = await session.post(url + "/v1/chat/completions", data=body, headers=HEADERS, timeout=timeout)
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
        resp.release()
        return size

    return send


def lean_sender(pool: Http1Pool, url: str) -> Send:
    async def send(body: bytes, stream: bool) -> int:
        resp = await pool.post(url, "/v1/chat/completions", HEADERS, body, read_timeout=600,
                               total_timeout=None if stream else 600)
        size = 0
        async for chunk in resp:
            size += len(chunk)
        resp.release()
        return size

    return send


async def one_round(send: Send, payloads: list[bytes], stream: bool, requests: int, concurrency: int) -> float:
    """CPU seconds per request for ``requests`` requests, ``concurrency`` at a time."""
    left = requests

    async def lane() -> None:
        nonlocal left
        i = 0
        while left > 0:
            left -= 1
            i += 1
            assert await send(payloads[i % len(payloads)], stream) > 0

    t0 = time.process_time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return (time.process_time() - t0) / requests


async def run(url: str, args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    async with aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"),
                                     connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0)) as session:
        pool = Http1Pool(None, 1000, 3.0)
        clients = {"aiohttp": aiohttp_sender(session, url), "lean": lean_sender(pool, url)}
        print(f"{'body':>6} {'mode':>6} {'aiohttp us/req':>15} {'lean us/req':>12} {'lean / aiohttp':>15}")
        for size in sizes:
            for stream in (False, True):
                payloads = bodies(size * 1024, stream)
                figures: dict[str, list[float]] = {name: [] for name in clients}
                for send in clients.values():  # warm-up: connections open, code paths hot
                    await one_round(send, payloads, stream, 200, args.concurrency)
                for _ in range(args.rounds):
                    for name, send in clients.items():
                        figures[name].append(await one_round(send, payloads, stream, args.requests,
                                                             args.concurrency))
                old, new = (statistics.median(figures[n]) * 1e6 for n in ("aiohttp", "lean"))
                print(f"{size:>4}KB {'stream' if stream else 'json':>6} {old:>15.1f} {new:>12.1f} {new / old:>15.2f}",
                      flush=True)
        pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--sizes", default="1,128")
    ap.add_argument("--upstream-cpu", default="1")
    args = ap.parse_args()
    port = free_port()
    upstream = subprocess.Popen(pinned([sys.executable, "-m", "bench.instant_upstream", "--port", str(port)],
                                       args.upstream_cpu), cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health")
        uvloop.run(run(url, args))
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
