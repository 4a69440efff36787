"""The chaos checks themselves, on made-up figures: each kind of damage is reported, and what a fault
explains is not (a suite that cannot fail proves nothing)."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from billing.ledger.consumer import GROUP
from gateway.state.keyspace import KeySpace
from tests.chaos.cluster import WorkerCounters
from tests.chaos.faults import FAULTS, FaultRecord
from tests.chaos.load import LoadProfile, Outcome
from tests.chaos.verify import BudgetState, LedgerRow, evaluate, rpm_bound, table, usage_drained
from tests.conftest import REDIS_URL

PROFILE = LoadProfile(limited_rpm=6)
W1, W2 = "w-one", "w-two"


def _ok(n: int, worker: str = W1, key: str = "main", usage: tuple[int, int, int] = (10, 0, 5)) -> Outcome:
    o = Outcome(f"tag-{key}-{n}", key, 0, n % 2 == 0, started=float(n), ended=float(n) + 0.5, result="ok",
                status=200, request_id=f"req_{key}_{n}", worker=worker, usage=usage, admitted=key == "limited")
    return o


def _row(o: Outcome, usage: tuple[int, int, int] | None = None) -> LedgerRow:
    prompt, cached, output = usage or o.usage or (0, 0, 0)
    assert o.request_id and o.worker
    return LedgerRow(o.request_id, o.tag, o.worker, prompt, cached, output, "ok", billed_ticks=100)


def _refused(n: int) -> Outcome:
    return Outcome(f"tag-limited-r{n}", "limited", 0, False, started=float(n), ended=float(n) + 0.01,
                   result="http_error", status=429, error="Rate limit reached")


def _probe(n: int) -> list[Outcome]:
    return [Outcome(f"tag-probe-{i}", "probe", 0, True, 30.0, 30.5, result="ok", status=200) for i in range(n)]


def _scenario() -> tuple[list[Outcome], list[LedgerRow], dict[str, WorkerCounters]]:
    outcomes = [_ok(i, W1 if i % 2 else W2) for i in range(10)] + [_ok(20, W1, "limited", (8, 0, 2)), _refused(21)]
    rows = [_row(o) for o in outcomes if o.result == "ok"]
    deltas = {W1: WorkerCounters(5 * 10 + 8, 5 * 5 + 2, completed=6), W2: WorkerCounters(50, 25, completed=5)}
    return outcomes, rows, deltas


def _evaluate(outcomes: list[Outcome], rows: list[LedgerRow], deltas: dict[str, WorkerCounters],
              record: FaultRecord | None = None, fault: str = "none", probe: int = 10) -> list[str]:
    result = evaluate(FAULTS[fault], PROFILE, outcomes, rows, record or FaultRecord(), deltas, _probe(probe), probe)
    assert table([result])  # renders
    return result.problems


def test_a_sound_scenario_passes() -> None:
    assert _evaluate(*_scenario()) == []


def test_a_success_without_its_ledger_row_is_reported() -> None:
    outcomes, rows, deltas = _scenario()
    problems = _evaluate(outcomes, rows[1:], deltas)
    assert any("1 of 11 client successes have no ledger row" in p for p in problems)
    assert any("the ledger has 10 rows" in p for p in problems)


def test_other_tokens_in_the_ledger_than_the_client_saw_are_reported() -> None:
    outcomes, rows, deltas = _scenario()
    rows[0] = _row(outcomes[0], (10, 0, 6))
    problems = _evaluate(outcomes, rows, deltas)
    assert any("client saw usage (10, 0, 5), ledger has (10, 0, 6)" in p for p in problems)
    assert any("worker w-two: ledger prompt/output 50/26, worker counted 50/25" in p for p in problems)


def test_a_request_billed_twice_is_reported() -> None:
    outcomes, rows, deltas = _scenario()
    twin = LedgerRow("req_other", rows[0].end_user, rows[0].worker, 10, 0, 5, "ok")
    problems = _evaluate(outcomes, [*rows, twin], deltas)
    assert any("more than one ledger row" in p for p in problems)


def test_an_aborted_request_must_be_billed_too() -> None:
    outcomes, rows, deltas = _scenario()
    deltas[W1].aborted = 1  # the gateway cut a request the worker had started: the ledger lacks its row
    problems = _evaluate(outcomes, rows, deltas)
    assert problems == ["the live workers processed 12 requests (1 aborted by the gateway), the ledger has 11 rows "
                        "for them"]


def test_requests_that_died_with_a_killed_replica_are_allowed_for() -> None:
    outcomes, rows, deltas = _scenario()
    record = FaultRecord(killed_replica=1, killed_at=100.0, replica_back_at=101.0)
    dead = Outcome("tag-main-dead", "main", 1, True, 99.5, 100.01, result="transport", error="ReadError")
    deltas[W1] = WorkerCounters(deltas[W1].prompt_tokens + 10, deltas[W1].generation_tokens + 5, completed=7)
    assert _evaluate([*outcomes, dead], rows, deltas, record, "kill_replica", probe=9) == []
    # without the killed replica to explain it, the same figures are damage
    problems = _evaluate([*outcomes, dead], rows, deltas)
    assert any("1 other failures" in p for p in problems)
    assert any("the ledger has 11 rows" in p for p in problems)


def test_5xx_count_unless_the_killed_worker_served_them() -> None:
    outcomes, rows, deltas = _scenario()
    cut = Outcome("tag-main-cut", "main", 0, True, 5.0, 5.2, result="stream_error", status=200, worker=W2,
                  error="the stream was interrupted")
    assert any("1 5xx while the worker was healthy" in p for p in _evaluate([*outcomes, cut], rows, deltas))
    record = FaultRecord(killed_worker=W2, killed_at=5.1)
    assert _evaluate([*outcomes, cut], rows, {W1: deltas[W1]}, record, "kill_worker") == []
    server_error = Outcome("tag-main-500", "main", 0, False, 6.0, 6.1, result="http_error", status=500, error="boom")
    assert any("1 5xx" in p for p in _evaluate([*outcomes, server_error], rows, {W1: deltas[W1]}, record,
                                                 "kill_worker"))


def test_limits_must_hold_and_bite() -> None:
    outcomes, rows, deltas = _scenario()
    too_many = [_ok(100 + i, W1, "limited", (8, 0, 2)) for i in range(rpm_bound(6, 1.0, 1))]
    for i, o in enumerate(too_many):  # within a second of the first limited request
        o.started, o.ended = 20.0 + i * 0.05, 20.0 + i * 0.05 + 0.02
    extra_rows = [_row(o) for o in too_many]
    deltas[W1] = WorkerCounters(deltas[W1].prompt_tokens + 8 * len(too_many),
                                deltas[W1].generation_tokens + 2 * len(too_many), completed=6 + len(too_many))
    problems = _evaluate([*outcomes, *too_many], [*rows, *extra_rows], deltas)
    assert any("the rate-limited key (6 rpm) got" in p for p in problems)
    never_refused = [o for o in outcomes if o.status != 429]
    assert any("never refused" in p for p in _evaluate(never_refused, rows, deltas))
    leaked = _probe(10)
    leaked[3].result, leaked[3].status = "http_error", 429
    result = evaluate(FAULTS["none"], PROFILE, outcomes, rows, FaultRecord(), deltas, leaked, 10)
    assert not result.limits_ok and "leaked concurrency slots" in result.problems[-1]


def test_the_rpm_bound_is_a_leaky_bucket_per_bucket_in_play() -> None:
    assert rpm_bound(6, 0.0, 1) == 7
    assert rpm_bound(6, 10.0, 1) == 6 + 1 + 1
    assert rpm_bound(6, 60.0, 3) == 3 * (6 + 6) + 3


def test_the_budget_spend_in_redis_must_match_the_ledger() -> None:
    outcomes, rows, deltas = _scenario()  # 11 rows of 100 ticks

    def budget_problems(state: BudgetState, fault: str = "none") -> list[str]:
        result = evaluate(FAULTS[fault], PROFILE, outcomes, rows, FaultRecord(), deltas, _probe(10), 10, state)
        return result.problems

    assert budget_problems(BudgetState(1100, 0)) == []
    assert budget_problems(BudgetState(1200, 0)) == [
        "the budget counts 1200 ticks spent, the ledger bills 1100: 100 counted that the ledger does not hold"]
    assert budget_problems(BudgetState(1000, 0)) == ["the budget counts 1000 ticks spent, the ledger bills 1100"]
    assert budget_problems(BudgetState(1000, 0), "redis_stall") == []  # settled locally meanwhile: it lags
    assert budget_problems(BudgetState(1200, 0), "redis_stall") != []  # but never counts twice
    assert budget_problems(BudgetState(1100, 7)) == ["7 ticks of budget reservations still open after every "
                                                     "request ended"]


async def test_the_usage_stream_is_drained_only_once_every_record_is_acknowledged() -> None:
    """The ledger is compared with the budget only after the ledger group read and acknowledged every
    record: a killed replica's writers leave what they had read pending for 30 s, and the budget counted
    it already."""
    prefix = "gwtest-drained-" + secrets.token_hex(3)
    stream = KeySpace(prefix).usage_stream()
    client = Redis.from_url(REDIS_URL)
    try:
        assert await usage_drained(REDIS_URL, prefix)  # nothing was ever appended
        entry = await client.xadd(stream, {"r": "1"})
        assert not await usage_drained(REDIS_URL, prefix)  # no ledger group yet
        await client.xgroup_create(stream, GROUP, id="0")
        assert not await usage_drained(REDIS_URL, prefix)  # unread
        await client.xreadgroup(GROUP, "dead-writer", {stream: ">"}, count=10)
        assert not await usage_drained(REDIS_URL, prefix)  # read, pending: not in SQL yet
        await client.xack(stream, GROUP, entry)
        assert await usage_drained(REDIS_URL, prefix)
    finally:
        await client.delete(stream)
        await client.aclose()
