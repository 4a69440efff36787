"""`gateway billing sync` / `reconcile` in a subprocess, and the periodic sync's lock across replicas."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from billing.ledger import billing_queries
from billing.ledger.writer import LedgerWriter
from gateway.config import Settings
from gateway.db import engine as db
from gateway.metering.writer_process import run_writer
from tests.billing.conftest import make_record
from tests.billing.stripe_fixtures import stripe_server
from tests.conftest import MODEL, REDIS_URL, Backend, gateway_settings, serve_gateway
from workersim.run import RunningSim

ROOT = Path(__file__).resolve().parents[2]


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "billing", *args, cwd=ROOT, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_cli_sync_twice_then_reconcile(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    settings = Settings(database_url=url)
    await db.upgrade(settings.sqlalchemy_url)
    engine = db.make_engine(settings.sqlalchemy_url)
    try:
        org = "org_" + secrets.token_hex(4)
        async with db.sessionmaker(engine)() as s:
            await billing_queries.set_customer(s, org, "cus_cli")
        start = int((time.time() - 7200) * 1000)
        await LedgerWriter(engine).write([make_record(org, i, started_at_ms=start + i) for i in range(20)])
    finally:
        await engine.dispose()
    async with stripe_server() as stripe:
        env = {"GATEWAY_DATABASE_URL": url, "GATEWAY_STRIPE_API_KEY": "sk_test_cli",
               "GATEWAY_STRIPE_API_BASE": stripe.url, "GATEWAY_STRIPE_SETTLE_DELAY_S": "0"}
        code, out = await _cli(env, "sync")
        assert code == 0 and "events created 3, sent 3" in out, out
        code, out = await _cli(env, "sync")
        assert code == 0 and "events created 0, sent 0" in out, out
        code, out = await _cli(env, "reconcile")
        assert code == 0 and "3 rows, 0 mismatched" in out, out
        assert len(stripe.server.state.events) == 3
    code, out = await _cli({"GATEWAY_DATABASE_URL": url, "GATEWAY_STRIPE_API_KEY": ""}, "sync")
    assert code == 2 and "not configured" in out


async def test_periodic_sync_runs_on_one_replica_at_a_time(pg_database: str, redis_prefix: str) -> None:
    backend = Backend("shared", pg_database, REDIS_URL, redis_prefix)
    async with stripe_server() as stripe:
        settings = gateway_settings(backend, [], stripe_api_key="sk_test_lock", stripe_api_base=stripe.url,
                                    stripe_sync_interval_s=3600)
        first = await serve_gateway(settings)
        second = await serve_gateway(settings)
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            lock = first.app.runtime.keyspace.billing_sync_lock()
            await client.set(lock, "held-by-a-third", px=60_000)
            assert not await second.app.runtime.billing.sync_once()  # another replica holds it
            await client.delete(lock)
            assert await second.app.runtime.billing.sync_once()
            assert await client.get(lock) is None  # released after the run
        finally:
            await client.aclose()
            await first.stop()
            await second.stop()


async def test_embedded_sync_runs_without_a_lock(tmp_path: Path) -> None:
    backend = Backend("embedded", f"sqlite:///{tmp_path / 'gw.db'}", "", "gw")
    async with stripe_server() as stripe:
        served = await serve_gateway(gateway_settings(backend, [], stripe_api_key="sk_test_x",
                                                      stripe_api_base=stripe.url, stripe_sync_interval_s=3600))
        try:
            assert await served.app.runtime.billing.sync_once()
        finally:
            await served.stop()


async def test_a_standalone_writer_fills_the_ledger_for_replicas_that_write_none(
        pg_database: str, redis_prefix: str, sims: list[RunningSim]) -> None:
    backend = Backend("shared", pg_database, REDIS_URL, redis_prefix)
    settings = gateway_settings(backend, [s.url for s in sims], ledger_writers=0, ledger_flush_interval_s=0.05)
    served = await serve_gateway(settings)
    stop = asyncio.Event()
    try:
        rt = served.app.runtime
        org = await rt.keys.create_org("writer-" + secrets.token_hex(3))
        key = (await rt.keys.create_key(org.id, "k")).key
        async with aiohttp.ClientSession(headers={"x-api-key": key}) as http:
            for _ in range(3):
                async with http.post(served.url + "/v1/chat/completions", json={
                        "model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}) as r:
                    assert r.status == 200
        await asyncio.sleep(0.2)
        assert (await rt.billing.service.org_totals(org.id, *_today()))[0] == 0  # nobody wrote them yet
        task = asyncio.create_task(run_writer(settings, 1, stop))
        for _ in range(200):
            if (await rt.billing.service.org_totals(org.id, *_today()))[0] == 3:
                break
            await asyncio.sleep(0.05)
        assert (await rt.billing.service.org_totals(org.id, *_today()))[0] == 3
        stop.set()
        await task
    finally:
        stop.set()
        await served.stop()


async def test_the_standalone_writer_raises_the_collectors_young_threshold_while_it_runs(
        pg_database: str, redis_prefix: str) -> None:
    """Its batches are request-sized objects as a server's are (Settings.gc_threshold): set once its clients
    are built, put back when it stops."""
    settings = gateway_settings(Backend("shared", pg_database, REDIS_URL, redis_prefix), [], gc_threshold=7_777)
    before = gc.get_threshold()
    stop = asyncio.Event()
    task = asyncio.create_task(run_writer(settings, 1, stop))
    try:
        for _ in range(400):
            if gc.get_threshold()[0] == 7_777 or task.done():
                break
            await asyncio.sleep(0.02)
        assert gc.get_threshold() == (7_777, *before[1:])
    finally:
        stop.set()
        await task
    assert gc.get_threshold() == before


def _today() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(days=1), now + timedelta(days=1)


def _niceness(pid: int) -> dict[int, int]:
    """Each thread's nice value (field 19 of /proc/PID/task/TID/stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            out[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[16])
    return out


async def _writer_niceness(tmp_path: Path, redis_prefix: str, nice: str | None) -> dict[int, int]:
    env = {"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'nice.db'}", "GATEWAY_REDIS_URL": REDIS_URL,
           "GATEWAY_REDIS_PREFIX": redis_prefix}
    if nice is not None:
        env["GATEWAY_LEDGER_WRITER_NICE"] = nice
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "billing", "writer", "--writers", "2", cwd=ROOT,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        seen = b""
        while b"ledger writer: 2 consumers" not in seen:  # up and consuming: its threads have started
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, seen.decode()
            seen += line
        await asyncio.sleep(0.5)  # a first batch's SQL (the SQLite thread) and the stream reads are running
        return _niceness(proc.pid)
    finally:
        proc.terminate()
        await proc.wait()


async def test_the_standalone_writer_lowers_its_cpu_priority_in_every_thread(tmp_path: Path,
                                                                              redis_prefix: str) -> None:
    base = os.nice(0)
    default = await _writer_niceness(tmp_path, redis_prefix, None)
    assert len(default) >= 2 and set(default.values()) == {base + 10}, default  # its SQLite thread too
    assert set((await _writer_niceness(tmp_path, redis_prefix, "3")).values()) == {base + 3}
    assert set((await _writer_niceness(tmp_path, redis_prefix, "0")).values()) == {base}
