"""Background jobs never die: a failure is counted and logged (an outage's in one line, anything else
with its traceback), and the job runs again at its next tick."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.background import Backoff, TaskFailures, every


async def test_a_failing_job_is_logged_counted_and_run_again(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    async def step() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise ConnectionRefusedError("database away")
        if len(runs) == 2:
            raise KeyError("a bug")

    failures, stop = TaskFailures(expected=(OSError,)), asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="gateway.background"):
        task = asyncio.create_task(every(0.01, "job", step, stop, failures))
        for _ in range(200):
            if len(runs) >= 4:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task
    assert len(runs) >= 4 and failures.counts == {"job": 2}
    outage, bug = caplog.records[0], caplog.records[1]
    assert "ConnectionRefusedError" in outage.getMessage() and outage.exc_info is None
    assert bug.exc_info is not None and bug.levelno == logging.ERROR


def test_backoff_doubles_up_to_its_ceiling_and_resets() -> None:
    backoff = Backoff(first=0.2, most=1.0)
    assert [backoff.failed() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.failed() == 0.2


async def test_a_job_may_start_one_interval_on() -> None:
    runs: list[float] = []
    loop = asyncio.get_running_loop()
    started, twice = loop.time(), asyncio.Event()

    async def step() -> None:
        runs.append(loop.time() - started)
        if len(runs) == 2:
            twice.set()

    stop = asyncio.Event()
    task = asyncio.create_task(every(0.05, "job", step, stop, TaskFailures(), first_after=0.3))
    await asyncio.sleep(0.2)
    assert runs == []
    await asyncio.wait_for(twice.wait(), 10)
    stop.set()
    await task
    assert runs[0] >= 0.3
