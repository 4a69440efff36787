"""Faults while two replicas serve load: nothing billed twice or lost, no 5xx a healthy worker does not
explain, limits held. One test per fault (``none`` is the harness's own baseline); see verify.py for
the checks and bench/chaos.py for the long run."""

from __future__ import annotations

import pytest

from tests.chaos.cluster import ChaosCluster
from tests.chaos.faults import FAULTS, FaultTimes
from tests.chaos.load import LoadProfile
from tests.chaos.scenario import run_scenario
from tests.chaos.verify import ScenarioResult, table

# Sized for CI: a few seconds of load a fault, a few hundred requests in all.
PROFILE = LoadProfile()
TIMES = FaultTimes()


@pytest.mark.parametrize("name", list(FAULTS))
async def test_fault(name: str, chaos: ChaosCluster, chaos_results: list[ScenarioResult]) -> None:
    result = await run_scenario(chaos, FAULTS[name], PROFILE, TIMES, seed=len(chaos_results))
    chaos_results.append(result)
    print("\n" + table([result]))
    assert result.ok, f"{name}: " + "\n".join(result.problems)
