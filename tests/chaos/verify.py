"""The checks after a fault, from what the clients saw, the workers' own counters and the ledger.

1. Every request a client saw succeed has exactly one ledger row (by its ``x-request-id``), carrying its
   tag, with the tokens the client saw in the usage object.
2. No tag has two rows (a request billed twice under two ids) and no row has a tag nobody sent.
3. Each worker that lived through the scenario: its ledger rows are as many as the requests it
   processed (completed + aborted; aborted ones were still prefilled and are billed), less those in
   flight on a replica that was killed; and where it aborted nothing, the ledger's prompt and output
   tokens add up to its own counters exactly.
4. No 5xx (nor an error event in a stream) that the fault does not explain: a request served by the
   killed worker, or in flight on it. No connection failure but to the killed replica while it was
   down, no request left hanging, no other 4xx than the rate-limited key's 429s.
5. Limits held: the rate-limited key got at most its requests per minute through (a leaky bucket: the
   burst, plus what drains during the scenario, per bucket the fault may legitimately bring into
   play), and afterwards the main key's whole concurrency is free again (no leaked slot); the
   organisation's budget (a cap it never reaches) counts in Redis exactly what the ledger bills (never
   more; less only after Redis lost or missed settlings) and holds no open reservation.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from billing.ledger.consumer import GROUP
from gateway.state.keyspace import KeySpace
from tests.chaos.cluster import WorkerCounters
from tests.chaos.faults import Fault, FaultRecord
from tests.chaos.load import LoadProfile, Outcome


@dataclass(frozen=True)
class LedgerRow:
    request_id: str
    end_user: str | None
    worker: str
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    status: str
    billed_ticks: int = 0


async def read_ledger(pg_url: str, org_id: str) -> list[LedgerRow]:
    conn = await asyncio.wait_for(asyncpg.connect(pg_url), 10)
    try:
        rows = await conn.fetch("SELECT request_id, end_user, worker, prompt_tokens, cached_tokens, output_tokens, "
                                "status, billed_ticks FROM usage_ledger WHERE org_id = $1", org_id, timeout=10)
    finally:
        await conn.close()
    return [LedgerRow(r["request_id"], r["end_user"], r["worker"], int(r["prompt_tokens"]), int(r["cached_tokens"]),
                      int(r["output_tokens"]), r["status"], int(r["billed_ticks"])) for r in rows]


@dataclass(frozen=True)
class BudgetState:
    """The organisation's budget as the replicas hold it in Redis (``spent``, ``reserved``, in ticks)."""

    spent: int
    reserved: int


async def read_budget(redis_url: str, prefix: str, org_id: str, months: set[str]) -> BudgetState:
    client = Redis.from_url(redis_url, socket_timeout=5)
    try:
        spent = reserved = 0
        for month in sorted(months):
            values = await client.hmget(KeySpace(prefix).budget(org_id, month)[0], ["spent", "reserved"])
            spent += int(values[0] or 0)
            reserved += int(values[1] or 0)
    finally:
        await client.aclose()
    return BudgetState(spent, reserved)


@dataclass
class Expectation:
    """What the ledger must hold once settled."""

    success_ids: set[str]
    worker_ids: set[str]  # workers whose rows are counted against their counters
    worker_rows_min: int


async def usage_drained(redis_url: str, prefix: str) -> bool:
    """Every usage record on the stream was read by the ledger group and acknowledged, that is written to
    SQL: none waits unread, none is pending (a killed replica's writers leave what they had read pending
    until another writer claims it, 30 s later). A Redis that cannot be asked is not drained."""
    client = Redis.from_url(redis_url, socket_timeout=5)
    stream = KeySpace(prefix).usage_stream()
    try:
        if not await client.exists(stream):
            return True
        last = (await client.xinfo_stream(stream))["last-generated-id"]
        for group in await client.xinfo_groups(stream):
            if group["name"] in (GROUP, GROUP.encode()):
                return not group["pending"] and group["last-delivered-id"] == last
        return False
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def settle(pg_url: str, org_id: str, want: Expectation, within_s: float,
                 drained: Callable[[], Awaitable[bool]] | None = None) -> tuple[list[LedgerRow], float]:
    """Poll the ledger until it holds every expected row, stopped changing (0.5 s) and, given ``drained``,
    the usage stream has nothing left for it (what a request cut by a fault settled may still be on its
    way, and the budget counted it), at most ``within_s``."""
    started = time.monotonic()
    deadline = started + within_s
    rows = await read_ledger(pg_url, org_id)
    stable_since, count = time.monotonic(), len(rows)
    while time.monotonic() < deadline:
        have = {r.request_id for r in rows}
        on_workers = sum(1 for r in rows if r.worker in want.worker_ids)
        complete = want.success_ids <= have and on_workers >= want.worker_rows_min
        if complete and time.monotonic() - stable_since >= 0.5 and (drained is None or await drained()):
            break
        await asyncio.sleep(0.25)
        rows = await read_ledger(pg_url, org_id)
        if len(rows) != count:
            stable_since, count = time.monotonic(), len(rows)
    return rows, time.monotonic() - started


@dataclass
class ScenarioResult:
    fault: str
    requests: int = 0
    successes: int = 0
    ledger_rows: int = 0  # rows of the scenario's organisation
    matched: int = 0  # successes with exactly one row of the right tag
    missing: int = 0  # successes without a row
    duplicates: int = 0
    token_mismatches: int = 0
    worker_rows: str = ""  # rows / requests the live workers processed
    worker_tokens: str = ""  # ok / mismatch / n/a
    five_xx: int = 0
    explained_5xx: int = 0
    other_errors: int = 0
    limits_ok: bool = True
    limits: str = ""
    settle_s: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _explained(o: Outcome, record: FaultRecord) -> bool:
    """A failure the fault accounts for."""
    if record.killed_worker is not None:
        if o.worker == record.killed_worker:
            return True
        # A whole answer whose worker died before the body: 502 without the worker's header.
        if o.status == 502 and o.started <= record.killed_at <= o.ended <= record.killed_at + 3.0:
            return True
    if record.killed_replica is not None and o.replica == record.killed_replica and o.result == "transport":
        return o.ended >= record.killed_at and o.started <= record.replica_back_at + 0.5
    return False


def evaluate(fault: Fault, profile: LoadProfile, outcomes: list[Outcome], rows: list[LedgerRow], record: FaultRecord,
             deltas: dict[str, WorkerCounters], probe: list[Outcome], probe_wanted: int,
             budget: BudgetState | None = None) -> ScenarioResult:
    res = ScenarioResult(fault.name)
    load = [o for o in outcomes if o.key != "probe"]
    res.requests = len(load)
    successes = [o for o in load if o.result == "ok"]
    res.successes = len(successes)
    res.ledger_rows = len(rows)
    by_id = {r.request_id: r for r in rows}
    tags = Counter(r.end_user for r in rows)
    sent = {o.tag for o in outcomes}

    missing: list[str] = []
    for o in successes:
        row = by_id.get(o.request_id or "")
        if row is None or row.end_user != o.tag:
            missing.append(o.request_id or o.tag)
            continue
        res.matched += 1
        if o.usage != (row.prompt_tokens, row.cached_tokens, row.output_tokens):
            res.token_mismatches += 1
            if res.token_mismatches <= 3:
                res.problems.append(f"{o.request_id}: client saw usage {o.usage}, ledger has "
                                    f"{(row.prompt_tokens, row.cached_tokens, row.output_tokens)}")
    res.missing = len(missing)
    if missing:
        res.problems.append(f"{len(missing)} of {len(successes)} client successes have no ledger row "
                            f"(e.g. {', '.join(missing[:3])})")
    twice = [t for t, n in tags.items() if n > 1]
    strangers = [r.request_id for r in rows if r.end_user not in sent]
    res.duplicates = len(twice) + len(strangers)
    if twice:
        res.problems.append(f"{len(twice)} requests have more than one ledger row (e.g. {twice[:3]})")
    if strangers:
        res.problems.append(f"{len(strangers)} ledger rows match no request sent (e.g. {strangers[:3]})")

    cut = [o for o in load if o.result == "cut"]
    if cut:
        billed = {r.end_user for r in rows}
        streams = [o for o in cut if o.stream]
        whole = [o for o in cut if not o.stream]
        res.notes.append(f"cut by their clients: {len(streams)} streams ({sum(o.tag in billed for o in streams)} "
                         f"billed), {len(whole)} whole answers ({sum(o.tag in billed for o in whole)} billed)")
    _check_workers(res, rows, deltas, outcomes, record)
    _check_errors(res, load, record)
    _check_limits(res, fault, profile, load, probe, probe_wanted)
    if budget is not None:
        _check_budget(res, fault, rows, budget, record)
    return res


def in_flight_on_killed_replica(outcomes: list[Outcome], record: FaultRecord, key: str | None = None) -> int:
    """Requests the killed replica held when it died (their usage died with it; so did their leases)."""
    if record.killed_replica is None:
        return 0
    return sum(1 for o in outcomes if o.replica == record.killed_replica and o.result == "transport"
               and o.started <= record.killed_at <= o.ended and (key is None or o.key == key))


def _check_workers(res: ScenarioResult, rows: list[LedgerRow], deltas: dict[str, WorkerCounters],
                   outcomes: list[Outcome], record: FaultRecord) -> None:
    processed = sum(d.completed + d.aborted for d in deltas.values())
    on_workers = [r for r in rows if r.worker in deltas]
    lost = in_flight_on_killed_replica(outcomes, record)
    res.worker_rows = f"{len(on_workers)}/{processed}" + (f" (-{lost})" if lost else "")
    if not processed - lost <= len(on_workers) <= processed:
        aborted = sum(d.aborted for d in deltas.values())
        res.problems.append(f"the live workers processed {processed} requests ({aborted} aborted by the gateway), "
                            f"the ledger has {len(on_workers)} rows for them"
                            + (f" ({lost} died with the killed replica)" if lost else ""))
    compared, bad = 0, []
    for wid, d in sorted(deltas.items()):
        if d.aborted:
            continue  # an aborted request's tokens are counted by the gateway, not reported: no exact sum
        compared += 1
        mine = [r for r in rows if r.worker == wid]
        prompt, output = sum(r.prompt_tokens for r in mine), sum(r.output_tokens for r in mine)
        # Requests that died with a killed replica may have completed on the worker: then at most.
        right = (prompt <= d.prompt_tokens and output <= d.generation_tokens) if lost else \
            (prompt, output) == (d.prompt_tokens, d.generation_tokens)
        if not right:
            bad.append(f"worker {wid}: ledger prompt/output {prompt}/{output}, worker counted "
                       f"{d.prompt_tokens}/{d.generation_tokens}")
    res.worker_tokens = "n/a" if not compared else ("MISMATCH" if bad else "<=" if lost else "ok")
    res.problems.extend(bad)


def _check_errors(res: ScenarioResult, load: list[Outcome], record: FaultRecord) -> None:
    unexplained: list[Outcome] = []
    other: list[Outcome] = []
    for o in load:
        if o.result in ("ok", "cut"):
            continue
        explained = _explained(o, record)
        if o.five_xx:
            if explained:
                res.explained_5xx += 1
            else:
                unexplained.append(o)
        elif o.status == 429 and o.key == "limited":
            continue
        elif not explained:
            other.append(o)
    res.five_xx = len(unexplained)
    res.other_errors = len(other)
    if unexplained:
        kinds = Counter(f"{o.status or o.result}: {o.error[:90]}" for o in unexplained)
        res.problems.append(f"{len(unexplained)} 5xx while the worker was healthy: "
                            + "; ".join(f"{n}x {k}" for k, n in kinds.most_common(3)))
    if other:
        kinds = Counter(f"{o.key} {o.status or o.result}: {o.error[:200]}" for o in other)
        res.problems.append(f"{len(other)} other failures: " + "; ".join(f"{n}x {k}" for k, n in kinds.most_common(3)))


def rpm_bound(rpm: int, seconds: float, buckets: int) -> int:
    """The most a leaky bucket of ``rpm`` lets through in ``seconds``, times the buckets in play."""
    return buckets * (rpm + math.ceil(rpm * seconds / 60.0)) + buckets


def _check_limits(res: ScenarioResult, fault: Fault, profile: LoadProfile, load: list[Outcome],
                  probe: list[Outcome], probe_wanted: int) -> None:
    limited = [o for o in load if o.key == "limited"]
    admitted = sum(1 for o in limited if o.admitted)
    span = (max(o.ended for o in limited) - min(o.started for o in limited)) if limited else 0.0
    bound = rpm_bound(profile.limited_rpm, span, fault.limit_buckets)
    refused = sum(1 for o in limited if o.status == 429)
    probe_refused = sum(1 for o in probe if o.status == 429)
    probe_failed = sum(1 for o in probe if o.result != "ok")
    res.limits = f"rpm {admitted}/{bound} ({refused} 429), probe {probe_wanted - probe_failed}/{probe_wanted}"
    if admitted > bound:
        res.limits_ok = False
        res.problems.append(f"the rate-limited key ({profile.limited_rpm} rpm) got {admitted} requests through in "
                            f"{span:.1f}s; at most {bound} can be right")
    if refused == 0 and limited:
        res.limits_ok = False
        res.problems.append(f"the rate-limited key was never refused in {len(limited)} requests")
    if probe_failed:
        res.limits_ok = False
        kinds = Counter(f"{o.status or o.result}: {o.error.split(' - ', 1)[-1][:160]}" for o in probe
                        if o.result != "ok")
        res.problems.append(f"after the fault, {probe_failed} of {probe_wanted} concurrent requests of the main key "
                            f"failed ({probe_refused} refused with 429: leaked concurrency slots?): "
                            + "; ".join(f"{n}x {k}" for k, n in kinds.most_common(2)))


def _check_budget(res: ScenarioResult, fault: Fault, rows: list[LedgerRow], budget: BudgetState,
                  record: FaultRecord) -> None:
    """The budget's spend in Redis against the ledger: never more (a settling counted twice), and exactly
    the same unless Redis lost or missed some settlings (an outage: the spend catches up from SQL later).
    No reservation stays open once the requests ended (but those a killed replica held)."""
    billed = sum(r.billed_ticks for r in rows)
    res.limits += f", budget {budget.spent}/{billed}"
    if budget.spent > billed:
        res.limits_ok = False
        res.problems.append(f"the budget counts {budget.spent} ticks spent, the ledger bills {billed}: "
                            f"{budget.spent - billed} counted that the ledger does not hold")
    elif budget.spent < billed and not fault.touches_redis:
        res.limits_ok = False
        res.problems.append(f"the budget counts {budget.spent} ticks spent, the ledger bills {billed}")
    if budget.reserved and record.killed_replica is None:
        res.limits_ok = False
        res.problems.append(f"{budget.reserved} ticks of budget reservations still open after every request ended")


def table(results: list[ScenarioResult]) -> str:
    """The per-fault table (plain text, fixed width)."""
    head = ("fault", "reqs", "succ", "rows", "missing", "dup", "tok!=", "worker rows", "w.tokens", "5xx",
            "other", "limits ok", "limits", "settle", "time", "verdict")
    lines = [[r.fault, str(r.requests), str(r.successes), str(r.ledger_rows), str(r.missing), str(r.duplicates),
              str(r.token_mismatches), r.worker_rows, r.worker_tokens,
              f"{r.five_xx}" + (f" (+{r.explained_5xx})" if r.explained_5xx else ""), str(r.other_errors),
              "yes" if r.limits_ok else "NO", r.limits, f"{r.settle_s:.1f}s", f"{r.seconds:.0f}s",
              "ok" if r.ok else "FAIL"]
             for r in results]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    for r in results:
        if r.notes:
            out.append(f"{r.fault}: (fault) {'; '.join(r.notes)}")
        for p in r.problems:
            out.append(f"{r.fault}: {p}")
    return "\n".join(out)
