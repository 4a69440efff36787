"""The faults, each injected once while the load runs; what each did is kept in a ``FaultRecord`` so
that failures it explains (a request on the worker it killed, a connection to the replica it killed)
are told apart from failures it does not explain."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.chaos.cluster import ChaosCluster
from tests.chaos.load import LoadDriver


@dataclass
class FaultTimes:
    """How long each fault lasts (bench/chaos.py makes them longer)."""

    redis_stall_s: float = 3.0
    pg_down_s: float = 5.0
    cut_s: float = 2.5
    replica_down_s: float = 1.0
    # Rounds of pg_terminate_backend, this far apart: a connection in the middle of a statement is hit too
    # (an idle one is replaced by the pool's pre-ping at its next checkout).
    terminations: int = 20
    termination_gap_s: float = 0.1
    mid_stream_wait_s: float = 3.0  # how long to wait for a worker with a request in flight


@dataclass
class FaultRecord:
    started: float = 0.0
    ended: float = 0.0
    killed_worker: str | None = None  # the gateway's id of the worker killed
    killed_at: float = 0.0
    killed_replica: int | None = None
    replica_back_at: float = 0.0
    notes: list[str] = field(default_factory=list)


Inject = Callable[[ChaosCluster, LoadDriver, FaultTimes, FaultRecord], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    inject: Inject
    # Rate-limit buckets that may be in play at once: the shared one, plus the replicas' local shares while
    # Redis is unreachable (fail-open), plus a second shared one once Redis came back empty.
    limit_buckets: int = 1
    # Redis lost or missed writes (settlings done locally meanwhile): shared counters may lag the ledger.
    touches_redis: bool = False
    # Ledger settling allowed beyond the profile's (entries a killed replica read but never acknowledged
    # are claimed by another consumer after 30 s idle, looked for every 15 s).
    extra_settle_s: float = 0.0


async def _nothing(cluster: ChaosCluster, driver: LoadDriver, times: FaultTimes, record: FaultRecord) -> None:
    await asyncio.sleep(1.0)


async def _kill_worker(cluster: ChaosCluster, driver: LoadDriver, times: FaultTimes, record: FaultRecord) -> None:
    """SIGKILL a worker while a client is reading a stream from it (waiting a moment for one)."""
    by_id = {w.id: w for w in cluster.workers}
    deadline = time.monotonic() + times.mid_stream_wait_s
    victim = cluster.workers[0]
    while time.monotonic() < deadline:
        serving = Counter(driver.streaming.values())
        if serving:
            victim = by_id[serving.most_common(1)[0][0]]
            break
        await asyncio.sleep(0.005)
    streams = sum(1 for w in driver.streaming.values() if w == victim.id)
    record.killed_worker, record.killed_at = victim.id, time.monotonic()
    victim.kill()
    record.notes.append(f"killed worker {victim.index} with {streams} streams in flight")
    await asyncio.sleep(1.0)


async def _restart_redis_empty(cluster: ChaosCluster, driver: LoadDriver, times: FaultTimes,
                               record: FaultRecord) -> None:
    cluster.redis.kill()
    await cluster.redis.start()  # same port, nothing kept: the usage stream and its group are gone


async def _stall_redis(cluster: ChaosCluster, driver: LoadDriver, times: FaultTimes, record: FaultRecord) -> None:
    os.kill(cluster.redis.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(times.redis_stall_s)
    finally:
        os.kill(cluster.redis.pid, signal.SIGCONT)


async def _postgres_down(cluster: ChaosCluster, driver: LoadDriver, times: FaultTimes, record: FaultRecord) -> None:
    await cluster.pg.down_for(times.pg_down_s)


async def _terminate_backends(cluster: ChaosCluster, driver: LoadDriver, times: FaultTimes,
                              record: FaultRecord) -> None:
    """pg_terminate_backend on every gateway connection (the ledger writers share the replica's pool)."""
    terminated = 0
    for round_ in range(times.terminations):
        if round_:
            await asyncio.sleep(times.termination_gap_s)
        terminated += await cluster.pg.terminate_backends()
    record.notes.append(f"{terminated} backends terminated in {times.terminations} rounds")


async def _cut_clients(cluster: ChaosCluster, driver: LoadDriver, times: FaultTimes, record: FaultRecord) -> None:
    driver.cut_share = driver.profile.cut_share
    try:
        await asyncio.sleep(times.cut_s)
    finally:
        driver.cut_share = 0.0


async def _kill_replica(cluster: ChaosCluster, driver: LoadDriver, times: FaultTimes, record: FaultRecord) -> None:
    replica = cluster.replicas[-1]
    record.killed_replica, record.killed_at = replica.index, time.monotonic()
    replica.kill()
    await asyncio.sleep(times.replica_down_s)
    await replica.start()
    record.replica_back_at = time.monotonic()


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("none", "no fault (the harness's own baseline)", _nothing),
    Fault("kill_worker", "SIGKILL a worker with requests in flight", _kill_worker),
    Fault("redis_restart_empty", "Redis killed and started again empty", _restart_redis_empty, limit_buckets=3,
          touches_redis=True),
    Fault("redis_stall", "Redis stopped (SIGSTOP) for a few seconds", _stall_redis, limit_buckets=2,
          touches_redis=True),
    Fault("pg_down", "PostgreSQL stopped, down for 5 s, started again", _postgres_down),
    Fault("pg_terminate", "pg_terminate_backend on the replicas' connections", _terminate_backends),
    Fault("client_cut", "clients abandon streams and whole answers mid-way", _cut_clients),
    Fault("kill_replica", "SIGKILL one gateway replica, then start it again", _kill_replica, extra_settle_s=50.0),
)}
