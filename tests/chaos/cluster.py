"""The chaos set-up: two gateway replicas (subprocesses of ``gateway serve``) sharing a private Redis and
a private PostgreSQL, in front of three simulated workers (processes), all on free loopback ports.

Every process is started by this module and ended by it (``close``): SIGTERM, then SIGKILL after a
timeout; the private servers remove their folders. The replicas run the in-process ledger writers
(``GATEWAY_LEDGER_WRITERS=2``) and the default key cache TTL (3 s), as in production.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.db import engine as db
from gateway.routing.pool import worker_id_for
from tests.private_postgres import PrivatePostgres
from tests.private_redis import PrivateRedis
from workersim.run import SimProcess, free_port, start_sim_process
from workersim.sim_settings import SimConfig

ADMIN_KEY = "chaos-admin-" + secrets.token_hex(6)
MODEL = "grok-code-fast-1"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerCounters:
    """A simulated worker's own counters (``GET /sim/state``)."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    completed: int = 0  # finished with stop or length
    aborted: int = 0  # the client (the gateway) went away
    running: int = 0

    def minus(self, before: WorkerCounters) -> WorkerCounters:
        return WorkerCounters(self.prompt_tokens - before.prompt_tokens,
                              self.generation_tokens - before.generation_tokens,
                              self.completed - before.completed, self.aborted - before.aborted, self.running)


class SimWorker:
    """One simulated worker process on a fixed port (a restart keeps the URL, hence the gateway's id)."""

    def __init__(self, index: int, config: SimConfig) -> None:
        self.index = index
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.id = worker_id_for(self.url)  # the id the gateway gives it (the ledger's ``worker`` column)
        self.config = config
        self.process: SimProcess | None = None

    async def start(self) -> None:
        self.process = await asyncio.to_thread(start_sim_process, self.config, self.port)

    def kill(self) -> None:
        """SIGKILL: streams in flight are cut, the counters are lost."""
        if self.process is not None and self.process.process.is_alive():
            pid = self.process.process.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            self.process.process.join(5)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.process.is_alive()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    async def counters(self, http: aiohttp.ClientSession) -> WorkerCounters:
        async with http.get(self.url + "/sim/state", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            resp.raise_for_status()
            state: dict[str, Any] = await resp.json()
        success = state["request_success_total"]
        return WorkerCounters(int(state["prompt_tokens_total"]), int(state["generation_tokens_total"]),
                              int(success["stop"]) + int(success["length"]), int(success["abort"]),
                              int(state["running"]) + int(state["waiting"]))


class GatewayReplica:
    """``gateway serve`` in a subprocess of its own (a new session: killing it kills nothing else)."""

    def __init__(self, index: int, env: dict[str, str], log_dir: Path) -> None:
        self.index = index
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_dir / f"replica-{index}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, "GATEWAY_PORT": str(self.port)}
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts} at {time.time():.3f}\n".encode())
            log.flush()
            return subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    async def start(self, within_s: float = 60.0) -> None:
        """Start and wait until ``/ready`` answers 200 (workers, Redis and PostgreSQL reachable)."""
        self.popen = self._spawn()
        deadline = time.monotonic() + within_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"replica {self.index} exited with {self.popen.returncode}; see "
                                       f"{self.log_path}:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with http.get(self.url + "/ready", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        self.kill()
        raise RuntimeError(f"replica {self.index} was not ready within {within_s}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: nothing is settled, flushed or acknowledged."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    async def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM (uvicorn's graceful shutdown: the lifespan flushes the ledger), SIGKILL after ``grace_s``."""
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return
        popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(popen.wait, grace_s)
        self.kill()


@dataclass
class ClusterConfig:
    workers: int = 3
    replicas: int = 2
    decode_tokens_per_s: float = 200.0
    key_cache_ttl_s: float = 3.0
    ledger_flush_interval_s: float = 0.2
    extra_env: dict[str, str] = field(default_factory=dict)


class ChaosCluster:
    """PostgreSQL, Redis, the workers and (per scenario, ``start_replicas``) the gateway replicas."""

    def __init__(self, config: ClusterConfig | None = None, run_dir: Path | None = None) -> None:
        self.config = config or ClusterConfig()
        self.run_dir = run_dir or Path(tempfile.mkdtemp(prefix="gw-chaos-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.pg = PrivatePostgres()
        self.redis = PrivateRedis()
        self.workers = [SimWorker(i, SimConfig(worker_id=f"chaos-{i}", seed=i, recent_requests_max=0,
                                               decode_tokens_per_s=self.config.decode_tokens_per_s))
                        for i in range(self.config.workers)]
        self.replicas: list[GatewayReplica] = []
        self.prefix = ""
        self.dirty = True  # the replicas must be started afresh before the next scenario
        atexit.register(self._kill_all)  # also if the event loop never got to close()

    def _kill_all(self) -> None:
        for replica in self.replicas:
            replica.kill()
        for worker in self.workers:
            worker.stop()
        self.redis.kill()
        shutil.rmtree(self.redis.data_dir, ignore_errors=True)

    async def start(self) -> None:
        await asyncio.to_thread(self.pg.start)
        await self.redis.start()
        await db.upgrade(self._sqlalchemy_url())  # once, before two replicas race to migrate
        await asyncio.gather(*(w.start() for w in self.workers))

    def _sqlalchemy_url(self) -> str:
        return self.pg.url.replace("postgresql://", "postgresql+asyncpg://", 1)

    def replica_env(self) -> dict[str, str]:
        c = self.config
        return {
            "GATEWAY_WORKERS": ",".join(w.url for w in self.workers),
            "GATEWAY_DATABASE_URL": self.pg.url,
            "GATEWAY_REDIS_URL": self.redis.url,
            "GATEWAY_REDIS_PREFIX": self.prefix,
            "GATEWAY_ADMIN_KEY": ADMIN_KEY,
            "GATEWAY_DATA_DIR": str(self.run_dir / "data"),
            "GATEWAY_REPLICAS": str(c.replicas),
            "GATEWAY_HEALTH_INTERVAL_S": "0.5",
            "GATEWAY_WORKER_SYNC_INTERVAL_S": "2.0",
            "GATEWAY_KEY_CACHE_TTL_S": str(c.key_cache_ttl_s),
            "GATEWAY_LEDGER_WRITERS": "2",
            "GATEWAY_LEDGER_FLUSH_INTERVAL_S": str(c.ledger_flush_interval_s),
            "GATEWAY_BILLING_REFRESH_INTERVAL_S": "5.0",
            "GATEWAY_REQUEST_LOG": "false",
            "GATEWAY_AUTO_MIGRATE": "false",  # migrated once by start()
            **c.extra_env,
        }

    async def ready_replicas(self, name: str) -> None:
        """Replicas for the next scenario: the running ones if the last scenario left them sound, else
        fresh ones on a fresh key prefix (so that one fault's damage never shows in the next one)."""
        if self.dirty or not self.replicas or not all(r.alive for r in self.replicas):
            await self.start_replicas(name)

    async def start_replicas(self, name: str) -> None:
        await self.stop_replicas()
        self.dirty = True  # until a scenario on them passed
        self.prefix = f"chaos-{name}-{secrets.token_hex(3)}"
        env = self.replica_env()
        self.replicas = [GatewayReplica(i, env, self.run_dir) for i in range(self.config.replicas)]
        await asyncio.gather(*(r.start() for r in self.replicas))

    async def stop_replicas(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.replicas))

    async def ensure_services(self) -> None:
        """Start again whatever an earlier scenario left down (a killed worker, a stopped server)."""
        await asyncio.gather(*(w.start() for w in self.workers if not w.alive))
        if not self.redis.alive:
            await self.redis.start()
        if not await asyncio.to_thread(lambda: self.pg.running):
            await asyncio.to_thread(self.pg.start)

    async def worker_counters(self, http: aiohttp.ClientSession) -> dict[str, WorkerCounters]:
        live = [w for w in self.workers if w.alive]
        values = await asyncio.gather(*(w.counters(http) for w in live))
        return {w.id: c for w, c in zip(live, values, strict=True)}

    async def wait_workers_idle(self, http: aiohttp.ClientSession, within_s: float = 10.0) -> None:
        """Until no worker has a request running or waiting (aborted ones included), at most ``within_s``."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            counters = await self.worker_counters(http)
            if all(c.running == 0 for c in counters.values()):
                return
            await asyncio.sleep(0.05)

    async def admin(self, http: aiohttp.ClientSession, method: str, path: str, body: dict[str, Any]) -> Any:
        """An admin API call on the first replica that answers."""
        last = ""
        for replica in self.replicas:
            if not replica.alive:
                continue
            async with http.request(method, replica.url + path, json=body,
                                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                    timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status < 300:
                    return await resp.json()
                last = f"{resp.status} {await resp.text()}"
        raise RuntimeError(f"admin {method} {path} failed: {last}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # teardown: every process must go, whatever failed first
            await self.stop_replicas()
        self._kill_all()
        atexit.unregister(self._kill_all)
        await asyncio.to_thread(self.pg.close)


@contextlib.asynccontextmanager
async def chaos_cluster(config: ClusterConfig | None = None, run_dir: Path | None = None
                        ) -> AsyncIterator[ChaosCluster]:
    cluster = ChaosCluster(config, run_dir)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()
