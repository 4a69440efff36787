"""One chaos scenario: fresh replicas and keys, the load, the fault in the middle of it, then the checks.

Used by tests/chaos/test_chaos.py (short, for CI) and bench/chaos.py (longer, repeated).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import aiohttp

from gateway.metering.budget import month_of
from tests.chaos.cluster import ChaosCluster, WorkerCounters
from tests.chaos.faults import Fault, FaultRecord, FaultTimes
from tests.chaos.load import LoadDriver, LoadProfile
from tests.chaos.verify import (
    Expectation,
    ScenarioResult,
    evaluate,
    in_flight_on_killed_replica,
    read_budget,
    settle,
    usage_drained,
)

FAULT_TIMEOUT_S = 120.0


async def _keys(cluster: ChaosCluster, http: aiohttp.ClientSession, fault: str,
                profile: LoadProfile) -> tuple[str, dict[str, str]]:
    org = await cluster.admin(http, "POST", "/admin/orgs", {"name": f"chaos-{fault}-{secrets.token_hex(3)}"})
    # A cap far above what the scenario spends: never refuses, but every request reserves and settles it.
    await cluster.admin(http, "PUT", f"/admin/orgs/{org['id']}/budget", {"monthly_limit_usd": "1000000.00"})
    main = await cluster.admin(http, "POST", "/admin/keys",
                               {"org_id": org["id"], "name": "main", "concurrency": profile.main_concurrency})
    limited = await cluster.admin(http, "POST", "/admin/keys",
                                  {"org_id": org["id"], "name": "limited", "rpm": profile.limited_rpm})
    return org["id"], {"main": main["key"], "limited": limited["key"]}


def _deltas(before: dict[str, WorkerCounters], after: dict[str, WorkerCounters],
            record: FaultRecord) -> dict[str, WorkerCounters]:
    """Counter changes of the workers that lived through the whole scenario."""
    return {wid: after[wid].minus(before[wid]) for wid in before
            if wid in after and wid != record.killed_worker}


async def run_scenario(cluster: ChaosCluster, fault: Fault, profile: LoadProfile, times: FaultTimes,
                       seed: int = 0) -> ScenarioResult:
    started = time.monotonic()
    await cluster.ensure_services()
    await cluster.ready_replicas(fault.name)
    cluster.dirty = True
    record = FaultRecord()
    async with aiohttp.ClientSession() as http:
        org_id, keys = await _keys(cluster, http, fault.name, profile)
        await cluster.wait_workers_idle(http)
        before = await cluster.worker_counters(http)
        months = {month_of(time.time())}
        driver = LoadDriver([r.url for r in cluster.replicas], keys, profile, seed)
        try:
            load = asyncio.create_task(driver.run())
            try:
                await asyncio.sleep(profile.before_s)
                record.started = time.monotonic()
                await asyncio.wait_for(fault.inject(cluster, driver, times, record), FAULT_TIMEOUT_S)
                record.ended = time.monotonic()
                await asyncio.sleep(profile.after_s)
            finally:
                driver.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(load, profile.request_timeout_s + 10)
            await cluster.wait_workers_idle(http)
            months.add(month_of(time.time()))
            after = await cluster.worker_counters(http)
            deltas = _deltas(before, after, record)
            lost = in_flight_on_killed_replica(driver.outcomes, record)
            want = Expectation({o.request_id for o in driver.outcomes if o.result == "ok" and o.request_id},
                               set(deltas), sum(d.completed + d.aborted for d in deltas.values()) - lost)
            rows, settle_s = await settle(cluster.pg.url, org_id, want, profile.settle_timeout_s + fault.extra_settle_s,
                                          lambda: usage_drained(cluster.redis.url, cluster.prefix))
            # Afterwards the main key's whole concurrency must be free again (less what a killed replica held).
            wanted = profile.main_concurrency - in_flight_on_killed_replica(driver.outcomes, record, "main")
            budget = await read_budget(cluster.redis.url, cluster.prefix, org_id, months)
            probe = await driver.probe(wanted)
        finally:
            await driver.close()
    result = evaluate(fault, profile, driver.outcomes, rows, record, deltas, probe, wanted, budget)
    result.settle_s = settle_s
    result.notes = record.notes + result.notes
    cluster.dirty = not result.ok
    result.seconds = time.monotonic() - started
    return result
