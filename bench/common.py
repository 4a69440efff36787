"""Shared benchmark plumbing: worker and gateway processes pinned to cores, and a load generator.

Everything runs on this machine's loopback. Figures are only comparable inside one run: the
machine is shared and noisy, so each benchmark measures its alternatives side by side.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import redis

ROOT = Path(__file__).resolve().parent.parent


def compile_bytecode(root: Path) -> None:
    """Compile a source tree's gateway and billing packages as ``pip install`` and the image do
    (``deploy/Dockerfile``: ``compileall``), so that a cold start measures the installed gateway, not the
    compiler: where ``PYTHONDONTWRITEBYTECODE`` is set, as on this project's machines, a checkout is
    otherwise compiled again at every start (0.15-0.2 s of CPU here). Explicit writes, into the
    ``__pycache__`` folders git ignores."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "gateway"), str(root / "billing")],
                   check=True, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def pinned(cmd: list[str], cpu: str | None) -> list[str]:
    if cpu is not None and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", cpu, *cmd]
    return cmd


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    url: str

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (robust to a noisy, shared machine)."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()


def start_sim(cpu: str | None, *extra: str) -> Proc:
    port = free_port()
    cmd = pinned([sys.executable, "-m", "gateway.cli", "sim", "--port", str(port), "--time-scale", "0", *extra], cpu)
    popen = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return Proc(popen, url)


def start_gateway(cpu: str | None, workers: list[str], env: dict[str, str], ready_timeout: float = 30.0) -> Proc:
    port = free_port()
    full_env = {**os.environ, "GATEWAY_WORKERS": ",".join(workers), "GATEWAY_PORT": str(port), **env}
    cmd = pinned([sys.executable, "-m", "gateway.cli", "serve"], cpu)
    full_env.setdefault("GATEWAY_REQUEST_LOG", "false")
    # Its log goes to a file: a pipe nobody reads fills up on a long run and blocks the gateway.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (open for the gateway's life)
    popen = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=log)
    # uvicorn runs in this process itself (no reloader, one worker): /proc/<pid> is the server.
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/ready", ready_timeout)
    except RuntimeError as exc:
        popen.kill()
        popen.wait(10)
        log.seek(0)
        raise RuntimeError("gateway failed: " + log.read().decode(errors="replace")[-2000:]) from exc
    return Proc(popen, url)


def make_key(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--org", "bench"], cwd=ROOT,
                         env={**os.environ, **env}, check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def temp_env(redis_url: str = "", database_url: str = "", private_redis: bool = False) -> dict[str, str]:
    """Settings of one benchmarked gateway: its own data folder and Redis key prefix, both removed when
    the benchmark exits (the machine's Redis is shared; a private one goes with its keys)."""
    data = tempfile.mkdtemp(prefix="gw-bench-")
    prefix = "gwbench-" + os.urandom(3).hex()
    env = {"GATEWAY_DATA_DIR": data, "GATEWAY_REDIS_URL": redis_url, "GATEWAY_DATABASE_URL": database_url,
           "GATEWAY_REDIS_PREFIX": prefix}
    atexit.register(_clean_up, data, "" if private_redis else redis_url, prefix)
    return env


def _clean_up(data: str, redis_url: str, prefix: str) -> None:
    shutil.rmtree(data, ignore_errors=True)
    if not redis_url:
        return
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.RedisError as exc:
        print(f"could not remove the benchmark's Redis keys {prefix}:*: {exc}", file=sys.stderr)
    finally:
        client.close()


@dataclass
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str


_WRK_LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{auth}
"""


def _wrk_ms(text: str, pct: str) -> float:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(url: str, body: bytes, key: str | None, seconds: int, connections: int, cpu: str | None) -> LoadResult:
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_LUA.format(body=repr(body.decode()).replace("\\'", "'"), auth=auth))
        script = f.name
    cmd = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url], cpu)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    return LoadResult(rps, _wrk_ms(out, "50"), _wrk_ms(out, "99"), errors, "wrk")


async def _python_load(url: str, body: bytes, key: str | None, seconds: int, connections: int) -> LoadResult:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - t0)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    n = len(latencies)
    return LoadResult(n / elapsed, latencies[n // 2] * 1000, latencies[min(n - 1, int(n * 0.99))] * 1000, errors,
                      "python")


def run_load(url: str, body: bytes, key: str | None, seconds: int, connections: int, cpu: str | None) -> LoadResult:
    if shutil.which("wrk"):
        return run_wrk(url, body, key, seconds, connections, cpu)
    return asyncio.run(_python_load(url, body, key, seconds, connections))
