"""The chaos cluster (private PostgreSQL and Redis, three workers; replicas per scenario) for the module,
and the per-fault table: printed at the end (``-s`` shows it) and written to ``chaos/table.txt`` under
pytest's base temporary folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.chaos.cluster import ChaosCluster, chaos_cluster
from tests.chaos.verify import ScenarioResult, table


@pytest.fixture(scope="module")
async def chaos(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ChaosCluster]:
    async with chaos_cluster(run_dir=tmp_path_factory.mktemp("chaos-run")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def chaos_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ScenarioResult]]:
    results: list[ScenarioResult] = []
    yield results
    if results:
        text = table(results)
        path = tmp_path_factory.getbasetemp() / "chaos" / "table.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"\n\nchaos table ({path}):\n{text}\n")
